"""Objects whose pack entries were made ahead, by whoever built the objects.

A writer that builds many small objects at once (the bus writer: four per message)
can encode each one as a pack entry while it has the bytes at hand, natively and in
one call (`gatos_native.messages`). `PackedObjects` carries those entries through the
`ObjectStore` port unchanged: it *is* a sequence of `GitObject` (decoded on access,
for stores that want objects), and a Git store that writes packs takes the entries as
they are (`ledger_git.GitObjectStore.write_many`), which spares encoding them again.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from typing import overload

from ledger_core._gitobj import GitObject, ObjectId, ObjectKind
from ledger_core.errors import CorruptObject

PackEntryTuple = tuple[bytes, int, bytes]
"""(raw 20-byte object id, CRC-32 of the entry bytes, entry bytes: type/size header
then a zlib stream of the whole object), as in a pack file and its v2 index."""

_KINDS: dict[int, ObjectKind] = {1: "commit", 2: "tree", 3: "blob"}


def decode_entry(entry: bytes) -> GitObject:
    """The object a whole-object pack entry holds (no deltas)."""
    if not entry:
        raise CorruptObject("an empty pack entry")
    byte = entry[0]
    kind = _KINDS.get((byte >> 4) & 7)
    if kind is None:
        raise CorruptObject(f"pack entry type {(byte >> 4) & 7} is not a whole commit, tree or blob")
    size, shift, pos = byte & 0x0F, 4, 1
    while byte & 0x80:
        if pos >= len(entry):
            raise CorruptObject("a pack entry header runs past its end")
        byte = entry[pos]
        size |= (byte & 0x7F) << shift
        shift += 7
        pos += 1
    try:
        data = zlib.decompress(entry[pos:])
    except zlib.error as exc:
        raise CorruptObject(f"a pack entry does not inflate: {exc}") from None
    if len(data) != size:
        raise CorruptObject(f"a pack entry says {size} bytes and holds {len(data)}")
    return GitObject(kind, data)


class PackedObjects(Sequence[GitObject]):
    """Unique objects with their pack entries, in order."""

    __slots__ = ("entries",)

    def __init__(self, entries: list[PackEntryTuple]) -> None:
        self.entries = entries

    @classmethod
    def concat(cls, parts: Sequence[PackedObjects]) -> PackedObjects:
        """The parts' entries in order, each object once."""
        seen: set[bytes] = set()
        out: list[PackEntryTuple] = []
        for part in parts:
            for entry in part.entries:
                if entry[0] not in seen:
                    seen.add(entry[0])
                    out.append(entry)
        return cls(out)

    def oids(self) -> list[ObjectId]:
        return [ObjectId(raw.hex()) for raw, _crc, _data in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PackedObjects) and other.entries == self.entries

    __hash__ = None  # type: ignore[assignment]

    @overload
    def __getitem__(self, index: int) -> GitObject: ...

    @overload
    def __getitem__(self, index: slice) -> list[GitObject]: ...

    def __getitem__(self, index: int | slice) -> GitObject | list[GitObject]:
        if isinstance(index, slice):
            return [decode_entry(e[2]) for e in self.entries[index]]
        return decode_entry(self.entries[index][2])

    def __iter__(self) -> Iterator[GitObject]:
        for entry in self.entries:
            yield decode_entry(entry[2])


__all__ = ["PackEntryTuple", "PackedObjects", "decode_entry"]
