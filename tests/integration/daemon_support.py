"""Test support for the daemon suite: a real `gatosd` subprocess on a tmp repository,
a small raw JSONL socket client (no `gatosd.client`), and the signals that stop it.

Everything here talks bytes over real sockets so the tests see exactly what a client
written in any language would see.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gatosd.node import Node
from ledger_core import encode_ulid, journal_ref, normalize_actor, read_range
from policy import issue_grant
from tests.integration.conftest import gatos, git, snapshot

BIN = Path(sys.executable).parent
READY_TIMEOUT = 20.0

__all__ = ["Daemon", "JsonlClient", "append_frame", "assert_unchanged", "fsck", "journal_entries",
           "make_node", "raise_nofile", "short_dir", "snapshot", "start_daemon", "verify_ok"]


def make_node(path: Path, *actors: str) -> Path:
    """A fresh node owned by the first actor (default `user:a`), with keys for the others.

    The others are granted `*:append` by the owner (deny by default: a key alone allows nothing).
    """
    actors = actors or ("user:a",)
    node, _ = Node.init(str(path), actors[0], discover=False)
    for actor in actors[1:]:
        node.new_key(actor)
        issue_grant(node.policy, node.signing_key(actors[0]), issuer=actors[0], subject=actor,
                    caps=["*:append"], exp=None)
    return path


def append_numbered(node: Node, ns: str, indices: Iterable[int],
                    fields: Callable[[int], dict[str, Any]], *, t0: int) -> None:
    """Append one signed event per index in one group commit: event `i` gets the ULID of
    time `t0 + i` with `i` as its random part (so order and ids are fixed), and the other
    `build_event` arguments from `fields(i)`. Fails the test if any append fails."""
    items = []
    for i in indices:
        ev = node.build_event(ulid=encode_ulid(t0 + i, i.to_bytes(10, "big")), **fields(i))
        items.append((ns, node.sign(ev)))
    for result in node.append_many(items, preverified=True):
        assert not isinstance(result, Exception), result


@contextlib.contextmanager
def short_dir() -> Iterator[str]:
    """A short tmp folder for unix sockets (their path is limited to 107 bytes)."""
    folder = tempfile.mkdtemp(prefix="gd-", dir="/tmp")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class JsonlClient:
    """A blocking JSONL client over a unix or TCP socket, one frame per line."""

    def __init__(self, sock: socket.socket, timeout: float = 15.0) -> None:
        self.sock = sock
        self.sock.settimeout(timeout)
        self._buffer = bytearray()
        self.closed = False

    @classmethod
    def unix(cls, path: str, timeout: float = 15.0) -> JsonlClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(path)
        return cls(sock, timeout)

    @classmethod
    def tcp(cls, address: str, timeout: float = 15.0) -> JsonlClient:
        host, _, port = address.rpartition(":")
        return cls(socket.create_connection((host, int(port)), timeout=timeout), timeout)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, frame: Any) -> None:
        self.sock.sendall(orjson.dumps(frame) + b"\n")

    def recv(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next frame, or None when the daemon closed the connection."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        while b"\n" not in self._buffer:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                return None
            self._buffer += data
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return json.loads(line)

    def final(self, request_id: Any, timeout: float | None = None) -> dict[str, Any]:
        """Frames up to the final ok/error frame of `request_id` (skipping pings)."""
        frames = self.frames_until(request_id, timeout)
        return frames[-1]

    def frames_until(self, request_id: Any, timeout: float | None = None) -> list[dict[str, Any]]:
        """Every frame keyed by `request_id` up to and including its final ok/error frame."""
        frames = []
        while True:
            frame = self.recv(timeout)
            if frame is None:
                raise ConnectionError(f"closed before the reply to {request_id!r}; got {frames}")
            if frame.get("kind") == "ping":
                self.send({"kind": "pong"})
                continue
            if frame.get("id") != request_id:
                raise AssertionError(f"unexpected frame {frame} while waiting for {request_id!r}")
            frames.append(frame)
            if "ok" in frame:
                return frames

    def request(self, frame: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send one request and return its final reply."""
        self.send(frame)
        return self.final(frame.get("id"), timeout)

    def request_frames(self, frame: dict[str, Any], timeout: float | None = None
                       ) -> list[dict[str, Any]]:
        """Send one request and return every frame of its answer (ack, partials, final)."""
        self.send(frame)
        return self.frames_until(frame.get("id"), timeout)

    def hello(self) -> dict[str, Any]:
        reply = self.request({"type": "hello", "id": "hello"})
        assert reply["ok"] is True, reply
        return reply

    def wait_closed(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Read until the daemon closes the connection; return the frames seen."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"connection still open after {timeout}s; saw {seen}")
            try:
                frame = self.recv(left)
            except TimeoutError:
                continue
            if frame is None:
                return seen
            seen.append(frame)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> JsonlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


@dataclass
class Daemon:
    """A running `gatosd` subprocess and what it announced when ready."""

    proc: subprocess.Popen[bytes]
    repo: Path
    stderr_path: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def socket(self) -> str:
        return str(self.info["socket"])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self, timeout: float = 15.0) -> JsonlClient:
        return JsonlClient.unix(self.socket, timeout)

    def tcp_client(self, timeout: float = 15.0) -> JsonlClient:
        return JsonlClient.tcp(str(self.info["listen"]), timeout)

    def stderr(self) -> str:
        with open(self.stderr_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def children(self) -> list[int]:
        """Pids of the daemon's child processes (its journal writer among them)."""
        pids: list[int] = []
        for task in Path(f"/proc/{self.pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                pids += [int(p) for p in (task / "children").read_text().split()]
        return pids

    def kill(self) -> int:
        """SIGKILL and reap."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(10)

    def kill_and_wait_for_writer(self) -> int:
        """SIGKILL the daemon, then wait until its orphaned writer finished its batch and exited.

        The writer process does not die with the daemon: it completes the batch it was
        given (unacknowledged, but never half-written) and exits at the pipe's end.
        """
        children = self.children()
        status = self.kill()
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() and "Z" not in _proc_state(pid) for pid in children):
            if time.monotonic() > deadline:
                raise AssertionError(f"the writer {children} did not exit after the daemon was killed")
            time.sleep(0.02)
        return status

    def stop(self) -> None:
        """Best-effort cleanup for fixtures: SIGTERM, then SIGKILL."""
        try:
            self.terminate(15)
        except subprocess.TimeoutExpired:
            self.kill()
        with contextlib.suppress(OSError):
            os.unlink(self.stderr_path)


def daemon_command(repo: Path, *args: str) -> list[str]:
    return [str(BIN / "gatosd"), "--repo", str(repo), *args]


def start_daemon(repo: Path, *args: str, socket_dir: str | None = None,
                 wait: bool = True) -> Daemon:
    """Start `gatosd --repo REPO [--socket DIR/s] ARGS` and wait for its ready line."""
    argv: list[str] = list(args)
    if socket_dir is not None:
        argv = ["--socket", os.path.join(socket_dir, "s"), *argv]
    fd, stderr_path = tempfile.mkstemp(prefix="gatosd-", suffix=".log")
    with os.fdopen(fd, "wb") as err:
        proc = subprocess.Popen(daemon_command(repo, *argv), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    daemon = Daemon(proc, repo, stderr_path)
    if wait:
        daemon.info = wait_ready(daemon)
    return daemon


def wait_ready(daemon: Daemon, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in daemon.stderr().splitlines():
            if line.startswith("{") and '"ready"' in line:
                return dict(json.loads(line))
        if not daemon.alive():
            raise AssertionError(f"gatosd exited {daemon.proc.returncode}: {daemon.stderr()}")
        time.sleep(0.02)
    daemon.kill()
    raise AssertionError(f"gatosd not ready after {timeout}s: {daemon.stderr()}")


def assert_unchanged(repo: Path, before: tuple[str, frozenset[str]]) -> None:
    """Refs and the object list are exactly as in `before`."""
    after = snapshot(repo)
    assert after[0] == before[0], "refs changed"
    assert after[1] == before[1], f"objects changed: {sorted(after[1] ^ before[1])[:5]}"


def journal_entries(repo: Path, ns: str, actor: str) -> list[dict[str, Any]]:
    """Every entry of one journal, oldest first (read with a fresh Node, not the daemon)."""
    node = Node.open(str(repo))
    head = node.repo.refs.get(journal_ref(ns, normalize_actor(actor)))
    return [e.to_dict() for e in read_range(node.repo.objects, head)]  # type: ignore[arg-type]


def verify_ok(repo: Path) -> None:
    result = gatos(repo, "verify")
    assert result.returncode == 0, result.stdout + result.stderr


def fsck(repo: Path) -> None:
    git(repo, "fsck", "--strict", "--no-dangling")


def append_frame(request_id: str, ns: str = "finance", *, actor: str | None = None,
                 payload: Any = None, event_type: str = "invoice.created") -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "append_event", "id": request_id, "ns": ns,
                             "event": {"type": event_type,
                                       "payload": {"n": request_id} if payload is None else payload}}
    if actor is not None:
        frame["actor"] = actor
    return frame


def raise_nofile(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards `wanted` (up to the hard limit); the new soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft

