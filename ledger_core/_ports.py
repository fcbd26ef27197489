"""The ports of the ledger: a Git object store and a ref store with compare-and-swap.

Each port declares a handful of primitives; conveniences are built on top of them
here, once, so every adapter gets them for free. A ref changes only through
`compare_and_swap`: there is no unconditional "set".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

from ledger_core._gitobj import Commit, GitObject, ObjectId, TreeEntry, parse_commit, parse_tree
from ledger_core._keys import PublicKeyText
from ledger_core._names import RefName
from ledger_core.errors import CorruptObject, RefConflict


class ObjectStore(ABC):
    """Content-addressed storage of Git objects (blobs, trees, commits)."""

    @abstractmethod
    def write_many(self, objects: Sequence[GitObject]) -> None:
        """Store every object durably enough to be referenced by a ref update that follows.

        Adapters may store a large batch as one pack. Storing an object that already
        exists is not an error. Raises `StorageError` on I/O failure.
        """

    @abstractmethod
    def read(self, oid: ObjectId) -> GitObject:
        """Return the object; raise `NotFound` if absent, `CorruptObject` if damaged."""

    @abstractmethod
    def contains(self, oid: ObjectId) -> bool:
        """Whether the object is present."""

    # Conveniences built on the primitives.

    def write(self, obj: GitObject) -> ObjectId:
        self.write_many([obj])
        return obj.oid

    def _read_kind(self, oid: ObjectId, kind: str) -> bytes:
        obj = self.read(oid)
        if obj.kind != kind:
            raise CorruptObject(f"object {oid} is a {obj.kind}, expected a {kind}")
        return obj.data

    def read_commit(self, oid: ObjectId) -> Commit:
        return parse_commit(self._read_kind(oid, "commit"))

    def read_tree(self, oid: ObjectId) -> list[TreeEntry]:
        return parse_tree(self._read_kind(oid, "tree"))

    def read_blob(self, oid: ObjectId) -> bytes:
        return self._read_kind(oid, "blob")


class RefLock(ABC):
    """An exclusive lock on one ref, holding the value read under the lock.

    `commit(new)` moves the ref and ends the lock; leaving the `with` block without a
    commit (or on an error) releases the lock and leaves the ref as it was.
    """

    def __init__(self, name: RefName, old: ObjectId | None) -> None:
        self.name = name
        self.old = old

    @abstractmethod
    def commit(self, new: ObjectId) -> None:
        """Set the ref to `new` and release the lock. Raises `StorageError`; the ref is then unchanged."""

    @abstractmethod
    def release(self) -> None:
        """Give the lock up without changing the ref. Safe to call twice or after `commit`."""

    def __enter__(self) -> RefLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class RefStore(ABC):
    """Named pointers to commits, changed only under an exclusive per-ref lock.

    `lock` is the primitive; `compare_and_swap` is built on it. A writer that holds
    the lock reads, decides and writes without any other writer in between, so
    concurrent appends queue on the lock instead of redoing work after lost races.
    """

    @abstractmethod
    def get(self, name: RefName) -> ObjectId | None:
        """The ref's current value, or `None` if it does not exist."""

    @abstractmethod
    def lock(self, name: RefName) -> RefLock:
        """Take the ref's lock without waiting and read its value under it.

        Raises:
            RefLocked: another writer holds it (`stale` is true when the lock looks
                abandoned by a crashed writer); nothing was changed.
            RefInTheWay: the ref does not exist and a ref named like a folder or a
                file of this name is in the way.
            InvalidName: `name` is not a valid ref name.
            StorageError: I/O failure.
        """

    @abstractmethod
    def list(self, prefix: str) -> dict[RefName, ObjectId]:
        """Every ref whose name starts with `prefix`, sorted by name."""

    def compare_and_swap(self, name: RefName, expected: ObjectId | None, new: ObjectId) -> None:
        """Set `name` to `new` if and only if it currently equals `expected`.

        `expected=None` means "the ref must not exist yet" (the zero OID).

        Raises:
            RefConflict: the ref holds another value (`actual` says which); unchanged.
            RefLocked, RefInTheWay, InvalidName, StorageError: as for `lock`.
        """
        with self.lock(name) as held:
            if held.old != expected:
                raise RefConflict(name, expected, held.old)
            held.commit(new)


class KeyResolver(Protocol):
    """Where the journal finds the trusted public keys of an actor."""

    def keys_for(self, actor: str) -> Sequence[PublicKeyText]: ...
