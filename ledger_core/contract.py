"""Contract test suites for the ledger ports, shipped with the core.

Every adapter of `ObjectStore` and `RefStore` must pass the same suite (the
dulwich way): a test module subclasses `ObjectStoreContract` / `RefStoreContract`
as a `Test…` class and implements `make_store()` / `make_refs()`, returning a fresh,
empty store on each call. The suites use plain asserts so the core does not depend
on pytest at import time; `pytest` is imported inside the methods that need
`pytest.raises`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ledger_core._gitobj import (
    MODE_BLOB,
    GitObject,
    ObjectId,
    TreeEntry,
    encode_commit,
    encode_tree,
)
from ledger_core._names import RefName
from ledger_core._ports import ObjectStore, RefStore
from ledger_core.errors import InvalidName, NotFound, RefConflict, RefInTheWay, RefLocked

OID_A = ObjectId("a" * 40)
OID_B = ObjectId("b" * 40)
OID_C = ObjectId("c" * 40)

INVALID_REF_NAMES: tuple[str, ...] = (
    "",
    "refs",
    "refs/",
    "heads/main",
    "refs/gatos/../x",
    "refs/gatos/x.lock",
    "refs/gatos/x.lock/y",
    "refs/gatos/a@{1}",
    "refs/gatos/a b",
    "refs/gatos/a\tb",
    "refs/gatos/a\x01b",
    "refs/gatos/a\x7fb",
    "refs/gatos/a~1",
    "refs/gatos/a^",
    "refs/gatos/a:b",
    "refs/gatos/a?",
    "refs/gatos/a*",
    "refs/gatos/a[b",
    "refs/gatos/a\\b",
    "refs/gatos/.hidden",
    "refs/gatos/x/",
    "refs/gatos/x.",
    "refs/gatos//x",
)


def _git_hash(kind: str, data: bytes) -> str:
    """Git's object hashing, written out independently of `object_id`."""
    return hashlib.sha1(kind.encode() + b" " + str(len(data)).encode() + b"\0" + data,
                        usedforsecurity=False).hexdigest()


def sample_objects() -> list[GitObject]:
    """A blob, a tree holding it and a commit of that tree: a tiny valid history."""
    blob = GitObject("blob", b"hello gatos\n")
    tree = GitObject("tree", encode_tree([TreeEntry("hello.txt", MODE_BLOB, blob.oid)]))
    ident = "user:alice <user:alice> 0 +0000"
    commit = GitObject("commit", encode_commit(tree.oid, (), ident, ident, "first\n"))
    return [blob, tree, commit]


