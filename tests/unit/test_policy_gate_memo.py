"""The gate's memo of allowed appends and its cheap refresh: never weaker than deciding afresh."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from ledger_core import Event, SignedEvent, sign_event
from policy import (
    AUDIT_REF,
    PolicyDenied,
    TrustView,
    apply_policy,
    check_grant,
    issue_grant,
    make_grant,
    read_log,
    replay,
    revoke_grant,
)
from tests.unit.policy_support import KEYS, T0, make_engine

_ulids = itertools.count(1)


def ev(actor: str, payload: Any = None, type_: str = "t", policy_root: str = "0" * 40) -> SignedEvent:
    ulid = f"01JBZ{next(_ulids):021d}"
    return sign_event(Event.from_value({"type": type_, "ulid": ulid, "actor": actor,
                                        "payload": payload if payload is not None else {},
                                        "policy_root": policy_root}), KEYS[actor])


def records(engine) -> int:  # type: ignore[no-untyped-def]
    engine.flush()
    return sum(1 for _ in read_log(engine.objects, engine.refs))


def test_memoized_allow_never_outlives_the_grant() -> None:
    """Allowed (and memoized) until the grant's exp; at exp denied and audited."""
    engine, clock = make_engine()
    issue_grant(engine, KEYS["user:alice"], issuer="user:alice", subject="user:bob",
                caps=["demo:append"], exp=T0 + 60)
    engine.gate("demo", ev("user:bob"))
    assert engine._memo, "the allow is memoized"
    clock.now = T0 + 59
    engine.gate("demo", ev("user:bob"))
    before = records(engine)
    clock.now = T0 + 60
    with pytest.raises(PolicyDenied) as info:
        engine.gate("demo", ev("user:bob"))
    assert "expired at" in info.value.reason
    assert records(engine) == before + 1


def test_memo_is_bounded_by_any_grant_boundary_and_by_earlier_times() -> None:
    """A grant that starts later splits the span; a clock stepped back re-decides."""
    engine, clock = make_engine()
    clock.now = T0 + 10
    issue_grant(engine, KEYS["user:alice"], issuer="user:alice", subject="user:bob",
                caps=["demo:append"], exp=None)
    engine.gate("demo", ev("user:bob"))
    clock.now = T0 + 5  # before the grant's iat: the memo must not answer
    with pytest.raises(PolicyDenied) as info:
        engine.gate("demo", ev("user:bob"))
    assert "not valid before" in info.value.reason
    clock.now = T0 + 11
    engine.gate("demo", ev("user:bob"))


def test_stable_span() -> None:
    """The span around `now` in which no grant's iat or exp falls."""
    owner = KEYS["user:alice"]
    key = owner.public_key
    grants = {}
    for iat, exp in ((T0, T0 + 100), (T0 + 50, None)):
        doc, sig = make_grant(owner, issuer="user:alice", subject="user:bob", caps=["x:append"],
                              aud="gatos:t", iat=iat, exp=exp)
        grant = check_grant(doc, sig, [key])
        grants[grant.grant_id] = grant
    view = TrustView(root="1" * 40, audience="gatos:t", grants=grants)
    assert view.stable_span(T0 - 1) == (float("-inf"), T0)
    assert view.stable_span(T0) == (T0, T0 + 50)
    assert view.stable_span(T0 + 99) == (T0 + 50, T0 + 100)
    assert view.stable_span(T0 + 100) == (T0 + 100, float("inf"))
    assert TrustView().stable_span(T0) == (float("-inf"), float("inf"))


def test_revocation_and_policy_change_drop_the_memo() -> None:
    """A revocation, then a new bundle, apply to the very next append."""
    engine, _ = make_engine()
    g = issue_grant(engine, KEYS["user:alice"], issuer="user:alice", subject="user:bob",
                    caps=["demo:append"], exp=None)
    engine.gate("demo", ev("user:bob"))
    revoke_grant(engine, KEYS["user:alice"], revoked_by="user:alice", grant_id=g["grant_id"], reason="x")
    with pytest.raises(PolicyDenied, match="was revoked"):
        engine.gate("demo", ev("user:bob"))
    engine.gate("demo", ev("user:alice"))
    apply_policy(engine, {"a.rules": 'deny ns=demo reason="closed"\nrequire caps=$cap\n'}, actor="user:alice")
    with pytest.raises(PolicyDenied, match="closed"):
        engine.gate("demo", ev("user:alice"))


