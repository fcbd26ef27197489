"""mind_bus on the in-memory adapter: names, publish, dedupe, order, segments, retention, groups."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger_core import SigningKey, encode_ulid, sign_event
from ledger_core.memory import MemoryObjectStore, MemoryRefStore
from mind_bus import (
    AckLog,
    BusLog,
    GroupState,
    InvalidMessage,
    InvalidPosition,
    InvalidTopic,
    NotPending,
    PublishRequest,
    TopicConfig,
    UlidConflict,
    ack_ref,
    merkle_root,
    parse_from,
    prune_shard,
    read_summary,
    shard_for_key,
    shard_ref,
    start_positions,
    validate_topic,
    writer_lock_ref,
)
from mind_bus._message import is_summary

KEY = SigningKey(b"\x07" * 32)
ACTOR = "user:alice"
T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ulid(n: int, ms: int = int(T0 * 1000)) -> str:
    return encode_ulid(ms, n.to_bytes(10, "big"))


def make_log(config: TopicConfig | None = None, gate: Any = None
             ) -> tuple[BusLog, MemoryObjectStore, MemoryRefStore, Clock]:
    objects, refs, clock = MemoryObjectStore(), MemoryRefStore(), Clock()
    log = BusLog(objects, refs, sign=lambda ev: sign_event(ev, KEY), clock=clock,
                 sleep=lambda _s: None, config_for=lambda _t: config or TopicConfig(), gate=gate)
    return log, objects, refs, clock


def req(topic: str, n: int, payload: Any = None, key: str | None = None, ms: int | None = None
        ) -> PublishRequest:
    return PublishRequest(topic, {"n": n} if payload is None else payload,
                          ulid(n, ms or int(T0 * 1000)), ACTOR, key=key)


# -- names ---------------------------------------------------------------------------------

def test_topic_and_subtopic_never_collide() -> None:
    """Topic `a` and topic `a/0` live side by side: leaves start with '-', no component can."""
    log, _, refs, _ = make_log(TopicConfig(shards=1))
    log.publish(req("a", 1))
    log.publish(req("a/0", 2))
    log.publish(req("a/-0".replace("-", ""), 3))  # "a/0" again
    assert set(refs.list("refs/gatos/mbus/")) == {shard_ref("a", 0), shard_ref("a/0", 0)}
    assert shard_ref("a", 0) == "refs/gatos/mbus/a/-0"
    assert ack_ref("echo/jobs", "g1") == "refs/gatos/mbus-ack/echo/jobs/-g1"


@pytest.mark.parametrize("topic", ["", "a//b", "/a", "a/", "a/-x", "a/.x", "a..b", "a/b.lock",
                                   "a b", "a:b", "x" * 65, 7, None, "a/~b"])
def test_bad_topics_are_refused(topic: object) -> None:
    """Bad topic names are INVALID_NAME before anything is written."""
    with pytest.raises(InvalidTopic):
        validate_topic(topic)


def test_dotted_and_slashed_topics_are_valid() -> None:
    """`gatos.jobs.pending` and `echo/jobs` are topics."""
    assert validate_topic("gatos.jobs.pending") and validate_topic("echo/jobs")


# -- publish --------------------------------------------------------------------------------

def test_bad_input_changes_nothing() -> None:
    """A float, a bad key, a bad topic or a denial: a clear error and no object or ref written."""
    def gate(actor: str, action: str, topic: str) -> None:
        if topic == "denied":
            raise InvalidTopic("denied by the test gate")

    log, objects, refs, _ = make_log(gate=gate)
    bad = [PublishRequest("t", {"x": 1.5}, ulid(1), ACTOR),
           PublishRequest("t", 1, ulid(2), ACTOR, key=""),  # empty key
           PublishRequest("t", 1, ulid(3), ACTOR, headers={"a": 1}),  # type: ignore[dict-item]
           PublishRequest("bad topic", 1, ulid(4), ACTOR),
           PublishRequest("denied", 1, ulid(5), ACTOR),
           PublishRequest("t", 1, "not-a-ulid", ACTOR)]
    results = log.publish_many(bad)
    assert [type(r).__name__ for r in results] == [
        "InvalidMessage", "InvalidMessage", "InvalidMessage", "InvalidTopic", "InvalidTopic", "InvalidEvent"]
    assert len(objects) == 0 and refs.list("refs/") == {}


def test_duplicate_ulid_returns_the_first_place() -> None:
    """The same ULID again (same body) is `duplicate` at the original position; other body: ULID_REUSED."""
    log, objects, _, _ = make_log()
    first = log.publish(req("t", 1, key="k"))
    count = len(objects)
    again = log.publish(req("t", 1, key="k"))
    assert again.duplicate and (again.shard, again.position, again.commit) == (
        first.shard, first.position, first.commit)
    assert len(objects) == count
    with pytest.raises(UlidConflict):
        log.publish(req("t", 1, payload={"other": True}, key="k"))
    # Within one batch too, and a fresh log rebuilds the window from Git.
    batch = log.publish_many([req("t", 2), req("t", 2)])
    assert [r.duplicate for r in batch] == [False, True]  # type: ignore[union-attr]
    fresh = BusLog(objects, log.refs, sign=lambda ev: sign_event(ev, KEY), clock=Clock(),
                   sleep=lambda _s: None)
    assert fresh.publish(req("t", 2)).duplicate


def test_dedupe_window_ends() -> None:
    """A ULID older than the window is not remembered by a fresh writer."""
    log, objects, refs, clock = make_log(TopicConfig(dedupe_window_seconds=10, shards=1))
    log.publish(req("t", 1))
    clock.now += 60
    fresh = BusLog(objects, refs, sign=lambda ev: sign_event(ev, KEY), clock=clock,
                   sleep=lambda _s: None, config_for=lambda _t: TopicConfig(dedupe_window_seconds=10, shards=1))
    res = fresh.publish(req("t", 1))
    assert not res.duplicate and res.position == 2


def test_batch_is_one_write_and_keys_pick_shards() -> None:
    """A batch is one write_many; keyed messages go to hash(key) % shards; keyless ones stick
    to one shard per batch, the next batch taking the next shard (round-robin by batch)."""
    log, objects, _, _ = make_log(TopicConfig(shards=4))
    before = objects.write_calls
    results = log.publish_many([req("t", i, key=f"k{i % 3}") for i in range(30)]
                               + [req("t", 100 + i) for i in range(8)])
    assert objects.write_calls == before + 1
    for i, r in enumerate(results[:30]):
        assert r.shard == shard_for_key(f"k{i % 3}", 4)  # type: ignore[union-attr]
    assert [r.shard for r in results[30:]] == [0] * 8  # type: ignore[union-attr]
    shards = [log.publish_many([req("t", 200 + 10 * b + i) for i in range(3)]) for b in range(5)]
    assert [[r.shard for r in batch] for batch in shards] == [  # type: ignore[union-attr]
        [1, 1, 1], [2, 2, 2], [3, 3, 3], [0, 0, 0], [1, 1, 1]]


def test_keyless_batch_sticks_to_at_most_sticky_max_per_shard() -> None:
    """A keyless batch larger than STICKY_MAX spreads over the next shards, in order."""
    from mind_bus._store import STICKY_MAX
    log, *_ = make_log(TopicConfig(shards=4))
    results = log.publish_many([req("t", i) for i in range(STICKY_MAX + 3)])
    assert [r.shard for r in results] == [0] * STICKY_MAX + [1] * 3  # type: ignore[union-attr]
    assert log.publish(req("t", 10_000)).shard == 2


def test_only_written_shards_move_and_the_writer_lock_is_left_free() -> None:
    """A keyless batch moves one shard ref; the topic's writer lock is released (never a ref)."""
    log, _, refs, _ = make_log(TopicConfig(shards=4))
    log.publish_many([req("t", i) for i in range(5)])
    assert sorted(refs.list("refs/gatos/mbus/t/-")) == ["refs/gatos/mbus/t/-0"]
    lock = refs.lock(writer_lock_ref("t"))  # free again
    lock.release()


