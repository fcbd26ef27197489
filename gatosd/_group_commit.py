"""Group commit: concurrent appends gathered into one `append_many` (one pack, one ref move).

Requests queue here; one writer takes whatever is queued (up to `max_batch`, waiting
at most `max_delay` for more once the first arrives) and appends it as one batch. Each
request is answered only after the ref update of its batch. While a batch is being
written the next one fills up, so batching grows with load by itself: the default
`max_delay` is 0 (a lone client never waits for company; under load the batch is
whatever arrived during the previous write), and a positive delay trades latency for
bigger batches. A full queue answers `BUSY` at once.

`append_many` is either a coroutine function (the daemon's writer process, read from
the event loop) or a plain function, run on one worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gatosd.errors import busy, shutting_down
from ledger_core import AppendResult, SignedEvent
from ledger_core.errors import LedgerError

Results = list[AppendResult | LedgerError]
# Items are (namespace, event, verified): `verified` False asks the writer to check the
# signature itself (client-signed events, verified in the batch off the event loop).
AppendMany = Callable[[Sequence[tuple[str, SignedEvent, bool]]], Results | Awaitable[Results]]


@dataclass(frozen=True)
class GroupCommitConfig:
    max_batch: int = 512
    max_delay: float = 0.0
    max_queue: int = 10_000


class GroupCommitter:
    """Serializes all journal writes of the daemon through one thread, in batches."""

    def __init__(self, append_many: AppendMany, config: GroupCommitConfig | None = None,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        self._append_many = append_many
        self._async = (inspect.iscoroutinefunction(append_many)
                       or inspect.iscoroutinefunction(type(append_many).__call__))
        self.config = config or GroupCommitConfig()
        self._queue: asyncio.Queue[tuple[str, SignedEvent, bool, asyncio.Future[AppendResult]]] = (
            asyncio.Queue(self.config.max_queue))
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gatos-writer")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._on_batch = on_batch
        self._writing = False
        self.batches = 0
        self.events = 0  # new events appended (not duplicates, not refused)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def submit(self, ns: str, signed: SignedEvent, *, verified: bool = True) -> AppendResult:
        """Append through the next batch; return once the ref update is done.

        `verified=False`: the signature has not been checked yet; the writer checks it.
        """
        if self._closing:
            raise shutting_down()
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((ns, signed, verified, future))
        except asyncio.QueueFull:
            raise busy(f"the append queue is full ({self.config.max_queue} waiting)") from None
        # Shielded: a client that disconnects must not cancel a write already queued;
        # the event is either written with its batch or not at all, never half.
        return await asyncio.shield(future)

    async def _collect(self) -> list[tuple[str, SignedEvent, bool, asyncio.Future[AppendResult]]]:
        batch = [await self._queue.get()]
        self._writing = True  # from here close() must wait: these items are off the queue
        deadline = time.monotonic() + self.config.max_delay
        while len(batch) < self.config.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            if self.config.max_delay <= 0:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            items = [(ns, signed, verified) for ns, signed, verified, _ in batch]
            started = time.perf_counter()
            try:
                if self._async:
                    written = await self._append_many(items)  # type: ignore[misc]
                else:
                    written = await loop.run_in_executor(self._executor, self._append_many, items)
                results: list[AppendResult | LedgerError | BaseException] = list(written)
            except Exception as exc:  # the store failed as a whole: every item gets the error
                results = [exc] * len(batch)
            elapsed = time.perf_counter() - started
            self.batches += 1
            self.events += sum(not isinstance(r, BaseException) and not getattr(r, "duplicate", False)
                               for r in results)
            if self._on_batch:
                self._on_batch(len(batch), elapsed)
            for (_, _, _, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
            self._writing = False

    async def close(self) -> None:
        """Refuse new appends, write everything already queued, stop the writer thread."""
        self._closing = True
        while self._task is not None and (self._writing or not self._queue.empty()):
            await asyncio.sleep(0.002)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)
