"""Where a subscription starts: `from` = "earliest", "HEAD", "HEAD-<n>", a position or a ULID.

Positions are per shard, from 1. "HEAD" is only what is published from now on;
"HEAD-<n>" the last n messages of each shard and then everything new; a position p
starts every shard at p; a ULID starts each shard at its first message whose ULID
sorts at or after it (ULIDs sort by time, so that is "from that message on").
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ledger_core import validate_ulid
from ledger_core.errors import LedgerError
from mind_bus.errors import InvalidPosition

_HEAD_N = re.compile(r"HEAD-([0-9]{1,12})")


def parse_from(value: object) -> tuple[str, int | str]:
    """("earliest", 0) | ("head", n) | ("position", p) | ("ulid", ULID)."""
    if value is None or value == "earliest":
        return "earliest", 0
    if value == "HEAD":
        return "head", 0
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise InvalidPosition("a position is an integer from 1")
        return "position", value
    if isinstance(value, str):
        match = _HEAD_N.fullmatch(value)
        if match:
            return "head", int(match.group(1))
        if value.isdigit() and 0 < len(value) <= 15 and int(value) >= 1:
            return "position", int(value)
        try:
            return "ulid", validate_ulid(value)
        except LedgerError:
            pass
    raise InvalidPosition(f"`from` must be \"earliest\", \"HEAD\", \"HEAD-<n>\", a position or a "
                          f"ULID, not {value!r}")


def start_positions(spec: tuple[str, int | str], heads: dict[int, int],
                    first_at_or_after: Callable[[int, str], int]) -> dict[int, int]:
    """The first position to deliver in each shard (`heads`: shard → newest position)."""
    kind, arg = spec
    out: dict[int, int] = {}
    for shard, head in heads.items():
        if kind == "earliest":
            out[shard] = 1
        elif kind == "head":
            out[shard] = max(1, head - int(arg) + 1)
        elif kind == "position":
            out[shard] = int(arg)
        else:
            out[shard] = first_at_or_after(shard, str(arg))
    return out


__all__ = ["parse_from", "start_positions"]
