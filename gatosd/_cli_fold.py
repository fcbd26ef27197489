"""`gatos fold`, `gatos fold verify`, `gatos state show`, `gatos state at`.

Folds run in-process (a fold reads journals and writes only `refs/gatos/state/<ns>`,
so it never races the daemon's journal writer). The spec is `--spec PATH`, else the
one file in the node's `gatos/folds/` naming the namespace, else the default fold.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from echo_fold import (
    Folder,
    FoldSpec,
    default_spec,
    find_spec,
    load_spec,
    state_at,
    state_ref,
    verify_checkpoint,
)
from echo_fold._spec import spec_from_value
from echo_fold.errors import SpecError
from gatosd._cli_common import print_json as _print
from gatosd._cli_common import repo_path as _repo
from gatosd.errors import bad_frame
from gatosd.node import Node
from ledger_core import parse_json, validate_namespace
from ledger_core.errors import NotFound

EXIT_OK, EXIT_FAILED = 0, 1


def workdir(node: Node) -> str:
    return (node.repo.repo.workdir or node.repo.git_dir).rstrip("/")


def folder_of(node: Node) -> Folder:
    return Folder(node.repo.objects, node.repo.refs,
                  gate=lambda ns: node.policy.check_now(node.default_actor, "state.checkpoint", ns))


def resolve_spec(node: Node, ns: str, path: str | None, *, root: str | None = None) -> FoldSpec:
    """`path` (absolute, or relative to the cwd / the working tree / its `gatos/`), the
    node's own spec for `ns`, or the default fold. With `root`, files must be inside it."""
    validate_namespace(ns)
    base = workdir(node)
    if path:
        candidates = [path] if os.path.isabs(path) else [
            *([path] if root is None else []), os.path.join(base, path), os.path.join(base, "gatos", path)]
        for candidate in candidates:
            if os.path.isfile(candidate):
                spec = load_spec(candidate, root=root)
                break
        else:
            raise SpecError(f"fold spec {path} not found (looked in {', '.join(candidates)})")
        if spec.ns != ns:
            raise SpecError(f"{path} folds namespace {spec.ns}, not {ns}")
        return spec
    return find_spec(os.path.join(base, "gatos", "folds"), ns) or default_spec(ns)


def cmd_fold(args: argparse.Namespace) -> int:
    repo = _repo(args)
    if args.fold_cmd == "verify":
        return cmd_fold_verify(args)
    if not args.ns:
        raise bad_frame("gatos fold needs --ns NS (or: gatos fold verify REF)")
    node = Node.open(repo)
    spec = resolve_spec(node, args.ns, args.spec)
    result = folder_of(node).fold(spec, incremental=not args.full)
    _print(result.to_dict(args.channel))
    return EXIT_OK


def cmd_fold_verify(args: argparse.Namespace) -> int:
    repo = _repo(args)
    report = verify_checkpoint(folder_of(Node.open(repo)), args.ref, window=args.window)
    if args.json:
        _print(report.to_dict())
    elif report.ok:
        print(f"ok: {report.commit} replays to {report.replayed_state_root} "
              f"({report.events} events, {report.mode})")
    else:
        print(f"FAILED: checkpoint {report.commit} ({report.mode})")
        for problem in report.problems:
            print(f"  {problem}")
    return EXIT_OK if report.ok else EXIT_FAILED


def checkpoint_state(node: Node, ns: str, channel: str | None) -> dict[str, Any]:
    """The newest checkpoint of `ns` as the `state show` / `state.get` answer."""
    folder = folder_of(node)
    cp = folder.latest(ns)
    if cp is None:
        raise NotFound(f"no checkpoint at {state_ref(ns)}: run `gatos fold --ns {ns}` first")
    spec = spec_from_value(parse_json(cp.tree["fold/spec.json"]), cp.tree["fold/program.lua"])
    state = folder.stored_state(cp, ns, spec.channels)
    out: dict[str, Any] = {"ns": ns, "commit": cp.commit, "state_root": cp.first("State-Root"),
                           "fold_id": spec.fold_id, "fold_version": spec.version,
                           "events": int(cp.first("Fold-Events") or 0), "channels": list(spec.channels)}
    if channel is None:
        out["state"] = state
    elif channel not in state:
        raise NotFound(f"checkpoint {cp.commit} has no channel {channel!r} "
                       f"(it has {', '.join(spec.channels)})")
    else:
        out["channel"], out["value"] = channel, state[channel]
    return out


def cmd_state_show(args: argparse.Namespace) -> int:
    repo = _repo(args)
    _print(checkpoint_state(Node.open(repo), validate_namespace(args.ns), args.channel))
    return EXIT_OK


def cmd_state_at(args: argparse.Namespace) -> int:
    repo = _repo(args)
    node = Node.open(repo)
    spec = resolve_spec(node, args.ns, args.spec)
    result = state_at(folder_of(node), spec, args.event)
    if args.channel is not None and args.channel not in result.state:
        raise NotFound(f"the fold has no channel {args.channel!r}")
    _print(result.to_dict(args.channel))
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    """Add `fold` and `state` to the `gatos` parser (called by gatosd.cli)."""
    fold = sub.add_parser("fold", help="fold a namespace into a state checkpoint; `fold verify REF`")
    fold.add_argument("--ns")
    fold.add_argument("--spec", help="fold spec YAML (default: gatos/folds/*.yaml naming NS, "
                                     "else the default fold)")
    fold.add_argument("--channel", help="also print this channel's value")
    fold.add_argument("--full", action="store_true", help="fold from scratch, not from the last checkpoint")
    fold.set_defaults(func=cmd_fold, fold_cmd=None)
    fsub = fold.add_subparsers(dest="fold_cmd")
    verify = fsub.add_parser("verify", help="Proof-of-Fold: replay a checkpoint and compare State-Root")
    verify.add_argument("ref", help="refs/gatos/state/NS, NS, or a checkpoint commit id")
    verify.add_argument("--window", choices=("scratch", "base"), default="scratch",
                        help="replay from the first event (default) or from the declared base checkpoint")
    verify.add_argument("--json", action="store_true")

    state = sub.add_parser("state", help="read folded state").add_subparsers(dest="state_cmd", required=True)
    show = state.add_parser("show", help="the newest checkpoint of a namespace")
    show.add_argument("ns")
    show.add_argument("--channel")
    show.set_defaults(func=cmd_state_show)
    from gatosd._cli_cache import add_state_get  # one key through the KV view (kv_cache)
    add_state_get(state)
    at = state.add_parser("at", help="the state as of one event (time travel)")
    at.add_argument("--ns", required=True)
    at.add_argument("--event", required=True, help="Event-CID, ULID or journal commit")
    at.add_argument("--spec")
    at.add_argument("--channel")
    at.set_defaults(func=cmd_state_at)
