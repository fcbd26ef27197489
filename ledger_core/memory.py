"""In-memory adapters of the ledger ports, for fast unit tests.

Real code, not a mock: objects are hashed exactly as Git hashes them, values are
immutable (`bytes`, frozen dataclasses) so nothing leaks in or out by reference,
and compare-and-swap follows the same contract as the Git adapter.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger_core._gitobj import GitObject, ObjectId
from ledger_core._names import RefName, validate_ref_name
from ledger_core._ports import ObjectStore, RefStore
from ledger_core.errors import NotFound, RefConflict, RefInTheWay


class MemoryObjectStore(ObjectStore):
    def __init__(self) -> None:
        self._objects: dict[ObjectId, GitObject] = {}
        self.write_calls = 0

    def write_many(self, objects: Sequence[GitObject]) -> None:
        self.write_calls += 1
        for obj in objects:
            self._objects[obj.oid] = GitObject(obj.kind, bytes(obj.data))

    def read(self, oid: ObjectId) -> GitObject:
        try:
            return self._objects[oid]
        except KeyError:
            raise NotFound(f"object {oid} not found") from None

    def contains(self, oid: ObjectId) -> bool:
        return oid in self._objects

    def __len__(self) -> int:
        return len(self._objects)


class MemoryRefStore(RefStore):
    def __init__(self) -> None:
        self._refs: dict[RefName, ObjectId] = {}

    def get(self, name: RefName) -> ObjectId | None:
        return self._refs.get(validate_ref_name(name))

    def compare_and_swap(self, name: RefName, expected: ObjectId | None, new: ObjectId) -> None:
        name = validate_ref_name(name)
        actual = self._refs.get(name)
        if actual != expected:
            raise RefConflict(name, expected, actual)
        if actual is None:
            for other in self._refs:
                if other.startswith(name + "/") or name.startswith(other + "/"):
                    raise RefInTheWay(f"cannot create {name}: ref {other} is in the way")
        self._refs[name] = new

    def list(self, prefix: str) -> dict[RefName, ObjectId]:
        return {k: self._refs[k] for k in sorted(self._refs) if k.startswith(prefix)}