def test_message_commit_matches_generic_encoders() -> None:
    """The hand-built message commit is byte-identical to encode_tree/encode_commit/format_trailers."""
    from mind_bus._message import Place, message_commit, message_commit_generic, message_event
    for n, (key, headers, parent) in enumerate([(None, None, None), ("k", {"a": "b"}, "ab" * 20),
                                                ("ü/x", {}, "cd" * 20)]):
        for checked in (False, True):
            event = message_event("a/b.c", {"n": n, "s": "ü"}, key=key, headers=headers, ulid=ulid(n),
                                  publisher=ACTOR, policy_root="0" * 40, checked=checked,
                                  ms=int(T0 * 1000) + 999 if checked else None)
            signed = sign_event(event, KEY)
            place = Place("a/b.c", 3, 17 + n, 2, 1, 15, 999)
            seconds = int(T0) if checked else None
            fast, fast_oid = message_commit(signed, place, parent, "ef" * 32, seconds)  # type: ignore[arg-type]
            slow, slow_oid = message_commit_generic(signed, place, parent, "ef" * 32)  # type: ignore[arg-type]
            assert fast_oid == slow_oid
            assert [(o.kind, o.data, o.oid) for o in fast] == [(o.kind, o.data, o.oid) for o in slow]


def test_ten_thousand_messages_keep_per_shard_order() -> None:
    """10,000 messages in batches: positions 1..n per shard with no gap, publish order kept per shard."""
    log, _, _, _ = make_log(TopicConfig(shards=4))
    sent: dict[int, list[int]] = {}
    for start in range(0, 10_000, 500):
        for r in log.publish_many([req("load", n, key=f"k{n % 17}") for n in range(start, start + 500)]):
            assert not isinstance(r, Exception)
            sent.setdefault(r.shard, []).append(r.position)
    total = 0
    for shard in range(4):
        got = log.read("load", shard)
        assert [m.position for m in got] == list(range(1, len(got) + 1))
        ns = [m.payload["n"] for m in got]
        assert ns == sorted(ns)  # published in increasing n, so per-shard order holds
        total += len(got)
    assert total == 10_000


