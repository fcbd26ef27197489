"""Limits of the real `gatosd`: slow clients, keep-alive, connection floods, a full queue."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from gatosd._framing import encode_frame
from tests.integration.daemon_support import (
    Daemon,
    JsonlClient,
    append_frame,
    assert_unchanged,
    journal_entries,
    make_node,
    raise_nofile,
    short_dir,
    snapshot,
    start_daemon,
)

pytestmark = pytest.mark.integration

MAX_CONNECTIONS = 50


@pytest.fixture(scope="module")
def timed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon with a 1 s line timeout and a 0.5 s ping interval."""
    repo = make_node(tmp_path_factory.mktemp("timed") / "node")
    with short_dir() as sockets:
        running = start_daemon(repo, "--line-timeout", "1", "--ping-interval", "0.5",
                               socket_dir=sockets)
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon with few connections and a tiny append queue."""
    repo = make_node(tmp_path_factory.mktemp("tight") / "node")
    with short_dir() as sockets:
        running = start_daemon(repo, "--max-connections", str(MAX_CONNECTIONS), "--queue-max", "2",
                               "--batch-max", "1", "--batch-delay-ms", "0", socket_dir=sockets)
        try:
            yield running
        finally:
            running.stop()


def _wait_idle(daemon: Daemon, timeout: float = 10.0) -> dict:
    """Poll `status` until only the polling connection is open (closed sockets are noticed
    shortly after; until then a new connection may be told BUSY)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with daemon.client() as c:
                c.send({"type": "status", "id": "s"})
                status = c.recv()
        except BlockingIOError:  # the listen backlog is full: the daemon has not caught up yet
            assert time.monotonic() < deadline, "the daemon accepted no connection"
            time.sleep(0.05)
            continue
        assert status is not None
        if (status["ok"] and status["connections"] <= 1) or time.monotonic() > deadline:
            return status
        assert status["ok"] or status["error"]["code"] == "BUSY", status
        time.sleep(0.05)


# -- slow clients ---------------------------------------------------------------------------


def test_one_byte_every_fifth_of_a_second_times_out(timed: Daemon) -> None:
    """A client trickling a line byte by byte gets TIMEOUT when the whole line takes too long,
    and is closed; the daemon serves others."""
    before = snapshot(timed.repo)
    line = encode_frame(append_frame("slow", actor="user:a"))
    with timed.client() as c:
        c.sock.settimeout(0.05)
        started = time.monotonic()
        frames = []
        closed = False
        for byte in line[:-1]:
            try:
                c.send_raw(bytes([byte]))
            except OSError:
                closed = True
                break
            deadline = time.monotonic() + 0.2
            while time.monotonic() < deadline:
                try:
                    frame = c.recv(max(0.01, deadline - time.monotonic()))
                except TimeoutError:
                    continue
                if frame is None:
                    closed = True
                    break
                frames.append(frame)
            if closed or time.monotonic() - started > 6:
                break
        assert frames and frames[0]["error"]["code"] == "TIMEOUT", frames
        if not closed:
            frames += c.wait_closed(3)
        elapsed = time.monotonic() - started
    assert 0.9 <= elapsed <= 4, elapsed
    assert_unchanged(timed.repo, before)
    with timed.client() as other:
        other.hello()


