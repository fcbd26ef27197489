"""Fold methods of the daemon: `fold_state` (streaming) and `state.get`.

A fold is CPU work in the Lua sandbox: it runs on its own thread with its own
repository handle, one fold per namespace at a time, and reports progress frames
through the event loop. It writes only `refs/gatos/state/<ns>` (never a journal), so
it does not go through the journal writer. Spec paths in requests are resolved
inside the node's working tree only.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gatosd._cache_wiring import state_key
from gatosd._cli_fold import checkpoint_state, folder_of, resolve_spec, workdir
from gatosd._metrics import Metrics
from gatosd._progress import Progress, run_with_progress
from gatosd._registry import Context, Registry
from gatosd.errors import bad_frame
from gatosd.node import Node
from ledger_core import validate_namespace


def _opt_str(frame: dict[str, Any], key: str) -> str | None:
    value = frame.get(key)
    if value is not None and not isinstance(value, str):
        raise bad_frame(f"`{key}` must be a string")
    return value


class FoldMethods:
    """Binds `echo_fold` to the protocol."""

    def __init__(self, repo_path: str, metrics: Metrics) -> None:
        self.repo_path = repo_path
        self.metrics = metrics
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gatos-fold")
        self._locks: dict[str, asyncio.Lock] = {}

    def register(self, registry: Registry) -> None:
        registry.add("fold_state", self.fold_state, stream=True)
        registry.add("state.get", self.state_get)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def fold_state(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """Fold a namespace into a checkpoint: ack, progress frames, then state_root and commit."""
        ns = validate_namespace(frame.get("ns"))
        spec_path, channel = _opt_str(frame, "spec"), _opt_str(frame, "channel")
        full = frame.get("full", False)
        if not isinstance(full, bool):
            raise bad_frame("`full` must be a boolean")
        await ctx.ack()

        def run(progress: Progress) -> dict[str, Any]:
            node = Node.open(self.repo_path)
            spec = resolve_spec(node, ns, spec_path, root=workdir(node))
            if channel is not None and channel not in spec.channels:
                raise bad_frame(f"the fold {spec.fold_id} has no channel {channel!r} "
                                f"(it has {', '.join(spec.channels)})")
            return folder_of(node).fold(spec, progress=progress, incremental=not full).to_dict(channel)

        lock = self._locks.setdefault(ns, asyncio.Lock())
        async with lock:
            started = time.perf_counter()
            result = await run_with_progress(ctx, self._pool, run, "fold")
            self.metrics.fold_latency.observe((time.perf_counter() - started) * 1000)
        return result

    async def state_get(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """The newest checkpoint of a namespace: state (or one channel), State-Root, commit; with `key`,
        one key of the main channel through the KV view."""
        ns = validate_namespace(frame.get("ns"))
        channel = _opt_str(frame, "channel")
        key = _opt_str(frame, "key")
        loop = asyncio.get_running_loop()
        if key is not None:  # one key through the KV view: the whole state is not read
            return await loop.run_in_executor(self._pool, lambda: state_key(Node.open(self.repo_path), ns, key))
        return await loop.run_in_executor(
            self._pool, lambda: checkpoint_state(Node.open(self.repo_path), ns, channel))