def test_message_commit_is_deterministic() -> None:
    """The same message on the same empty shard is the same commit in two stores."""
    a = make_log()[0].publish(req("t", 5, key="k"))
    b = make_log()[0].publish(req("t", 5, key="k"))
    assert a.commit == b.commit


# -- segments and retention ----------------------------------------------------------------

def test_segments_rotate_by_count_and_size() -> None:
    """A segment closes after `segment_max_messages` or when the next message would pass the size."""
    log, _objects, _refs, _ = make_log(TopicConfig(shards=1, segment_max_messages=3))
    log.publish_many([req("t", i) for i in range(7)])
    segs = [m.segment for m in log.read("t", 0)]
    assert segs == [0, 0, 0, 1, 1, 1, 2]
    log2, *_ = make_log(TopicConfig(shards=1, segment_max_bytes=1))
    log2.publish_many([req("t", i) for i in range(3)])
    assert [m.segment for m in log2.read("t", 0)] == [0, 1, 2]


def test_prune_leaves_a_verifiable_summary() -> None:
    """TTL prunes whole sealed segments; the summary's Merkle root matches the pruned bodies."""
    config = TopicConfig(shards=1, segment_max_messages=4)
    log, objects, refs, clock = make_log(config)
    old_ms = int(T0 * 1000) - 3_600_000
    log.publish_many([req("t", i, ms=old_ms) for i in range(10)])
    before = log.read("t", 0)
    clock.now = T0
    summary = prune_shard(objects, refs, "t", 0, ttl_seconds=60, now=clock.now)
    assert summary is not None and summary["pruned"] == 8 and summary["last_position"] == 8
    assert summary["merkle_root"] == merkle_root(
        [objects.read_blob({e.name: e.oid for e in objects.read_tree(
            objects.read_commit(m.commit).tree)}["event.cbor"]) for m in before[:8]])
    after = log.read("t", 0)
    assert [(m.position, m.ulid, m.payload) for m in after] == [
        (m.position, m.ulid, m.payload) for m in before[8:]]
    # The new chain is the shard's next generation ref; the old one is never rewritten.
    assert refs.get(shard_ref("t", 0)) == before[-1].commit
    root = objects.read_commit(refs.get(shard_ref("t", 0, 1)))  # type: ignore[arg-type]
    oid = objects.read_commit(root.parents[0]).parents[0]  # head = 10, its parent 9, then the summary
    assert is_summary(objects.read_commit(oid))
    assert read_summary(objects, objects.read_commit(oid))["merkle_root"] == summary["merkle_root"]
    # The head segment is never pruned, and publishing continues at the next position.
    assert prune_shard(objects, refs, "t", 0, ttl_seconds=60, now=clock.now) is None
    fresh = BusLog(objects, refs, sign=lambda ev: sign_event(ev, KEY), clock=clock,
                   sleep=lambda _s: None, config_for=lambda _t: config)
    assert fresh.publish(req("t", 50)).position == 11