def test_lines_split_across_reads_are_not_timed_out(timed: Daemon) -> None:
    """A steady client whose lines straddle reads is served for longer than the line timeout."""
    with timed.client() as c:
        started = time.monotonic()
        i = 0
        while time.monotonic() - started < 2.5:
            line = encode_frame({"type": "status", "id": i})
            c.send_raw(line[: len(line) // 2])
            time.sleep(0.15)
            c.send_raw(line[len(line) // 2:] + b'{"type":"sta')  # the next line starts here
            time.sleep(0.15)
            c.send_raw(b'tus","id":"x%d"}\n' % i)
            assert c.final(i)["ok"] is True
            assert c.final(f"x{i}")["ok"] is True
            i += 1
        assert i >= 5


# -- keep-alive --------------------------------------------------------------------------


def test_idle_client_is_pinged_then_closed(timed: Daemon) -> None:
    """A silent client gets {"kind":"ping"} after one interval and is closed after another."""
    with timed.client() as c:
        started = time.monotonic()
        first = c.recv(5)
        assert first == {"kind": "ping"}
        assert 0.4 <= time.monotonic() - started <= 2.0
        assert c.wait_closed(5) == []
        assert time.monotonic() - started <= 3.0


def test_client_answering_pong_stays_connected(timed: Daemon) -> None:
    """A client that answers every ping with pong keeps its connection for many intervals."""
    with timed.client() as c:
        started = time.monotonic()
        pings = 0
        while time.monotonic() - started < 3.0:
            try:
                frame = c.recv(0.2)
            except TimeoutError:
                continue
            assert frame == {"kind": "ping"}, frame
            pings += 1
            c.send({"kind": "pong"})
        assert pings >= 3
        assert c.request({"type": "hello", "id": "still"})["ok"] is True


# -- connections ---------------------------------------------------------------------------


def test_thousands_of_abandoned_connections_are_capped(tight: Daemon) -> None:
    """2,000 connections opened and dropped in waves: beyond the cap each gets BUSY and is
    closed, and afterwards the daemon serves normally with no connection left over."""
    raise_nofile(4096)
    fd_dir = f"/proc/{tight.pid}/fd"
    fds_before = len(os.listdir(fd_dir))
    total, wave = 2000, 200
    refused = 0
    for _wave in range(total // wave):
        socks = []
        for n in range(wave):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(tight.socket)
            if n % 3 == 0:
                # Abandoned half-way through a line. A socket over the cap (which, until the
                # daemon notices the last wave's closes, can be any of them) may be refused
                # and closed before this is sent: that is the behaviour checked below.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    s.sendall(b'{"type":"hel')
            socks.append(s)
        # the ones over the cap hear BUSY and are closed by the daemon
        for s in socks[MAX_CONNECTIONS + 10:MAX_CONNECTIONS + 20]:
            s.settimeout(10)
            data = s.recv(4096)
            assert b'"BUSY"' in data, data
            refused += 1
        for n, s in enumerate(socks):
            if n % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
    assert refused == 10 * (total // wave)
    status = _wait_idle(tight)
    assert status["connections"] <= 1, status
    assert tight.alive()
    assert len(os.listdir(fd_dir)) <= fds_before + 2  # no socket leaked
    # a full house of fresh clients is served
    clients = [tight.client() for _ in range(MAX_CONNECTIONS - 1)]
    try:
        for i, c in enumerate(clients):
            assert c.request({"type": "status", "id": i})["ok"] is True
    finally:
        for c in clients:
            c.close()


def test_a_full_append_queue_answers_busy_and_writes_only_what_it_accepted(tight: Daemon) -> None:
    """Bursts of appends on several connections against a queue of 2: some get BUSY at once,
    every other one is written, and exactly those are in the journal."""
    _wait_idle(tight)
    results: dict[str, dict] = {}
    lock = threading.Lock()

    def burst(worker: int) -> None:
        with tight.client() as c:
            frames = [append_frame(f"w{worker}-{i}", "busy", actor="user:a", payload={"w": worker, "i": i})
                      for i in range(100)]
            c.send_raw(b"".join(encode_frame(f) for f in frames))
            for _ in frames:
                frame = c.recv()
                assert frame is not None
                with lock:
                    results[frame["id"]] = frame

    threads = [threading.Thread(target=burst, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 400
    busy = {k for k, v in results.items() if not v["ok"]}
    assert busy, "a queue of 2 never filled"
    assert {results[k]["error"]["code"] for k in busy} == {"BUSY"}
    written = {(e["payload"]["w"], e["payload"]["i"]) for e in journal_entries(tight.repo, "busy", "user:a")}
    accepted = {(int(k[1:].split("-")[0]), int(k.split("-")[1])) for k, v in results.items() if v["ok"]}
    assert written == accepted
    with tight.client() as c:
        c.hello()


def test_connection_over_the_cap_is_told_busy(tight: Daemon) -> None:
    """With every slot taken the next connection reads a BUSY frame and EOF; nothing changes."""
    _wait_idle(tight)
    before = snapshot(tight.repo)
    held = [tight.client() for _ in range(MAX_CONNECTIONS)]
    try:
        for i, c in enumerate(held):
            c.request({"type": "status", "id": i})
        extra = JsonlClient.unix(tight.socket)
        frame = extra.recv(10)
        assert frame is not None and frame["error"]["code"] == "BUSY", frame
        assert extra.wait_closed(5) == []
        extra.close()
    finally:
        for c in held:
            c.close()
    assert_unchanged(tight.repo, before)
