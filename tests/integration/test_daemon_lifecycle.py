"""Lifecycle of the real `gatosd`: one per repository, graceful SIGTERM, clients that vanish,
kill -9 under load and a restart on the same repository, stdio transport."""

from __future__ import annotations

import glob
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from gatosd._framing import encode_frame
from tests.integration.daemon_support import (
    JsonlClient,
    append_frame,
    daemon_command,
    fsck,
    journal_entries,
    make_node,
    short_dir,
    start_daemon,
    verify_ok,
)

pytestmark = pytest.mark.integration


def _lock_files(repo: Path) -> list[str]:
    """Git lock files (refs, packed-refs, ...); the daemon's own flock file does not count."""
    instance = str(repo / ".git" / "gatos" / "gatosd.lock")
    return [p for p in glob.glob(str(repo / ".git" / "**" / "*.lock"), recursive=True) if p != instance]


class Appender(threading.Thread):
    """A client appending in pipelined windows until told to stop or cut off; records acks."""

    def __init__(self, socket_path: str, tag: str, *, window: int = 10, limit: int = 10**9,
                 ns: str = "load") -> None:
        super().__init__(daemon=True)
        self.socket_path, self.tag, self.window, self.limit, self.ns = socket_path, tag, window, limit, ns
        self.acked: dict[str, dict[str, Any]] = {}
        self.errors: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            with JsonlClient.unix(self.socket_path, timeout=30) as c:
                sent = 0
                while not self.stop.is_set() and sent < self.limit:
                    n = min(self.window, self.limit - sent)
                    frames = [append_frame(f"{self.tag}-{sent + i}", self.ns, actor="user:a",
                                           payload={"w": self.tag, "i": sent + i}) for i in range(n)]
                    sent += n
                    try:
                        c.send_raw(b"".join(encode_frame(f) for f in frames))
                    except OSError:
                        return
                    for _ in frames:
                        frame = c.recv()
                        if frame is None:
                            return
                        if frame.get("ok"):
                            self.acked[frame["id"]] = frame
                        else:
                            self.errors.append(frame)
        except (OSError, ConnectionError):
            return
        except BaseException as exc:  # surfaced by the test
            self.failure = exc


def _assert_acked_present(repo: Path, appenders: list[Appender], ns: str = "load") -> list[dict]:
    entries = journal_entries(repo, ns, "user:a")
    commits = {e["commit"]: e for e in entries}
    for a in appenders:
        assert a.failure is None, a.failure
        for request_id, ack in a.acked.items():
            entry = commits.get(ack["commit"])
            assert entry is not None, f"acknowledged {request_id} ({ack['commit']}) is not in the journal"
            assert entry["event_cid"] == ack["event_cid"]
            assert f"{entry['payload']['w']}-{entry['payload']['i']}" == request_id
    return entries


def test_a_second_daemon_on_the_same_repo_refuses_to_start(tmp_path: Path) -> None:
    """While one gatosd serves a repository another exits non-zero saying one is already running."""
    repo = make_node(tmp_path / "node")
    with short_dir() as sockets:
        first = start_daemon(repo, socket_dir=sockets)
        try:
            second = subprocess.run(daemon_command(repo, "--socket", os.path.join(sockets, "t")),
                                    capture_output=True, text=True, timeout=30)
            assert second.returncode != 0
            assert "already" in second.stderr, second.stderr
            assert str(first.pid) in second.stderr
            with first.client() as c:
                c.hello()
            state = orjson.loads((repo / ".git" / "gatos" / "gatosd.json").read_bytes())
            assert state["pid"] == first.pid and state["socket"] == first.socket
        finally:
            first.stop()


def test_a_socket_path_in_use_by_another_repos_daemon_is_not_stolen(tmp_path: Path) -> None:
    """A daemon for another repository given a --socket that a live daemon serves exits
    non-zero and leaves that socket alone."""
    first_repo, other_repo = make_node(tmp_path / "one"), make_node(tmp_path / "two")
    with short_dir() as sockets:
        first = start_daemon(first_repo, socket_dir=sockets)
        try:
            other = subprocess.run(daemon_command(other_repo, "--socket", first.socket),
                                   capture_output=True, text=True, timeout=30)
            assert other.returncode != 0
            assert "in use" in other.stderr, other.stderr
            with first.client() as c:
                assert c.hello()["node"]["repo"] == str(first_repo)
        finally:
            first.stop()


def test_sigterm_right_after_ready_is_graceful(tmp_path: Path) -> None:
    """SIGTERM the moment the ready line appears: exit 0 with socket and state removed."""
    repo = make_node(tmp_path / "node")
    with short_dir() as sockets:
        daemon = start_daemon(repo, socket_dir=sockets)
        assert daemon.terminate(20) == 0, daemon.stderr()
        assert not os.path.exists(daemon.socket)
        assert not os.path.exists(repo / ".git" / "gatos" / "gatosd.json")


