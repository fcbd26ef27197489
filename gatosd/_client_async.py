"""The asyncio client: `ClientProtocol` over asyncio streams, with one reader task.

The reader task owns the read side: it feeds every chunk to the protocol core, wakes
the requests that got frames, answers the daemon's pings at once (so an idle client
stays connected) and, when the stream ends, wakes everyone so they raise. Requests
only write their line and wait on their own event, so any number of them can be in
flight on one connection (pipelining) and replies may arrive in any order.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import IO, Any

from gatosd._client_errors import (
    ConnectionClosed,
    DaemonNotRunning,
    GatosError,
    RequestTimeout,
)
from gatosd._client_protocol import ClientProtocol, Fed, result_of
from gatosd._client_requests import (
    DEFAULT_TIMEOUT,
    append_fields,
    journal_read_fields,
    not_running_reason,
    read_state,
    stdio_command,
    stdio_env,
)
from ledger_core import SigningKey

CHUNK = 1 << 16
_UNSET: Any = object()


class AsyncClient:
    """An asyncio connection to one `gatosd`. Use a constructor (`connect_unix`, …)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 timeout: float | None = DEFAULT_TIMEOUT, token: str | None = None,
                 process: asyncio.subprocess.Process | None = None,
                 stderr: IO[bytes] | None = None, grace: float = 10.0) -> None:
        self.timeout = timeout
        self._reader = reader
        self._writer = writer
        self._process = process
        self._stderr = stderr
        self._grace = grace
        self._proto = ClientProtocol(token=token)
        self._wakers: dict[str, asyncio.Event] = {}
        self._pong_waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._hello: dict[str, Any] | None = None
        self._closed = False
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop(),
                                                                 name="gatos-client-reader")

    # -- constructors ----------------------------------------------------------------

    @classmethod
    async def connect_unix(cls, path: str, *, timeout: float | None = DEFAULT_TIMEOUT
                           ) -> AsyncClient:
        """Connect to a daemon's unix socket."""
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(path, limit=CHUNK)
        return cls(reader, writer, timeout=timeout)

    @classmethod
    async def connect_tcp(cls, host: str, port: int, token: str, *,
                          timeout: float | None = DEFAULT_TIMEOUT) -> AsyncClient:
        """Connect over loopback TCP; the token authenticates the first frame (a `hello`).

        Raises:
            Unauthorized: the daemon refused the token.
        """
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=CHUNK)
        client = cls(reader, writer, timeout=timeout, token=token)
        try:
            await client.hello()
        except BaseException:
            await client.close()
            raise
        return client

    @classmethod
    async def spawn_stdio(cls, repo: str, *, timeout: float | None = DEFAULT_TIMEOUT,
                          daemon_args: Sequence[str] = ()) -> AsyncClient:
        """Run `gatosd --stdio` for `repo` as a child process and talk over its pipes.

        Fails (`ConnectionClosed` naming `ALREADY_RUNNING`) at the first request when a
        daemon already serves the repository. `close()` ends the child (exit 0).
        """
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 -- lives as long as the child; closed by close()
        process = await asyncio.create_subprocess_exec(
            *stdio_command(repo, tuple(daemon_args)), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=stderr, env=stdio_env(),
            start_new_session=True, limit=CHUNK)
        assert process.stdout is not None and process.stdin is not None
        return cls(process.stdout, process.stdin, timeout=timeout, process=process,
                   stderr=stderr)

    @classmethod
    async def for_repo(cls, repo: str, *, timeout: float | None = DEFAULT_TIMEOUT,
                       token: str | None = None) -> AsyncClient:
        """Connect to the running daemon of the repository containing `repo`.

        Raises:
            DaemonNotRunning: no daemon state, or nothing answers where it points.
        """
        state = read_state(repo)
        try:
            if state.socket:
                return await cls.connect_unix(state.socket, timeout=timeout)
            if state.tcp_address and token is not None:
                host, port = state.tcp_address
                return await cls.connect_tcp(host, port, token, timeout=timeout)
        except OSError as exc:
            raise not_running_reason(state, exc) from None
        raise DaemonNotRunning(f"the daemon of this repository has no unix socket ({state.path}); "
                               "connect over TCP with its token")

    # -- the read side -----------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while True:
                try:
                    data = await self._reader.read(CHUNK)
                except (ConnectionError, OSError):
                    data = b""
                fed = self._proto.feed(data)
                pongs = self._proto.data_to_send()
                if pongs:
                    await self._write(pongs)
                self._wake(fed)
                if not data or self._proto.closed is not None:
                    break
        finally:
            if self._proto.closed is None:
                self._proto.close(ConnectionClosed("the client is closed"))
            elif self._process is not None and not self._closed:
                self._proto.closed.reason += await self._exit_detail()
            self._wake(Fed(ids=set(self._wakers)))
            for _, future in self._pong_waiters:
                if not future.done():
                    future.set_exception(ConnectionClosed(self._proto.closed.reason))
            self._pong_waiters.clear()

    def _wake(self, fed: Fed) -> None:
        for request_id in fed.ids:
            event = self._wakers.get(request_id)
            if event is not None:
                event.set()
        while self._pong_waiters and self._pong_waiters[0][0] <= self._proto.pongs_received:
            _, future = self._pong_waiters.popleft()
            if not future.done():
                future.set_result(None)

    async def _exit_detail(self) -> str:
        assert self._process is not None
        try:
            code = await asyncio.wait_for(self._process.wait(), 1.0)
        except TimeoutError:
            return ""
        tail = ""
        if self._stderr is not None:
            with contextlib.suppress(OSError, ValueError):
                self._stderr.seek(0)
                tail = self._stderr.read()[-2000:].decode(errors="replace").strip()
        return f" (gatosd exited {code}: {tail})" if tail else f" (gatosd exited {code})"

    async def _write(self, data: bytes) -> None:
        # One `write` per line keeps lines whole; concurrent `drain`s are fine on 3.11+.
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            self._proto.close(ConnectionClosed(f"writing to the daemon failed: {exc}"))
            self._wake(Fed(ids=set(self._wakers)))

    # -- requests ----------------------------------------------------------------------

    async def stream(self, type: str, *, timeout: float | None = _UNSET, **fields: Any
                     ) -> AsyncIterator[dict[str, Any]]:
        """Send one request and yield every frame of its reply, the final `ok` frame last.

        Frames come without `id`: `{"ack": true}`, `{"partial": true, …}`, progress or
        message frames, then the final frame. `timeout` bounds the wait for each frame
        (None: wait forever). An error frame is raised as its typed `GatosError`.
        """
        wait = self.timeout if timeout is _UNSET else timeout
        if self._closed:
            raise ConnectionClosed("the client is closed")
        request_id, line = self._proto.start(type, fields)
        event = self._wakers[request_id] = asyncio.Event()
        try:
            await self._write(line)
            while True:
                frame = self._proto.next_frame(request_id)
                if frame is None:
                    event.clear()
                    try:
                        async with asyncio.timeout(wait):
                            await event.wait()
                    except TimeoutError:
                        raise RequestTimeout(f"no reply within {wait:g}s",
                                             request_id=request_id) from None
                    continue
                yield frame
                if "ok" in frame:
                    return
        finally:
            self._wakers.pop(request_id, None)
            self._proto.finish(request_id)

    async def request(self, type: str, *, timeout: float | None = _UNSET, **fields: Any
                      ) -> dict[str, Any]:
        """Send one request; return its final frame without `ok` and `id`.

        Frames before the final one (ack, partial, progress) are skipped: use `stream`
        for methods whose data comes in them.
        """
        final: dict[str, Any] = {}
        async for frame in self.stream(type, timeout=timeout, **fields):
            final = frame
        return result_of(final)

    async def hello(self) -> dict[str, Any]:
        """Versions, limits, methods and the node the daemon serves."""
        self._hello = await self.request("hello")
        return self._hello

    async def ping(self, *, timeout: float | None = _UNSET) -> float:
        """Send a keep-alive ping; return the seconds until its pong arrived."""
        wait = self.timeout if timeout is _UNSET else timeout
        if self._closed:
            raise ConnectionClosed("the client is closed")
        started = time.monotonic()
        ticket, line = self._proto.ping()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pong_waiters.append((ticket, future))
        await self._write(line)
        try:
            await asyncio.wait_for(future, wait)
        except TimeoutError:
            raise RequestTimeout(f"no pong within {wait:g}s") from None
        return time.monotonic() - started

    async def append_event(self, ns: str, type: str, payload: Any, *, actor: str | None = None,
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
            actor = await self._node_actor()
        return await self.request("append_event", **append_fields(
            ns, type, payload, actor=actor, ulid=ulid, caps=caps, ts=ts,
            policy_root=policy_root, signing_key=signing_key))

    async def journal_head(self, ns: str, actor: str) -> dict[str, Any]:
        """`{"ns", "ref", "head"}` of one actor's journal (`head` None when empty)."""
        return await self.request("journal.head", ns=ns, actor=actor)

    async def journal_read(self, ns: str, actor: str, *, after: str | None = None,
                           after_ulid: str | None = None, until: str | None = None,
                           limit: int | None = None, last: int | None = None
                           ) -> dict[str, Any]:
        """Entries of a journal range, oldest first, joined from every partial frame."""
        entries: list[dict[str, Any]] = []
        final: dict[str, Any] = {}
        async for frame in self.stream("journal.read", **journal_read_fields(
                ns, actor, after=after, after_ulid=after_ulid, until=until, limit=limit,
                last=last)):
            entries.extend(frame.get("entries") or ())
            final = frame
        return {**result_of(final), "entries": entries}

    async def verify(self) -> dict[str, Any]:
        """Verify every journal of the node: `{"valid", "journals", "events", "problems"}`."""
        return await self.request("verify")

    async def status(self) -> dict[str, Any]:
        """What the daemon is doing: pid, uptime, connections, queue, batches, events."""
        return await self.request("status")

    async def _node_actor(self) -> str:
        hello = self._hello or await self.hello()
        actor = (hello.get("node") or {}).get("actor")
        if not isinstance(actor, str):
            raise GatosError("the daemon's node has no default actor; pass `actor`", "NO_ACTOR")
        return actor

    # -- closing -----------------------------------------------------------------------

    async def close(self) -> None:
        """Close the connection; a spawned daemon gets EOF, flushes and exits. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            if self._writer.can_write_eof():
                self._writer.write_eof()
            self._writer.close()
        if self._process is not None:
            try:
                await asyncio.wait_for(self._process.wait(), self._grace)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
            if self._stderr is not None:
                self._stderr.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), self._grace)
        self._read_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._read_task

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    @property
    def returncode(self) -> int | None:
        """Exit status of a spawned daemon once it ended (None while it runs, or not spawned)."""
        return self._process.returncode if self._process is not None else None


__all__ = ["AsyncClient"]
