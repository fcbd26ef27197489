"""The client's side of the JSONL protocol, without I/O (the same core drives both clients).

`ClientProtocol` takes requests and returns the bytes to write; it takes the bytes read
and sorts the frames into per-request queues, so any number of requests can be in
flight on one connection and replies may come back in any order. Rules:

* request ids are made here (`"c1"`, `"c2"`, …); a frame is routed by its `id`; frames
  of requests nobody waits for any more (timed out, abandoned) are dropped;
* a frame without `ok` (`{"ack": true}`, `{"partial": true, …}`, progress) belongs to
  a reply still running; the frame with `ok` ends it, and `ok: false` is raised as the
  typed error of its code;
* `{"kind": "ping"}` from the daemon queues a `{"kind": "pong"}` to write back;
  `{"kind": "pong"}` answers our pings in order (pongs carry no id);
* an error frame with `"id": null` (the daemon could not tell which request it is
  about: a dropped over-long line, a connection refused as BUSY) goes to the only
  request in flight when there is exactly one, and otherwise becomes the reason the
  connection ends with;
* on TCP the first request carries the bearer token.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from gatosd._client_errors import BadReply, ConnectionClosed, GatosError, error_from_wire

# Replies can be far longer than requests (a `journal.read` chunk holds 256 events of up
# to 1 MiB each), so the reply limit only guards against a runaway peer.
DEFAULT_MAX_REPLY_LINE = 1 << 30
PING = orjson.dumps({"kind": "ping"}) + b"\n"
PONG = orjson.dumps({"kind": "pong"}) + b"\n"


@dataclass
class Fed:
    """What one `feed` changed: requests with new frames, and pongs received."""

    ids: set[str] = field(default_factory=set)
    pongs: int = 0


class ClientProtocol:
    """Request ids, framing and reply routing for one connection."""

    def __init__(self, *, token: str | None = None,
                 max_reply_line: int = DEFAULT_MAX_REPLY_LINE) -> None:
        self._token = token
        self._max_line = max_reply_line
        self._ids = itertools.count(1)
        self._buffer = bytearray()
        self._pending: dict[str, deque[dict[str, Any]]] = {}
        self._outbox = bytearray()
        self.pings_sent = 0
        self.pongs_received = 0
        self.closed: GatosError | None = None
        self._close_reason: GatosError | None = None

    # -- outgoing ------------------------------------------------------------------

    def start(self, type: str, fields: dict[str, Any]) -> tuple[str, bytes]:
        """Register a request; return its id and the line to write."""
        if self.closed is not None:
            raise self.closed
        request_id = f"c{next(self._ids)}"
        frame = {"type": type, "id": request_id, **fields}
        if self._token is not None:
            frame["token"] = self._token
            self._token = None
        self._pending[request_id] = deque()
        return request_id, orjson.dumps(frame) + b"\n"

    def ping(self) -> tuple[int, bytes]:
        """Our keep-alive: the number of the pong that answers it, and the line to write."""
        if self.closed is not None:
            raise self.closed
        self.pings_sent += 1
        return self.pings_sent, PING

    def data_to_send(self) -> bytes:
        """Bytes the protocol itself must write (pongs); empty when there is nothing."""
        data = bytes(self._outbox)
        self._outbox.clear()
        return data

    def finish(self, request_id: str) -> None:
        """Stop waiting for `request_id`: frames still to come for it are dropped."""
        self._pending.pop(request_id, None)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # -- incoming ------------------------------------------------------------------

    def feed(self, data: bytes) -> Fed:
        """Consume bytes read from the daemon. An empty `data` means end of stream."""
        fed = Fed()
        if not data:
            self.close(self._close_reason or ConnectionClosed("the daemon closed the connection"))
            fed.ids.update(self._pending)
            return fed
        start = 0
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                self._buffer += data[start:]
                if len(self._buffer) > self._max_line:
                    self.close(BadReply(f"a reply line is over {self._max_line} bytes"))
                    fed.ids.update(self._pending)
                return fed
            if self._buffer:
                self._buffer += data[start:newline]
                line = bytes(self._buffer)
                self._buffer.clear()
            else:
                line = data[start:newline]
            start = newline + 1
            if line.strip():
                self._route(line, fed)

    def _route(self, line: bytes, fed: Fed) -> None:
        try:
            frame = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            self.close(BadReply(f"the daemon sent a line that is not JSON: {exc}"))
            fed.ids.update(self._pending)
            return
        if not isinstance(frame, dict):
            return
        kind = frame.get("kind")
        if kind == "ping":
            self._outbox += PONG
            return
        if kind == "pong":
            self.pongs_received += 1
            fed.pongs += 1
            return
        request_id = frame.get("id")
        if request_id is None and frame.get("ok") is False:
            self._route_anonymous_error(frame, fed)
            return
        queue = self._pending.get(request_id) if isinstance(request_id, str) else None
        if queue is not None:
            queue.append(frame)
            fed.ids.add(request_id)

    def _route_anonymous_error(self, frame: dict[str, Any], fed: Fed) -> None:
        if len(self._pending) == 1:
            (request_id, queue), = self._pending.items()
            queue.append(frame)
            fed.ids.add(request_id)
        else:
            self._close_reason = error_from_wire(frame.get("error"))

    def close(self, reason: GatosError | None = None) -> None:
        """The connection is over: requests still waiting get `reason` once their frames run out."""
        if self.closed is None:
            self.closed = reason or ConnectionClosed("the connection was closed")

    # -- reading replies -----------------------------------------------------------

    def next_frame(self, request_id: str) -> dict[str, Any] | None:
        """The next frame of a reply, or None when none has arrived yet.

        Returns the frame without `id`. The final frame has `ok`; after it (or after an
        error) the request is finished.

        Raises:
            GatosError: the typed error of a failure frame, or the reason the
                connection ended before the reply was complete.
        """
        queue = self._pending.get(request_id)
        if queue is None:
            raise ConnectionClosed(f"request {request_id} is not in flight", request_id=request_id)
        if not queue:
            if self.closed is not None:
                self.finish(request_id)
                raise _copy(self.closed, request_id)
            return None
        frame = queue.popleft()
        frame.pop("id", None)
        if "ok" not in frame:
            return frame
        self.finish(request_id)
        if frame["ok"] is True:
            return frame
        raise error_from_wire(frame.get("error"), request_id)


def _copy(error: GatosError, request_id: str) -> GatosError:
    """A fresh exception per request (one instance raised in many tasks tangles tracebacks)."""
    return type(error)(error.reason, code=error.code, rule=error.rule, request_id=request_id)


def result_of(frame: dict[str, Any]) -> dict[str, Any]:
    """A final frame as a result: everything but `ok` and `id`."""
    return {k: v for k, v in frame.items() if k not in ("ok", "id")}
