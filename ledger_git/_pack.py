"""Writing a batch of objects as one pack file plus its v2 index.

Group commit wants many small objects on disk with one write and one rename instead
of thousands of loose files. Objects are stored whole (no deltas): event blobs are
small and unique, and `git gc` can delta-compress later. The .idx is renamed into
place last, because Git and libgit2 discover packs by their index.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import struct
import threading
import zlib
from collections.abc import Sequence
from typing import NamedTuple

from ledger_core import GitObject
from ledger_git._deflate import compress
from ledger_git._native import native_assemble
from ledger_git._spares import Spare, SpareFiles

_TYPE_CODES = {"commit": 1, "tree": 2, "blob": 3}


def _entry_header(kind: str, size: int) -> bytes:
    out = bytearray()
    byte = (_TYPE_CODES[kind] << 4) | (size & 0x0F)
    size >>= 4
    while size:
        out.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return bytes(out)


class PackEntry(NamedTuple):
    """One object as stored in a pack: its raw id, the CRC32 of its bytes, and the bytes.

    A tuple, so that entries made natively (`ledger_core.PackedObjects`) are entries too.
    """

    raw_oid: bytes
    crc: int
    data: bytes


def pack_entries(objects: Sequence[GitObject], *, store_below: int = 0) -> list[PackEntry]:
    """The pack entries of unique `objects` (whole objects, no deltas), in input order.

    Objects shorter than `store_below` bytes are stored uncompressed (see `_deflate`).
    """
    seen: set[str] = set()
    out: list[PackEntry] = []
    for obj in objects:
        oid = obj.oid  # computed once: `GitObject.oid` hashes on every access
        if oid in seen:
            continue
        seen.add(oid)
        data = obj.data
        entry = _entry_header(obj.kind, len(data)) + compress(data, store_below)
        out.append(PackEntry(bytes.fromhex(oid), zlib.crc32(entry), entry))
    return out


def assemble_pack(entries: Sequence[PackEntry] | Sequence[tuple[bytes, int, bytes]]
                  ) -> tuple[bytes, bytes, str]:
    """Return (pack bytes, idx bytes, pack checksum hex) for entries with unique ids.

    Entries are self-contained (no deltas), so entries of several packs can be put
    together into one without touching their bytes: that is how small packs merge.
    Done natively when `gatos_native` is built (the same bytes, `test_native_bus`).
    """
    assemble = native_assemble()
    if assemble is not None:
        return assemble(entries if isinstance(entries, list) else list(entries))  # type: ignore[no-any-return]
    return assemble_pack_py(entries)


def assemble_pack_py(entries: Sequence[PackEntry] | Sequence[tuple[bytes, int, bytes]]
                     ) -> tuple[bytes, bytes, str]:
    """`assemble_pack` in Python (the reference the native one is tested against)."""
    head = b"PACK" + struct.pack(">II", 2, len(entries))
    rows: list[tuple[bytes, int, int]] = []  # (raw oid, crc32, offset)
    offset = len(head)
    for raw_oid, crc, data in entries:
        rows.append((raw_oid, crc, offset))
        offset += len(data)
    pack = b"".join([head, *(data for _raw, _crc, data in entries)])
    pack_sum = hashlib.sha1(pack, usedforsecurity=False).digest()

    rows.sort()
    n = len(rows)
    counts = [0] * 256
    for raw, _crc, _off in rows:
        counts[raw[0]] += 1
    fanout = list(itertools.accumulate(counts))
    offsets = [off for _raw, _crc, off in rows]
    large = [off for off in offsets if off >= 0x80000000]
    if large:
        small_offsets, k = [], 0
        for off in offsets:
            if off < 0x80000000:
                small_offsets.append(off)
            else:
                small_offsets.append(0x80000000 | k)
                k += 1
        offsets = small_offsets
    idx = b"".join([
        b"\xfftOc", struct.pack(">I", 2), struct.pack(">256I", *fanout),
        b"".join(raw for raw, _crc, _off in rows),
        struct.pack(f">{n}I", *(crc for _raw, crc, _off in rows)),
        struct.pack(f">{n}I", *offsets),
        struct.pack(f">{len(large)}Q", *large),
        pack_sum,
    ])
    idx += hashlib.sha1(idx, usedforsecurity=False).digest()
    return pack + pack_sum, idx, pack_sum.hex()


def build_pack(objects: Sequence[GitObject]) -> tuple[bytes, bytes, str]:
    """Return (pack bytes, idx bytes, pack checksum hex) for unique `objects`."""
    return assemble_pack(pack_entries(objects))


_tmp_names = itertools.count()
_pack_dirs: set[str] = set()


def _write_all(fd: int, data: bytes, durable: bool, old_size: int = 0, mode: int = -1) -> None:
    """Write all of `data` to `fd` (fsynced when `durable`), then close it; a file that
    held `old_size` bytes is cut to `data`'s length, and gets `mode` back (unless -1)."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if old_size > len(data):
            os.ftruncate(fd, len(data))
        if mode >= 0:
            os.fchmod(fd, mode)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(directory: str, final: str, data: bytes, durable: bool) -> None:
    """Write `data` to a new temp file (read-only from the start), then rename it to `final`.

    A name unique to the process, thread and call, and one `open`: no random names,
    no `chmod`, no buffered file object (each a system call per pack on a hot path).
    """
    tmp = os.path.join(directory, f"tmp_gatos_{os.getpid()}_{threading.get_ident()}_{next(_tmp_names)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    except FileNotFoundError:  # the folder went away since it was made (a recreated repository)
        os.makedirs(directory, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        _write_all(fd, data, durable)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_pack_file(directory: str, final: str, data: bytes, durable: bool, index: str) -> bool:
    """Write the `.pack` straight under its final name (one rename less per pack); False
    when the pack and its `index` are there already (the same bytes: nothing to do).

    Git and libgit2 find packs by their `.idx`, which is renamed into place only after
    the `.pack` is complete, so a `.pack` being written (or left by a crash) is never
    read. If the name exists without its index (a leftover, or another writer of the
    same bytes), it is replaced through a temp file instead. The index is looked for
    only then: no `stat` per pack.
    """
    try:
        fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    except FileExistsError:
        if os.path.exists(index):
            return False
        _write_file(directory, final, data, durable)
        return True
    except FileNotFoundError:  # the folder went away since it was made: made again there
        _write_file(directory, final, data, durable)
        return True
    try:
        _write_all(fd, data, durable)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(final)
        raise
    return True


def _write_spare(spare: Spare, final: str, data: bytes, durable: bool) -> bool:
    """Write `data` into a file made ahead or recycled (`SpareFiles`), close it (which
    ends a recycled file's lease) and rename it to `final`.

    A rename replaces a file of that name: for a pack it can only be one with the same
    bytes (the name is their checksum) or one left incomplete by a crash. False when the
    spare's name was removed meanwhile (by `git prune`, say): then nothing was renamed.
    """
    path, fd, old_size, mode = spare
    try:
        _write_all(fd, data, durable, old_size, mode)
        os.rename(path, final)
    except FileNotFoundError:
        return False
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    return True


def write_pack(objects_dir: str, objects: Sequence[GitObject], *, durable: bool = False,
               store_below: int = 0) -> str:
    """Write `objects` as `objects/pack/pack-<sum>.{pack,idx}`; return the pack checksum."""
    return write_pack_entries(objects_dir, pack_entries(objects, store_below=store_below),
                              durable=durable)


def write_pack_entries(objects_dir: str, entries: Sequence[PackEntry] | Sequence[tuple[bytes, int, bytes]], *,
                       durable: bool = False, spares: SpareFiles | None = None) -> str:
    """Write entries (unique ids) as one pack and its index; return the pack checksum.

    `spares`: files made ahead to write the pack and the index into, when it has them.
    """
    pack, idx, name = assemble_pack(entries)
    pack_dir = os.path.join(objects_dir, "pack")
    if pack_dir not in _pack_dirs:
        os.makedirs(pack_dir, exist_ok=True)
        _pack_dirs.add(pack_dir)
    base = os.path.join(pack_dir, f"pack-{name}")
    # A spare is renamed over any file of the pack's name, so it is only used when the
    # pack is not complete there already (its index present): never over a pack a
    # reader (or a `git repack -d` about to delete it) may be using.
    spare = spares.take(".pack") if spares is not None and not os.path.exists(base + ".idx") else None
    if spare is not None and _write_spare(spare, base + ".pack", pack, durable):
        wrote = True
    else:
        wrote = _write_pack_file(pack_dir, base + ".pack", pack, durable, base + ".idx")
    if wrote:
        spare = spares.take(".idx") if spares is not None else None
        if spare is None or not _write_spare(spare, base + ".idx", idx, durable):
            _write_file(pack_dir, base + ".idx", idx, durable)
        if durable:
            dir_fd = os.open(pack_dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    return name
