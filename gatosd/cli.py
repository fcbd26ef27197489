"""`gatos` (also `git gatos`): the command line of a node.

Every command prints JSON (one object, or JSON lines for logs) so scripts can use it;
errors go to stderr as `gatos: <CODE>: <reason>` with exit status 2, and a failed
`gatos verify` exits 1 with a report naming each bad commit.

`event add`, `log` and `verify` go through the repository's running daemon when there
is one (its `.git/gatos/gatosd.json` names a socket that answers a ping), so appends
join its group commits instead of racing it for the ref lock; otherwise (or with
`--no-daemon`, or `GATOS_NO_DAEMON=1`) they run in-process. Both paths print the same
bytes: daemon replies are turned back into the in-process result objects.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from gatosd._cli_common import print_json as _print_json
from gatosd._cli_common import repo_path as _repo_path
from gatosd.node import Node
from ledger_core import AppendResult, parse_journal_ref, parse_json
from ledger_core.errors import LedgerError

if TYPE_CHECKING:
    from gatosd._client_sync import Client

EXIT_OK, EXIT_VERIFY_FAILED, EXIT_ERROR = 0, 1, 2
# How long the CLI waits for a daemon: to answer the liveness ping (else it works
# in-process), then for each frame of a reply.
DAEMON_PING_TIMEOUT = 2.0
DAEMON_TIMEOUT = 120.0


def _read_payload(text: str) -> Any:
    if text == "-":
        return parse_json(sys.stdin.buffer.read(), "payload")
    if text.startswith("@"):
        with open(text[1:], "rb") as handle:
            return parse_json(handle.read(), "payload")
    return parse_json(text, "payload")


def cmd_init(args: argparse.Namespace) -> int:
    explicit = bool(args.repo or os.environ.get("GATOS_REPO"))
    _node, result = Node.init(_repo_path(args), args.actor, discover=not explicit)
    _print_json(result.to_dict())
    return EXIT_OK


def cmd_key_new(args: argparse.Namespace) -> int:
    node = Node.open(_repo_path(args))
    key = node.new_key(args.actor)
    _print_json({"actor": args.actor, "public_key": key})
    return EXIT_OK


def cmd_key_list(args: argparse.Namespace) -> int:
    rows = Node.open(_repo_path(args)).list_keys()
    if args.json:
        _print_json([{"actor": r["actor"], "public_key": r["public_key"]} for r in rows])
    else:
        for row in rows:
            mark = "*" if row["private_key"] else " "
            print(f"{mark} {row['actor']:<32} {row['public_key']}")
    return EXIT_OK


def _daemon(args: argparse.Namespace) -> Client | None:
    """A client of the repository's running daemon, or None to work in-process."""
    if getattr(args, "no_daemon", False) or os.environ.get("GATOS_NO_DAEMON", "") not in ("", "0"):
        return None
    from gatosd._client_errors import GatosError
    from gatosd._client_requests import read_state
    from gatosd._client_sync import Client

    try:
        state = read_state(_repo_path(args))
        if not state.socket:
            return None  # a stdio or TCP-only daemon: nothing here to connect to
        client = Client.connect_unix(state.socket, timeout=DAEMON_TIMEOUT)
    except (GatosError, OSError):
        return None
    try:
        client.ping(timeout=DAEMON_PING_TIMEOUT)
    except (GatosError, OSError):
        client.close()
        return None
    return client


def cmd_event_add(args: argparse.Namespace) -> int:
    caps = [c for c in args.caps.split(",") if c] if args.caps else None
    # --durable asks for fsync of this append; a daemon's durability is fixed when it starts.
    client = None if args.durable else _daemon(args)
    if client is not None:
        with client:
            reply = client.append_event(args.ns, args.type, _read_payload(args.payload),
                                        actor=args.actor, ulid=args.ulid, caps=caps)
        result = AppendResult(ns=reply["ns"], ref=reply["ref"], commit=reply["commit"],
                              event_cid=reply["event_cid"], ulid=reply["ulid"],
                              actor=reply["actor"], duplicate=reply["duplicate"])
    else:
        node = Node.open(_repo_path(args), durable=args.durable)
        result = node.add_event(args.ns, type=args.type, payload=_read_payload(args.payload),
                                actor=args.actor, ulid=args.ulid, caps=caps)
    _print_json(result.to_dict())
    return EXIT_OK