def test_merkle_root_known_shapes() -> None:
    """Odd nodes are carried up; one leaf is its own hash."""
    from ledger_core import blake3_hex
    assert merkle_root([b"x"]) == blake3_hex(b"x")
    two = blake3_hex(bytes.fromhex(blake3_hex(b"a")) + bytes.fromhex(blake3_hex(b"b")))
    assert merkle_root([b"a", b"b"]) == two
    assert merkle_root([b"a", b"b", b"c"]) == blake3_hex(bytes.fromhex(two) + bytes.fromhex(blake3_hex(b"c")))


# -- positions ------------------------------------------------------------------------------

def test_from_values() -> None:
    """earliest, HEAD, HEAD-n, a position, a ULID; anything else INVALID_POSITION."""
    heads = {0: 10, 1: 0}
    assert start_positions(parse_from("earliest"), heads, lambda s, u: 0) == {0: 1, 1: 1}
    assert start_positions(parse_from("HEAD"), heads, lambda s, u: 0) == {0: 11, 1: 1}
    assert start_positions(parse_from("HEAD-100"), heads, lambda s, u: 0) == {0: 1, 1: 1}
    assert start_positions(parse_from("HEAD-3"), heads, lambda s, u: 0) == {0: 8, 1: 1}
    assert start_positions(parse_from(4), heads, lambda s, u: 0) == {0: 4, 1: 4}
    assert start_positions(parse_from(ulid(1)), heads, lambda s, u: 7 + s) == {0: 7, 1: 8}
    for bad in ("HEAD+1", "latest", 0, -1, 1.5, "HEAD-x", True):
        with pytest.raises(InvalidPosition):
            parse_from(bad)


def test_first_at_or_after() -> None:
    """A ULID `from` starts each shard at its first message at or after that ULID."""
    log, *_ = make_log(TopicConfig(shards=1))
    log.publish_many([req("t", i) for i in range(1, 6)])
    assert log.first_at_or_after("t", 0, ulid(3)) == 3
    assert log.first_at_or_after("t", 0, ulid(99)) == 6


# -- groups ---------------------------------------------------------------------------------

