"""Changes to policy and trust, each decided by the gate first: bootstrap, apply, grant, revoke.

Bootstrapping (`gatos init`) is the one write no bundle decides: before it there
is no bundle, and the node's creator becomes its owner. Every later change needs
its capability (`policy:apply`, `trust:grant`, `trust:revoke`) and is audited.
"""

from __future__ import annotations

from typing import Any

from ledger_core import TRUST_REF, ObjectId, SigningKey, canonical_json, parse_json
from policy._decide import Request, decide
from policy._default import DEFAULT_FILE, DEFAULT_RULES
from policy._engine import PolicyEngine
from policy._grants import make_grant, make_revocation
from policy._store import (
    ACTIVE_REF,
    GRANTS_DIR,
    GRAPH_PATH,
    REVOCATIONS_DIR,
    ApplyResult,
    apply_bundle,
    graph_bytes,
    load_trust,
    trust_root_commit,
    update_trust,
)
from policy._tree import read_file
from policy.errors import InvalidGrant


def bootstrap(engine: PolicyEngine, owner: str, seconds: int) -> dict[str, Any]:
    """Make `owner` the holder of every capability and install the default bundle.

    Idempotent: an existing graph entry or active bundle is left as it is.
    """
    objects, refs = engine.objects, engine.refs
    made: dict[str, Any] = {"graph": False, "bundle": None}
    head = refs.get(TRUST_REF)
    if head is None:
        raise InvalidGrant("bootstrap needs the owner's trusted key on refs/gatos/trust first")
    if read_file(objects, objects.read_commit(head).tree, GRAPH_PATH) is None:
        keys = load_trust(objects, head).actors[owner].keys

        def files(_view: object, current: ObjectId | None) -> dict[tuple[str, ...], bytes]:
            assert current is not None
            return {GRAPH_PATH: graph_bytes({
                "version": 1, "audience": f"gatos:{trust_root_commit(objects, current)}",
                "actors": {owner: {"keys": list(keys), "groups": ["owners"], "caps": ["*"]}}})}

        update_trust(objects, refs, files, who=owner, seconds=seconds,
                     subject=f"trust: {owner} owns this node",
                     trailers=[("Actor", owner), ("Trust-Change", "graph")])
        made["graph"] = True
    if refs.get(ACTIVE_REF) is None:
        made["bundle"] = apply_bundle(objects, refs, {DEFAULT_FILE: DEFAULT_RULES}, actor=owner,
                                      seconds=seconds).to_dict()
    engine.refresh()
    return made


def apply_policy(engine: PolicyEngine, sources: dict[str, str], *, actor: str,
                 force: bool = False) -> ApplyResult:
    """`gatos policy apply`: gate `policy:apply`, refuse a bundle that locks `actor` out."""
    engine.check_now(actor, "policy.apply", "bundle")
    now = int(engine.clock())

    def lockout_guard(bundle: Any) -> None:
        after = decide(Request(actor, "policy.apply", "bundle"), bundle, engine.trust, now)
        if not after.allowed and not force:
            raise InvalidGrant(f"under the new bundle {actor} could no longer apply policy "
                               f"({after.rule}: {after.reason}); pass --force to apply it anyway")

    result = apply_bundle(engine.objects, engine.refs, sources, actor=actor, seconds=now,
                          check=lockout_guard)
    engine.refresh()
    return result


def issue_grant(engine: PolicyEngine, key: SigningKey, *, issuer: str, subject: str,
                caps: list[str], exp: int | None) -> dict[str, Any]:
    """`gatos grant`: decided by the gate (`trust:grant`, and no escalation), then committed."""
    engine.check_now(issuer, "trust.grant", subject, {"caps": sorted(caps)})
    now = int(engine.clock())
    trust = engine.trust
    if not trust.known(subject):
        raise InvalidGrant(f"{subject} has no trusted key on this node (gatos key new first)")
    doc, sig = make_grant(key, issuer=issuer, subject=subject, caps=caps, aud=trust.audience,
                          iat=now, exp=exp)
    hexid = doc["grant_id"].split(":", 1)[1]
    commit = update_trust(
        engine.objects, engine.refs,
        lambda _v, _h: {(*GRANTS_DIR, f"{hexid}.json"): canonical_json(doc) + b"\n",
                        (*GRANTS_DIR, f"{hexid}.sig"): sig.encode() + b"\n"},
        who=issuer, seconds=now, subject=f"trust: grant {', '.join(doc['caps'])} to {subject}"[:200],
        trailers=[("Actor", issuer), ("Trust-Change", "grant"), ("Grant-Id", doc["grant_id"])])
    engine.refresh()
    return {"grant_id": doc["grant_id"], "grant": doc, "sig": sig, "commit": commit}


def revoke_grant(engine: PolicyEngine, key: SigningKey, *, revoked_by: str, grant_id: str,
                 reason: str | None) -> dict[str, Any]:
    """`gatos revoke`: decided by the gate (`trust:revoke`); the grant must exist."""
    engine.check_now(revoked_by, "trust.revoke", grant_id)
    if grant_id not in engine.trust.grants and grant_id not in engine.trust.rejected:
        raise InvalidGrant(f"no grant {grant_id} on this node")
    doc, sig = make_revocation(key, grant_id=grant_id, revoked_by=revoked_by, reason=reason)
    hexid = doc["revocation_id"].split(":", 1)[1]
    now = int(engine.clock())
    commit = update_trust(
        engine.objects, engine.refs,
        lambda _v, _h: {(*REVOCATIONS_DIR, f"{hexid}.json"): canonical_json(doc) + b"\n",
                        (*REVOCATIONS_DIR, f"{hexid}.sig"): sig.encode() + b"\n"},
        who=revoked_by, seconds=now, subject=f"trust: revoke {grant_id}",
        trailers=[("Actor", revoked_by), ("Trust-Change", "revoke"), ("Grant-Id", grant_id)])
    engine.refresh()
    return {"revocation_id": doc["revocation_id"], "revocation": doc, "sig": sig, "commit": commit}


def set_groups(engine: PolicyEngine, *, actor: str, member: str, groups: list[str]) -> ObjectId:
    """`gatos trust groups`: set an actor's groups in graph.json (needs `trust:grant`)."""
    engine.check_now(actor, "trust.grant", member, {"groups": sorted(groups)})
    objects = engine.objects

    def files(_view: object, head: ObjectId | None) -> dict[tuple[str, ...], bytes]:
        raw = read_file(objects, objects.read_commit(head).tree, GRAPH_PATH) if head else None
        if raw is None:
            raise InvalidGrant("this node has no trust graph (gatos init)")
        doc = parse_json(raw, "graph.json")
        entry = doc["actors"].setdefault(member, {})
        entry["groups"] = sorted(set(groups))
        return {GRAPH_PATH: graph_bytes(doc)}

    commit = update_trust(objects, engine.refs, files, who=actor, seconds=int(engine.clock()),
                          subject=f"trust: groups of {member}",
                          trailers=[("Actor", actor), ("Trust-Change", "groups")])
    engine.refresh()
    return commit


__all__ = ["apply_policy", "bootstrap", "issue_grant", "revoke_grant", "set_groups"]
