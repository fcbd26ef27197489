"""Running blocking work on a pool while its progress reaches the client as frames.

Folds and cache rebuilds are CPU work on their own threads; they report
`progress(done, total)` from there, and the client sees at most one progress frame per
`every` seconds (plus the last), keyed by the request id, then the final frame.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from gatosd._registry import Context

T = TypeVar("T")
Progress = Callable[[int, int], None]
PROGRESS_EVERY = 0.25  # seconds between progress frames


async def run_with_progress(ctx: Context, pool: Executor, work: Callable[[Progress], T], phase: str,
                            every: float = PROGRESS_EVERY) -> T:
    """Run `work(progress)` on `pool`, sending `{"phase": phase, "progress": {done, total}}` frames."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= every or done == total:
            last[0] = now
            loop.call_soon_threadsafe(queue.put_nowait, {"progress": {"done": done, "total": total}})

    task = loop.run_in_executor(pool, work, progress)
    while True:
        getter = asyncio.ensure_future(queue.get())
        done, _ = await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            await ctx.send({"phase": phase, **getter.result()})
        else:
            getter.cancel()
        if task in done:
            return task.result()


__all__ = ["PROGRESS_EVERY", "run_with_progress"]
