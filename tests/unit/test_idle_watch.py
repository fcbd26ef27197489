"""`_IdleWatch`: one timer per connection instead of a timeout around every read."""

from __future__ import annotations

import asyncio

import pytest

from gatosd._server import _IdleWatch


def _run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_a_busy_reader_is_never_timed_out_and_a_silent_one_is() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        watch = _IdleWatch(loop, 0.1)

        async def feed() -> None:
            for i in range(30):  # data every 20 ms for 0.6 s: six intervals
                await asyncio.sleep(0.02)
                reader.feed_data(b"%d\n" % i)

        feeding = asyncio.create_task(feed())
        got = b""
        while not feeding.done() or reader._buffer:
            got += await watch.read(reader)
        assert got.count(b"\n") == 30
        started = loop.time()
        with pytest.raises(TimeoutError):
            await watch.read(reader)  # silent now
        assert 0.05 <= loop.time() - started <= 0.5
        reader.feed_data(b"later\n")  # the connection lives on after a timeout
        assert await watch.read(reader) == b"later\n"
        watch.close()

    _run(main())


def test_a_cancel_from_elsewhere_is_not_taken_for_a_timeout() -> None:
    async def main() -> None:
        watch = _IdleWatch(asyncio.get_running_loop(), 10.0)
        task = asyncio.create_task(watch.read(asyncio.StreamReader()))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        watch.close()

    _run(main())
