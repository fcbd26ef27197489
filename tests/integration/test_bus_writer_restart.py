"""The bus writer process killed under the daemon: in-flight publishes are answered
STORAGE, a new writer takes over (the flock of the dead one is gone with it), and a
retry with the same ULID is either published once or reported as a duplicate."""

from __future__ import annotations

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
