"""Reading journal objects straight from a repository's pack files.

A full fold reads three objects per event (commit, tree, event blob). Through
libgit2 each read is a separate lookup costing 10-20 µs in a repository with
millions of objects; here each pack index is read once per fold (lazily; into a
dictionary once the pack proves to hold objects the fold needs) and objects are
inflated from memory-mapped packs.

Only whole objects are read (the ledger's group commit writes no deltas). Anything
else — a loose object, a delta, an unknown index version, a pack that went away —
answers `None`, and the caller reads that object through the `ObjectStore` port
instead. So this is a cache in front of the port, never a second source of truth:

* a commit is returned only when its bytes hash (SHA-1, with the Git header) to the
  id that was asked for, so the chain walked from a journal head is the same chain
  the port would give;
* trees are not hashed: the event blob they lead to is checked against the
  commit's `Event-CID` by the caller, which is what binds an event to its commit.

Pure read-only: nothing here writes, and no file outside `objects/pack` is opened.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import struct
import zlib
from typing import Any

_IDX_MAGIC = b"\xfftOc"
_COMMIT, _TREE, _BLOB = 1, 2, 3
_HEADERS = {_COMMIT: b"commit ", _TREE: b"tree ", _BLOB: b"blob "}


class _Pack:
    """One pack: its mapped bytes, its raw index, and (once it proves useful) an
    id -> offset dictionary.

    A dictionary costs about 0.4 µs per object to build and answers in 0.1 µs; a
    binary search over the raw index costs nothing to set up and 2-3 µs per lookup.
    So a pack is searched the slow way until it has answered `HOT_AFTER` lookups
    or been probed `HOT_AFTER * 8` times, and then indexed: packs holding none of
    the namespace's objects (other namespaces, old history) are never indexed.
    """

    __slots__ = ("count", "data", "fanout", "hits", "idx", "idx_path", "index", "pack_path", "probes")
    HOT_AFTER = 8

    def __init__(self, idx_path: str, pack_path: str) -> None:
        self.idx_path = idx_path
        self.pack_path = pack_path
        self.data: Any = None
        self.idx = b""
        self.fanout: tuple[int, ...] = ()
        self.count = -1  # -1: not opened; 0: empty or unusable
        self.index: dict[bytes, int] | None = None
        self.hits = self.probes = 0

    def open(self) -> None:
        """Map the pack and read its index file (v2 only; anything else leaves it empty)."""
        self.count = 0
        try:
            with open(self.idx_path, "rb") as handle:
                idx = handle.read()
            with open(self.pack_path, "rb") as handle:
                data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return
        if idx[:8] != _IDX_MAGIC + b"\0\0\0\2" or len(idx) < 8 + 1024 or data[:4] != b"PACK":
            data.close()
            return
        fanout = struct.unpack_from(">256I", idx, 8)
        count = fanout[255]
        if len(idx) < 8 + 1024 + 28 * count + 40:
            data.close()
            return
        self.idx, self.data, self.fanout, self.count = idx, data, (0, *fanout), count

    def _offset(self, i: int) -> int:
        idx = self.idx
        at = 8 + 1024 + 24 * self.count + 4 * i
        offset = int.from_bytes(idx[at:at + 4], "big")
        if offset & 0x80000000:  # packs over 2 GiB: 64-bit offset table
            at = 8 + 1024 + 28 * self.count + 8 * (offset & 0x7FFFFFFF)
            offset = int.from_bytes(idx[at:at + 8], "big")
        return offset

    def find(self, key: bytes) -> int | None:
        """The offset of object `key` in this pack, or None."""
        index = self.index
        if index is not None:
            return index.get(key)
        if self.count < 0:
            self.open()
        if not self.count:
            return None
        self.probes += 1
        idx = self.idx
        lo, hi = self.fanout[key[0]], self.fanout[key[0] + 1]
        base = 8 + 1024
        while lo < hi:
            mid = (lo + hi) >> 1
            at = base + 20 * mid
            got = idx[at:at + 20]
            if got < key:
                lo = mid + 1
            elif got > key:
                hi = mid
            else:
                self.hits += 1
                if self.hits >= self.HOT_AFTER or self.probes >= 8 * self.HOT_AFTER:
                    self.build()
                return self._offset(mid)
        if self.probes >= 8 * self.HOT_AFTER:
            self.build()
        return None

    def build(self) -> None:
        count, idx = self.count, self.idx
        at = 8 + 1024 + 24 * count
        offsets = struct.unpack_from(f">{count}I", idx, at)
        if count and max(offsets) & 0x80000000:
            offsets = tuple(self._offset(i) for i in range(count))
        self.index = dict(zip(struct.unpack_from("20s" * count, idx, 8 + 1024), offsets, strict=True))

    def close(self) -> None:
        if self.data is not None:
            with contextlib.suppress(BufferError, ValueError):
                self.data.close()
        self.data = None
        self.index = None
        self.idx = b""
        self.count = -1


def _mtime(pack: _Pack) -> float:
    try:
        return os.stat(pack.idx_path).st_mtime
    except OSError:
        return 0.0


class PackReader:
    """Whole objects of the packs under `objects_dir/pack`, looked up by raw 20-byte id."""

    def __init__(self, objects_dir: str) -> None:
        folder = os.path.join(objects_dir, "pack")
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            names = []
        present = set(names)
        packs = [_Pack(os.path.join(folder, n), os.path.join(folder, n[:-4] + ".pack"))
                 for n in names if n.endswith(".idx") and n[:-4] + ".pack" in present]
        # Newest first: journal heads, and so the start of every walk, are in recent packs.
        self.packs = sorted(packs, key=_mtime, reverse=True)
        self._last: _Pack | None = None
        self.misses = 0

    def close(self) -> None:
        for pack in self.packs:
            pack.close()
        self._last = None

    def _locate(self, key: bytes) -> tuple[_Pack, int] | None:
        for pack in self.packs:
            offset = pack.find(key)
            if offset is not None:
                self._last = pack
                return pack, offset
        return None

    def read(self, key: bytes, kind: int) -> bytes | None:
        """The body of object `key` if it is a whole object of type `kind` in a pack, else None."""
        pack = self._last
        offset = pack.index.get(key) if pack is not None and pack.index is not None else None
        if offset is None:  # not in the pack of the previous object (the usual hit)
            found = self._locate(key)
            if found is None:
                self.misses += 1
                return None
            pack, offset = found
        data = pack.data
        try:
            byte = data[offset]
            size = byte & 15
            shift = 4
            at = offset + 1
            while byte & 0x80:
                byte = data[at]
                at += 1
                size |= (byte & 0x7F) << shift
                shift += 7
            if (data[offset] >> 4) & 7 != kind:
                self.misses += 1
                return None  # a delta (or another type): the port resolves it
            try:
                body = zlib.decompress(data[at:at + size + 64 + (size >> 2)])
            except zlib.error:  # stored blocks of an incompressible object: take the rest
                body = zlib.decompress(data[at:])
        except (IndexError, ValueError, zlib.error):
            self.misses += 1
            return None
        if len(body) != size:
            self.misses += 1
            return None
        return body

    def commit(self, key: bytes) -> bytes | None:
        """A commit's bytes, only if they hash to `key`."""
        body = self.read(key, _COMMIT)
        if body is None:
            return None
        if hashlib.sha1(b"commit %d\0" % len(body) + body, usedforsecurity=False).digest() != key:
            self.misses += 1
            return None
        return body

    def tree(self, key: bytes) -> bytes | None:
        return self.read(key, _TREE)

    def blob(self, key: bytes) -> bytes | None:
        return self.read(key, _BLOB)


def open_reader(objects: object) -> PackReader | None:
    """A `PackReader` for an object store kept in a Git repository, else None.

    Recognized by an `objects_dir` attribute naming an existing folder (the pygit2
    store has one); `GATOS_FOLD_PACKS=0` in the environment turns the reader off.
    """
    if os.environ.get("GATOS_FOLD_PACKS", "1") == "0":
        return None
    folder = getattr(objects, "objects_dir", None)
    if not isinstance(folder, str) or not os.path.isdir(os.path.join(folder, "pack")):
        return None
    return PackReader(folder)
