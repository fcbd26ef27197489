"""Group commit with a fake `append_many`: batching, limits, shutdown and error routing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from gatosd._group_commit import GroupCommitConfig, GroupCommitter
from ledger_core.errors import LedgerError, UlidReused


class _Signed:
    """Stands in for a SignedEvent: the committer only passes it through."""

    def __init__(self, tag: str) -> None:
        self.tag = tag


class _Result:
    def __init__(self, ns: str, tag: str, batch: int) -> None:
        self.ns, self.tag, self.batch = ns, tag, batch


class FakeStore:
    """An `append_many` that records its batches and can be slowed down or made to fail."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches: list[list[str]] = []
        self.fail_batches: set[int] = set()
        self.refuse: set[str] = set()
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, items: Sequence[tuple[str, Any, bool]]) -> list[Any]:
        self.gate.wait(10)
        if self.delay:
            time.sleep(self.delay)
        number = len(self.batches)
        self.batches.append([signed.tag for _, signed, _ in items])
        if number in self.fail_batches:
            raise OSError(f"disk on fire in batch {number}")
        return [UlidReused(f"refused {signed.tag}") if signed.tag in self.refuse
                else _Result(ns, signed.tag, number) for ns, signed, _ in items]


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_concurrent_submissions_are_batched_and_answered_in_place() -> None:
    """Many concurrent appends form fewer batches, and each caller gets its own result."""
    store = FakeStore(delay=0.01)

    async def main() -> None:
        committer = GroupCommitter(store, GroupCommitConfig(max_batch=64, max_delay=0.005))  # type: ignore[arg-type]
        committer.start()
        results = await asyncio.gather(*(committer.submit(f"ns{i % 3}", _Signed(f"e{i}"))  # type: ignore[arg-type]
                                         for i in range(200)))
        for i, result in enumerate(results):
            assert (result.ns, result.tag) == (f"ns{i % 3}", f"e{i}")  # type: ignore[attr-defined]
        await committer.close()
        assert committer.events == 200

    _run(main())
    assert sum(len(b) for b in store.batches) == 200
    assert len(store.batches) < 20
    assert sorted(t for b in store.batches for t in b) == sorted(f"e{i}" for i in range(200))


def test_max_batch_is_respected() -> None:
    """No batch is larger than max_batch, however much is queued."""
    store = FakeStore()
    store.gate.clear()

    async def main() -> None:
        committer = GroupCommitter(store, GroupCommitConfig(max_batch=7, max_delay=0.01))  # type: ignore[arg-type]
        committer.start()
        tasks = [asyncio.create_task(committer.submit("ns", _Signed(str(i))))  # type: ignore[arg-type]
                 for i in range(50)]
        await asyncio.sleep(0.05)
        store.gate.set()
        await asyncio.gather(*tasks)
        await committer.close()

    _run(main())
    assert max(len(b) for b in store.batches) <= 7
    assert sum(len(b) for b in store.batches) == 50


def test_a_full_queue_answers_busy_at_once() -> None:
    """Past max_queue waiting appends, submit raises BUSY without waiting; the rest complete."""
    store = FakeStore()
    store.gate.clear()

    async def main() -> list[Any]:
        committer = GroupCommitter(store, GroupCommitConfig(max_batch=2, max_delay=0, max_queue=5))  # type: ignore[arg-type]
        committer.start()
        tasks = [asyncio.create_task(committer.submit("ns", _Signed(str(i))))  # type: ignore[arg-type]
                 for i in range(20)]
        await asyncio.sleep(0.05)
        store.gate.set()
        out = await asyncio.gather(*tasks, return_exceptions=True)
        await committer.close()
        return out

    out = _run(main())
    busy = [r for r in out if isinstance(r, LedgerError)]
    assert busy and all(r.code == "BUSY" for r in busy)
    done = [r for r in out if not isinstance(r, BaseException)]
    assert len(done) + len(busy) == 20
    assert len(done) <= 5 + 2  # the queue plus the batch taken before the gate opened
    assert sum(len(b) for b in store.batches) == len(done)


def test_close_flushes_everything_queued() -> None:
    """close() right after submitting writes every queued append before it returns."""
    store = FakeStore(delay=0.002)

    async def main() -> None:
        committer = GroupCommitter(store, GroupCommitConfig(max_batch=4, max_delay=0.02))  # type: ignore[arg-type]
        committer.start()
        tasks = [asyncio.create_task(committer.submit("ns", _Signed(str(i))))  # type: ignore[arg-type]
                 for i in range(30)]
        await asyncio.sleep(0)  # every submit has queued its item
        await committer.close()
        results = await asyncio.wait_for(asyncio.gather(*tasks), 1)
        assert [r.tag for r in results] == [str(i) for i in range(30)]

    _run(main())
    assert sum(len(b) for b in store.batches) == 30


