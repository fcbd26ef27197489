"""zlib streams for Git objects, sized to the data.

`zlib.compress` sets up a 32 KiB window and a large hash table for every call; for
the few hundred bytes of an event object that set-up costs twenty times the
compression itself. A window just big enough for the data (and a small memory level)
gives a valid zlib stream that Git and libgit2 inflate as usual.

`stored` is the cheapest valid stream of all: the data in deflate "stored" blocks
(zlib level 0) plus the Adler-32, about a twentieth of `deflate`'s cost for a small
object. Small objects full of hashes and signatures (event and message commits, trees,
envelopes) barely compress, so the object store stores them below `STORE_BELOW`;
`git repack -F` or `git gc --aggressive` compresses them later if wanted.
"""

from __future__ import annotations

import zlib

_STORED_MAX = 0xFFFF  # the largest stored block
STORE_BELOW = 1024
"""Objects shorter than this are stored, not deflated, by default (`GitObjectStore`).

Measured on a 574-byte event commit: deflated 432 bytes, written in 14.5 µs and
inflated in 4.7 µs; stored 585 bytes, 0.6 µs and 0.4 µs. A full fold inflates every
journal commit, so this is most of its read cost; the space costs about a third more
for such objects, which `git repack -F` or `git gc --aggressive` wins back if wanted.
"""


def deflate(data: bytes, level: int = 1) -> bytes:
    wbits = min(15, max(9, (len(data) + 262).bit_length()))
    mem_level = 1 if len(data) < 4096 else 8
    compressor = zlib.compressobj(level, zlib.DEFLATED, wbits, mem_level)
    return compressor.compress(data) + compressor.flush()


def stored(data: bytes) -> bytes:
    """`data` as a zlib stream of stored (uncompressed) deflate blocks."""
    n = len(data)
    adler = zlib.adler32(data).to_bytes(4, "big")
    if n <= _STORED_MAX:
        return b"\x78\x01" + bytes((1, n & 0xFF, n >> 8, ~n & 0xFF, (~n >> 8) & 0xFF)) + data + adler
    out = bytearray(b"\x78\x01")
    for start in range(0, n, _STORED_MAX):
        chunk = data[start:start + _STORED_MAX]
        size = len(chunk)
        last = 1 if start + size >= n else 0
        out += bytes((last, size & 0xFF, size >> 8, ~size & 0xFF, (~size >> 8) & 0xFF)) + chunk
    return bytes(out + adler)


def compress(data: bytes, store_below: int = 0) -> bytes:
    """`stored(data)` when it is shorter than `store_below` bytes, else `deflate(data)`."""
    return stored(data) if len(data) < store_below else deflate(data)
