"""`gatos remote`, `gatos sync`, `gatos clone` and `gatos hub init`: many nodes, one history."""

from __future__ import annotations

import argparse
import os
import subprocess
from typing import Any

from gatosd._cli_common import print_json, repo_path
from gatosd._sync import (
    CONFLICT_NS,
    CONFLICT_TYPE,
    Syncer,
    SyncError,
    SyncReport,
    UnknownRemote,
    add_remote,
    default_remote,
    fork_absorbed,
    list_remotes,
    remove_remote,
)
from gatosd.node import CONFIG_ACTOR, Node
from ledger_core import validate_actor


def syncer_for(node: Node) -> Syncer:
    """A `Syncer` over the node's parts; new forks are recorded as `governance.conflict`
    events by the node's own actor (the gate decides them like any other append)."""

    def record(info: dict[str, str]) -> str:
        result = node.add_event(CONFLICT_NS, type=CONFLICT_TYPE, payload=dict(info))
        return str(result.commit)

    return Syncer(node.repo.repo, node.repo.refs, node.repo.objects, node.trust,
                  record_conflict=record if node.repo.config_get(CONFIG_ACTOR) else None)


def sync_node(node: Node, remote: str | None = None, *, push: bool = True) -> SyncReport:
    """One sync with a configured remote (`gatos remote add`); unknown names are NOT_FOUND."""
    name = remote or default_remote(node.repo.git_dir)
    if name not in {r["name"] for r in list_remotes(node.repo.git_dir)}:
        raise UnknownRemote(f"no remote named {name!r} (gatos remote add {name} URL)")
    return syncer_for(node).sync(name, push=push)


def cmd_remote_add(args: argparse.Namespace) -> int:
    node = Node.open(repo_path(args))
    print_json(add_remote(node.repo.git_dir, args.name, args.url))
    return 0


def cmd_remote_list(args: argparse.Namespace) -> int:
    node = Node.open(repo_path(args))
    for row in list_remotes(node.repo.git_dir):
        print_json(row)
    return 0


def cmd_remote_remove(args: argparse.Namespace) -> int:
    node = Node.open(repo_path(args))
    remove_remote(node.repo.git_dir, args.name)
    print_json({"removed": args.name})
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    node = Node.open(repo_path(args))
    report = sync_node(node, args.remote, push=not args.no_push)
    print_json(report.to_dict())
    return 0 if report.ok else 1


def clone_node(url: str, directory: str, actor: str | None) -> dict[str, Any]:
    """`git clone` a node or hub with all of refs/gatos/*, then make this node's key.

    The clone keeps the origin's trust graph and policy (it is the same deployment); the
    new actor's public key is added to the trust graph here and reaches the others at
    the next sync. It may write once an actor holding `trust:grant` grants it
    capabilities (trust and grants replicate like everything else).
    """
    if os.path.exists(directory) and os.listdir(directory):
        raise SyncError(f"{directory} exists and is not empty")
    proc = subprocess.run(["git", "clone", "--quiet", "--no-tags", url, directory], capture_output=True,
                          env=dict(os.environ, GIT_TERMINAL_PROMPT="0"), check=False)
    if proc.returncode != 0:
        raise SyncError(f"git clone {url} failed: {proc.stderr.decode('utf-8', 'replace').strip()[-800:]}")
    node = Node.open(directory)
    git_dir = node.repo.git_dir
    subprocess.run(["git", "--git-dir", git_dir, "remote", "remove", "origin"], capture_output=True, check=True)
    add_remote(git_dir, "origin", url)
    first = sync_node(node, "origin", push=False)
    if first.refused:
        raise SyncError("the origin's history does not verify: "
                        + "; ".join(f"{r['ref']}: {r['reason']}" for r in first.refused[:5]))
    out: dict[str, Any] = {"repo": os.path.abspath(directory), "remote": "origin", "url": url,
                           "refs": first.fetched}
    if actor:
        actor = validate_actor(actor)
        node.repo.config_set(CONFIG_ACTOR, actor)
        public_key, created = node.ensure_key(actor, by=actor)
        out.update(actor=actor, public_key=public_key, created_key=created)
        pushed = sync_node(node, "origin")
        out["published"] = pushed.ok
    return out


def resolve_fork(node: Node, fork: str, *, replay: bool) -> dict[str, Any]:
    """An operator's decision on a journal fork: take the side other nodes have.

    The journal moves to the kept remote side (the one the hub holds). The local side is
    kept in turn under `refs/gatos/forks/…/<local head>`, so nothing is lost. With
    `replay`, the local-only events are appended again, byte for byte the same signed
    envelopes (same CIDs and signatures), on top of the remote side. Their commits are
    new, and events whose ULID the remote side already has are skipped as duplicates.
    The gate decides each of them as usual. The move is recorded as a
    `governance.resolved` event.
    """
    from gatosd._refclass import FORKS_PREFIX, Kind, classify, fork_ref, forked_ref
    from ledger_core import RefName, parse_journal_ref, read_range

    if not fork.startswith(FORKS_PREFIX):
        raise SyncError(f"{fork} is not a kept fork (refs/gatos/forks/…)")
    ref, theirs = forked_ref(fork)
    if classify(ref) is not Kind.JOURNAL:
        raise SyncError(f"only journal forks are resolved here; {ref} is a {classify(ref).value} ref")
    ns, _owner = parse_journal_ref(ref)
    refs, repo = node.repo.refs, node.repo.repo
    if refs.get(RefName(fork)) != theirs:
        raise SyncError(f"{fork} does not hold {theirs}")
    mine = refs.get(RefName(ref))
    if mine is None or mine == theirs or repo.descendant_of(mine, theirs):
        raise SyncError(f"{ref} already contains {theirs[:12]}: nothing to resolve")
    base = repo.merge_base(mine, theirs)
    local_only = read_range(node.repo.objects, mine, after=str(base) if base else None)  # type: ignore[arg-type]
    kept = fork_ref(ref, mine)
    if refs.get(RefName(kept)) is None:
        refs.compare_and_swap(RefName(kept), None, mine)  # type: ignore[arg-type]
    refs.compare_and_swap(RefName(ref), mine, theirs)  # type: ignore[arg-type]
    replayed = []
    if replay:
        for entry in local_only:
            result = node.append(ns, entry.signed)
            replayed.append({"ulid": result.ulid, "commit": result.commit, "duplicate": result.duplicate})
    info = {"ref": ref, "took": theirs, "kept_local_at": kept, "local": mine,
            "local_only_events": len(local_only), "replayed": len(replayed)}
    if node.repo.config_get(CONFIG_ACTOR):
        info["event"] = str(node.add_event(CONFLICT_NS, type="governance.resolved", payload=dict(
            {k: v for k, v in info.items() if isinstance(v, (str, int))})).commit)
    return {**info, "replayed_events": replayed}


def cmd_fork_resolve(args: argparse.Namespace) -> int:
    print_json(resolve_fork(Node.open(repo_path(args)), args.fork, replay=args.replay))
    return 0


def cmd_fork_list(args: argparse.Namespace) -> int:
    from gatosd._refclass import FORKS_PREFIX, forked_ref

    node = Node.open(repo_path(args))
    for fork, oid in node.repo.refs.list(FORKS_PREFIX).items():
        ref, _ = forked_ref(fork)
        current = node.repo.refs.get(ref)  # type: ignore[arg-type]
        absorbed = fork_absorbed(node.repo.repo, node.repo.objects, ref, oid, current)
        print_json({"fork": fork, "ref": ref, "kept": oid, "current": current, "resolved": absorbed})
    return 0


def cmd_clone(args: argparse.Namespace) -> int:
    print_json(clone_node(args.url, args.dir, args.actor))
    return 0


def cmd_hub_init(args: argparse.Namespace) -> int:
    from gatosd._hub import init_hub

    print_json(init_hub(args.path))
    return 0


def add_parsers(sub: Any) -> None:
    remote = sub.add_parser("remote", help="remotes this node syncs with").add_subparsers(
        dest="remote_cmd", required=True)
    p = remote.add_parser("add", help="add a remote (a hub or another node) for refs/gatos/*")
    p.add_argument("name")
    p.add_argument("url")
    p.set_defaults(func=cmd_remote_add)
    p = remote.add_parser("list", help="the remotes, one JSON line each")
    p.set_defaults(func=cmd_remote_list)
    p = remote.add_parser("remove", help="forget a remote")
    p.add_argument("name")
    p.set_defaults(func=cmd_remote_remove)

    p = sub.add_parser("sync", help="fetch refs/gatos/* from a remote, verify and adopt, push what is ours")
    p.add_argument("remote", nargs="?", help="remote name (default: gatos.remote, the only remote, or origin)")
    p.add_argument("--no-push", action="store_true", help="only fetch and adopt")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("clone", help="clone a node or hub with all of refs/gatos/* and make this node's key")
    p.add_argument("url")
    p.add_argument("dir")
    p.add_argument("--actor", help="this node's actor (user:NAME); its key is made and published")
    p.set_defaults(func=cmd_clone)

    fork = sub.add_parser("fork", help="kept sides of diverged histories").add_subparsers(
        dest="fork_cmd", required=True)
    p = fork.add_parser("list", help="every kept fork, and whether its ref has absorbed it (JSON lines)")
    p.set_defaults(func=cmd_fork_list)
    p = fork.add_parser("resolve", help="move a forked journal to the kept (hub's) side; the local "
                                        "side is kept in turn")
    p.add_argument("fork", help="refs/gatos/forks/journal/<ns>/<kind>/<name>/<oid>")
    p.add_argument("--replay", action="store_true",
                   help="append the local-only events again on top (same signed bytes, new commits)")
    p.set_defaults(func=cmd_fork_resolve)

    hub = sub.add_parser("hub", help="the push-gate hub").add_subparsers(dest="hub_cmd", required=True)
    p = hub.add_parser("init", help="create a bare hub repository with the pre-receive push-gate")
    p.add_argument("path")
    p.set_defaults(func=cmd_hub_init)


__all__ = ["add_parsers", "clone_node", "sync_node", "syncer_for"]
