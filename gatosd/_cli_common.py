"""What every `gatos` subcommand module shares: which repository, and one JSON line out."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import orjson


def repo_path(args: argparse.Namespace) -> str:
    """`--repo`, else `$GATOS_REPO`, else the current directory."""
    return args.repo or os.environ.get("GATOS_REPO") or os.getcwd()


def print_json(value: Any, *, pretty: bool = False) -> None:
    """One JSON value on stdout (a line, or indented with `pretty`), flushed."""
    option = orjson.OPT_INDENT_2 if pretty else 0
    sys.stdout.buffer.write(orjson.dumps(value, option=option) + b"\n")
    sys.stdout.flush()


__all__ = ["print_json", "repo_path"]
