"""`gatos query`, `gatos cache rebuild|status` and `gatos state get NS KEY`.

Queries bring the index up to date first (an index is never authoritative: it is
rebuilt from the journals whenever they moved). `cache rebuild` shows a progress bar on
a terminal and stays quiet when piped.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gatosd._cache_wiring import cache_store, rebuild, run_query, state_key
from gatosd._cli_common import print_json as _out
from gatosd._cli_common import repo_path as _repo
from gatosd.node import Node
from kv_cache import Query, parse_time, parse_where
from ledger_core import normalize_actor, validate_namespace


def query_from_args(args: argparse.Namespace) -> Query:
    return Query(actor=normalize_actor(args.actor) if args.actor else None, type=args.type,
                 since=parse_time(args.since, "since") if args.since else None,
                 until=parse_time(args.until, "until") if args.until else None,
                 where=parse_where(args.where or []))


def cmd_query(args: argparse.Namespace) -> int:
    node = Node.open(_repo(args))
    summary, events = run_query(node, validate_namespace(args.ns), query_from_args(args), index_id=args.index,
                                limit=args.limit, count_only=args.count)
    if args.count:
        _out(summary)
    for event in events:
        _out(event)
    sys.stdout.flush()
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    node = Node.open(_repo(args))
    ns = validate_namespace(args.ns)
    if sys.stderr.isatty() and not args.quiet:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=None, transient=True) as bar:
            task = bar.add_task(f"indexing {ns}", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            results = rebuild(node, ns, args.index, full=not args.incremental, progress=progress)
    else:
        results = rebuild(node, ns, args.index, full=not args.incremental)
    for result in results:
        _out(result.to_dict())
    sys.stdout.flush()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    node = Node.open(_repo(args))
    stale = cache_store(node).stale()
    if args.ns:
        stale = [s for s in stale if s.get("ns") == args.ns]
    _out({"stale": stale, "fresh": not stale})
    sys.stdout.flush()
    return 0 if not stale else 1


def cmd_state_get(args: argparse.Namespace) -> int:
    _out(state_key(Node.open(_repo(args)), args.ns, args.key))
    sys.stdout.flush()
    return 0


def add_state_get(state: Any) -> None:
    p = state.add_parser("get", help="one key of the newest checkpoint's main channel (KV view)")
    p.add_argument("ns")
    p.add_argument("key")
    p.set_defaults(func=cmd_state_get)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("query", help="events matching every filter, as JSON lines (indexed)")
    p.add_argument("--ns", required=True)
    p.add_argument("--actor")
    p.add_argument("--type")
    p.add_argument("--since", help="RFC 3339 UTC or seconds since 1970 (inclusive)")
    p.add_argument("--until", help="RFC 3339 UTC or seconds since 1970 (inclusive)")
    p.add_argument("--where", action="append", help="payload field=value (an indexed field), repeatable")
    p.add_argument("--index", help="the index to use (default: one holding every --where field)")
    p.add_argument("--limit", type=int)
    p.add_argument("--count", action="store_true", help="print only the summary with the match count")
    p.set_defaults(func=cmd_query)
    cache = sub.add_parser("cache", help="rebuildable indexes").add_subparsers(dest="cache_cmd", required=True)
    p = cache.add_parser("rebuild", help="rebuild a namespace's indexes from the journals")
    p.add_argument("ns")
    p.add_argument("--index")
    p.add_argument("--incremental", action="store_true", help="only catch up when possible")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_rebuild)
    p = cache.add_parser("status", help="stale indexes (exit 1 when any)")
    p.add_argument("--ns")
    p.set_defaults(func=cmd_status)


__all__ = ["add_parsers", "add_state_get", "query_from_args"]
