"""The bus's writer process: message batches, ack batches and pruning, off the event loop.

Publishing is the same CPU-bound work as appending (envelopes, ed25519, commits,
packs), so, like the journal writer (`_writer_process`), it runs in a child process of
its own: the event loop keeps its core for the protocol and the subscribers. The bus
gets its own process rather than a new message kind in the journal writer's pipe, so
the journal path stays exactly as it was; the process is started on the first bus
request, so a daemon that never sees one never pays for it.

`BusWriter.submit(op)` queues one operation; a batcher takes everything queued (up to
`MAX_BATCH`) and sends it as one batch: all publishes of a batch are one
`BusLog.publish_many` (one pack, one ref move per shard), all acks one
`AckLog.write_many`. A caller is answered only after its batch's ref updates. If the
process dies, that batch is answered `STORAGE` (a retry with the same ULID is safe: it
is either published or reported as a duplicate) and a new process is started.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import Connection
from typing import Any

from gatosd._pipe import exchange
from gatosd.errors import ProtocolError
from ledger_core.errors import LedgerError, StorageError
from mind_bus import AckLog, BusLog, PublishRequest, PublishResult, TopicConfig, config_path, prune_topic

START_TIMEOUT = 60.0
MAX_BATCH = 1024
STORE_BELOW = 1024
Op = tuple[Any, ...]


class ConfigLoader:
    """`gatos/mbus-config/<topic>.json` from the node's working tree, re-read when it changes."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._cache: dict[str, tuple[float | None, TopicConfig]] = {}

    def __call__(self, topic: str) -> TopicConfig:
        path = os.path.join(self.root, config_path(topic))
        try:
            mtime: float | None = os.stat(path).st_mtime_ns
        except OSError:
            mtime = None
        cached = self._cache.get(topic)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        if mtime is None:
            config = TopicConfig()
        else:
            with open(path, "rb") as handle:
                config = TopicConfig.parse(handle.read())
        self._cache[topic] = (mtime, config)
        return config


def _wire_error(exc: LedgerError) -> tuple[str, str, str | None]:
    return (exc.code, exc.reason, getattr(exc, "rule", None))


