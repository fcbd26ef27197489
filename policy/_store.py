"""Policy bundles and the trust graph in Git, through the ledger's ports.

Bundles. A bundle commit's tree holds `policy.json` (the canonical form, exactly the
bytes whose BLAKE3 is the bundle id) and `src/<file>.rules` (the text it came from).
Its trailers: `Policy-Root: blake3:<bundle-id>` and `Policy-Code-Root: sha256:<hex>`
(SHA-256 of the commit's tree object, the value `echo_fold` records in checkpoints).
Applying a bundle makes a commit whose parent is the active one and moves
`refs/gatos/policies/active` by compare-and-swap, then `refs/gatos/policies/<id>`;
both only ever fast-forward (`move_fast_forward` refuses anything else).

Trust. `refs/gatos/trust` (the ledger's key ref) also carries
`gatos/trust/graph.json` (audience, actors' keys, groups and intrinsic caps),
`gatos/trust/grants/<hex>.json|.sig` and `gatos/trust/revocations/<hex>.json|.sig`.
One ref for keys, graph and grants means one value decides whether the gate's
cached view is current.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ledger_core import (
    TRUST_REF,
    ObjectId,
    ObjectStore,
    PublicKeyText,
    RefName,
    RefStore,
    canonical_json,
    parse_json,
    parse_public_key,
    validate_actor,
)
from ledger_core.errors import Conflict, LedgerError, NotFastForward, RefConflict
from policy._caps import validate_pattern
from policy._decide import Bundle
from policy._grants import Grant, Revocation, check_grant, check_revocation
from policy._rules import compile_sources
from policy._tree import MODE_BLOB, MODE_TREE, commit_object, entries_at, read_file, with_files
from policy._trustview import ActorInfo, TrustView
from policy.errors import InvalidGrant, InvalidPolicy

POLICY_PREFIX = "refs/gatos/policies/"
ACTIVE_REF = RefName("refs/gatos/policies/active")
GRAPH_PATH = ("gatos", "trust", "graph.json")
GRANTS_DIR = ("gatos", "trust", "grants")
REVOCATIONS_DIR = ("gatos", "trust", "revocations")
ACTORS_DIR = ("gatos", "trust", "actors")
ZERO = "0" * 40
TRIES = 20


def bundle_ref(bundle_id: str) -> RefName:
    return RefName(POLICY_PREFIX + bundle_id)


def is_ancestor(objects: ObjectStore, old: ObjectId, new: ObjectId, limit: int = 100_000) -> bool:
    """Whether `old` is `new` or one of its ancestors (first parents: policy history is linear)."""
    oid: ObjectId | None = new
    for _ in range(limit):
        if oid is None:
            return False
        if oid == old:
            return True
        parents = objects.read_commit(oid).parents
        oid = parents[0] if parents else None
    return False


def move_fast_forward(objects: ObjectStore, refs: RefStore, ref: RefName,
                      expected: ObjectId | None, new: ObjectId) -> None:
    """Compare-and-swap `ref` from `expected` to `new`, only as a fast-forward.

    Raises:
        NotFastForward: `expected` is not an ancestor of `new`; the ref is unchanged.
        RefConflict: the ref is not at `expected`; unchanged.
    """
    if expected is not None and not is_ancestor(objects, expected, new):
        raise NotFastForward(f"{ref}: {new} does not descend from {expected}; refused")
    refs.compare_and_swap(ref, expected, new)


# -- bundles ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredBundle:
    commit: ObjectId
    bundle: Bundle
    code_root: str
    sources: dict[str, str]


def load_bundle(objects: ObjectStore, commit_oid: ObjectId) -> StoredBundle:
    """The bundle of a bundle commit, checked against its `Policy-Root` trailer."""
    commit = objects.read_commit(commit_oid)
    data = read_file(objects, commit.tree, ("policy.json",))
    if data is None:
        raise InvalidPolicy(f"{commit_oid} is not a policy bundle commit (no policy.json)")
    bundle = Bundle.from_canonical(parse_json(data, "policy.json"))
    if commit.trailers.get("Policy-Root") != f"blake3:{bundle.bundle_id}" \
            or bundle.canonical_bytes != data:
        raise InvalidPolicy(f"bundle commit {commit_oid}: policy.json does not match its Policy-Root")
    sources = {e.name: objects.read_blob(e.oid).decode("utf-8")
               for e in entries_at(objects, commit.tree, ("src",)) if e.mode == MODE_BLOB}
    tree_data = objects.read(commit.tree).data
    return StoredBundle(commit_oid, bundle, "sha256:" + hashlib.sha256(tree_data).hexdigest(), sources)


@dataclass(frozen=True)
class ApplyResult:
    bundle_id: str
    commit: ObjectId
    previous: ObjectId | None
    changed: bool
    rules: int

    def to_dict(self) -> dict[str, Any]:
        return {"bundle_id": self.bundle_id, "commit": self.commit, "previous": self.previous,
                "changed": self.changed, "rules": self.rules,
                "ref": bundle_ref(self.bundle_id), "active": str(ACTIVE_REF)}


def apply_bundle(objects: ObjectStore, refs: RefStore, sources: dict[str, str], *, actor: str,
                 seconds: int, check: Callable[[Bundle], None] | None = None) -> ApplyResult:
    """Compile `sources`, commit the bundle on the active one and move both refs (CAS, FF).

    `check` sees the compiled bundle before anything is written (the CLI's lock-out
    guard). Applying the bundle that is already active changes nothing.
    """
    canonical = compile_sources(sources)
    bundle = Bundle.from_canonical(canonical)
    if check is not None:
        check(bundle)
    for _ in range(TRIES):
        head = refs.get(ACTIVE_REF)
        if head is not None and load_bundle(objects, head).bundle.bundle_id == bundle.bundle_id:
            return ApplyResult(bundle.bundle_id, head, head, False, len(bundle.rules))
        files = {("policy.json",): bundle.canonical_bytes}
        files.update({("src", name): text.encode("utf-8") for name, text in sources.items()})
        made, tree = with_files(objects, None, files)
        tree_data = next(o.data for o in made if o.oid == tree)
        commit = commit_object(tree, head, "gatos-policy", seconds,
                               f"policy: bundle {bundle.bundle_id[:16]}", [
                                   ("Policy-Root", f"blake3:{bundle.bundle_id}"),
                                   ("Policy-Code-Root", "sha256:" + hashlib.sha256(tree_data).hexdigest()),
                                   ("Actor", actor)])
        objects.write_many([*made, commit])
        try:
            move_fast_forward(objects, refs, ACTIVE_REF, head, commit.oid)
        except RefConflict:
            continue
        ref = bundle_ref(bundle.bundle_id)
        old = refs.get(ref)
        move_fast_forward(objects, refs, ref, old, commit.oid)
        return ApplyResult(bundle.bundle_id, commit.oid, head, True, len(bundle.rules))
    raise Conflict(f"{ACTIVE_REF} kept moving; bundle not applied")


# -- trust ------------------------------------------------------------------------------

SigCache = dict[tuple[str, str, tuple[str, ...]], "Grant | Revocation | str"]


def _keys(objects: ObjectStore, tree: ObjectId) -> dict[str, tuple[PublicKeyText, ...]]:
    found: dict[str, tuple[PublicKeyText, ...]] = {}
    for kind in entries_at(objects, tree, ACTORS_DIR):
        if kind.mode != MODE_TREE:
            continue
        for entry in objects.read_tree(kind.oid):
            doc = orjson.loads(objects.read_blob(entry.oid))
            found[validate_actor(doc.get("actor"))] = tuple(PublicKeyText(k) for k in doc.get("keys", []))
    return found


def _graph(raw: bytes | None, keys: dict[str, tuple[PublicKeyText, ...]]) -> tuple[str, dict[str, ActorInfo]]:
    actors = {actor: ActorInfo(keys=k) for actor, k in keys.items()}
    if raw is None:
        return "", actors
    doc = parse_json(raw, "graph.json")
    if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("actors"), dict):
        raise InvalidGrant("graph.json is not a v1 trust graph")
    for actor, info in doc["actors"].items():
        validate_actor(actor)
        if not isinstance(info, dict) or set(info) - {"keys", "groups", "caps"}:
            raise InvalidGrant(f"graph.json: bad entry for {actor}")
        listed = info.get("keys", [])
        for key in listed:
            parse_public_key(key)
            if key not in keys.get(actor, ()):
                raise InvalidGrant(f"graph.json lists key {key[:24]}… for {actor}, "
                                   "which is not one of its trusted keys")
        groups = tuple(sorted(info.get("groups", [])))
        caps = tuple(sorted(validate_pattern(c) for c in info.get("caps", [])))
        actors[actor] = ActorInfo(keys.get(actor, ()), groups, caps)
    return str(doc.get("audience", "")), actors


def _pairs(objects: ObjectStore, tree: ObjectId, path: tuple[str, ...]
           ) -> dict[str, tuple[ObjectId, bytes, str]]:
    """`<hex>.json` + `<hex>.sig` pairs of a folder: hex → (json blob oid, json bytes, sig text)."""
    entries = {e.name: e for e in entries_at(objects, tree, path) if e.mode == MODE_BLOB}
    out = {}
    for name, entry in entries.items():
        if name.endswith(".json") and (sig := entries.get(name[:-5] + ".sig")) is not None:
            out[name[:-5]] = (entry.oid, objects.read_blob(entry.oid),
                              objects.read_blob(sig.oid).decode("ascii", "replace").strip())
    return out


def load_trust(objects: ObjectStore, head: ObjectId | None, cache: SigCache | None = None) -> TrustView:
    """The trust view of one commit of `refs/gatos/trust` (an empty view before any).

    Signature checks are remembered in `cache` (keyed by document blob, signature and
    keys), so reloading after one new grant verifies only that grant.
    """
    if head is None:
        return TrustView(root=ZERO)
    cache = {} if cache is None else cache
    try:
        tree = objects.read_commit(head).tree
        keys = _keys(objects, tree)
        audience, actors = _graph(read_file(objects, tree, GRAPH_PATH), keys)
    except LedgerError as exc:
        return TrustView(root=head, error=exc.reason)
    except (ValueError, TypeError, AttributeError) as exc:
        return TrustView(root=head, error=f"malformed trust document: {exc}")
    grants: dict[str, Grant] = {}
    rejected: dict[str, tuple[str | None, str]] = {}
    for hexid, (oid, data, sig) in sorted(_pairs(objects, tree, GRANTS_DIR).items()):
        claimed: dict[str, Any] = {}
        try:
            claimed = parse_json(data, "grant")
            issuer = str(claimed.get("issuer"))
            key = (oid, sig, tuple(keys.get(issuer, ())))
            checked = cache.get(key)
            if checked is None:
                try:
                    checked = check_grant(claimed, sig, list(key[2]))
                except InvalidGrant as exc:
                    checked = exc.reason
                cache[key] = checked
            if isinstance(checked, str):
                raise InvalidGrant(checked)
            assert isinstance(checked, Grant)
            if checked.grant_id != f"blake3:{hexid}":
                raise InvalidGrant(f"stored under {hexid}, but its id is {checked.grant_id}")
            grants[checked.grant_id] = checked
        except (LedgerError, AttributeError) as exc:
            subject = claimed.get("subject") if isinstance(claimed, dict) else None
            rejected[f"blake3:{hexid}"] = (subject if isinstance(subject, str) else None,
                                           getattr(exc, "reason", str(exc)))
    revocations: dict[str, list[Revocation]] = {}
    for _hexid, (oid, data, sig) in sorted(_pairs(objects, tree, REVOCATIONS_DIR).items()):
        try:
            doc = parse_json(data, "revocation")
            by = str(doc.get("revoked_by"))
            key = (oid, sig, tuple(keys.get(by, ())))
            checked = cache.get(key)
            if checked is None:
                try:
                    checked = check_revocation(doc, sig, list(key[2]))
                except InvalidGrant as exc:
                    checked = exc.reason
                cache[key] = checked
            if isinstance(checked, Revocation):
                revocations.setdefault(checked.grant_id, []).append(checked)
        except (LedgerError, AttributeError):
            continue  # an unusable revocation revokes nothing; `gatos trust show` lists it
    return TrustView(root=head, audience=audience, actors=actors, grants=grants,
                     revocations={k: tuple(v) for k, v in revocations.items()}, rejected=rejected)


def update_trust(objects: ObjectStore, refs: RefStore, files: Callable[[TrustView | None, ObjectId | None],
                 dict[tuple[str, ...], bytes]], *, who: str, seconds: int, subject: str,
                 trailers: list[tuple[str, str]]) -> ObjectId:
    """Commit new trust files on `refs/gatos/trust` by compare-and-swap (retried on a race).

    `files(None, head)` returns the paths to write, computed from the current head.
    """
    for _ in range(TRIES):
        head = refs.get(TRUST_REF)
        wanted = files(None, head)
        root = objects.read_commit(head).tree if head else None
        made, tree = with_files(objects, root, wanted)
        commit = commit_object(tree, head, who, seconds, subject, trailers)
        objects.write_many([*made, commit])
        try:
            refs.compare_and_swap(TRUST_REF, head, commit.oid)
        except RefConflict:
            continue
        return commit.oid
    raise Conflict(f"{TRUST_REF} kept moving; trust not updated")


def trust_root_commit(objects: ObjectStore, head: ObjectId) -> ObjectId:
    """The first commit of the trust history (the node's identity for grant audiences)."""
    oid = head
    while True:
        parents = objects.read_commit(oid).parents
        if not parents:
            return oid
        oid = parents[0]


def graph_bytes(doc: dict[str, Any]) -> bytes:
    return canonical_json(doc) + b"\n"


__all__ = ["ACTIVE_REF", "GRANTS_DIR", "GRAPH_PATH", "POLICY_PREFIX", "REVOCATIONS_DIR",
           "ApplyResult", "SigCache", "StoredBundle", "apply_bundle", "bundle_ref", "graph_bytes",
           "is_ancestor", "load_bundle", "load_trust", "move_fast_forward", "trust_root_commit",
           "update_trust"]
