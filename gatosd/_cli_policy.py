"""`gatos grant`, `gatos revoke`, `gatos policy apply|show|test`, `gatos audit log|replay`, `gatos trust`.

These commands change or read `refs/gatos/policies/*`, `refs/gatos/trust` and
`refs/gatos/audit/policy` (never a journal), so they always run in-process, beside a
running daemon: each ref moves by compare-and-swap, and the daemon's writer picks
the new bundle or trust view up on its next batch. Every change is decided by the
gate first, acting as `--as ACTOR` (default: the node's actor) with its node-held key.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from gatosd._cli_common import print_json as _out
from gatosd.node import Node
from ledger_core import normalize_actor, parse_json
from ledger_core.errors import LedgerError
from policy import (
    ACTIVE_REF,
    DEFAULT_FILE,
    Bundle,
    InvalidPolicy,
    Request,
    apply_policy,
    compile_sources,
    decide,
    issue_grant,
    parse_time,
    read_log,
    replay,
    revoke_grant,
    set_groups,
)

EXIT_OK, EXIT_DIFFER, EXIT_ERROR = 0, 1, 2


def _node(args: argparse.Namespace) -> Node:
    return Node.open(args.repo or os.environ.get("GATOS_REPO") or os.getcwd())


def _actor(node: Node, args: argparse.Namespace) -> str:
    return normalize_actor(args.as_actor) if getattr(args, "as_actor", None) else node.default_actor


def read_sources(path: str) -> dict[str, str]:
    """`*.rules` files of a folder (or one file) → {name: text}."""
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.endswith(".rules"))
        files = {n: os.path.join(path, n) for n in names}
    elif os.path.isfile(path):
        files = {os.path.basename(path): path}
    else:
        raise InvalidPolicy(f"no policy files at {path}")
    if not files:
        raise InvalidPolicy(f"no *.rules files in {path}")
    out = {}
    for name, full in files.items():
        with open(full, encoding="utf-8") as handle:
            out[name] = handle.read()
    return out


def _policy_dir(node: Node) -> str:
    root = node.repo.repo.workdir or node.repo.git_dir
    return os.path.join(root, "gatos", "policies")


def cmd_grant(args: argparse.Namespace) -> int:
    node = _node(args)
    issuer = _actor(node, args)
    caps = [c.strip() for c in args.caps.split(",") if c.strip()]
    exp = parse_time(args.exp, "--exp") if args.exp else None
    _out(issue_grant(node.policy, node.signing_key(issuer), issuer=issuer,
                     subject=normalize_actor(args.to), caps=caps, exp=exp))
    return EXIT_OK


def cmd_revoke(args: argparse.Namespace) -> int:
    node = _node(args)
    actor = _actor(node, args)
    _out(revoke_grant(node.policy, node.signing_key(actor), revoked_by=actor,
                      grant_id=args.grant_id, reason=args.reason))
    return EXIT_OK


def cmd_policy_apply(args: argparse.Namespace) -> int:
    node = _node(args)
    sources = read_sources(args.path or _policy_dir(node))
    _out(apply_policy(node.policy, sources, actor=_actor(node, args), force=args.force).to_dict())
    return EXIT_OK


def cmd_policy_show(args: argparse.Namespace) -> int:
    node = _node(args)
    node.policy.refresh()
    stored = node.policy.stored
    if stored is None:
        _out({"active": None, "ref": str(ACTIVE_REF), "error": node.policy.bundle_error})
        return EXIT_OK
    info = {"active": stored.commit, "bundle_id": stored.bundle.bundle_id, "code_root": stored.code_root,
            "audit": stored.bundle.canonical["audit"], "rules": stored.bundle.canonical["rules"]}
    if args.json:
        _out(info)
    else:
        print(f"bundle {info['bundle_id']} (commit {stored.commit}, audit {info['audit']})")
        for name, text in sorted(stored.sources.items()):
            for number, line in enumerate(text.splitlines(), start=1):
                print(f"{name}:{number}: {line}")
    return EXIT_OK


def _requests(path: str) -> list[dict[str, Any]]:
    with (sys.stdin.buffer if path == "-" else open(path, "rb")) as handle:
        data = handle.read()
    text = data.decode("utf-8").strip()
    if text.startswith("["):
        rows = parse_json(text, "requests")
    else:
        rows = [parse_json(line, "request") for line in text.splitlines() if line.strip()]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InvalidPolicy("requests must be JSON objects {actor, action, target, payload?, expect?}")
    return rows


def cmd_policy_test(args: argparse.Namespace) -> int:
    """A table of requests → decisions, under the active bundle or `--bundle PATH`."""
    node = _node(args)
    engine = node.policy
    engine.refresh()
    bundle: Bundle | None = engine.bundle
    if args.bundle:
        bundle = Bundle.from_canonical(compile_sources(read_sources(args.bundle)))
    if args.requests:
        rows = _requests(args.requests)
    elif args.actor and args.action and args.target:
        rows = [{"actor": args.actor, "action": args.action, "target": args.target}]
    else:
        raise InvalidPolicy("give a requests file (JSON lines) or --actor, --action and --target")
    now = parse_time(args.at, "--at") if args.at else int(engine.clock())
    failures = 0
    for row in rows:
        request = Request(normalize_actor(row["actor"]), row["action"], row["target"],
                          row.get("payload"), row.get("type"))
        got = decide(request, bundle, engine.trust, now)
        verdict = "allow" if got.allowed else "deny"
        expect = row.get("expect")
        ok = expect is None or expect == verdict
        failures += not ok
        if args.json:
            _out({"request": request.to_value(), "decision": got.to_value(),
                  **({"expect": expect, "pass": ok} if expect is not None else {})})
        else:
            mark = "" if expect is None else ("  ok" if ok else f"  FAIL (expected {expect})")
            print(f"{verdict.upper():<5} {request.actor:<24} {request.action:<16} {request.target:<20} "
                  f"{got.rule}  {got.reason}{mark}")
    return EXIT_DIFFER if failures else EXIT_OK


def cmd_audit_log(args: argparse.Namespace) -> int:
    node = _node(args)
    for oid, rec in read_log(node.repo.objects, node.repo.refs, args.limit):
        if args.json:
            _out({"commit": oid, **rec.to_value()})
        else:
            t = rec.trailers()
            fields = dict(t)
            print(f"{oid[:12]} {fields['Decided-At']} {fields['Decision']:<5} {rec.request.actor} "
                  f"{rec.request.action} {rec.request.target} [{rec.decision.rule}] {rec.decision.reason}")
    return EXIT_OK


def cmd_audit_replay(args: argparse.Namespace) -> int:
    node = _node(args)
    engine = node.policy
    current = None
    if args.current:
        engine.refresh()
        current = (engine.bundle, engine.trust, int(engine.clock()))
    report = replay(node.repo.objects, node.repo.refs, current=current)
    _out(report)
    return EXIT_OK if report["ok"] or args.current else EXIT_DIFFER


def cmd_trust_show(args: argparse.Namespace) -> int:
    node = _node(args)
    node.policy.refresh()
    view = node.policy.trust
    now = int(node.policy.clock())
    _out({
        "root": view.root, "audience": view.audience, "error": view.error,
        "actors": {a: {"keys": list(i.keys), "groups": list(i.groups), "caps": list(i.caps)}
                   for a, i in sorted(view.actors.items())},
        "grants": [{**g.doc, "counts": (p := view.grant_problem(g, now)) is None, "problem": p}
                   for g in view.grants.values()],
        "rejected": {gid: why for gid, (_s, why) in sorted(view.rejected.items())},
    })
    return EXIT_OK


def cmd_trust_groups(args: argparse.Namespace) -> int:
    node = _node(args)
    groups = [g.strip().lstrip("@") for g in args.groups.split(",") if g.strip()]
    commit = set_groups(node.policy, actor=_actor(node, args), member=normalize_actor(args.member),
                        groups=groups)
    _out({"member": normalize_actor(args.member), "groups": sorted(set(groups)), "commit": commit})
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    """Register the policy, trust and audit commands on the `gatos` parser."""
    p = sub.add_parser("grant", help="grant capabilities to an actor (signed, committed on refs/gatos/trust)")
    p.add_argument("--to", required=True, help="subject actor")
    p.add_argument("--caps", required=True, help="CAP[,CAP…], `*` wildcards")
    p.add_argument("--exp", help="expiry, RFC 3339 UTC (e.g. 2030-01-01T00:00:00Z)")
    p.add_argument("--as", dest="as_actor", help="issuer (default: the node's actor)")
    p.set_defaults(func=cmd_grant)

    p = sub.add_parser("revoke", help="revoke a grant by id")
    p.add_argument("grant_id")
    p.add_argument("--reason")
    p.add_argument("--as", dest="as_actor")
    p.set_defaults(func=cmd_revoke)

    pol = sub.add_parser("policy", help="policy bundles").add_subparsers(dest="policy_cmd", required=True)
    p = pol.add_parser("apply", help=f"compile *.rules (default gatos/policies/, e.g. {DEFAULT_FILE}) "
                                     "and make the bundle active")
    p.add_argument("path", nargs="?")
    p.add_argument("--as", dest="as_actor")
    p.add_argument("--force", action="store_true", help="apply even if it locks the applier out")
    p.set_defaults(func=cmd_policy_apply)
    p = pol.add_parser("show", help="the active bundle")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_policy_show)
    p = pol.add_parser("test", help="decide a table of requests (nothing is written)")
    p.add_argument("requests", nargs="?",
                   help="JSON lines or array of {actor, action, target, payload, expect}")
    p.add_argument("--actor")
    p.add_argument("--action")
    p.add_argument("--target")
    p.add_argument("--bundle", help="decide under these *.rules instead of the active bundle")
    p.add_argument("--at", help="decide at this time (RFC 3339 UTC) instead of now")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_policy_test)

    aud = sub.add_parser("audit", help="the audit of gate decisions").add_subparsers(dest="audit_cmd",
                                                                                    required=True)
    p = aud.add_parser("log", help="recorded decisions, newest first")
    p.add_argument("--limit", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit_log)
    p = aud.add_parser("replay", help="re-decide recorded decisions; exit 1 if any differs")
    p.add_argument("--current", action="store_true",
                   help="decide under the active bundle and trust now (report only)")
    p.set_defaults(func=cmd_audit_replay)

    tr = sub.add_parser("trust", help="the trust graph").add_subparsers(dest="trust_cmd", required=True)
    p = tr.add_parser("show", help="actors, keys, groups, caps and grants")
    p.set_defaults(func=cmd_trust_show)
    p = tr.add_parser("groups", help="set an actor's groups (e.g. leads) in graph.json")
    p.add_argument("member")
    p.add_argument("groups", help="GROUP[,GROUP…]")
    p.add_argument("--as", dest="as_actor")
    p.set_defaults(func=cmd_trust_groups)


__all__ = ["add_parsers", "read_sources"]
_ = LedgerError
