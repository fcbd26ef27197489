"""The port contract suites run against the in-memory adapters."""

from __future__ import annotations

from ledger_core import GitObject
from ledger_core.contract import ObjectStoreContract, RefStoreContract
from ledger_core.memory import MemoryObjectStore, MemoryRefStore


class TestMemoryObjectStore(ObjectStoreContract):
    def make_store(self) -> MemoryObjectStore:
        return MemoryObjectStore()

    def test_write_calls_counts_batches(self) -> None:
        """`write_calls` counts `write_many` calls, not objects."""
        store = self.make_store()
        store.write_many([GitObject("blob", b"a"), GitObject("blob", b"b")])
        store.write(GitObject("blob", b"c"))
        assert store.write_calls == 2
        assert len(store) == 3

    def test_stored_bytes_are_copies(self) -> None:
        """A bytearray written and later mutated does not change the stored object."""
        store = self.make_store()
        data = bytearray(b"mutable")
        obj = GitObject("blob", data)  # type: ignore[arg-type]
        oid = obj.oid
        store.write(obj)
        data[:] = b"changed"
        assert store.read(oid).data == b"mutable"
        assert isinstance(store.read(oid).data, bytes)


class TestMemoryRefStore(RefStoreContract):
    def make_refs(self) -> MemoryRefStore:
        return MemoryRefStore()