def test_sigterm_with_appends_in_flight_loses_no_acknowledged_append(tmp_path: Path) -> None:
    """SIGTERM under load: exit 0, every acknowledged append written, socket and state removed,
    and an idle client does not hold the shutdown up."""
    repo = make_node(tmp_path / "node")
    with short_dir() as sockets:
        daemon = start_daemon(repo, socket_dir=sockets)
        idle = daemon.client()
        appenders = [Appender(daemon.socket, f"c{i}") for i in range(5)]
        for a in appenders:
            a.start()
        time.sleep(0.8)
        started = time.monotonic()
        code = daemon.terminate(timeout=30)
        took = time.monotonic() - started
        for a in appenders:
            a.stop.set()
            a.join(30)
        idle.close()
        assert code == 0, daemon.stderr()
        assert took < 10, took
        assert not os.path.exists(daemon.socket)
        assert not os.path.exists(repo / ".git" / "gatos" / "gatosd.json")
        assert sum(len(a.acked) for a in appenders) > 0
        _assert_acked_present(repo, appenders)
        assert not _lock_files(repo)
        verify_ok(repo)


def test_client_that_vanishes_after_sending_appends_leaves_a_clean_repo(tmp_path: Path) -> None:
    """Appends sent and the socket closed at once: all are written, no `.lock` is left behind,
    `gatos verify` passes and the daemon serves on."""
    repo = make_node(tmp_path / "node")
    with short_dir() as sockets:
        daemon = start_daemon(repo, socket_dir=sockets)
        try:
            for round_ in range(3):
                c = daemon.client()
                c.send_raw(b"".join(encode_frame(append_frame(f"v{round_}-{i}", "gone", actor="user:a"))
                                    for i in range(100)))
                c.close()
            deadline = time.monotonic() + 20
            while len(journal_entries(repo, "gone", "user:a")) < 300 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(journal_entries(repo, "gone", "user:a")) == 300
            with daemon.client() as c:
                assert c.request({"type": "status", "id": "s"})["queued"] == 0
                c.hello()
            assert not _lock_files(repo)
            verify_ok(repo)
        finally:
            daemon.stop()


def test_kill_9_under_load_then_restart_loses_no_acknowledged_event(tmp_path: Path) -> None:
    """SIGKILL while 10 clients append; a new daemon starts on the same repo, every acknowledged
    event is in the journal, `gatos verify` and `git fsck --strict` pass."""
    repo = make_node(tmp_path / "node")
    with short_dir() as sockets:
        daemon = start_daemon(repo, socket_dir=sockets)
        appenders = [Appender(daemon.socket, f"k{i}") for i in range(10)]
        for a in appenders:
            a.start()
        time.sleep(1.5)
        assert daemon.kill_and_wait_for_writer() == -9
        for a in appenders:
            a.join(30)
        assert sum(len(a.acked) for a in appenders) > 0
        entries = _assert_acked_present(repo, appenders)
        verify_ok(repo)
        fsck(repo)

        restarted = start_daemon(repo, socket_dir=sockets)  # the stale socket and state are no obstacle
        try:
            assert restarted.info["pid"] != daemon.pid
            with restarted.client() as c:
                c.hello()
                reply = c.request(append_frame("after", "load", actor="user:a", payload={"w": "x", "i": 0}))
                locks = _lock_files(repo)
                if locks:  # a kill in the middle of a ref update: reported, never overwritten
                    assert reply["ok"] is False and reply["error"]["code"] == "LOCKED", reply
                else:
                    assert reply["ok"] is True, reply
                    assert len(journal_entries(repo, "load", "user:a")) == len(entries) + 1
                    verify = c.request_frames({"type": "verify", "id": "v"})
                    assert verify[-1]["valid"] is True
        finally:
            restarted.stop()
        verify_ok(repo)
        fsck(repo)


def test_stdio_transport_answers_and_exits_on_eof(tmp_path: Path) -> None:
    """`gatosd --stdio` answers hello and an append over pipes and exits 0 when stdin closes."""
    repo = make_node(tmp_path / "node")
    proc = subprocess.Popen(daemon_command(repo, "--stdio"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b'{"type":"hello","id":"h"}\n')
    proc.stdin.write(encode_frame(append_frame("a1", "io", actor="user:a", payload={"x": 1})))
    proc.stdin.write(b"[1]\n")
    proc.stdin.flush()
    replies = {}
    for _ in range(3):
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        frame = orjson.loads(line)
        replies[frame["id"]] = frame
    assert replies["h"]["ok"] is True and replies["h"]["server"] == "gatosd"
    assert replies["a1"]["ok"] is True
    assert replies[None]["error"]["code"] == "BAD_FRAME"
    proc.stdin.close()
    assert proc.wait(20) == 0
    assert proc.stdout.read() == b""
    entries = journal_entries(repo, "io", "user:a")
    assert [e["commit"] for e in entries] == [replies["a1"]["commit"]]
    assert not os.path.exists(repo / ".git" / "gatos" / "gatosd.json")


def _children(pid: int) -> list[int]:
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.split("/")[2]))
    return found


def test_a_killed_writer_process_fails_its_batch_and_is_replaced(tmp_path: Path) -> None:
    """SIGKILL of the writer child: the next batch is STORAGE, then appends work again."""
    repo = make_node(tmp_path / "node")
    with short_dir() as sockets:
        daemon = start_daemon(repo, socket_dir=sockets)
        try:
            with daemon.client() as c:
                assert c.request(append_frame("w1", "w", actor="user:a"))["ok"] is True
                writers = _children(daemon.pid)
                assert writers, "the daemon has a writer process"
                for pid in writers:
                    os.kill(pid, 9)
                time.sleep(0.2)
                replies = [c.request(append_frame(f"w{i}", "w", actor="user:a")) for i in (2, 3)]
                codes = [r["ok"] or r["error"]["code"] for r in replies]
                assert codes in ([True, True], ["STORAGE", True]), replies
            verify_ok(repo)
        finally:
            daemon.stop()
