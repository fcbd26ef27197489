"""Epoch anchors in the pure core: ids, bytes, signatures, continuity, and the verifier's
rule that a journal may end at a missing parent only below a signed anchor."""

from __future__ import annotations

import pytest

from ledger_core import (
    Anchor,
    ObjectId,
    anchor_objects,
    anchored_boundaries,
    continuity_problems,
    epoch_ref,
    format_epoch_id,
    parse_epoch_ref,
    read_anchor,
    verify_all,
)
from ledger_core.errors import CorruptObject, InvalidName
from ledger_core.memory import MemoryObjectStore, MemoryRefStore
from tests.unit.test_journal_memory import ALICE, ALICE_REF, MALLORY, NS, Keys, make_journal, signed


def write_anchor(objects: MemoryObjectStore, refs: MemoryRefStore, anchor: Anchor,
                 key=ALICE, signer: str = "user:alice") -> ObjectId:
    objs, oid = anchor_objects(anchor, key.sign, signer)
    objects.write_many(objs)
    refs.compare_and_swap(epoch_ref(anchor.ns, anchor.epoch), None, oid)
    return oid


def test_epoch_ids_sort_as_numbers_and_keep_leaves_apart() -> None:
    """Ids are fixed-width, so ref order is epoch order; the namespace is a folder."""
    ids = [format_epoch_id(n) for n in (1, 2, 10, 100)]
    assert ids == sorted(ids)
    assert epoch_ref("fin", 12) == "refs/gatos/epoch/fin/00000012"
    assert parse_epoch_ref("refs/gatos/epoch/fin/00000012") == ("fin", 12)
    for bad in ("refs/gatos/epoch/fin", "refs/gatos/epoch/fin/12", "refs/gatos/epoch/fin/00000000"):
        with pytest.raises(InvalidName):
            parse_epoch_ref(bad)


def test_anchor_round_trips_and_is_deterministic() -> None:
    """The same anchor gives the same commit; reading it back gives the same content."""
    anchor = Anchor(ns=NS, epoch=1, previous=None, journals={ALICE_REF: ObjectId("a" * 40)},
                    state={"commit": "b" * 40, "state_root": "blake3:" + "c" * 64}, created_at=7)
    objs1, oid1 = anchor_objects(anchor, ALICE.sign, "user:alice")
    _objs2, oid2 = anchor_objects(anchor, ALICE.sign, "user:alice")
    assert oid1 == oid2
    objects = MemoryObjectStore()
    objects.write_many(objs1)
    back = read_anchor(objects, oid1)
    assert back.body() == anchor.body() and back.signed_by == "user:alice" and back.commit == oid1


def test_anchor_whose_file_and_trailers_disagree_is_corrupt() -> None:
    """An anchor is read only if epoch.json, its trailers and its parent agree."""
    anchor = Anchor(ns=NS, epoch=2, previous=ObjectId("d" * 40), journals={}, created_at=1)
    objs, oid = anchor_objects(anchor, ALICE.sign, "user:alice")
    objects = MemoryObjectStore()
    objects.write_many(objs)
    # Epoch-Previous names a parent the commit has; dropping the parent line breaks the link.
    commit = objs[-1]
    broken = type(commit)("commit", commit.data.replace(b"parent " + b"d" * 40 + b"\n", b""))
    objects.write_many([broken])
    with pytest.raises(CorruptObject):
        read_anchor(objects, broken.oid)
    assert read_anchor(objects, oid).previous == "d" * 40


def test_continuity_rules() -> None:
    """Ids without gaps, parent = previous anchor, recorded heads only move forward."""
    chain = {"h1": None, "h2": "h1", "h3": "h2", "x": None}

    def is_ancestor(a: str, b: str) -> bool:
        while b is not None:
            if a == b:
                return True
            b = chain[b]
        return False

    a1 = Anchor(NS, 1, None, {ALICE_REF: "h1"}, commit=ObjectId("1" * 40))
    a2 = Anchor(NS, 2, ObjectId("1" * 40), {ALICE_REF: "h2"}, commit=ObjectId("2" * 40))
    assert continuity_problems([a1, a2], is_ancestor, {ALICE_REF: "h3"}) == []
    assert "skip" in continuity_problems([a1, Anchor(**{**a2.__dict__, "epoch": 3})], is_ancestor)[0]
    assert "links to" in continuity_problems([a1, Anchor(**{**a2.__dict__, "previous": None})], is_ancestor)[0]
    assert "does not descend" in continuity_problems([a1, a2], is_ancestor, {ALICE_REF: "x"})[0]
    assert "is gone" in continuity_problems([a1, a2], is_ancestor, {})[0]


def compacted(signer_key=ALICE) -> tuple[MemoryObjectStore, MemoryRefStore, ObjectId]:
    """A journal of 4 events whose two oldest commits were dropped below an anchor at event 3."""
    journal, objects, refs, _ = make_journal()
    results = [journal.append(NS, signed(n)) for n in range(4)]
    boundary = ObjectId(results[2].commit)
    write_anchor(objects, refs, Anchor(NS, 1, None, {ALICE_REF: boundary}, created_at=1), key=signer_key)
    for r in results[:2]:
        del objects._objects[ObjectId(r.commit)]
    return objects, refs, boundary


def test_verify_accepts_a_journal_cut_at_a_signed_anchor() -> None:
    """The retained events verify, and the missing parent below the anchor is not a problem."""
    objects, refs, boundary = compacted()
    assert anchored_boundaries(objects, refs, Keys()) == {ALICE_REF: frozenset({boundary})}
    report = verify_all(objects, refs, Keys())
    assert report.ok, report.problems
    assert report.events == 2 and report.to_dict()["compacted_journals"] == 1


def test_verify_rejects_a_cut_without_a_trusted_anchor() -> None:
    """An anchor signed by an untrusted key does not excuse a missing parent."""
    objects, refs, _ = compacted(signer_key=MALLORY)
    assert anchored_boundaries(objects, refs, Keys()) == {}
    report = verify_all(objects, refs, Keys())
    assert not report.ok
    assert "allowed only below an epoch anchor" in report.problems[0].reason


def test_appending_and_reading_a_compacted_journal_works() -> None:
    """After compaction the ULID index and `read_range` stop at the oldest retained commit."""
    from ledger_core import Journal, read_range
    objects, refs, _ = compacted()
    journal = Journal(objects, refs, Keys(), sleep=lambda s: None, random=lambda: 0.5)
    assert journal.append(NS, signed(9)).duplicate is False
    assert journal.append(NS, signed(3)).duplicate is True  # retained ULIDs still dedupe
    assert len(read_range(objects, refs.get(ALICE_REF))) == 3
