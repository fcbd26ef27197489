"""In-memory adapters of the ledger ports, for fast unit tests.

Real code, not a mock: objects are hashed exactly as Git hashes them, values are
immutable (`bytes`, frozen dataclasses) so nothing leaks in or out by reference,
and compare-and-swap follows the same contract as the Git adapter.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger_core._gitobj import GitObject, ObjectId, validate_oid
from ledger_core._names import RefName, validate_ref_name
from ledger_core._ports import ObjectStore, RefLock, RefStore
from ledger_core.errors import NotFound, RefInTheWay, RefLocked


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


class _MemoryRefLock(RefLock):
    def __init__(self, store: MemoryRefStore, name: RefName, old: ObjectId | None) -> None:
        super().__init__(name, old)
        self._store = store

    def commit(self, new: ObjectId) -> None:
        if self.name not in self._store._held:
            raise RefLocked(f"the lock on {self.name} was already released")
        self._store._refs[self.name] = validate_oid(new)
        self.release()

    def release(self) -> None:
        self._store._held.discard(self.name)


class MemoryRefStore(RefStore):
    def __init__(self) -> None:
        self._refs: dict[RefName, ObjectId] = {}
        self._held: set[RefName] = set()

    def get(self, name: RefName) -> ObjectId | None:
        return self._refs.get(validate_ref_name(name))

    def lock(self, name: RefName) -> RefLock:
        name = validate_ref_name(name)
        if name in self._held:
            raise RefLocked(f"ref {name} is locked by another writer")
        old = self._refs.get(name)
        if old is None:
            for other in self._refs:
                if other.startswith(name + "/") or name.startswith(other + "/"):
                    raise RefInTheWay(f"cannot create {name}: ref {other} is in the way")
        self._held.add(name)
        return _MemoryRefLock(self, name, old)

    def list(self, prefix: str) -> dict[RefName, ObjectId]:
        return {k: self._refs[k] for k in sorted(self._refs) if k.startswith(prefix)}
