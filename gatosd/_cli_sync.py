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

    hub = sub.add_parser("hub", help="the push-gate hub").add_subparsers(dest="hub_cmd", required=True)
    p = hub.add_parser("init", help="create a bare hub repository with the pre-receive push-gate")
    p.add_argument("path")
    p.set_defaults(func=cmd_hub_init)


__all__ = ["add_parsers", "clone_node", "sync_node", "syncer_for"]
