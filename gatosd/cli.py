"""`gatos` (also `git gatos`): the command line of a node.

Every command prints JSON (one object, or JSON lines for logs) so scripts can use it;
errors go to stderr as `gatos: <CODE>: <reason>` with exit status 2, and a failed
`gatos verify` exits 1 with a report naming each bad commit.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from gatosd.node import Node
from ledger_core import parse_json
from ledger_core.errors import LedgerError

EXIT_OK, EXIT_VERIFY_FAILED, EXIT_ERROR = 0, 1, 2


def _print_json(value: Any, *, pretty: bool = False) -> None:
    option = orjson.OPT_INDENT_2 if pretty else 0
    sys.stdout.buffer.write(orjson.dumps(value, option=option) + b"\n")
    sys.stdout.flush()


def _repo_path(args: argparse.Namespace) -> str:
    return args.repo or os.environ.get("GATOS_REPO") or os.getcwd()


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


def cmd_event_add(args: argparse.Namespace) -> int:
    node = Node.open(_repo_path(args), durable=args.durable)
    caps = [c for c in args.caps.split(",") if c] if args.caps else None
    result = node.add_event(args.ns, type=args.type, payload=_read_payload(args.payload),
                            actor=args.actor, ulid=args.ulid, caps=caps)
    _print_json(result.to_dict())
    return EXIT_OK


def cmd_log(args: argparse.Namespace) -> int:
    node = Node.open(_repo_path(args))
    for entry in node.log(args.ns, args.actor, limit=args.limit):
        if args.json:
            _print_json(entry.to_dict())
        else:
            ev = entry.signed.event
            payload = orjson.dumps(ev.payload, option=orjson.OPT_SORT_KEYS).decode()
            print(f"{entry.commit[:12]} {ev.ts or '-'} {ev.actor} {ev.type} {payload}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    report = Node.open(_repo_path(args)).verify()
    if args.json:
        _print_json(report.to_dict())
    elif report.ok:
        print(f"ok: {report.events} events in {report.journals} journals verified")
    else:
        print(f"FAILED: {len(report.problems)} problem(s) in {report.events} events "
              f"of {report.journals} journals")
        for problem in report.problems:
            print(f"  {problem.ref} {problem.commit or '-'}: {problem.reason}")
    return EXIT_OK if report.ok else EXIT_VERIFY_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatos", description="GATOS: Git As The Operating Surface")
    parser.add_argument("--repo", help="node repository (default: $GATOS_REPO or the current one)")
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
    p = event.add_parser("add", help="sign and append one event")
    p.add_argument("--ns", required=True)
    p.add_argument("--type", required=True)
    p.add_argument("--payload", required=True, help="JSON, @FILE or - for stdin")
    p.add_argument("--actor")
    p.add_argument("--ulid")
    p.add_argument("--caps", help="comma-separated capabilities")
    p.add_argument("--durable", action="store_true", help="fsync objects and the ref")
    p.set_defaults(func=cmd_event_add)

    p = sub.add_parser("log", help="show the events of a namespace")
    p.add_argument("--ns", required=True)
    p.add_argument("--actor")
    p.add_argument("--limit", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("verify", help="verify every journal of the node")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except LedgerError as exc:
        print(f"gatos: {exc.code}: {exc.reason}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"gatos: STORAGE: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
