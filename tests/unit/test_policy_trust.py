"""Grants, revocations, bundles and the audit on the in-memory adapter."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import pytest
from referencing import Registry, Resource

from ledger_core import (
    TRUST_REF,
    Event,
    Journal,
    canonical_json,
    journal_ref,
    sign_event,
)
from ledger_core.errors import NotFastForward
from policy import (
    ACTIVE_REF,
    AUDIT_REF,
    GRANTS_DIR,
    InvalidGrant,
    PolicyDenied,
    Request,
    apply_policy,
    bundle_ref,
    issue_grant,
    load_bundle,
    make_grant,
    move_fast_forward,
    read_log,
    replay,
    revoke_grant,
    update_trust,
)
from tests.unit.policy_support import KEYS, T0, make_engine

SCHEMAS = Path(__file__).resolve().parents[3] / "shared" / "gatos-schemas" / "v1"


def denied_and_audited(engine, actor: str, action: str, target: str, rule: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    before = engine.refs.get(AUDIT_REF)
    with pytest.raises(PolicyDenied) as info:
        engine.check_now(actor, action, target)
    assert info.value.rule == rule and reason in info.value.reason
    assert info.value.to_wire() == {"code": "POLICY_DENY", "rule": rule, "reason": info.value.reason}
    head = engine.refs.get(AUDIT_REF)
    assert head != before
    commit = engine.objects.read_commit(head)
    assert commit.parents == ((before,) if before else ())
    t = commit.trailers
    assert (t["Decision"], t["Policy-Rule"], t["Actor"], t["Target"]) == ("deny", rule, actor, target)
    assert t["Policy-Root"] == engine.policy_root and t["Reason"] == info.value.reason


def test_owner_holds_everything_others_are_denied() -> None:
    """After bootstrap the owner may do anything; another actor is denied and audited."""
    engine, _ = make_engine()
    assert engine.check_now("user:alice", "append", "demo").allowed
    denied_and_audited(engine, "user:bob", "append", "demo", "00-default.rules:7", "missing cap: demo:append")


def test_grant_allows_until_it_expires() -> None:
    """A grant allows its subject; once expired the same request is denied and audited."""
    engine, clock = make_engine()
    issue_grant(engine, KEYS["user:alice"], issuer="user:alice", subject="user:bob",
                caps=["demo:append"], exp=T0 + 60)
    assert engine.check_now("user:bob", "append", "demo").allowed
    clock.now = T0 + 60
    denied_and_audited(engine, "user:bob", "append", "demo", "00-default.rules:7", "expired at")


def test_revoked_grant_is_denied() -> None:
    """A revoked grant no longer counts, and grants delegated from it fall with it."""
    engine, _ = make_engine()
    g = issue_grant(engine, KEYS["user:alice"], issuer="user:alice", subject="user:bob",
                    caps=["demo:*", "trust:grant"], exp=None)
    issue_grant(engine, KEYS["user:bob"], issuer="user:bob", subject="user:carol",
                caps=["demo:append"], exp=None)
    assert engine.check_now("user:carol", "append", "demo").allowed
    revoke_grant(engine, KEYS["user:alice"], revoked_by="user:alice", grant_id=g["grant_id"], reason="left")
    denied_and_audited(engine, "user:bob", "append", "demo", "00-default.rules:7", "was revoked")
    denied_and_audited(engine, "user:carol", "append", "demo", "00-default.rules:7", "missing cap")


def test_forged_grant_is_denied() -> None:
    """A grant signed by someone other than its issuer is rejected and its subject denied."""
    engine, _ = make_engine()
    doc, sig = make_grant(KEYS["user:bob"], issuer="user:alice", subject="user:bob",
                          caps=["demo:append"], aud=engine.trust.audience, iat=T0, exp=None)
    hexid = doc["grant_id"].split(":")[1]
    update_trust(engine.objects, engine.refs,
                 lambda _v, _h: {(*GRANTS_DIR, f"{hexid}.json"): canonical_json(doc),
                                 (*GRANTS_DIR, f"{hexid}.sig"): sig.encode()},
                 who="user:bob", seconds=T0, subject="forged", trailers=[])
    engine.refresh()
    assert doc["grant_id"] in engine.trust.rejected
    denied_and_audited(engine, "user:bob", "append", "demo", "00-default.rules:7", "signature does not verify")


def test_escalating_delegation_is_denied() -> None:
    """An issuer cannot give more than it holds: at issue time and when a grant is smuggled in."""
    engine, _ = make_engine()
    issue_grant(engine, KEYS["user:alice"], issuer="user:alice", subject="user:bob",
                caps=["demo:append", "trust:grant"], exp=None)
    before = engine.refs.get(TRUST_REF)
    with pytest.raises(PolicyDenied) as info:
        issue_grant(engine, KEYS["user:bob"], issuer="user:bob", subject="user:carol",
                    caps=["finance:append"], exp=None)
    assert info.value.rule == "gatos:escalation"
    assert engine.refs.get(TRUST_REF) == before  # nothing committed
    assert next(read_log(engine.objects, engine.refs))[1].decision.rule == "gatos:escalation"
    # A correctly signed but escalating grant committed behind the gate's back does not count.
    doc, sig = make_grant(KEYS["user:bob"], issuer="user:bob", subject="user:carol",
                          caps=["finance:append"], aud=engine.trust.audience, iat=T0, exp=None)
    hexid = doc["grant_id"].split(":")[1]
    update_trust(engine.objects, engine.refs,
                 lambda _v, _h: {(*GRANTS_DIR, f"{hexid}.json"): canonical_json(doc),
                                 (*GRANTS_DIR, f"{hexid}.sig"): sig.encode()},
                 who="user:bob", seconds=T0, subject="smuggled", trailers=[])
    denied_and_audited(engine, "user:carol", "append", "finance", "00-default.rules:7", "no escalation")


def test_grant_for_another_node_and_future_grant() -> None:
    """A grant's audience must be this node, and it is not valid before `iat`."""
    engine, clock = make_engine()
    for aud, iat in (("gatos:elsewhere", T0), (engine.trust.audience, T0 + 100)):
        doc, sig = make_grant(KEYS["user:alice"], issuer="user:alice", subject="user:dave",
                              caps=["demo:append"], aud=aud, iat=iat, exp=None)
        hexid = doc["grant_id"].split(":")[1]
        update_trust(engine.objects, engine.refs,
                     lambda _v, _h, d=doc, s=sig, h=hexid: {(*GRANTS_DIR, f"{h}.json"): canonical_json(d),
                                                           (*GRANTS_DIR, f"{h}.sig"): s.encode()},
                     who="user:alice", seconds=T0, subject="g", trailers=[])
    engine.refresh()
    assert not engine.decide(Request("user:dave", "append", "demo")).allowed
    clock.now = T0 + 100
    assert engine.decide(Request("user:dave", "append", "demo")).allowed


def test_deny_leaves_no_partial_write() -> None:
    """A batch with denied events writes only the allowed ones; refs and objects otherwise unchanged."""
    engine, _ = make_engine()
    journal = Journal(engine.objects, engine.refs, _Keys(), sleep=time.sleep, random=lambda: 0.5,
                      gate=engine.gate)

    def ev(actor: str, n: int):  # type: ignore[no-untyped-def]
        ulid = f"01JBZ{n:021d}"
        return sign_event(Event.from_value({"type": "t", "ulid": ulid, "actor": actor, "payload": {"n": n},
                                            "policy_root": engine.policy_root}), KEYS[actor])

    engine.refresh()
    refs_before = dict(engine.refs.list("refs/"))
    objects_before = set(engine.objects._objects)
    results = journal.append_many([("demo", ev("user:bob", 1)), ("demo", ev("user:alice", 2))])
    assert isinstance(results[0], PolicyDenied) and not isinstance(results[1], Exception)
    assert engine.refs.get(journal_ref("demo", "user:bob")) is None
    engine.flush()
    refs_after = dict(engine.refs.list("refs/"))
    changed = {r for r in refs_after if refs_after[r] != refs_before.get(r)}
    assert changed == {journal_ref("demo", "user:alice"), AUDIT_REF}
    audit_objects = {engine.refs.get(AUDIT_REF)}
    commit = engine.objects.read_commit(engine.refs.get(AUDIT_REF))
    audit_objects |= {commit.tree} | {e.oid for e in engine.objects.read_tree(commit.tree)}
    alice_objects = set()
    oid = engine.refs.get(journal_ref("demo", "user:alice"))
    c = engine.objects.read_commit(oid)
    alice_objects |= {oid, c.tree} | {e.oid for e in engine.objects.read_tree(c.tree)}
    assert set(engine.objects._objects) - objects_before == audit_objects | alice_objects


class _Keys:
    def keys_for(self, actor: str):  # type: ignore[no-untyped-def]
        return [KEYS[actor].public_key] if actor in KEYS else []


def test_policy_refs_only_fast_forward() -> None:
    """Applying moves active and <bundle-id> forward; a non-fast-forward move is refused."""
    engine, _ = make_engine()
    first = engine.refs.get(ACTIVE_REF)
    result = apply_policy(engine, {"a.rules": "require caps=$cap\naudit action=append\n"}, actor="user:alice")
    assert result.changed and engine.refs.get(ACTIVE_REF) == result.commit
    assert engine.refs.get(bundle_ref(result.bundle_id)) == result.commit
    stored = load_bundle(engine.objects, result.commit)
    commit = engine.objects.read_commit(result.commit)
    assert commit.parents == (first,)
    assert commit.trailers["Policy-Root"] == f"blake3:{result.bundle_id}"
    assert commit.trailers["Policy-Code-Root"] == stored.code_root.lower()
    assert apply_policy(engine, {"a.rules": "require caps=$cap\naudit action=append\n"},
                        actor="user:alice").changed is False
    with pytest.raises(NotFastForward):
        move_fast_forward(engine.objects, engine.refs, ACTIVE_REF, result.commit, first)
    assert engine.refs.get(ACTIVE_REF) == result.commit


def test_lockout_guard_and_apply_is_gated() -> None:
    """A bundle that would lock the applier out is refused; a non-holder cannot apply at all."""
    engine, _ = make_engine()
    with pytest.raises(InvalidGrant, match="could no longer apply"):
        apply_policy(engine, {"a.rules": "allow action=append\n"}, actor="user:alice")
    with pytest.raises(PolicyDenied):
        apply_policy(engine, {"a.rules": "allow action=append\n"}, actor="user:bob")


def test_audit_replay_matches_and_detects_change() -> None:
    """Replaying recorded decisions gives the same answers; `current` shows what changed since."""
    engine, _ = make_engine()
    for actor in ("user:bob", "user:carol"):
        with pytest.raises(PolicyDenied):
            engine.check_now(actor, "append", "demo")
    issue_grant(engine, KEYS["user:alice"], issuer="user:alice", subject="user:bob",
                caps=["demo:append"], exp=None)
    assert replay(engine.objects, engine.refs) == {"ok": True, "checked": 2, "differ": []}
    now = replay(engine.objects, engine.refs, current=(engine.bundle, engine.trust, T0))
    assert [d["request"]["actor"] for d in now["differ"]] == ["user:bob"]


def _validator(name: str) -> jsonschema.Draft202012Validator:
    resources = []
    for path in SCHEMAS.rglob("*.json"):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
    schema = json.loads((SCHEMAS / "governance" / name).read_text())
    return jsonschema.Draft202012Validator(schema, registry=Registry().with_resources(resources))


def test_revocation_validates_against_the_published_schema() -> None:
    """Our revocation document is the v1 revocation shape; grant ids are v1 blake3 digests."""
    engine, _ = make_engine()
    g = issue_grant(engine, KEYS["user:alice"], issuer="user:alice", subject="user:bob",
                    caps=["demo:append"], exp=None)
    r = revoke_grant(engine, KEYS["user:alice"], revoked_by="user:alice", grant_id=g["grant_id"],
                     reason="rotated")
    _validator("revocation.schema.json").validate(r["revocation"])
    example = json.loads((SCHEMAS.parent / "examples" / "governance" / "revocation_min.json").read_text())
    _validator("revocation.schema.json").validate(example)
    ids = json.loads((SCHEMAS / "common" / "ids.schema.json").read_text())["$defs"]
    jsonschema.validate(g["grant_id"], ids["blake3Digest"])
    jsonschema.validate(g["grant"]["issuer"], ids["actorId"])
    jsonschema.validate(g["sig"], ids["ed25519Sig"])
    # The governance grant schema describes a consensus outcome (proposal + proof), not a
    # capability grant: ours must not be mistaken for one.
    with pytest.raises(jsonschema.ValidationError):
        _validator("grant.schema.json").validate(g["grant"])
