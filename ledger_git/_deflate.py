"""zlib streams for Git objects, sized to the data.

`zlib.compress` sets up a 32 KiB window and a large hash table for every call; for
the few hundred bytes of an event object that set-up costs twenty times the
compression itself. A window just big enough for the data (and a small memory level)
gives a valid zlib stream that Git and libgit2 inflate as usual.
"""

from __future__ import annotations

import zlib


def deflate(data: bytes, level: int = 1) -> bytes:
    wbits = min(15, max(9, (len(data) + 262).bit_length()))
    mem_level = 1 if len(data) < 4096 else 8
    compressor = zlib.compressobj(level, zlib.DEFLATED, wbits, mem_level)
    return compressor.compress(data) + compressor.flush()