class ObjectStoreContract:
    """What every `ObjectStore` adapter promises. Subclasses implement `make_store`."""

    def make_store(self) -> ObjectStore:
        raise TypeError(f"{type(self).__name__} must define make_store()")

    def test_write_read_round_trip(self) -> None:
        """An object written can be read back with the same kind and bytes."""
        store = self.make_store()
        for obj in sample_objects():
            oid = store.write(obj)
            assert oid == obj.oid
            again = store.read(oid)
            assert (again.kind, again.data) == (obj.kind, obj.data)

    def test_write_many_round_trip(self) -> None:
        """Every object of one `write_many` batch is readable afterwards."""
        store = self.make_store()
        objects = sample_objects() + [GitObject("blob", bytes([i]) * i) for i in range(40)]
        store.write_many(objects)
        for obj in objects:
            assert store.contains(obj.oid)
            assert store.read(obj.oid) == obj

    def test_ids_are_git_ids(self) -> None:
        """Object ids are exactly what Git computes (`git hash-object`)."""
        store = self.make_store()
        assert GitObject("blob", b"").oid == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        assert GitObject("blob", b"hello\n").oid == "ce013625030ba8dba906f756967f9e9ca394464a"
        assert GitObject("tree", b"").oid == "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
        for obj in sample_objects():
            assert store.write(obj) == _git_hash(obj.kind, obj.data)

    def test_read_missing_is_not_found(self) -> None:
        """Reading an absent object raises `NotFound`."""
        import pytest

        store = self.make_store()
        with pytest.raises(NotFound):
            store.read(OID_A)

    def test_contains(self) -> None:
        """`contains` is false before a write and true after it."""
        store = self.make_store()
        blob = GitObject("blob", b"contains\n")
        assert not store.contains(blob.oid)
        store.write(blob)
        assert store.contains(blob.oid)
        assert not store.contains(OID_A)

    def test_rewrite_is_idempotent(self) -> None:
        """Writing an object that exists (alone or in a batch) is not an error."""
        store = self.make_store()
        objects = sample_objects()
        store.write_many(objects)
        store.write_many(objects)
        store.write_many([*objects, *objects])
        store.write(objects[0])
        for obj in objects:
            assert store.read(obj.oid) == obj

    def test_empty_batch(self) -> None:
        """An empty `write_many` is a no-op."""
        store = self.make_store()
        store.write_many([])
        assert not store.contains(sample_objects()[0].oid)

    def test_typed_reads(self) -> None:
        """`read_commit`, `read_tree` and `read_blob` parse the object of their kind."""
        store = self.make_store()
        blob, tree, commit = sample_objects()
        store.write_many([blob, tree, commit])
        assert store.read_blob(blob.oid) == blob.data
        assert [e.name for e in store.read_tree(tree.oid)] == ["hello.txt"]
        parsed = store.read_commit(commit.oid)
        assert parsed.tree == tree.oid
        assert parsed.parents == ()
        assert parsed.subject == "first"

    def test_typed_read_of_wrong_kind(self) -> None:
        """Asking for a commit that is a blob raises `CorruptObject`."""
        import pytest

        from ledger_core.errors import CorruptObject

        store = self.make_store()
        blob = GitObject("blob", b"not a commit")
        store.write(blob)
        with pytest.raises(CorruptObject):
            store.read_commit(blob.oid)

    def test_large_and_binary_blobs(self) -> None:
        """Binary and large blobs (every byte value, NULs, 1 MiB) round-trip exactly."""
        store = self.make_store()
        objects = [GitObject("blob", bytes(range(256)) * 3),
                   GitObject("blob", b"\0" * 17),
                   GitObject("blob", hashlib.sha256(b"x").digest() * 32768)]
        store.write_many(objects)
        for obj in objects:
            assert store.read_blob(obj.oid) == obj.data


