"""Cache methods of the daemon: `cache.query` and `cache.rebuild` (streamed progress).

Indexes are loaded once and kept in memory by their commit, so repeated queries cost
only the bitmap intersections (and reading the events asked for).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gatosd._cache_wiring import rebuild, run_query
from gatosd._metrics import Metrics
from gatosd._progress import run_with_progress
from gatosd._registry import Context, Registry
from gatosd.errors import bad_frame
from gatosd.node import Node
from kv_cache import Index, Query, parse_time, parse_where
from ledger_core import normalize_actor, validate_namespace


def _opt(frame: dict[str, Any], key: str, kind: type) -> Any:
    value = frame.get(key)
    if value is not None and (not isinstance(value, kind) or (isinstance(value, bool) and kind is int)):
        raise bad_frame(f"`{key}` must be {'a string' if kind is str else 'an integer'}")
    return value


def query_from_frame(frame: dict[str, Any]) -> Query:
    where = frame.get("where") or {}
    if not isinstance(where, dict):
        raise bad_frame("`where` must be an object of field → value")
    since, until = _opt(frame, "since", str), _opt(frame, "until", str)
    actor = _opt(frame, "actor", str)
    # `type` names the method in every frame, so the event type filter is `event_type`.
    return Query(actor=normalize_actor(actor) if actor else None, type=_opt(frame, "event_type", str),
                 since=parse_time(since, "since") if since else None,
                 until=parse_time(until, "until") if until else None,
                 where=tuple(sorted(where.items())) if where else parse_where([]))


class CacheMethods:
    def __init__(self, repo_path: str, metrics: Metrics) -> None:
        self.repo_path = repo_path
        self.metrics = metrics
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gatos-cache")
        self._loaded: dict[str, tuple[str, Index]] = {}
        self._node: Node | None = None

    def register(self, registry: Registry) -> None:
        registry.add("cache.query", self.query)
        registry.add("cache.rebuild", self.rebuild, stream=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _repo(self) -> Node:
        if self._node is None:
            self._node = Node.open(self.repo_path)
        return self._node

    async def query(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """Events of `ns` matching every filter (`actor`, `event_type`, `since`, `until`, `where`)."""
        ns = validate_namespace(frame.get("ns"))
        query = query_from_frame(frame)
        limit = _opt(frame, "limit", int)
        count_only = frame.get("count", False) is True
        index_id = _opt(frame, "index", str)
        loop = asyncio.get_running_loop()
        summary, events = await loop.run_in_executor(self._pool, lambda: run_query(
            self._repo(), ns, query, index_id=index_id, limit=limit if limit is not None else 1000,
            count_only=count_only, loaded=self._loaded))
        if summary["update"] == "full":
            self.metrics.cache_rebuilds.inc()
        return {**summary, "events": events}

    async def rebuild(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """Rebuild a namespace's indexes: ack, progress frames, then one result per index."""
        ns = validate_namespace(frame.get("ns"))
        index_id = _opt(frame, "index", str)
        await ctx.ack()
        results = await run_with_progress(
            ctx, self._pool, lambda progress: rebuild(self._repo(), ns, index_id, progress=progress), "index")
        self.metrics.cache_rebuilds.inc(len(results))
        return {"ns": ns, "indexes": [r.to_dict() for r in results]}


__all__ = ["CacheMethods"]
