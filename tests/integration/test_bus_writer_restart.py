"""The bus writer process killed under the daemon: in-flight publishes are answered
STORAGE, a new writer takes over (the flock of the dead one is gone with it), and a
retry with the same ULID is either published once or reported as a duplicate."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from tests.integration.conftest import git
from tests.integration.daemon_support import JsonlClient, make_node, short_dir, start_daemon


def _bus_writer(children: list[int]) -> int:
    for pid in children:
        fds = Path(f"/proc/{pid}/fd")
        try:
            if any(os.readlink(fd).endswith("mbus-writer.lock") for fd in fds.iterdir()):
                return pid
        except OSError:
            continue
    raise AssertionError(f"no bus writer among {children}")


def _publish(c: JsonlClient, rid: str, ulid: str, payload: Any) -> dict[str, Any]:
    return c.request({"type": "bus.publish", "id": rid, "topic": "t", "ulid": ulid, "payload": payload})


def test_killed_bus_writer_is_replaced_and_retries_dedupe(tmp_path: Path) -> None:
    repo = make_node(tmp_path / "node")
    with short_dir() as sock:
        d = start_daemon(repo, socket_dir=sock)
        try:
            with d.client() as c:
                first = _publish(c, "a", "01J00000000000000000000001", 1)
                assert first["ok"], first
                os.kill(_bus_writer(d.children()), signal.SIGKILL)
                ulid = "01J00000000000000000000002"
                deadline = time.monotonic() + 30
                while True:
                    got = _publish(c, "b", ulid, 2)
                    if got["ok"]:
                        break
                    assert got["error"]["code"] == "STORAGE", got
                    assert time.monotonic() < deadline, got
                    time.sleep(0.05)
                again = _publish(c, "c", ulid, 2)
                assert again["ok"] and again["duplicate"], again
                assert (again["shard"], again["position"]) == (got["shard"], got["position"])
                assert _publish(c, "d", "01J00000000000000000000003", 3)["ok"]
        finally:
            d.stop()
    subjects = git(repo, "log", "--format=%s", "--all", "--", ".").split()
    assert subjects.count("gmb.message") >= 3
    git(repo, "fsck", "--strict")


def test_a_lock_left_by_a_killed_writer_does_not_block_its_shard(tmp_path: Path) -> None:
    """A writer killed between taking a shard's lock and renaming it leaves `<ref>.lock`.

    The next writer (holding the flock) takes a bus ref's lock older than any live holder
    keeps one as a leftover and removes it: the shard is written again within seconds,
    instead of every batch on it waiting and failing LOCKED for good.
    """
    from mind_bus import shard_for_key

    key = next(f"k{i}" for i in range(100) if shard_for_key(f"k{i}", 4) == 1)
    repo = make_node(tmp_path / "node")
    with short_dir() as sock:
        d = start_daemon(repo, socket_dir=sock)
        try:
            with d.client() as c:
                first = c.request({"type": "bus.publish", "id": "a", "topic": "t", "key": key, "payload": 1})
                assert first["ok"] and first["shard"] == 1, first
                os.kill(_bus_writer(d.children()), signal.SIGKILL)
                lock = repo / ".git" / "refs" / "gatos" / "mbus" / "t" / "-1.lock"
                lock.write_text("")  # what the killed writer left, a moment ago
                started = time.monotonic()
                deadline = started + 30
                while True:
                    got = c.request({"type": "bus.publish", "id": "b", "topic": "t", "key": key,
                                     "ulid": "01J00000000000000000000009", "payload": 2})
                    if got["ok"]:
                        break
                    assert got["error"]["code"] in ("STORAGE", "LOCKED"), got
                    assert time.monotonic() < deadline, got
                    time.sleep(0.05)
                assert (got["shard"], got["position"]) == (1, 2)
                assert time.monotonic() - started < 15
                assert not lock.exists()
        finally:
            d.stop()
    assert git(repo, "rev-list", "--count", "refs/gatos/mbus/t/-1").strip() == "2"
    git(repo, "fsck", "--strict")


def test_a_caller_cancelled_while_the_writer_starts_leaves_it_usable(tmp_path: Path) -> None:
    """The first caller's client goes away during the second the process takes to start:
    the start goes on (its own task), the process is read, and the next call is answered."""
    import asyncio

    from gatosd._bus_writer import BusWriter
    from gatosd.node import Node

    repo = make_node(tmp_path / "node")

    async def scenario() -> Any:
        writer = BusWriter(str(Node.open(str(repo)).repo.git_dir))
        first = asyncio.create_task(writer.submit(("prune", "t", None)))
        await asyncio.sleep(0.05)  # the process is starting in a thread
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        try:
            return await asyncio.wait_for(writer.submit(("prune", "t", None)), 60)
        finally:
            await writer.close()

    answer = asyncio.run(scenario())
    assert answer == {"summaries": [], "reason": "the topic has no ttl_seconds"}, answer
