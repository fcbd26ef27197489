"""`gatos doctor` and `gatos epoch new|list|compact|restore`.

Both work in-process on the repository (Git CLI batch commands and pygit2); neither
needs the daemon. `doctor` exits 0 when healthy, 1 with a report otherwise; compaction
and restore refuse to run while gatosd serves the repository.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from gatosd._cli_common import print_json as _out
from gatosd._doctor import CHECKS, format_report, run_doctor
from gatosd._epochs import Epochs
from gatosd.node import Node

EXIT_OK, EXIT_UNHEALTHY = 0, 1


def _node(args: argparse.Namespace) -> Node:
    return Node.open(args.repo or os.environ.get("GATOS_REPO") or os.getcwd())


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = [c for c in args.check.split(",") if c] if args.check else None
    report = run_doctor(_node(args), checks, record=not args.no_record, accept=args.accept_current)
    if args.json:
        _out(report.to_dict())
    else:
        print(format_report(report))
    return EXIT_OK if report.healthy else EXIT_UNHEALTHY


def cmd_epoch_new(args: argparse.Namespace) -> int:
    anchor = Epochs(_node(args)).new(args.ns, now=int(time.time()))
    _out(anchor.to_dict())
    return EXIT_OK


def cmd_epoch_list(args: argparse.Namespace) -> int:
    for anchor in Epochs(_node(args)).anchors(args.ns):
        _out(anchor.to_dict())
    return EXIT_OK


def cmd_epoch_compact(args: argparse.Namespace) -> int:
    _out(Epochs(_node(args)).compact(args.ns, args.archive))
    return EXIT_OK


def cmd_epoch_restore(args: argparse.Namespace) -> int:
    _out(Epochs(_node(args)).restore(args.bundles))
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check the node's health and say how to fix what is wrong")
    p.add_argument("--json", action="store_true", help="the report as one JSON object")
    p.add_argument("--check", help=f"comma-separated subset of: {','.join(CHECKS)}")
    p.add_argument("--no-record", action="store_true",
                   help="do not record the current ref heads as the fast-forward watermark")
    p.add_argument("--accept-current", action="store_true",
                   help="record the current heads as the watermark even if refs moved backwards "
                        "(after deciding they are right)")
    p.set_defaults(func=cmd_doctor)

    epoch = sub.add_parser("epoch", help="epoch anchors and compaction").add_subparsers(
        dest="epoch_cmd", required=True)
    p = epoch.add_parser("new", help="anchor the namespace's journal heads and state root")
    p.add_argument("ns")
    p.set_defaults(func=cmd_epoch_new)
    p = epoch.add_parser("list", help="the namespace's anchors, oldest first (JSON lines)")
    p.add_argument("ns")
    p.set_defaults(func=cmd_epoch_list)
    p = epoch.add_parser("compact", help="archive the history below the newest anchor as a git "
                                         "bundle and prune it (gatosd must be stopped)")
    p.add_argument("ns")
    p.add_argument("--archive", help="bundle file (default .git/gatos/archive/<ns>-<epoch>.bundle)")
    p.set_defaults(func=cmd_epoch_compact)
    p = epoch.add_parser("restore", help="bring archived history back from bundles (oldest first)")
    p.add_argument("bundles", nargs="+")
    p.set_defaults(func=cmd_epoch_restore)


__all__ = ["add_parsers"]
