"""Queries: an AND of filters answered with bitmap intersections, then the events themselves.

Filters: actor, type, a time range (`since` ≤ ts ≤ `until`, whole seconds) and payload
equalities (`field=value`, on indexed fields). The time range takes the union of the
buckets it touches and trims only the positions of the two edge buckets against the
exact seconds, so a long range costs no more than a short one.
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import Any

from pyroaring import BitMap

from kv_cache._index import Index, name_key, value_key
from kv_cache.errors import InvalidQuery
from ledger_core import canonical_json, parse_json, timestamp_seconds
from ledger_core.errors import LedgerError


@dataclass(frozen=True)
class Query:
    actor: str | None = None
    type: str | None = None
    since: int | None = None
    until: int | None = None
    where: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    @property
    def fields(self) -> set[str]:
        return {name for name, _ in self.where}


def parse_time(text: str, what: str) -> int:
    """RFC 3339 UTC (`2026-01-02T03:04:05Z`, fractions allowed) or whole seconds since 1970."""
    if text.isdigit():
        return int(text)
    try:
        return timestamp_seconds(text)
    except LedgerError as exc:
        raise InvalidQuery(f"--{what}: {exc.reason}") from None


def parse_where(items: list[str]) -> tuple[tuple[str, Any], ...]:
    """`k=v` items; `v` is read as JSON when it parses (`1200`, `true`, `"x"`), else as text."""
    out = []
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise InvalidQuery(f"--where {item!r} is not field=value")
        try:
            value = parse_json(raw, "--where value")
        except LedgerError:
            value = raw
        out.append((name, value))
    return tuple(out)


def _bitmap(index: Index, key: str) -> BitMap:
    return index.bitmaps.get(key) or BitMap()


def _value_bitmap(index: Index, name: str, value: Any) -> BitMap:
    """Positions whose field equals `value`; `1200` also matches the text "1200" (and back)."""
    keys = {value_key(value)}
    if isinstance(value, str):
        with contextlib.suppress(LedgerError):
            keys.add(value_key(parse_json(value, "value")))
    elif value_key(value) is not None:
        keys.add(value_key(canonical_json(value).decode("utf-8")))
    found = BitMap()
    for key in keys:
        if key is not None:
            found |= _bitmap(index, f"field/{name}/{key}")
    return found


def match(index: Index, query: Query) -> BitMap:
    """Positions matching every filter (all positions when there is none)."""
    missing = query.fields - set(index.spec.fields)
    if missing:
        raise InvalidQuery(f"index {index.spec.index_id} of {index.spec.ns} has no field "
                           f"{', '.join(sorted(missing))}; name it in gatos/indexes/<id>.yaml")
    parts: list[BitMap] = []
    if query.actor is not None:
        parts.append(_bitmap(index, "actor/" + name_key(query.actor)))
    if query.type is not None:
        parts.append(_bitmap(index, "type/" + name_key(query.type)))
    for name, value in query.where:
        parts.append(_value_bitmap(index, name, value))
    if query.since is not None or query.until is not None:
        parts.append(_time_range(index, query.since, query.until))
    if not parts:
        return BitMap(range(index.count))
    parts.sort(key=len)
    result = parts[0].copy()
    for other in parts[1:]:
        result &= other
        if not result:
            break
    return result


def _time_range(index: Index, since: int | None, until: int | None) -> BitMap:
    width = index.spec.bucket_seconds
    low = since if since is not None else -(1 << 62)
    high = until if until is not None else (1 << 62)
    if index.monotonic:
        first = bisect_left(index.seconds, low)
        end = bisect_right(index.seconds, high)
        found = BitMap()
        if first < end:
            found.add_range(first, end)
        return found
    found = BitMap()
    edges = BitMap()
    for key, bitmap in index.bitmaps.items():
        if not key.startswith("bucket/"):
            continue
        start = int(key[7:])
        end = start + width - 1
        if end < low or start > high:
            continue
        if start >= low and end <= high:
            found |= bitmap
        else:
            edges |= bitmap
    seconds = index.seconds
    found |= BitMap(p for p in edges if low <= seconds[p] <= high)
    return found


__all__ = ["Query", "match", "parse_time", "parse_where"]