def test_group_gives_each_message_to_one_member_and_respects_in_flight() -> None:
    """Two members share the shards; a member never has more than max_in_flight unacked."""
    clock = Clock()
    g = GroupState("t", "g", clock=clock, ack_wait=5)
    g.start_at({0: 1, 1: 1})
    heads = {0: 3, 1: 3}
    a, b = object(), object()
    got_a = [g.take(a, heads, 2), g.take(a, heads, 2), g.take(a, heads, 2)]
    assert got_a[2] is None
    got_b = []
    while (t := g.take(b, heads, 10)) is not None:
        got_b.append(t)
    places = {(t.shard, t.position) for t in got_a[:2] + got_b}  # type: ignore[union-attr]
    assert len(places) == 6 and len(got_b) == 4


def test_redelivery_after_ack_wait_then_dead_letter() -> None:
    """Unacked past ack_wait is redelivered (count grows); after max_deliver it is a dead letter."""
    clock = Clock()
    g = GroupState("t", "g", clock=clock, ack_wait=5, max_deliver=2)
    g.start_at({0: 1})
    a = object()
    first = g.take(a, {0: 1}, 10)
    assert first is not None and first.delivery == 1
    g.bind(0, 1, "U1")
    assert g.take(a, {0: 1}, 10) is None
    clock.now += 5.1
    assert g.expire() == []
    second = g.take(a, {0: 1}, 10)
    assert second is not None and second.delivery == 2
    clock.now += 5.1
    dead = g.expire()
    assert [(d.shard, d.position, d.deliveries, d.ulid) for d in dead] == [(0, 1, 2, "U1")]
    assert g.is_done(0, 1) and g.offsets()["shards"]["0"]["floor"] == 2


def test_member_left_and_nack_redeliver_at_once() -> None:
    """A member that leaves (or nacks) gives its messages to another member without waiting."""
    clock = Clock()
    g = GroupState("t", "g", clock=clock, ack_wait=60)
    g.start_at({0: 1})
    a, b = object(), object()
    t = g.take(a, {0: 2}, 1)
    g.bind(t.shard, t.position, "U1")  # type: ignore[union-attr]
    g.member_left(a)
    again = g.take(b, {0: 2}, 1)
    assert again is not None and (again.position, again.delivery) == (1, 2)
    g.nack(0, 1)
    assert g.take(b, {0: 2}, 1).position == 1  # type: ignore[union-attr]
    with pytest.raises(NotPending):
        g.locate("nope", None, None)


def test_acks_out_of_order_move_the_floor_and_survive_reload() -> None:
    """Acks in any order; offsets stored in a commit and loaded: acked ones are never redelivered."""
    clock = Clock()
    g = GroupState("t", "g", clock=clock)
    g.start_at({0: 1})
    a = object()
    for _ in range(4):
        g.take(a, {0: 4}, 10)
    assert g.ack(0, 2) and g.ack(0, 4) and not g.ack(0, 4)
    assert g.offsets() == {"shards": {"0": {"floor": 1, "acked": [2, 4]}}}
    objects, refs = MemoryObjectStore(), MemoryRefStore()
    acks = AckLog(objects, refs, clock=clock)
    assert not isinstance(acks.write_many([("t", "g", g.offsets())])[0], Exception)
    again = GroupState("t", "g", clock=clock)
    again.load(acks.load("t", "g") or {})
    order = []
    while (t := again.take(a, {0: 5}, 10)) is not None:
        order.append(t.position)
    assert order == [1, 3, 5]
    assert acks.load("t", "other") is None


def test_ack_none_cursor_only() -> None:
    """A subscriber without a group just walks forward: nothing pending."""
    g = GroupState("t", "-", clock=Clock(), ack_none=True)
    g.start_at({0: 2})
    assert [g.take(None, {0: 3}, 1).position for _ in range(2)] == [2, 3]  # type: ignore[union-attr]
    assert not g.pending


def test_invalid_payload_kinds() -> None:
    """Floats nested anywhere are refused."""
    from mind_bus import check_message
    with pytest.raises(InvalidMessage):
        check_message([1, {"a": [2.0]}], None, None)