@pytest.mark.parametrize("delay", [0.0, 0.001, 0.05])
def test_close_while_a_batch_is_still_collecting_loses_nothing(delay: float) -> None:
    """close() during the batching delay (first item taken, more awaited) still writes it."""
    store = FakeStore()

    async def main() -> None:
        committer = GroupCommitter(store, GroupCommitConfig(max_batch=100, max_delay=delay))  # type: ignore[arg-type]
        committer.start()
        task = asyncio.create_task(committer.submit("ns", _Signed("only")))  # type: ignore[arg-type]
        for _ in range(3):
            await asyncio.sleep(0)  # the writer takes the item and starts waiting for more
        await committer.close()
        assert (await asyncio.wait_for(task, 1)).tag == "only"

    _run(main())
    assert store.batches == [["only"]]


def test_submit_after_close_is_refused() -> None:
    """Once closing, new appends are refused with SHUTTING_DOWN."""

    async def main() -> None:
        committer = GroupCommitter(FakeStore())  # type: ignore[arg-type]
        committer.start()
        await committer.close()
        with pytest.raises(LedgerError) as info:
            await committer.submit("ns", _Signed("late"))  # type: ignore[arg-type]
        assert info.value.code == "SHUTTING_DOWN"

    _run(main())


def test_per_item_errors_reach_only_their_caller() -> None:
    """An item refused inside a batch fails alone; its neighbours succeed."""
    store = FakeStore()
    store.gate.clear()
    store.refuse = {"3", "5"}

    async def main() -> list[Any]:
        committer = GroupCommitter(store, GroupCommitConfig(max_batch=100, max_delay=0.01))  # type: ignore[arg-type]
        committer.start()
        tasks = [asyncio.create_task(committer.submit("ns", _Signed(str(i))))  # type: ignore[arg-type]
                 for i in range(8)]
        await asyncio.sleep(0.02)
        store.gate.set()
        out = await asyncio.gather(*tasks, return_exceptions=True)
        await committer.close()
        return out

    out = _run(main())
    for i, result in enumerate(out):
        if str(i) in store.refuse:
            assert isinstance(result, UlidReused)
        else:
            assert result.tag == str(i)


def test_an_exception_in_append_many_fails_that_batch_only() -> None:
    """A store failure fails every item of its batch and no item of the other batches."""
    store = FakeStore()
    store.gate.clear()
    store.fail_batches = {1}

    async def main() -> list[Any]:
        committer = GroupCommitter(store, GroupCommitConfig(max_batch=5, max_delay=0.01))  # type: ignore[arg-type]
        committer.start()
        tasks = [asyncio.create_task(committer.submit("ns", _Signed(str(i))))  # type: ignore[arg-type]
                 for i in range(15)]
        await asyncio.sleep(0.05)
        store.gate.set()
        out = await asyncio.gather(*tasks, return_exceptions=True)
        await committer.close()
        return out

    out = _run(main())
    failed_batch = set(store.batches[1])
    assert len(store.batches) == 3
    for i, result in enumerate(out):
        if str(i) in failed_batch:
            assert isinstance(result, OSError)
        else:
            assert result.tag == str(i)
            assert result.batch != 1


def test_a_cancelled_caller_does_not_cancel_its_write() -> None:
    """A caller cancelled while waiting (client gone) still has its append written."""
    store = FakeStore()
    store.gate.clear()

    async def main() -> None:
        committer = GroupCommitter(store, GroupCommitConfig(max_delay=0))  # type: ignore[arg-type]
        committer.start()
        task = asyncio.create_task(committer.submit("ns", _Signed("gone")))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        task.cancel()
        store.gate.set()
        await committer.close()

    _run(main())
    assert store.batches == [["gone"]]


class AsyncStore:
    """A coroutine `append_many` (as the daemon's writer process is): awaited on the loop."""

    def __init__(self, write_time: float) -> None:
        self.write_time = write_time
        self.batches: list[list[str]] = []
        self.threads: set[int] = set()

    async def __call__(self, items: Sequence[tuple[str, Any, bool]]) -> list[Any]:
        self.threads.add(threading.get_ident())
        await asyncio.sleep(self.write_time)
        number = len(self.batches)
        self.batches.append([signed.tag for _, signed, _ in items])
        return [_Result(ns, signed.tag, number) for ns, signed, _ in items]


def test_a_coroutine_append_many_is_awaited_on_the_loop_and_batches_while_busy() -> None:
    """With the default delay 0, a lone append goes at once; appends arriving during a write
    wait for it and go together in the next batch."""
    store = AsyncStore(write_time=0.02)

    async def main() -> None:
        committer = GroupCommitter(store)  # type: ignore[arg-type]
        assert committer.config.max_delay == 0
        committer.start()
        started = time.perf_counter()
        lone = await committer.submit("ns", _Signed("lone"))  # type: ignore[arg-type]
        assert time.perf_counter() - started < 0.5
        assert lone.batch == 0  # type: ignore[attr-defined]
        first = asyncio.create_task(committer.submit("ns", _Signed("first")))  # type: ignore[arg-type]
        await asyncio.sleep(0.005)  # `first` is being written now
        rest = [asyncio.create_task(committer.submit("ns", _Signed(f"r{i}")))  # type: ignore[arg-type]
                for i in range(5)]
        await asyncio.gather(first, *rest)
        await committer.close()

    _run(main())
    assert store.batches == [["lone"], ["first"], [f"r{i}" for i in range(5)]]
    assert store.threads == {threading.get_ident()}  # no worker thread involved
