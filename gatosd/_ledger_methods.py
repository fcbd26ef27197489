"""Ledger methods of the daemon: hello, append_event, journal.head, journal.read, verify, status."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from gatosd._group_commit import GroupCommitter
from gatosd._metrics import Metrics
from gatosd._registry import Context, Registry
from gatosd._server import Server
from gatosd.errors import bad_frame
from gatosd.node import Node
from ledger_core import (
    Event,
    SignedEvent,
    journal_ref,
    normalize_actor,
    read_range,
    validate_namespace,
)
from ledger_core.errors import InvalidEvent

PROTOCOL_VERSION = 1
DAEMON_VERSION = "0.1.0"
CHUNK = 256
T = TypeVar("T")


def _str(frame: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = frame.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise bad_frame(f"`{key}` must be a string")
    return value


def _int(frame: dict[str, Any], key: str) -> int | None:
    value = frame.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise bad_frame(f"`{key}` must be a non-negative integer")
    return value


class LedgerMethods:
    """Binds the ledger to the protocol. Writes go through the group committer's thread;
    reads run on a small pool where each thread has its own repository handle."""

    def __init__(self, repo_path: str, front: Node, committer: GroupCommitter, server: Server,
                 metrics: Metrics, *, durable: bool = False) -> None:
        self.repo_path = repo_path
        self.front = front
        self.committer = committer
        self.server = server
        self.metrics = metrics
        self.durable = durable
        self.started = time.monotonic()
        self._local = threading.local()
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gatos-reader")

    def register(self, registry: Registry) -> None:
        registry.add("hello", self.hello)
        registry.add("append_event", self.append_event)
        registry.add("journal.head", self.journal_head)
        registry.add("journal.read", self.journal_read)
        registry.add("verify", self.verify, stream=True)
        registry.add("status", self.status)

    def close(self) -> None:
        self._readers.shutdown(wait=True)

    async def _read(self, fn: Callable[[Node], T]) -> T:
        def run() -> T:
            node = getattr(self._local, "node", None)
            if node is None:
                node = self._local.node = Node.open(self.repo_path)
            return fn(node)

        return await asyncio.get_running_loop().run_in_executor(self._readers, run)

    # -- methods ---------------------------------------------------------------------

    async def hello(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """Versions, limits, methods and the node this daemon serves."""
        try:
            actor: str | None = self.front.default_actor
        except Exception:
            actor = None
        return {
            "server": "gatosd", "version": DAEMON_VERSION, "protocol": PROTOCOL_VERSION,
            "node": {"repo": self.repo_path, "actor": actor},
            "limits": {**self.server.limits.to_wire(),
                       "max_event_bytes": self.front.max_event_bytes,
                       "max_batch": self.committer.config.max_batch,
                       "max_queue": self.committer.config.max_queue},
            "methods": self.server.registry.names(),
            "keepalive": {"ping": {"kind": "ping"}, "pong": {"kind": "pong"}},
        }

    async def append_event(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """Append one event: client-signed (`sig` beside a full envelope) or node-signed."""
        started = time.perf_counter()
        ns = validate_namespace(frame.get("ns"))
        body = frame.get("event")
        if not isinstance(body, dict):
            raise bad_frame("`event` must be an object with at least `type` and `payload`")
        actor = frame.get("actor")
        sig = frame.get("sig")
        max_bytes = self.front.max_event_bytes
        if sig is not None:
            if actor is not None and body.get("actor") != normalize_actor(actor):
                raise bad_frame("`actor` differs from the signed envelope's actor")
            signed = SignedEvent.create(Event.from_value(body), _str(frame, "sig") or "", max_bytes)
        else:
            extra = set(body) - {"type", "payload", "ulid", "ts", "caps", "policy_root",
                                 "actor", "sig_alg"}
            if extra:
                raise bad_frame(f"unknown event field(s): {', '.join(sorted(map(str, extra)))}")
            if "payload" not in body:
                raise bad_frame("`event.payload` is required")
            caps = body.get("caps")
            if caps is not None and (not isinstance(caps, list)
                                     or not all(isinstance(c, str) for c in caps)):
                raise InvalidEvent("`event.caps` must be a list of strings")
            if actor is not None and "actor" in body and \
                    normalize_actor(body["actor"]) != normalize_actor(actor):
                raise bad_frame("`actor` and `event.actor` name different actors")
            who = body.get("actor", actor)
            event = self.front.build_event(
                type=body.get("type"), payload=body["payload"],
                actor=normalize_actor(who) if who is not None else None,
                ulid=body.get("ulid"), ts=body.get("ts"), caps=caps)
            if "policy_root" in body or "sig_alg" in body:
                event = Event.from_value({**event.to_value(),
                                          **{k: body[k] for k in ("policy_root", "sig_alg") if k in body}})
            signed = self.front.sign(event)
        # A client's signature is checked by the writer process, in the batch: the
        # event loop keeps its core for the protocol, and no thread hop per request.
        # An event signed here only needs its key to be a trusted one (a set lookup).
        if sig is None:
            self.front.check_signed(signed, signed_here=True)
        result = await self.committer.submit(ns, signed, verified=sig is None)
        if not result.duplicate:
            self.metrics.appends.inc()
        self.metrics.append_latency.observe((time.perf_counter() - started) * 1000)
        out = result.to_dict()
        del out["ok"]
        return out

    async def journal_head(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """The head commit of one actor's journal in a namespace (`null` when empty)."""
        ns = validate_namespace(frame.get("ns"))
        ref = journal_ref(ns, normalize_actor(frame.get("actor")))
        head = await self._read(lambda node: node.repo.refs.get(ref))
        return {"ns": ns, "ref": ref, "head": head}

    async def journal_read(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """Entries of a journal range, oldest first; long ranges come in `partial` frames."""
        ns = validate_namespace(frame.get("ns"))
        ref = journal_ref(ns, normalize_actor(frame.get("actor")))
        after = _str(frame, "after", required=False)
        after_ulid = _str(frame, "after_ulid", required=False)
        until = _str(frame, "until", required=False)
        limit, last = _int(frame, "limit"), _int(frame, "last")

        def read(node: Node) -> list[dict[str, Any]]:
            head = node.repo.refs.get(ref)
            entries = read_range(node.repo.objects, head, after=after, after_ulid=after_ulid,
                                 until=until, limit=limit, last=last)  # type: ignore[arg-type]
            return [e.to_dict() for e in entries]

        rows = await self._read(read)
        for start in range(0, max(0, len(rows) - CHUNK), CHUNK):
            await ctx.send({"partial": True, "entries": rows[start:start + CHUNK]})
        tail = rows[(max(0, len(rows) - 1) // CHUNK) * CHUNK:] if rows else []
        return {"ns": ns, "ref": ref, "count": len(rows), "entries": tail}

    async def verify(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """Verify every journal of the node (as `gatos verify`)."""
        report = await self._read(lambda node: node.verify())
        out = report.to_dict()
        out["valid"] = out.pop("ok")
        return out

    async def status(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """What the daemon is doing: connections, queue, batches, uptime."""
        return {
            "pid": os.getpid(), "repo": self.repo_path,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "connections": len(self.server.connections),
            "queued": self.committer.queued, "batches": self.committer.batches,
            "events": self.committer.events, "stopping": self.server.stopping,
        }