def test_presign_matches_sign_event() -> None:
    """The daemon's presigned envelope is byte for byte what the writer would sign."""
    from ledger_core.errors import TooLarge
    from mind_bus import presign
    from mind_bus._message import body_hash, check_message, message_event
    for n, (key, headers) in enumerate([(None, None), ("k", {"a": "b"}), ("ü", {})]):
        payload = {"n": n, "s": "ü", "l": [1, None, True, b"x"]}
        pre = presign(lambda _actor: KEY, 1 << 20, "a/b", payload, key=key, headers=headers,
                      ulid=ulid(n), publisher=ACTOR, policy_root="0" * 40)
        signed = sign_event(message_event("a/b", payload, key=key, headers=headers, ulid=ulid(n),
                                          publisher=ACTOR, policy_root="0" * 40), KEY)
        assert (pre.canonical, pre.signature, pre.cid) == (signed.canonical, signed.signature, signed.cid)
        assert pre.digest == body_hash(check_message(payload, key, headers))
    with pytest.raises(TooLarge):
        presign(lambda _actor: KEY, 100, "a/b", {"pad": "x" * 200}, key=None, headers=None,
                ulid=ulid(1), publisher=ACTOR, policy_root="0" * 40)
    with pytest.raises(InvalidMessage):
        presign(lambda _actor: KEY, 1 << 20, "a/b", {"f": 1.5}, key=None, headers=None,
                ulid=ulid(1), publisher=ACTOR, policy_root="0" * 40)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.text() | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=30), inner, max_size=4),
    max_leaves=12)


@given(payload=_json, key=st.none() | st.text(min_size=1, max_size=40),
       headers=st.none() | st.dictionaries(st.text(max_size=30), st.text(max_size=30), max_size=3),
       topic=st.sampled_from(["t", "a/b", "x" * 30 + "/" + "y" * 64]), n=st.integers(0, 2**40))
@settings(max_examples=300, deadline=None)
def test_presign_bytes_equal_the_generic_encoder(payload: Any, key: str | None,
                                                 headers: dict[str, str] | None, topic: str, n: int) -> None:
    """The envelope presign puts together field by field is exactly what the generic encoder makes."""
    from ledger_core.errors import LedgerError
    from mind_bus import presign
    from mind_bus._message import body_hash, check_message, message_event
    try:
        expected_digest = body_hash(check_message(payload, key, headers))
        signed = sign_event(message_event(topic, payload, key=key, headers=headers, ulid=ulid(n),
                                          publisher=ACTOR, policy_root="a" * 40), KEY)
    except LedgerError:  # (a lone surrogate): refused by presign too
        with pytest.raises(InvalidMessage):
            presign(lambda _actor: KEY, 1 << 20, topic, payload, key=key, headers=headers,
                    ulid=ulid(n), publisher=ACTOR, policy_root="a" * 40)
        return
    pre = presign(lambda _actor: KEY, 1 << 20, topic, payload, key=key, headers=headers, ulid=ulid(n),
                  publisher=ACTOR, policy_root="a" * 40)
    assert (pre.canonical, pre.signature, pre.cid, pre.digest) == (
        signed.canonical, signed.signature, signed.cid, expected_digest)