def _serve(repo: str, durable: bool, conn: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from gatosd.node import Node
    from ledger_git import PackMaintainer

    node = Node.open(repo, durable=durable)
    node.repo.objects.pack_threshold = 1
    # Message objects are small and mostly hashes and signatures: storing them without
    # compression costs a twentieth of deflating them (see ledger_git._deflate).
    node.repo.objects.store_below = STORE_BELOW
    maintainer = PackMaintainer(node.repo.objects, node.repo.git_dir)
    configs = ConfigLoader(node.repo.repo.workdir or node.repo.git_dir)

    def gate(actor: str, action: str, topic: str) -> None:
        node.policy.check(actor, action, topic)

    log = BusLog(node.repo.objects, node.repo.refs, sign=node.sign, clock=time.time,
                 sleep=time.sleep, config_for=configs, gate=gate,
                 policy_root=lambda: node.policy.policy_root)
    acks = AckLog(node.repo.objects, node.repo.refs, clock=time.time)
    gc.collect()
    gc.freeze()
    conn.send("ready")
    try:
        while True:
            try:
                ops = conn.recv()
            except EOFError:
                return
            if ops is None:
                return
            try:
                out = _run_batch(node, log, acks, configs, ops)
            except LedgerError as exc:
                out = [_wire_error(exc)] * len(ops)
            except Exception as exc:  # reported to every caller of the batch
                out = [("STORAGE", f"bus writer failed: {exc}", None)] * len(ops)
            conn.send(out)
            maintainer.after_write()
    finally:
        maintainer.close()


def _run_batch(node: Any, log: BusLog, acks: AckLog, configs: ConfigLoader, ops: list[Op]) -> list[Any]:
    out: list[Any] = [None] * len(ops)
    pubs = [(i, op) for i, op in enumerate(ops) if op[0] == "pub"]
    ack_ops = [(i, op) for i, op in enumerate(ops) if op[0] == "ack"]
    if pubs:
        node.policy.refresh()
        results = log.publish_many([PublishRequest(topic, payload, ulid, actor, key=key, headers=headers)
                                    for _, (_, topic, payload, key, headers, ulid, actor) in pubs])
        node.policy.flush()  # the batch's denials are audited before anyone is answered
        for (i, _), res in zip(pubs, results, strict=True):
            out[i] = res.to_dict() if isinstance(res, PublishResult) else _wire_error(res)
    if ack_ops:
        written = acks.write_many([(topic, group, offsets) for _, (_, topic, group, offsets) in ack_ops])
        for (i, _), res in zip(ack_ops, written, strict=True):
            out[i] = {"commit": res} if isinstance(res, str) else _wire_error(res)
    for i, op in enumerate(ops):
        if op[0] == "prune":
            topic, ttl = op[1], op[2]
            try:
                config = configs(topic)
                ttl = config.ttl_seconds if ttl is None else ttl
                if ttl is None:
                    out[i] = {"summaries": [], "reason": "the topic has no ttl_seconds"}
                    continue
                shards = sorted(log.shard_heads(topic))
                out[i] = {"summaries": prune_topic(log.objects, log.refs, topic, shards,
                                                   ttl_seconds=ttl, clock=time.time)}
                log.forget(topic)
            except LedgerError as exc:
                out[i] = _wire_error(exc)
        elif out[i] is None:
            out[i] = ("BAD_FRAME", f"unknown bus writer operation {op[0]!r}", None)
    return out


def error_of(raw: Any) -> LedgerError | None:
    """The error a writer result stands for, or None when it is a success."""
    if isinstance(raw, tuple):
        code, reason, rule = raw
        return ProtocolError(reason, code, rule)
    return None


class BusWriter:
    """Batches bus writes into a child process; use from the event loop only."""

    def __init__(self, repo: str, *, durable: bool = False) -> None:
        self.repo = repo
        self.durable = durable
        self.restarts = 0
        self.batches = 0
        self._conn: Connection | None = None
        self._proc: Any = None
        self._queue: asyncio.Queue[tuple[Op, asyncio.Future[Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._starting: asyncio.Future[None] | None = None
        self._busy = False
        self._closing = False

    def _start_blocking(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(self.repo, self.durable, child),
                           name="gatos-bus-writer", daemon=True)
        proc.start()
        child.close()
        if not parent.poll(START_TIMEOUT):
            proc.kill()
            raise StorageError(f"the bus writer did not start within {START_TIMEOUT:g}s")
        try:
            hello = parent.recv()
        except (EOFError, OSError):
            hello = None
        if hello != "ready":
            proc.join(timeout=5)
            raise StorageError(f"the bus writer failed to open {self.repo} (exit {proc.exitcode})")
        self._conn, self._proc = parent, proc

    async def _ensure_started(self) -> None:
        if self._conn is not None:
            return
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_future()
            try:
                await asyncio.get_running_loop().run_in_executor(None, self._start_blocking)
                self._starting.set_result(None)
            except BaseException as exc:
                self._starting.set_exception(exc)
                self._starting.exception()
                self._starting = None
                raise
            self._task = asyncio.get_running_loop().create_task(self._run(), name="bus-writer")
        else:
            await asyncio.shield(self._starting)

    async def submit(self, op: Op) -> Any:
        """Run one operation in the next batch; its raw result (a dict, or an error tuple)."""
        if self._closing:
            raise ProtocolError("the daemon is shutting down", "SHUTTING_DOWN")
        await self._ensure_started()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((op, future))
        return await asyncio.shield(future)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            self._busy = True
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            results = await self._send([op for op, _ in batch])
            self.batches += 1
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
            self._busy = False

    async def _send(self, ops: list[Op]) -> list[Any]:
        assert self._conn is not None
        loop = asyncio.get_running_loop()
        try:
            return list(await exchange(self._conn, ops))
        except (EOFError, OSError):
            self._proc.join(timeout=5)
            self.restarts += 1
            await loop.run_in_executor(None, self._start_blocking)
            reason = ("the bus writer died during this batch; it may or may not have been "
                      "written: retry with the same ulid")
            return [("STORAGE", reason, None)] * len(ops)

    async def close(self) -> None:
        """Write everything queued, then let the process exit."""
        self._closing = True
        while self._task is not None and (self._busy or not self._queue.empty()):
            await asyncio.sleep(0.002)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(None)
            await asyncio.get_running_loop().run_in_executor(None, self._proc.join, 30)
            if self._proc.is_alive():
                self._proc.kill()
            self._conn.close()
