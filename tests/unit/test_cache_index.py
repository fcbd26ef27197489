"""The cache plane on the in-memory adapters: build, update, query, staleness, the KV view."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kv_cache import (
    CacheStore,
    CorruptIndex,
    Index,
    IndexSpec,
    InvalidIndexSpec,
    InvalidQuery,
    Query,
    match,
    parse_time,
    parse_where,
)
from ledger_core import Event, encode_ulid, format_timestamp_ms, sign_event
from ledger_core._trees import commit_files, make_commit
from tests.unit.test_journal_memory import ALICE, BOB, NS, make_journal

T0_MS = 1_700_000_000_000
ACTORS = {"user:alice": ALICE, "user:bob": BOB}
SPEC = IndexSpec(NS, "main", ("customer", "line.sku"), "hour")


def event(n: int, actor: str, *, kind: str = "invoice.created", payload: Any = None, ms: int | None = None):  # type: ignore[no-untyped-def]
    at = T0_MS + n * 600_000 if ms is None else ms
    return sign_event(Event.from_value({
        "type": kind, "ulid": encode_ulid(at, n.to_bytes(10, "big")), "actor": actor,
        "payload": {"customer": f"c{n % 3}", "n": n} if payload is None else payload,
        "policy_root": "0" * 40, "ts": format_timestamp_ms(at)}), ACTORS[actor])


def fill(journal, count: int, start: int = 0) -> list:  # type: ignore[no-untyped-def]
    """Events alternating between alice and bob, types alternating too."""
    out = []
    for n in range(start, start + count):
        actor = "user:alice" if n % 2 else "user:bob"
        signed = event(n, actor, kind="invoice.paid" if n % 4 == 1 else "invoice.created")
        journal.append(NS, signed)
        out.append(signed)
    return out


def expected(events: list, predicate) -> set[int]:  # type: ignore[no-untyped-def]
    """Positions in the namespace order whose event satisfies `predicate`, computed naively:
    repeatedly take the journal (in append order) whose next event has the smallest ULID+CID."""
    queues = {a: [s for s in events if s.event.actor == a] for a in ACTORS}
    ordered = []
    while any(queues.values()):
        actor = min((a for a in queues if queues[a]), key=lambda a: queues[a][0].event.ulid + queues[a][0].cid)
        ordered.append(queues[actor].pop(0))
    return {i for i, s in enumerate(ordered) if predicate(s.event)}


def test_build_query_and_incremental_equals_full() -> None:
    """Filters give exactly the matching positions; catching up equals rebuilding, byte for byte."""
    journal, objects, refs, _ = make_journal()
    events = fill(journal, 40)
    store = CacheStore(objects, refs)
    assert store.update(SPEC).mode == "full"
    assert store.update(SPEC).mode == "fresh"
    events += fill(journal, 25, start=40)
    assert store.update(SPEC).mode == "incremental"
    index = store.load(SPEC)
    assert index is not None and index.count == 65
    got = match(index, Query(actor="user:alice", type="invoice.paid", where=(("customer", "c1"),)))
    assert set(got) == expected(events, lambda e: e.actor == "user:alice" and e.type == "invoice.paid"
                                and e.payload["customer"] == "c1")
    tree = objects.read_commit(refs.get(SPEC.ref)).tree
    assert store.update(SPEC, full=True).mode == "full"
    assert objects.read_commit(refs.get(SPEC.ref)).tree == tree


def test_time_range_trims_edge_buckets_exactly() -> None:
    """since/until are inclusive to the second, across hour buckets."""
    journal, objects, refs, _ = make_journal()
    events = fill(journal, 30)
    store = CacheStore(objects, refs)
    store.update(SPEC)
    index = store.load(SPEC)
    low, high = T0_MS // 1000 + 5 * 600 + 1, T0_MS // 1000 + 17 * 600
    got = match(index, Query(since=low, until=high))
    assert set(got) == expected(events, lambda e: low <= (T0_MS // 1000 + int(e.payload["n"]) * 600) <= high)


def test_late_older_event_forces_a_full_rebuild() -> None:
    """An event that sorts before indexed ones (late arrival) rebuilds instead of shifting silently."""
    journal, objects, refs, _ = make_journal()
    events = fill(journal, 10, start=5)
    store = CacheStore(objects, refs)
    store.update(SPEC)
    late = event(1, "user:alice", ms=T0_MS - 10_000)
    journal.append(NS, late)
    result = store.update(SPEC)
    assert result.mode == "full" and result.count == 11
    index = store.load(SPEC)
    assert set(match(index, Query(actor="user:alice"))) == expected([*events, late],
                                                                    lambda e: e.actor == "user:alice")


def test_rewritten_journal_is_stale_and_rebuilt() -> None:
    """A journal head that does not descend from the indexed one is detected and rebuilt from scratch."""
    journal, objects, refs, _ = make_journal()
    fill(journal, 6)
    store = CacheStore(objects, refs)
    store.update(SPEC)
    ref = "refs/gatos/journal/finance/user/alice"
    head = refs.get(ref)
    parent = objects.read_commit(head).parents[0]
    refs.compare_and_swap(ref, head, parent)  # rewind (what doctor calls a fault)
    assert [s["ref"] for s in store.stale()] == [SPEC.ref]
    result = store.update(SPEC)
    assert result.mode == "full" and result.count == 5 and store.stale() == []


def test_payload_lists_and_typed_where_values() -> None:
    """Each scalar of a list is indexed; --where 7 matches the number 7 and the text "7"."""
    journal, objects, refs, _ = make_journal()
    journal.append(NS, event(0, "user:alice", payload={"customer": 7, "line": {"sku": ["a", "b"]}}))
    journal.append(NS, event(1, "user:bob", payload={"customer": "7", "line": {"sku": "b"}}))
    journal.append(NS, event(2, "user:bob", payload={"customer": [1, 2], "line": {}}))
    store = CacheStore(objects, refs)
    store.update(SPEC)
    index = store.load(SPEC)
    assert set(match(index, Query(where=parse_where(["customer=7"])))) == {0, 1}
    assert set(match(index, Query(where=parse_where(['customer="7"'])))) == {0, 1}
    assert set(match(index, Query(where=parse_where(["line.sku=b"])))) == {0, 1}
    assert set(match(index, Query(where=parse_where(["customer=2"])))) == {2}


def test_bad_specs_queries_and_broken_indexes_are_named() -> None:
    """A bad spec, a bad filter and a damaged stored index give clear errors."""
    with pytest.raises(InvalidIndexSpec, match="unknown key"):
        IndexSpec.from_value({"ns": NS, "feilds": []}, "x")
    with pytest.raises(InvalidIndexSpec, match="bucket"):
        IndexSpec.from_value({"ns": NS, "bucket": "week"}, "x")
    with pytest.raises(InvalidQuery, match="field=value"):
        parse_where(["customer"])
    with pytest.raises(InvalidQuery, match="since"):
        parse_time("yesterday", "since")
    journal, objects, refs, _ = make_journal()
    fill(journal, 3)
    store = CacheStore(objects, refs)
    store.update(SPEC)
    with pytest.raises(InvalidQuery, match="has no field"):
        match(store.load(SPEC), Query(where=(("amount", 1),)))
    _, files, _ = commit_files(objects, refs.get(SPEC.ref))
    files["meta.json"] = files["meta.json"].replace(b'"count":3', b'"count":4')
    broken, oid = make_commit(files, "x", [], None, 0, "t")
    objects.write_many(broken)
    refs.compare_and_swap(SPEC.ref, refs.get(SPEC.ref), oid)
    with pytest.raises(CorruptIndex, match="gatos cache rebuild"):
        Index.from_files(files, SPEC)
    assert store.update(SPEC).mode == "full"  # a broken cache is rebuilt, never trusted


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["user:alice", "user:bob"]), st.integers(0, 2), st.integers(0, 50)),
                min_size=1, max_size=25),
       st.sampled_from(["user:alice", "user:bob", None]), st.integers(0, 2))
def test_queries_agree_with_a_linear_scan(rows: list, actor: str | None, customer: int) -> None:  # type: ignore[type-arg]
    """For any events, the bitmap answer equals filtering every event one by one."""
    journal, objects, refs, _ = make_journal()
    events = []
    for n, (who, cust, minute) in enumerate(rows):
        signed = event(n, who, payload={"customer": cust}, ms=T0_MS + minute * 60_000 + n)
        journal.append(NS, signed)
        events.append(signed)
    store = CacheStore(objects, refs)
    store.update(SPEC)
    query = Query(actor=actor, where=(("customer", customer),), since=T0_MS // 1000 + 600)
    got = set(match(store.load(SPEC), query))
    assert got == expected(events, lambda e: (actor is None or e.actor == actor)
                           and e.payload["customer"] == customer
                           and _seconds(e.ts) >= T0_MS // 1000 + 600)


def _seconds(ts: str) -> int:
    return parse_time(ts[:19] + "Z", "ts")
