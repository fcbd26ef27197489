"""The asyncio JSONL server: connections, dispatch, keep-alive, limits, shutdown.

Thin glue around the sans-I/O `LineFramer` and the `Registry`. What it guarantees:

* a bad line gets an error frame and the connection lives on; nothing a client sends
  can raise out of a connection task;
* memory per connection is bounded: one partial line (`max_line`), `max_inflight`
  requests (more are answered `BUSY`), `out_queue` reply frames (handlers wait when it
  is full, so a client that does not read slows only itself) and a reader that does
  not drain for `write_timeout` is dropped;
* a partial line that does not complete within `line_timeout` closes the connection
  (`TIMEOUT`); an idle connection is pinged every `ping_interval` and closed if it
  stays silent for another interval;
* on TCP the first frame must carry the bearer token (`"token": "…"`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from dataclasses import dataclass
from typing import Any

from gatosd._framing import DEFAULT_MAX_LINE, LineError, LineFramer, encode_frame
from gatosd._registry import Registry
from gatosd.errors import ProtocolError, bad_frame, busy, timeout, unauthorized, unknown_type
from ledger_core.errors import LedgerError

log = logging.getLogger("gatosd")

# Replies are written straight to the socket while its unsent buffer is below this;
# above it they queue for the writer task, which waits for the client to drain.
_DIRECT_WRITE_MAX = 64 * 1024


@dataclass(frozen=True)
class Limits:
    max_line: int = DEFAULT_MAX_LINE
    max_inflight: int = 256
    max_connections: int = 1024
    out_queue: int = 1024
    line_timeout: float = 30.0
    ping_interval: float = 30.0
    write_timeout: float = 30.0

    def to_wire(self) -> dict[str, Any]:
        return {"max_line": self.max_line, "max_inflight": self.max_inflight,
                "max_connections": self.max_connections, "line_timeout_s": self.line_timeout,
                "ping_interval_s": self.ping_interval}


class _Request:
    """The `Context` a handler gets: the request id and a way to push frames."""

    def __init__(self, conn: Connection, request_id: Any) -> None:
        self._conn = conn
        self.request_id = request_id
        self.acked = False

    async def ack(self) -> None:
        """Say "working on it" (once): before the first streamed frame of any request."""
        if not self.acked:
            self.acked = True
            await self._conn.send({"ack": True, "id": self.request_id})

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ack()
        await self._conn.send({**frame, "id": self.request_id})


class _IdleWatch:
    """Reads that time out after `interval` seconds without data, on one timer.

    The timer is set once and, when it fires, moved to `interval` after the last read
    that returned data; only a read still waiting past that point is cancelled (and
    raises `TimeoutError`), as `asyncio.timeout` around each read would, for one timer
    per interval instead of one per read.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        self.active_at = loop.time()
        self._waiting: asyncio.Task[Any] | None = None  # the task in a read, if any
        self._fired = False
        self._timer: asyncio.TimerHandle | None = loop.call_at(self.active_at + interval, self._check)

    def _check(self) -> None:
        now = self.loop.time()
        due = self.active_at + self.interval
        if due <= now:
            if self._waiting is not None:  # silent for a whole interval: time its read out
                self._fired = True
                self._waiting.cancel()
            due = now + self.interval  # (not reading: busy with what it read; look again later)
        self._timer = self.loop.call_at(due, self._check)

    async def read(self, reader: asyncio.StreamReader) -> bytes:
        task = asyncio.current_task()
        assert task is not None
        self._waiting = task
        try:
            data = await reader.read(65536)
        except asyncio.CancelledError:
            if not self._fired:
                raise
            self._fired = False
            if task.uncancel() == 0:
                raise TimeoutError from None
            raise  # cancelled from elsewhere too
        finally:
            self._waiting = None
        self.active_at = self.loop.time()
        return data

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Connection:
    def __init__(self, server: Server, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, *, token: str | None) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.token = token
        self.authenticated = token is None
        self.framer = LineFramer(server.limits.max_line)
        self.out: asyncio.Queue[bytes | None] = asyncio.Queue(server.limits.out_queue)
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False

    async def send(self, frame: dict[str, Any]) -> None:
        if self.closing:
            return
        data = encode_frame(frame)
        transport = self.writer.transport
        if (self.out.empty() and not transport.is_closing()
                and transport.get_write_buffer_size() <= _DIRECT_WRITE_MAX):
            # Nothing queued ahead of it (a frame stays in the queue until the writer task
            # takes and writes it in one step), so order holds: write now instead of
            # waking the writer task for one frame (a reply per publish on a busy bus).
            self.writer.write(data)
            return
        await self.out.put(data)

    def send_nowait(self, frame: dict[str, Any]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.out.put_nowait(encode_frame(frame))

    async def _writer_loop(self) -> None:
        limits = self.server.limits
        try:
            done = False
            while not done:
                # Replies finished together (a batch's acks) leave in one write: one
                # syscall instead of one per frame.
                chunks = [await self.out.get()]
                while not self.out.empty() and len(chunks) < 256:
                    chunks.append(self.out.get_nowait())
                if None in chunks:
                    chunks = chunks[:chunks.index(None)]
                    done = True
                if chunks:
                    self.writer.write(b"".join(chunks))  # type: ignore[arg-type]
                if self.writer.transport.get_write_buffer_size() > _DIRECT_WRITE_MAX:
                    await asyncio.wait_for(self.writer.drain(), limits.write_timeout)
            await asyncio.wait_for(self.writer.drain(), limits.write_timeout)
        except (TimeoutError, ConnectionError, OSError):
            self.closing = True
            self.writer.transport.abort()
            while not self.out.empty():  # wake handlers blocked on a full queue; drop replies
                self.out.get_nowait()

    async def run(self) -> None:
        writer_task = asyncio.create_task(self._writer_loop())
        try:
            await self._reader_loop()
        finally:
            if self.tasks:  # answer what was asked before the client hung up
                await asyncio.wait(self.tasks, timeout=self.server.limits.write_timeout)
            with contextlib.suppress(asyncio.QueueFull):
                self.out.put_nowait(None)
            if not writer_task.done():
                try:
                    await asyncio.wait_for(writer_task, self.server.limits.write_timeout)
                except TimeoutError:
                    writer_task.cancel()
            with contextlib.suppress(Exception):
                self.writer.close()

    async def _reader_loop(self) -> None:
        limits = self.server.limits
        loop = asyncio.get_running_loop()
        pinged = False
        # `line_timeout` bounds a whole line, not each read: a client trickling one byte
        # at a time must not hold a connection (and its buffer) forever.
        line_deadline: float | None = None
        idle = _IdleWatch(loop, limits.ping_interval)
        try:
            while not self.server.stopping:
                try:
                    if self.framer.in_line:  # (rare) a partial line: its deadline, per read
                        if line_deadline is None:
                            line_deadline = loop.time() + limits.line_timeout
                        async with asyncio.timeout(max(0.0, line_deadline - loop.time())):
                            data = await self.reader.read(65536)
                        idle.active_at = loop.time()
                    else:
                        line_deadline = None
                        # One timer for the connection, moved only when it fires, instead
                        # of a timeout scheduled and cancelled around every read: a
                        # publisher reads once per message (about 4 us each, measured).
                        data = await idle.read(self.reader)
                except TimeoutError:
                    if self.framer.in_line:
                        await self.send({"ok": False, "id": None, "error": timeout(
                            f"a line stayed incomplete for {limits.line_timeout:g}s").to_wire()})
                        return
                    if pinged:
                        return  # silent through a whole ping interval: gone
                    await self.send({"kind": "ping"})
                    pinged = True
                    continue
                except (ConnectionError, OSError):
                    return
                if not data:
                    return
                pinged = False
                if b"\n" in data:
                    line_deadline = None  # the partial line now held (if any) started in `data`
                for item in self.framer.feed(data):
                    if isinstance(item, LineError):
                        await self.send({"ok": False, "id": item.id, "error": item.error.to_wire()})
                        continue
                    if not await self._accept(item):
                        return
        finally:
            idle.close()

    async def _accept(self, frame: dict[str, Any]) -> bool:
        """Route one parsed frame. Returns False when the connection must close."""
        kind = frame.get("kind")
        if kind is not None and not self.authenticated:
            # Keep-alive is for authenticated clients only: otherwise an anonymous TCP
            # client could hold a connection slot forever by pinging.
            await self.send({"ok": False, "id": None, "error": unauthorized(
                "authenticate first: the first frame must carry the bearer token").to_wire()})
            return False
        if kind == "ping":
            await self.send({"kind": "pong"})
            return True
        if kind == "pong":
            return True
        request_id = frame.get("id")
        if not self.authenticated:
            given = frame.get("token")
            if not isinstance(given, str) or not hmac.compare_digest(
                    given.encode(), (self.token or "").encode()):
                await self.send({"ok": False, "id": request_id, "error": unauthorized(
                    "the first frame must carry the daemon's bearer token as \"token\"").to_wire()})
                return False
            self.authenticated = True
        if len(self.tasks) >= self.server.limits.max_inflight:
            await self.send({"ok": False, "id": request_id, "error": busy(
                f"{self.server.limits.max_inflight} requests already in flight on this "
                "connection").to_wire()})
            return True
        task = asyncio.create_task(self._handle(frame, request_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    async def _handle(self, frame: dict[str, Any], request_id: Any) -> None:
        try:
            if request_id is not None and (not isinstance(request_id, (str, int))
                                           or isinstance(request_id, bool)):
                raise bad_frame("`id` must be a string or an integer")
            name = frame.get("type")
            if not isinstance(name, str):
                raise bad_frame("a request needs a string `type` (or `kind` for ping/pong)")
            method = self.server.registry.get(name)
            if method is None:
                raise unknown_type(name)
            ctx = _Request(self, request_id)
            if method.stream:
                await ctx.ack()
            result = await method.handler(ctx, frame)
            await self.send({**result, "ok": True, "id": request_id})
        except LedgerError as exc:
            self.server.observer.failed(exc.code)
            await self.send({"ok": False, "id": request_id, "error": exc.to_wire()})
        except Exception:
            log.exception("request %r failed", request_id)
            self.server.observer.failed("INTERNAL")
            await self.send({"ok": False, "id": request_id, "error": {
                "code": "INTERNAL", "reason": "internal error; see the daemon's log"}})


class Observer:
    """What the server reports as it runs (metrics plug in here); the default ignores it."""

    def connections(self, count: int) -> None:
        """The number of open connections changed."""

    def failed(self, code: str) -> None:
        """A request was answered with an error of this code."""


class Server:
    """Accepts connections on any number of transports and serves the registry."""

    def __init__(self, registry: Registry, limits: Limits | None = None,
                 observer: Observer | None = None) -> None:
        self.registry = registry
        self.limits = limits or Limits()
        self.observer = observer or Observer()
        self.connections: set[Connection] = set()
        self.stopping = False
        self._servers: list[asyncio.AbstractServer] = []
        self._conn_tasks: set[asyncio.Task[None]] = set()

    async def serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           *, token: str | None = None) -> None:
        """Serve one connection until it closes."""
        if self.stopping or len(self.connections) >= self.limits.max_connections:
            reason = "the daemon is shutting down" if self.stopping else (
                f"too many connections (limit {self.limits.max_connections})")
            with contextlib.suppress(Exception):
                writer.write(encode_frame({"ok": False, "id": None,
                                           "error": ProtocolError(reason, "BUSY").to_wire()}))
                await asyncio.wait_for(writer.drain(), 1.0)
                writer.close()
            return
        conn = Connection(self, reader, writer, token=token)
        self.connections.add(conn)
        self.observer.connections(len(self.connections))
        task = asyncio.current_task()
        if task is not None:
            self._conn_tasks.add(task)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
            self.observer.connections(len(self.connections))
            if task is not None:
                self._conn_tasks.discard(task)

    async def listen_unix(self, path: str) -> None:
        import os

        server = await asyncio.start_unix_server(self.serve_stream, path=path,
                                                 limit=self.limits.max_line)
        os.chmod(path, 0o600)
        self._servers.append(server)

    async def listen_tcp(self, host: str, port: int, token: str) -> int:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.serve_stream(reader, writer, token=token)

        server = await asyncio.start_server(serve, host=host, port=port)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def stop_accepting(self) -> None:
        self.stopping = True
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def drain(self, grace: float) -> None:
        """Wait for in-flight requests of every connection, then let the connections end."""
        tasks = {t for conn in self.connections for t in conn.tasks}
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for conn in list(self.connections):
            conn.reader.feed_eof()  # ends its read loop; replies already queued still go out
        if self._conn_tasks:
            await asyncio.wait(set(self._conn_tasks), timeout=grace)