def _log_via_daemon(client: Client, args: argparse.Namespace) -> list[dict[str, Any]]:
    """`Node.log` through the daemon: one `journal.read` per journal, merged the same way."""
    if args.actor:
        actors = [args.actor]
    else:
        # The daemon has no "list journals" method; reading refs is safe beside it.
        refs = Node.open(_repo_path(args)).journals(args.ns)
        actors = [parse_journal_ref(ref)[1] for ref in refs]
    entries: list[dict[str, Any]] = []
    for actor in actors:
        entries.extend(client.journal_read(args.ns, actor, last=args.limit)["entries"])
    entries.sort(key=lambda e: (e.get("ts") or "", e["ulid"]), reverse=True)
    return entries[:args.limit] if args.limit else entries


def cmd_log(args: argparse.Namespace) -> int:
    client = _daemon(args)
    if client is not None:
        with client:
            entries = _log_via_daemon(client, args)
    else:
        node = Node.open(_repo_path(args))
        entries = [entry.to_dict() for entry in node.log(args.ns, args.actor, limit=args.limit)]
    for entry in entries:
        if args.json:
            _print_json(entry)
        else:
            payload = orjson.dumps(entry["payload"], option=orjson.OPT_SORT_KEYS).decode()
            print(f"{entry['commit'][:12]} {entry.get('ts') or '-'} {entry['actor']} "
                  f"{entry['type']} {payload}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    client = _daemon(args)
    if client is not None:
        with client:
            reply = client.verify()
        report: dict[str, Any] = {"ok": reply["valid"], "journals": reply["journals"],
                                  "events": reply["events"], "problems": reply["problems"]}
    else:
        report = Node.open(_repo_path(args)).verify().to_dict()
    if args.json:
        _print_json(report)
    elif report["ok"]:
        print(f"ok: {report['events']} events in {report['journals']} journals verified")
    else:
        print(f"FAILED: {len(report['problems'])} problem(s) in {report['events']} events "
              f"of {report['journals']} journals")
        for problem in report["problems"]:
            print(f"  {problem['ref']} {problem['commit'] or '-'}: {problem['reason']}")
    return EXIT_OK if report["ok"] else EXIT_VERIFY_FAILED


def _pid_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def daemon_status(repo: str) -> dict[str, Any]:
    """`gatos status` as data: `running` plus the daemon's `status` frame, or why not."""
    from gatosd._client_errors import DaemonNotRunning, GatosError
    from gatosd._client_requests import read_state
    from gatosd._client_sync import Client

    try:
        state = read_state(repo)
    except DaemonNotRunning as exc:
        return {"running": False, "reason": exc.reason}
    where = {k: state.raw[k] for k in ("socket", "listen", "metrics") if k in state.raw}
    if not state.socket:
        if _pid_alive(state.pid):
            return {"running": True, "pid": state.pid, "repo": state.raw.get("repo"), **where,
                    "detail": "no unix socket (stdio or TCP-only daemon); connect over TCP "
                              "with its token for its status"}
        return {"running": False, "reason": f"{state.path} is stale: pid {state.pid} is gone"}
    try:
        with Client.connect_unix(state.socket, timeout=DAEMON_PING_TIMEOUT * 2) as client:
            status = client.status()
    except OSError as exc:
        return {"running": False, "reason": f"nothing answers at {state.socket} "
                                            f"({exc.strerror or exc}); pid {state.pid} may have died"}
    except GatosError as exc:
        return {"running": False, "reason": f"{exc.code}: {exc.reason}"}
    return {"running": True, **status, **where}


def cmd_status(args: argparse.Namespace) -> int:
    info = daemon_status(_repo_path(args))
    if args.json:
        _print_json(info)
    elif not info["running"]:
        print(f"gatosd is not running: {info['reason']}")
    elif "uptime_s" in info:
        print(f"gatosd is running: pid {info['pid']}, up {info['uptime_s']:g}s, "
              f"{info['connections']} connection(s), {info['events']} event(s) in "
              f"{info['batches']} batch(es), {info['queued']} queued")
        for key in ("socket", "listen", "metrics"):
            if key in info:
                print(f"  {key}: {info[key]}")
    else:
        print(f"gatosd is running: pid {info['pid']}; {info['detail']}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatos", description="GATOS: Git As The Operating Surface")
    parser.add_argument("--repo", help="node repository (default: $GATOS_REPO or the current one)")
    parser.add_argument("--no-daemon", action="store_true",
                        help="work in-process even when the repository's gatosd is running")
    # The same flag after the command; SUPPRESS keeps it from resetting the global one.
    routed = argparse.ArgumentParser(add_help=False)
    routed.add_argument("--no-daemon", action="store_true", default=argparse.SUPPRESS,
                        help="work in-process even when the repository's gatosd is running")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="make this repository a node (git init when needed)")
    p.add_argument("--actor", help="owner actor, e.g. user:alice (default: from git user.name)")
    p.set_defaults(func=cmd_init)

    key = sub.add_parser("key", help="manage actor keys").add_subparsers(dest="key_cmd", required=True)
    p = key.add_parser("new", help="create a key for an actor and trust its public key")
    p.add_argument("--actor", required=True)
    p.set_defaults(func=cmd_key_new)
    p = key.add_parser("list", help="list trusted public keys")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_key_list)

    event = sub.add_parser("event", help="events").add_subparsers(dest="event_cmd", required=True)
    p = event.add_parser("add", help="sign and append one event", parents=[routed])
    p.add_argument("--ns", required=True)
    p.add_argument("--type", required=True)
    p.add_argument("--payload", required=True, help="JSON, @FILE or - for stdin")
    p.add_argument("--actor")
    p.add_argument("--ulid")
    p.add_argument("--caps", help="comma-separated capabilities")
    p.add_argument("--durable", action="store_true", help="fsync objects and the ref")
    p.set_defaults(func=cmd_event_add)

    p = sub.add_parser("log", help="show the events of a namespace", parents=[routed])
    p.add_argument("--ns", required=True)
    p.add_argument("--actor")
    p.add_argument("--limit", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("verify", help="verify every journal of the node", parents=[routed])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("status", help="is the repository's gatosd running, and what is it doing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    from gatosd._cli_fold import add_parsers as add_fold_parsers  # fold, fold verify, state show/at
    add_fold_parsers(sub)
    from gatosd._cli_policy import add_parsers as add_policy_parsers  # grant, revoke, policy, audit, trust
    add_policy_parsers(sub)
    from gatosd._cli_bus import add_parsers as add_bus_parsers  # bus publish, bus subscribe
    add_bus_parsers(sub)
    from gatosd._cli_jobs import add_parsers as add_jobs_parsers  # jobs, worker, reproduce, health, blob
    add_jobs_parsers(sub)
    from gatosd._cli_cache import add_parsers as add_cache_parsers  # query, cache rebuild/status
    add_cache_parsers(sub)
    from gatosd._cli_doctor import add_parsers as add_doctor_parsers  # doctor, epoch new/list/compact/restore
    add_doctor_parsers(sub)
    from gatosd._cli_sync import add_parsers as add_sync_parsers  # remote, sync, clone, hub init
    add_sync_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except LedgerError as exc:
        if exc.code == "POLICY_DENY":  # the daemon's error frame, so scripts parse one shape
            sys.stderr.buffer.write(orjson.dumps({"ok": False, "id": None, "error": exc.to_wire()}) + b"\n")
            sys.stderr.flush()
            return EXIT_ERROR
        print(f"gatos: {exc.code}: {exc.reason}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"gatos: STORAGE: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