def test_presigned_requests_are_used_unless_the_policy_root_moved() -> None:
    """A presigned envelope is stored as is; one naming another policy root is signed again."""
    from mind_bus import presign
    log, objects, _, _ = make_log(TopicConfig(shards=1))
    other = SigningKey(b"\x09" * 32)  # a key the log's signer does not use: shows who signed
    pre = presign(lambda _actor: other, 1 << 20, "t", {"n": 1}, key=None, headers=None, ulid=ulid(1),
                  publisher=ACTOR, policy_root="0" * 40)
    log.publish(PublishRequest("t", {"n": 1}, ulid(1), ACTOR, presigned=pre))
    stale = presign(lambda _actor: other, 1 << 20, "t", {"n": 2}, key=None, headers=None, ulid=ulid(2),
                    publisher=ACTOR, policy_root="1" * 40)
    log.publish(PublishRequest("t", {"n": 2}, ulid(2), ACTOR, presigned=stale))
    first, second = log.read("t", 0)
    sigs = [objects.read_commit(m.commit).trailers["Sig"] for m in (first, second)]
    assert sigs[0].endswith(pre.signature.hex())
    assert not sigs[1].endswith(stale.signature.hex())  # re-signed by the log under its own root


def test_unsigned_envelopes_are_signed_by_the_writer() -> None:
    """`presign(sign=False)` encodes the same envelope with no signature; a log given
    `sign_bytes` signs exactly those bytes, and one without it signs the message itself."""
    from ledger_core import verify
    from mind_bus import presign
    signed = presign(lambda _actor: KEY, 1 << 20, "t", {"n": 1}, key="k", headers={"h": "v"},
                     ulid=ulid(1), publisher=ACTOR, policy_root="0" * 40)
    unsigned = presign(lambda _actor: KEY, 1 << 20, "t", {"n": 1}, key="k", headers={"h": "v"},
                       ulid=ulid(1), publisher=ACTOR, policy_root="0" * 40, sign=False)
    assert unsigned.signature == b""
    assert (unsigned.canonical, unsigned.cid, unsigned.digest) == (signed.canonical, signed.cid, signed.digest)

    calls: list[tuple[str, bytes]] = []

    def sign_bytes(actor: str, data: bytes) -> bytes:
        calls.append((actor, data))
        return KEY.sign(data)

    objects, refs, clock = MemoryObjectStore(), MemoryRefStore(), Clock()
    log = BusLog(objects, refs, sign=lambda ev: sign_event(ev, KEY), clock=clock, sleep=lambda _s: None,
                 config_for=lambda _t: TopicConfig(shards=1), sign_bytes=sign_bytes)
    log.publish(PublishRequest("t", {"n": 1}, ulid(1), ACTOR, key="k", headers={"h": "v"},
                               presigned=unsigned))
    assert calls == [(ACTOR, unsigned.canonical)]
    (msg,) = log.read("t", 0)
    assert objects.read_commit(msg.commit).trailers["Sig"].endswith(signed.signature.hex())
    verify(KEY.public_key, unsigned.canonical, signed.signature)  # raises if it does not hold

    plain, _, _, _ = make_log(TopicConfig(shards=1))  # no sign_bytes: signs on its own
    plain.publish(PublishRequest("t", {"n": 1}, ulid(1), ACTOR, key="k", headers={"h": "v"},
                                 presigned=unsigned))
    (again,) = plain.read("t", 0)
    assert again.commit == msg.commit  # the same bytes, the same signature, the same commit


def test_a_failing_signer_fails_only_its_message() -> None:
    from ledger_core.errors import NotFound
    from mind_bus import presign

    def sign_bytes(actor: str, data: bytes) -> bytes:
        if actor != ACTOR:
            raise NotFound(f"no key for {actor}")
        return KEY.sign(data)

    objects, refs, clock = MemoryObjectStore(), MemoryRefStore(), Clock()
    log = BusLog(objects, refs, sign=lambda ev: sign_event(ev, KEY), clock=clock, sleep=lambda _s: None,
                 config_for=lambda _t: TopicConfig(shards=1), sign_bytes=sign_bytes)
    reqs = [PublishRequest("t", {"n": n}, ulid(n), actor, presigned=presign(
        lambda _actor: KEY, 1 << 20, "t", {"n": n}, key=None, headers=None, ulid=ulid(n),
        publisher=actor, policy_root="0" * 40, sign=False))
        for n, actor in ((1, ACTOR), (2, "user:nokey"), (3, ACTOR))]
    results = log.publish_many(reqs)
    assert isinstance(results[1], NotFound)
    assert [r.position for r in (results[0], results[2])] == [1, 2]  # type: ignore[union-attr]


def test_shard_generations_parse_and_the_newest_wins() -> None:
    """`-<shard>.<g>` is generation g of a shard; the newest generation is the shard."""
    from mind_bus import current_shards, parse_shard_generation
    assert shard_ref("a/b", 3, 2) == "refs/gatos/mbus/a/b/-3.2"
    assert parse_shard_generation("refs/gatos/mbus/a/b/-3.2") == ("a/b", 3, 2)
    assert parse_shard_generation("refs/gatos/mbus/a/b/-3") == ("a/b", 3, 0)
    for bad in ("refs/gatos/mbus/a/-3.", "refs/gatos/mbus/a/-3.x", "refs/gatos/mbus/a/-writer"):
        with pytest.raises(InvalidTopic):
            parse_shard_generation(bad)
    listed = {shard_ref("t", 0): "a" * 40, shard_ref("t", 0, 2): "b" * 40, shard_ref("t", 1): "c" * 40}
    assert current_shards(listed) == {0: (shard_ref("t", 0, 2), "b" * 40),  # type: ignore[arg-type]
                                      1: (shard_ref("t", 1), "c" * 40)}


def test_redelivery_counts_survive_a_reload() -> None:
    """A redelivered message's count is durable (version bumps before it is sent); after a
    reload it goes on counting, so max_deliver holds across restarts."""
    clock = Clock()
    g = GroupState("t", "g", clock=clock, ack_wait=5, max_deliver=3)
    g.start_at({0: 1})
    a = object()
    assert g.take(a, {0: 2}, 10).delivery == 1  # type: ignore[union-attr]
    assert g.take(a, {0: 2}, 10).delivery == 1  # type: ignore[union-attr]
    version = g.version
    clock.now += 5.1
    g.expire()
    again = g.take(a, {0: 2}, 10)
    assert again is not None and again.delivery == 2 and g.version > version
    stored = g.offsets()
    assert stored["shards"]["0"]["deliveries"] == {str(again.position): 2}
    # A restart: position 1 or 2 (delivered once) starts at 1 again; the other goes on at 3.
    h = GroupState("t", "g", clock=clock, ack_wait=5, max_deliver=3)
    h.load(stored)
    b = object()
    counts = {t.position: t.delivery for t in (h.take(b, {0: 2}, 10), h.take(b, {0: 2}, 10))}  # type: ignore[union-attr]
    assert counts[again.position] == 3 and counts[3 - again.position] == 1
    clock.now += 5.1
    dead = h.expire()
    assert [(d.position, d.deliveries) for d in dead] == [(again.position, 3)]
    assert "deliveries" not in h.offsets()["shards"]["0"] or str(again.position) not in (
        h.offsets()["shards"]["0"]["deliveries"])


def test_more_shards_in_the_config_are_seen_by_a_trusting_writer() -> None:
    """plan_many trusts its in-memory heads; a config with more shards still gets them."""
    configs = {"t": TopicConfig(shards=1)}
    objects, refs, clock = MemoryObjectStore(), MemoryRefStore(), Clock()
    log = BusLog(objects, refs, sign=lambda ev: sign_event(ev, KEY), clock=clock, sleep=lambda _s: None,
                 config_for=lambda t: configs[t])
    first = log.plan_many([req("t", 1, key="a")])
    log.apply(first)
    configs["t"] = TopicConfig(shards=4, shard_map_version=2)
    batch = log.plan_many([req("t", n, key=f"k{n}") for n in range(2, 30)])
    log.apply(batch)
    assert all(not isinstance(r, Exception) for r in batch.results)
    assert {r.shard for r in batch.results} == {0, 1, 2, 3}  # type: ignore[union-attr]