class RefStoreContract:
    """What every `RefStore` adapter promises. Subclasses implement `make_refs`."""

    def make_refs(self) -> RefStore:
        raise TypeError(f"{type(self).__name__} must define make_refs()")

    def test_missing_ref_is_none(self) -> None:
        """`get` of a ref that does not exist returns `None`."""
        refs = self.make_refs()
        assert refs.get(RefName("refs/gatos/missing")) is None

    def test_lock_excludes_other_writers(self) -> None:
        """While one writer holds a ref's lock, a second `lock` and a CAS get `RefLocked`."""
        import pytest

        refs = self.make_refs()
        name = RefName("refs/gatos/locked")
        refs.compare_and_swap(name, None, OID_A)
        with refs.lock(name) as held:
            assert held.old == OID_A
            with pytest.raises(RefLocked):
                refs.lock(name)
            with pytest.raises(RefLocked):
                refs.compare_and_swap(name, OID_A, OID_B)
        assert refs.get(name) == OID_A
        refs.compare_and_swap(name, OID_A, OID_B)
        assert refs.get(name) == OID_B

    def test_lock_commit_moves_and_releases(self) -> None:
        """`commit` moves the ref and frees the lock; a release after it changes nothing."""
        refs = self.make_refs()
        name = RefName("refs/gatos/journal/ns/user/bob")
        held = refs.lock(name)
        assert held.old is None
        held.commit(OID_C)
        held.release()
        assert refs.get(name) == OID_C
        with refs.lock(name) as again:
            assert again.old == OID_C

    def test_lock_released_without_commit_changes_nothing(self) -> None:
        """Leaving the `with` block (even on an error) leaves the ref and frees the lock."""
        refs = self.make_refs()
        name = RefName("refs/gatos/y")
        refs.compare_and_swap(name, None, OID_A)
        try:
            with refs.lock(name):
                raise ValueError("boom")
        except ValueError:
            pass
        assert refs.get(name) == OID_A
        assert refs.list("refs/gatos/") == {RefName("refs/gatos/y"): OID_A}
        refs.compare_and_swap(name, OID_A, OID_B)

    def test_create_with_expected_none(self) -> None:
        """CAS with `expected=None` creates a ref that does not exist."""
        refs = self.make_refs()
        name = RefName("refs/gatos/journal/ns/user/alice")
        refs.compare_and_swap(name, None, OID_A)
        assert refs.get(name) == OID_A

    def test_update_with_right_expected(self) -> None:
        """CAS from the current value moves the ref."""
        refs = self.make_refs()
        name = RefName("refs/gatos/x")
        refs.compare_and_swap(name, None, OID_A)
        refs.compare_and_swap(name, OID_A, OID_B)
        assert refs.get(name) == OID_B

    def test_conflict_reports_actual_and_leaves_ref(self) -> None:
        """CAS with a stale expected value raises `RefConflict` naming the actual value."""
        import pytest

        refs = self.make_refs()
        name = RefName("refs/gatos/x")
        refs.compare_and_swap(name, None, OID_A)
        with pytest.raises(RefConflict) as info:
            refs.compare_and_swap(name, OID_B, OID_C)
        assert info.value.actual == OID_A
        assert info.value.expected == OID_B
        assert info.value.code == "CONFLICT"
        assert refs.get(name) == OID_A

    def test_create_over_existing_conflicts(self) -> None:
        """CAS with `expected=None` on an existing ref is a conflict; the ref is unchanged."""
        import pytest

        refs = self.make_refs()
        name = RefName("refs/gatos/x")
        refs.compare_and_swap(name, None, OID_A)
        with pytest.raises(RefConflict) as info:
            refs.compare_and_swap(name, None, OID_B)
        assert info.value.actual == OID_A
        assert refs.get(name) == OID_A

    def test_expected_value_on_missing_ref(self) -> None:
        """CAS expecting a value on a missing ref raises `RefConflict` with `actual=None`."""
        import pytest

        refs = self.make_refs()
        name = RefName("refs/gatos/nothing/here")
        with pytest.raises(RefConflict) as info:
            refs.compare_and_swap(name, OID_A, OID_B)
        assert info.value.actual is None
        assert refs.get(name) is None
        assert refs.list("refs/") == {}

    def test_failed_cas_leaves_no_obstacle(self) -> None:
        """A failed CAS on a missing ref does not block creating its parent name later."""
        import pytest

        refs = self.make_refs()
        with pytest.raises(RefConflict):
            refs.compare_and_swap(RefName("refs/gatos/p/q/r"), OID_A, OID_B)
        refs.compare_and_swap(RefName("refs/gatos/p/q"), None, OID_C)
        assert refs.get(RefName("refs/gatos/p/q")) == OID_C

    def test_invalid_names_rejected_before_write(self) -> None:
        """Invalid ref names raise `InvalidName` (`INVALID_NAME`) and nothing is written."""
        import pytest

        refs = self.make_refs()
        for name in INVALID_REF_NAMES:
            with pytest.raises(InvalidName) as info:
                refs.compare_and_swap(RefName(name), None, OID_A)
            assert info.value.code == "INVALID_NAME", name
            with pytest.raises(InvalidName):
                refs.get(RefName(name))
        assert refs.list("refs/") == {}

    def test_ref_in_the_way_below(self) -> None:
        """With `a` present, creating `a/b` raises `RefInTheWay`; `a` is unchanged."""
        import pytest

        refs = self.make_refs()
        refs.compare_and_swap(RefName("refs/gatos/a"), None, OID_A)
        with pytest.raises(RefInTheWay) as info:
            refs.compare_and_swap(RefName("refs/gatos/a/b"), None, OID_B)
        assert info.value.code == "REF_IN_THE_WAY"
        assert refs.list("refs/") == {"refs/gatos/a": OID_A}

    def test_ref_in_the_way_above(self) -> None:
        """With `a/b` present, creating `a` raises `RefInTheWay`; `a/b` is unchanged."""
        import pytest

        refs = self.make_refs()
        refs.compare_and_swap(RefName("refs/gatos/a/b"), None, OID_A)
        with pytest.raises(RefInTheWay):
            refs.compare_and_swap(RefName("refs/gatos/a"), None, OID_B)
        assert refs.list("refs/") == {"refs/gatos/a/b": OID_A}

    def test_ref_in_the_way_deep(self) -> None:
        """A ref two levels up or down is in the way too."""
        import pytest

        refs = self.make_refs()
        refs.compare_and_swap(RefName("refs/gatos/d"), None, OID_A)
        with pytest.raises(RefInTheWay):
            refs.compare_and_swap(RefName("refs/gatos/d/e/f"), None, OID_B)
        refs.compare_and_swap(RefName("refs/gatos/g/h/i"), None, OID_A)
        with pytest.raises(RefInTheWay):
            refs.compare_and_swap(RefName("refs/gatos/g"), None, OID_B)
        assert sorted(refs.list("refs/")) == ["refs/gatos/d", "refs/gatos/g/h/i"]

    def test_sibling_prefix_is_not_in_the_way(self) -> None:
        """`a` and `ab` (or `a.b`) are different refs, not a file and a folder."""
        refs = self.make_refs()
        refs.compare_and_swap(RefName("refs/gatos/a"), None, OID_A)
        refs.compare_and_swap(RefName("refs/gatos/ab"), None, OID_B)
        refs.compare_and_swap(RefName("refs/gatos/a.b/c"), None, OID_C)
        assert refs.list("refs/gatos/") == {
            "refs/gatos/a": OID_A, "refs/gatos/a.b/c": OID_C, "refs/gatos/ab": OID_B}

    def test_list_prefix_sorted(self) -> None:
        """`list(prefix)` returns exactly the refs starting with `prefix`, sorted by name."""
        refs = self.make_refs()
        names = ["refs/gatos/journal/ns/user/zed", "refs/gatos/journal/ns/user/alice",
                 "refs/gatos/journal/other/agent/bot", "refs/gatos/trust", "refs/heads/main"]
        for i, name in enumerate(names):
            refs.compare_and_swap(RefName(name), None, ObjectId(f"{i:040x}"))
        listed = refs.list("refs/gatos/journal/")
        assert list(listed) == sorted(names[:3])
        assert listed["refs/gatos/journal/ns/user/zed"] == f"{0:040x}"
        assert list(refs.list("refs/gatos/journal/ns/")) == sorted(names[:2])
        assert list(refs.list("refs/gatos/journal/ns/user/a")) == [names[1]]
        assert list(refs.list("refs/")) == sorted(names)
        assert list(refs.list("refs")) == sorted(names)
        assert list(refs.list("")) == sorted(names)
        assert refs.list("refs/gatos/nothing/") == {}
        assert refs.list("refs/tags/") == {}

    def test_list_is_a_snapshot(self) -> None:
        """Mutating the dict returned by `list` does not change the store."""
        refs = self.make_refs()
        refs.compare_and_swap(RefName("refs/gatos/x"), None, OID_A)
        listed: dict[Any, Any] = refs.list("refs/")
        listed["refs/gatos/x"] = OID_B
        listed["refs/gatos/y"] = OID_C
        assert refs.list("refs/") == {"refs/gatos/x": OID_A}

    def test_only_one_creator_wins(self) -> None:
        """Two creators expecting `None` on one name: the first wins, the second conflicts."""
        import pytest

        refs = self.make_refs()
        name = RefName("refs/gatos/jobs/abc/claim")
        refs.compare_and_swap(name, None, OID_A)
        with pytest.raises(RefConflict):
            refs.compare_and_swap(name, None, OID_B)
        assert refs.get(name) == OID_A