def test_payload_rules_are_decided_every_time() -> None:
    """A rule reading the payload keeps the (actor, ns, type) pair out of the memo."""
    engine, _ = make_engine()
    apply_policy(engine, {"a.rules": 'deny ns=demo payload.amount>100 reason="too big"\nrequire caps=$cap\n'},
                 actor="user:alice")
    engine.gate("demo", ev("user:alice", {"amount": 1}))
    with pytest.raises(PolicyDenied, match="too big"):
        engine.gate("demo", ev("user:alice", {"amount": 1000}))
    engine.gate("demo", ev("user:alice", {"amount": 2}))
    assert not engine._memo
    engine.gate("other", ev("user:alice", {"amount": 1000}))  # the rule cannot match `other`
    assert engine._memo


def test_types_are_memoized_apart() -> None:
    """A rule on the event type: an allowed type does not let another type through."""
    engine, _ = make_engine()
    apply_policy(engine, {"a.rules": 'deny ns=demo type=bad reason="bad type"\nrequire caps=$cap\n'},
                 actor="user:alice")
    engine.gate("demo", ev("user:alice", type_="good"))
    with pytest.raises(PolicyDenied, match="bad type"):
        engine.gate("demo", ev("user:alice", type_="bad"))


def test_every_denial_and_every_audited_allow_is_recorded() -> None:
    """Denials are never memoized; under `audit all` each allowed append is recorded."""
    engine, _ = make_engine()
    start = records(engine)
    for _ in range(3):
        with pytest.raises(PolicyDenied):
            engine.gate("demo", ev("user:bob"))
    assert records(engine) == start + 3
    apply_policy(engine, {"a.rules": "audit all\nrequire caps=$cap\n"}, actor="user:alice")
    start = records(engine)
    for _ in range(3):
        engine.gate("demo", ev("user:alice"))
    assert records(engine) == start + 3
    assert engine.objects.read_commit(engine.refs.get(AUDIT_REF)).trailers["Decision"] == "allow"


def test_stamp_decides_whether_refs_are_read() -> None:
    """An unchanged stamp skips the ref reads; a new stamp or `None` reads them."""
    engine, _ = make_engine()
    reads: list[str] = []
    real_get = engine.refs.get

    def get(name):  # type: ignore[no-untyped-def]
        reads.append(name)
        return real_get(name)
    engine.refs.get = get  # type: ignore[method-assign]
    stamps = iter([1, 1, 2, None, None])
    engine._stamp_of = lambda: next(stamps)
    engine.refresh()
    assert len(reads) == 2
    engine.refresh()
    assert len(reads) == 2
    engine.refresh()
    assert len(reads) == 4
    engine.refresh()
    engine.refresh()
    assert len(reads) == 8


def test_event_must_name_the_active_bundle() -> None:
    """An event naming another bundle commit is denied (audited, replayable); the active one
    or the zero OID (names none) is decided as usual; the memo never lets a stale root by."""
    engine, _ = make_engine()
    old = engine.policy_root
    engine.gate("demo", ev("user:alice", policy_root=old))
    apply_policy(engine, {"a.rules": "require caps=$cap\n"}, actor="user:alice")
    new = engine.policy_root
    assert new != old
    engine.gate("demo", ev("user:alice", policy_root=new))
    engine.gate("demo", ev("user:alice", policy_root=new))  # from the memo
    engine.gate("demo", ev("user:alice"))  # zero OID
    start = records(engine)
    with pytest.raises(PolicyDenied) as info:
        engine.gate("demo", ev("user:alice", policy_root=old))
    assert info.value.rule == "gatos:policy-root" and old in info.value.reason and new in info.value.reason
    assert records(engine) == start + 1
    head = engine.refs.get(AUDIT_REF)
    recorded = next(read_log(engine.objects, engine.refs))[1]
    assert recorded.request.policy_root == old and recorded.policy_root == new
    assert engine.objects.read_commit(head).trailers["Policy-Rule"] == "gatos:policy-root"
    assert replay(engine.objects, engine.refs)["ok"] is True
