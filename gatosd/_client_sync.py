"""The blocking client: `ClientProtocol` driven over a socket or a child's pipes.

No threads and no event loop of its own: a call writes its request and then reads
until its reply is complete, answering the daemon's pings on the way. It is safe to
share between threads: sends are serialized, and one waiter at a time reads and routes
whatever arrives into per-request queues (so replies to other threads' requests are
kept for them, never lost).

A connection idle for two ping intervals is closed by the daemon (nobody answered its
ping). The next call notices the end of stream before it sends and reconnects (for a
`spawn_stdio` client: spawns a new daemon) — only then, never mid-request, because a
node-signed append without a ULID must not be sent twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any

from gatosd._client_errors import (
    ConnectionClosed,
    DaemonNotRunning,
    GatosError,
    RequestTimeout,
)
from gatosd._client_protocol import ClientProtocol, result_of
from gatosd._client_requests import (
    DEFAULT_TIMEOUT,
    append_fields,
    journal_read_fields,
    not_running_reason,
    read_state,
)
from gatosd._client_transport import ProcessTransport, SocketTransport, Transport
from ledger_core import SigningKey

Connector = Callable[[], Transport]
_UNSET: Any = object()


class Client:
    """A blocking connection to one `gatosd`. Use a constructor (`connect_unix`, …)."""

    def __init__(self, connector: Connector, *, timeout: float | None = DEFAULT_TIMEOUT,
                 token: str | None = None, handshake: bool = False) -> None:
        self.timeout = timeout
        self._connector = connector
        self._token = token
        self._handshake = handshake
        self._send_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._connect_lock = threading.Lock()
        self._user_closed = False
        self._hello: dict[str, Any] | None = None
        self._transport, self._proto = self._open()

    # -- constructors ----------------------------------------------------------------

    @classmethod
    def connect_unix(cls, path: str, *, timeout: float | None = DEFAULT_TIMEOUT) -> Client:
        """Connect to a daemon's unix socket."""
        return cls(lambda: SocketTransport.unix(path, timeout), timeout=timeout)

    @classmethod
    def connect_tcp(cls, host: str, port: int, token: str, *,
                    timeout: float | None = DEFAULT_TIMEOUT) -> Client:
        """Connect over loopback TCP; the token authenticates the first frame (a `hello`).

        Raises:
            Unauthorized: the daemon refused the token.
        """
        return cls(lambda: SocketTransport.tcp(host, port, timeout), timeout=timeout,
                   token=token, handshake=True)

    @classmethod
    def spawn_stdio(cls, repo: str, *, timeout: float | None = DEFAULT_TIMEOUT,
                    daemon_args: Sequence[str] = ()) -> Client:
        """Run `gatosd --stdio` for `repo` as a child process and talk over its pipes.

        The child holds the repository's daemon lock while it runs: this fails
        (`ConnectionClosed` naming `ALREADY_RUNNING`) when a daemon already serves it.
        """
        extra = tuple(daemon_args)
        return cls(lambda: ProcessTransport.spawn(repo, extra), timeout=timeout)

    @classmethod
    def for_repo(cls, repo: str, *, timeout: float | None = DEFAULT_TIMEOUT,
                 token: str | None = None) -> Client:
        """Connect to the running daemon of the repository containing `repo`.

        Uses the socket named in `.git/gatos/gatosd.json`, or its TCP address when it
        has no socket and `token` is given.

        Raises:
            DaemonNotRunning: no daemon state, or nothing answers where it points.
        """
        state = read_state(repo)
        try:
            if state.socket:
                return cls.connect_unix(state.socket, timeout=timeout)
            if state.tcp_address and token is not None:
                host, port = state.tcp_address
                return cls.connect_tcp(host, port, token, timeout=timeout)
        except OSError as exc:
            raise not_running_reason(state, exc) from None
        raise DaemonNotRunning(f"the daemon of this repository has no unix socket ({state.path}); "
                               "connect over TCP with its token")

    # -- connection ------------------------------------------------------------------

    def _open(self) -> tuple[Transport, ClientProtocol]:
        transport = self._connector()
        proto = ClientProtocol(token=self._token)
        self._transport, self._proto = transport, proto
        if self._handshake:
            try:
                self._hello = self.request("hello")
            except BaseException:
                transport.close()
                raise
        return transport, proto

    def _revive(self) -> None:
        """Before a new request: take in what arrived meanwhile; reconnect if the daemon hung up."""
        if self._user_closed:
            raise ConnectionClosed("the client is closed")
        with self._read_lock:
            while self._proto.closed is None and self._transport.wait_readable(0):
                self._feed(self._transport.read())
            dead = self._transport if (self._proto.closed is not None
                                       and self._proto.in_flight == 0) else None
        if dead is not None:
            with self._connect_lock:
                if self._transport is dead:  # not already replaced by another thread
                    dead.close()
                    self._open()

    def _feed(self, data: bytes) -> None:
        """Route bytes read (under the read lock) and answer pings at once."""
        self._proto.feed(data)
        if not data and self._proto.closed is not None:
            detail = self._transport.eof_detail()
            if detail:
                self._proto.closed.reason += detail
        pongs = self._proto.data_to_send()
        if pongs:
            self._send(pongs)

    def _send(self, data: bytes) -> None:
        with self._send_lock:
            try:
                self._transport.write(data)
            except OSError as exc:
                self._proto.close(ConnectionClosed(f"writing to the daemon failed: {exc}"
                                                   f"{self._transport.eof_detail()}"))

    def _next(self, request_id: str, timeout: float | None) -> dict[str, Any]:
        """Block until the next frame of `request_id`; raise its error or a timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._read_lock.acquire(timeout=-1 if remaining is None else remaining):
                break
            try:
                frame = self._proto.next_frame(request_id)
                if frame is not None:
                    return frame
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if self._transport.wait_readable(remaining):
                    self._feed(self._transport.read())
                    continue
            finally:
                self._read_lock.release()
            break
        self._proto.finish(request_id)
        raise RequestTimeout(f"no reply within {timeout:g}s", request_id=request_id)

    def close(self) -> None:
        """Close the connection (a spawned daemon is stopped). Idempotent."""
        if self._user_closed:
            return
        self._user_closed = True
        self._proto.close(ConnectionClosed("the client is closed"))
        self._transport.close()

    @property
    def returncode(self) -> int | None:
        """Exit status of a spawned daemon once it ended (None while it runs, or not spawned)."""
        proc = getattr(self._transport, "proc", None)
        return proc.returncode if proc is not None else None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- generic requests ------------------------------------------------------------

    def stream(self, type: str, *, timeout: float | None = _UNSET, **fields: Any
               ) -> Iterator[dict[str, Any]]:
        """Send one request and yield every frame of its reply, the final `ok` frame last.

        Frames come without `id`: `{"ack": true}`, `{"partial": true, …}`, progress or
        message frames, then the final frame. `timeout` bounds the wait for each frame
        (None: wait forever). An error frame is raised as its typed `GatosError`.
        """
        wait = self.timeout if timeout is _UNSET else timeout
        self._revive()
        request_id, line = self._proto.start(type, fields)
        try:
            self._send(line)
            while True:
                frame = self._next(request_id, wait)
                yield frame
                if "ok" in frame:
                    return
        finally:
            self._proto.finish(request_id)

    def request(self, type: str, *, timeout: float | None = _UNSET, **fields: Any
                ) -> dict[str, Any]:
        """Send one request; return its final frame without `ok` and `id`.

        Frames before the final one (ack, partial, progress) are skipped: use `stream`
        for methods whose data comes in them.
        """
        final: dict[str, Any] = {}
        for frame in self.stream(type, timeout=timeout, **fields):
            final = frame
        return result_of(final)

    # -- methods -----------------------------------------------------------------------

    def hello(self) -> dict[str, Any]:
        """Versions, limits, methods and the node the daemon serves."""
        self._hello = self.request("hello")
        return self._hello

    def ping(self, *, timeout: float | None = _UNSET) -> float:
        """Send a keep-alive ping; return the seconds until its pong arrived."""
        wait = self.timeout if timeout is _UNSET else timeout
        self._revive()
        started = time.monotonic()
        ticket, line = self._proto.ping()
        self._send(line)
        deadline = None if wait is None else started + wait
        while self._proto.pongs_received < ticket:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            with self._read_lock:
                if self._proto.pongs_received >= ticket:
                    break
                if self._proto.closed is not None:
                    raise self._proto.closed
                if not self._transport.wait_readable(remaining):
                    raise RequestTimeout(f"no pong within {wait:g}s")
                self._feed(self._transport.read())
        return time.monotonic() - started

    def append_event(self, ns: str, type: str, payload: Any, *, actor: str | None = None,
                     ulid: str | None = None, caps: Sequence[str] | None = None,
                     ts: str | None = None, policy_root: str | None = None,
                     signing_key: SigningKey | None = None) -> dict[str, Any]:
        """Append one event; returns `ns, ref, commit, event_cid, ulid, actor, duplicate`.

        With `signing_key` the envelope is built and signed here (ULID, `ts` from the
        ULID, `policy_root` or the zero OID; `actor` defaults to the daemon's node actor)
        and the daemon only verifies it. Without it the daemon signs with its key for
        the actor.
        """
        if signing_key is not None and actor is None:
            actor = self._node_actor()
        return self.request("append_event", **append_fields(
            ns, type, payload, actor=actor, ulid=ulid, caps=caps, ts=ts,
            policy_root=policy_root, signing_key=signing_key))

    def journal_head(self, ns: str, actor: str) -> dict[str, Any]:
        """`{"ns", "ref", "head"}` of one actor's journal (`head` None when empty)."""
        return self.request("journal.head", ns=ns, actor=actor)

    def journal_read(self, ns: str, actor: str, *, after: str | None = None,
                     after_ulid: str | None = None, until: str | None = None,
                     limit: int | None = None, last: int | None = None) -> dict[str, Any]:
        """Entries of a journal range, oldest first, joined from every partial frame."""
        entries: list[dict[str, Any]] = []
        final: dict[str, Any] = {}
        for frame in self.stream("journal.read", **journal_read_fields(
                ns, actor, after=after, after_ulid=after_ulid, until=until, limit=limit,
                last=last)):
            entries.extend(frame.get("entries") or ())
            final = frame
        return {**result_of(final), "entries": entries}

    def verify(self) -> dict[str, Any]:
        """Verify every journal of the node: `{"valid", "journals", "events", "problems"}`."""
        return self.request("verify")

    def status(self) -> dict[str, Any]:
        """What the daemon is doing: pid, uptime, connections, queue, batches, events."""
        return self.request("status")

    def _node_actor(self) -> str:
        hello = self._hello or self.hello()
        actor = (hello.get("node") or {}).get("actor")
        if not isinstance(actor, str):
            raise GatosError("the daemon's node has no default actor; pass `actor`", "NO_ACTOR")
        return actor


__all__ = ["Client"]
