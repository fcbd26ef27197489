"""The bus's writer process: message batches, ack batches and pruning, off the event loop.

Publishing is the same CPU-bound work as appending (envelopes, ed25519, commits,
packs), so, like the journal writer (`_writer_process`), it runs in a child process of
its own: the event loop keeps its core for the protocol and the subscribers. The bus
gets its own process rather than a new message kind in the journal writer's pipe, so
the journal path stays exactly as it was; the process is started on the first bus
request, so a daemon that never sees one never pays for it.

`BusWriter.submit(op)` queues one operation; the operations queued during one turn of
the event loop go down the ops pipe together, at once. The process takes everything
waiting in the pipe (up to about `MAX_BATCH` operations) as one batch, plans its
publishes (`BusLog.plan_many`: validation, the gate, commit objects; envelopes come
encoded by the daemon, see `mind_bus.presign`), writes them (`BusLog.apply`: one pack,
one ref move per shard written), writes the acks (`AckLog.write_many`) and only then
answers, in operation order, on a second pipe. So batching happens where the work is:
the process starts its next batch the moment it has answered, with whatever arrived
meanwhile, instead of waiting for the daemon to read the answer and send the next batch
(measured: about 90 us a batch). It holds the bus flock
(`.git/gatos/mbus-writer.lock`) for its life, so no other bus writer moves a shard under
it. If the process dies, everything sent to it and not yet answered is answered
`STORAGE` (a retry with the same ULID is safe: it is either published or reported as a
duplicate) and a new process is started.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import gc
import multiprocessing
import os
import pickle
import select
import signal
import struct
import time
from multiprocessing.connection import Connection
from typing import Any

from gatosd._bus_native import native_builder
from gatosd._pipe import add_blocking_reader
from gatosd.errors import ProtocolError
from ledger_core.errors import LedgerError, StorageError
from mind_bus import (
    AckLog,
    BusLog,
    PublishRequest,
    PublishResult,
    TopicConfig,
    config_path,
    prune_topic,
)

START_TIMEOUT = 60.0
MAX_BATCH = 1024  # operations the process takes into one batch (it stops reading past this)
PIPE_SIZE = 1 << 20  # the ops pipe's buffer, asked of Linux (F_SETPIPE_SZ); 64 KiB if refused
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


FLOCK_FILE = "mbus-writer.lock"
# Seconds after which a bus ref's lock found by the writer is taken as left by a dead
# writer: git and GATOS hold a ref lock for milliseconds.
LEFTOVER_LOCK_AGE = 2.0


def _flock_path(git_dir: str) -> str:
    return os.path.join(git_dir, "gatos", FLOCK_FILE)


def hold_bus_flock(git_dir: str, timeout: float) -> int:
    """Take the repository's bus writer flock (`.git/gatos/mbus-writer.lock`); its fd.

    Every bus writer of a repository holds it while it writes: the daemon's bus writer
    process for its whole life, a CLI publish (no daemon) for one publish. The kernel
    drops it when its holder dies, so a `kill -9` never leaves it behind.

    Raises:
        StorageError: another writer kept it for `timeout` seconds.
    """
    path = _flock_path(git_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise StorageError(f"another bus writer held {path} for {timeout:g}s") from None
            time.sleep(delay)
            delay = min(0.05, delay * 2)


@contextlib.contextmanager
def bus_flock(git_dir: str, timeout: float = 30.0) -> Any:
    """`hold_bus_flock` for the duration of a `with` block."""
    fd = hold_bus_flock(git_dir, timeout)
    try:
        yield
    finally:
        os.close(fd)


def _wire_error(exc: LedgerError) -> tuple[str, str, str | None]:
    return (exc.code, exc.reason, getattr(exc, "rule", None))


def _serve(repo: str, durable: bool, ops_in: Connection, conn: Connection) -> None:
    """The process: batches from `ops_in` (the daemon's frames), answers on `conn`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from gatosd.node import Node
    from ledger_git import PackMaintainer, SpareFiles

    node = Node.open(repo, durable=durable)
    hold_bus_flock(node.repo.git_dir, START_TIMEOUT)  # held until this process ends
    # Under the flock this process is the only bus writer: its ref updates reuse a spare
    # inode per ref instead of creating a lock file and freeing the old ref's inode per
    # batch (see ledger_git._refs; on a journal-less ext4 the churn slows every create).
    node.repo.refs.recycle_inodes(os.path.join(node.repo.git_dir, "gatos", "bus-ref-spares"))
    # A bus writer killed between taking a ref's lock and renaming it leaves the lock; it
    # would block that shard (or group) for good. Under the flock, a lock there older than
    # any live holder keeps one is a leftover (see FileRefStore.break_leftover_locks).
    node.repo.refs.break_leftover_locks(("refs/gatos/mbus/", "refs/gatos/mbus-ack/"), LEFTOVER_LOCK_AGE)
    node.repo.objects.pack_threshold = 1
    # Message objects are small and mostly hashes and signatures: storing them without
    # compression costs a twentieth of deflating them (see ledger_git._deflate).
    node.repo.objects.store_below = STORE_BELOW
    maintainer = PackMaintainer(node.repo.objects, node.repo.git_dir)
    # The pack and index files of the next batch are recycled from the small packs a
    # merge replaced, or made while the process is idle (see ledger_git._spares); under
    # the flock it is their folders' only user.
    spares = SpareFiles(os.path.join(node.repo.objects.objects_dir, "pack"),
                        trash=os.path.join(node.repo.git_dir, "gatos", "pack-trash"))
    spares.remove_leftovers()
    spares.fill()
    node.repo.objects.spares = spares
    configs = ConfigLoader(node.repo.repo.workdir or node.repo.git_dir)
    allowed: set[tuple[str, str, str]] = set()  # this batch's allowed, unaudited decisions

    def gate(actor: str, action: str, topic: str) -> None:
        if (actor, action, topic) in allowed:
            return
        decision = node.policy.check(actor, action, topic)
        if not getattr(decision, "audit", True):
            allowed.add((actor, action, topic))

    log = BusLog(node.repo.objects, node.repo.refs, sign=node.sign, clock=time.time,
                 sleep=time.sleep, config_for=configs, gate=gate,
                 policy_root=lambda: node.policy.policy_root,
                 exclusive=lambda _topic: contextlib.nullcontext(),  # the flock is held
                 # The daemon checks and encodes envelopes; this process signs them: the
                 # daemon's loop carries every request and reply, and measured on two
                 # cores the work is better split this way (bench/RESULTS.md, Bus).
                 sign_bytes=lambda actor, data: node.signing_key(actor).sign(data),
                 # Signing, the commits' objects and their pack entries, natively when
                 # `gatos_native` is built (the same bytes; see gatosd._bus_native).
                 builder=native_builder(node.signing_key, STORE_BELOW))
    acks = AckLog(node.repo.objects, node.repo.refs, clock=time.time)
    gc.collect()
    gc.freeze()
    waiting = _Waiting(ops_in)
    conn.send("ready")
    try:
        while True:
            ops, last = _next_batch(ops_in, waiting)
            if not ops:
                return
            allowed.clear()  # decided again per batch: grants expire, policies change
            try:
                out = _run_batch(node, log, acks, configs, ops)
            except LedgerError as exc:
                out = [_wire_error(exc)] * len(ops)
            except Exception as exc:  # reported to every caller of the batch
                out = [("STORAGE", f"bus writer failed: {exc}", None)] * len(ops)
            conn.send((node.policy.policy_root, out))  # the root the daemon signs under next
            if not waiting():  # idle: the next batch's files now, not while it waits
                spares.fill()
            maintainer.after_write(busy=waiting())  # upkeep when nothing waits, if it can
            if last:
                return
    finally:
        try:
            maintainer.close()  # (its last merge retires files through the spares)
        finally:
            spares.close()


class _Waiting:
    """Whether a frame is waiting in the ops pipe: one `poll` object for the process's
    life. `Connection.poll` builds a selector per call (3 us against 0.4 measured; the loop
    asks two or three times a batch); the Connection reads straight from the fd, so the
    fd being readable means a frame (or its end) is there."""

    def __init__(self, conn: Connection) -> None:
        self._poll = select.poll()
        self._poll.register(conn.fileno(), select.POLLIN)

    def __call__(self) -> bool:
        return bool(self._poll.poll(0))


def _next_batch(ops_in: Connection, waiting: _Waiting) -> tuple[list[Op], bool]:
    """Every frame waiting in the pipe (at least one, waited for), up to `MAX_BATCH`
    operations; and whether the daemon said to stop (`None`, or the pipe closed)."""
    try:
        first = ops_in.recv()
    except EOFError:
        return [], True
    if first is None:
        return [], True
    ops: list[Op] = first
    while len(ops) < MAX_BATCH and waiting():
        try:
            more = ops_in.recv()
        except EOFError:
            return ops, True
        if more is None:
            return ops, True
        ops.extend(more)
    return ops, False


def _run_batch(node: Any, log: BusLog, acks: AckLog, configs: ConfigLoader, ops: list[Op]) -> list[Any]:
    """Publishes (planned, then written: one pack, one ref move per shard written), acks,
    then prunes; answers in op order, each written before it is answered."""
    out: list[Any] = [None] * len(ops)
    pubs = [(i, op) for i, op in enumerate(ops) if op[0] == "pub"]
    ack_ops = [(i, op) for i, op in enumerate(ops) if op[0] == "ack"]
    if pubs:
        node.policy.refresh()
        planned = log.plan_many([PublishRequest(topic, payload, ulid, actor, key=key, headers=headers,
                                                presigned=pre)
                                 for _, (_, topic, payload, key, headers, ulid, actor, pre) in pubs])
        node.policy.flush()  # the batch's denials are audited before anyone is answered
        failed: LedgerError | None = None
        try:
            log.apply(planned)
        except LedgerError as exc:
            failed = exc
        for (i, _), res in zip(pubs, planned.results, strict=True):
            if failed is not None and isinstance(res, PublishResult):
                res = failed
            out[i] = res.to_dict() if isinstance(res, PublishResult) else _wire_error(res)
    if ack_ops:
        written = acks.write_many([(topic, group, offsets) for _, (_, topic, group, offsets) in ack_ops])
        for (i, _), res in zip(ack_ops, written, strict=True):
            out[i] = {"commit": res} if isinstance(res, str) else _wire_error(res)
    for i, op in enumerate(ops):
        if op[0] == "prune":
            out[i] = _prune(log, configs, op[1], op[2])
        elif out[i] is None:
            out[i] = ("BAD_FRAME", f"unknown bus writer operation {op[0]!r}", None)
    return out


def _prune(log: BusLog, configs: ConfigLoader, topic: str, ttl: int | None) -> Any:
    try:
        config = configs(topic)
        ttl = config.ttl_seconds if ttl is None else ttl
        if ttl is None:
            return {"summaries": [], "reason": "the topic has no ttl_seconds"}
        shards = sorted(log.shard_heads(topic))
        summaries = prune_topic(log.objects, log.refs, topic, shards, ttl_seconds=ttl,
                                clock=time.time, exclusive=log.exclusive(topic))
        return {"summaries": summaries}
    except LedgerError as exc:
        return _wire_error(exc)
    finally:
        log.forget(topic)


def error_of(raw: Any) -> LedgerError | None:
    """The error a writer result stands for, or None when it is a success."""
    if isinstance(raw, tuple):
        code, reason, rule = raw
        return ProtocolError(reason, code, rule)
    return None


def _frame_header(size: int) -> bytes:
    """`Connection.send_bytes`'s length prefix, which `Connection.recv` reads: 4 bytes,
    or -1 and 8 bytes from 2 GiB on."""
    if size > 0x7FFFFFFF:
        return struct.pack("!i", -1) + struct.pack("!Q", size)
    return struct.pack("!i", size)


class BusWriter:
    """Streams bus writes to a child process; use from the event loop only.

    No task of its own. `submit` queues an operation and, once per turn of the loop,
    `_flush` encodes what was queued as one frame onto the ops pipe, without blocking:
    the pipe's write end is non-blocking and what it cannot take yet waits in `_out`
    for the loop to say it is writable. Sent operations wait in `_unanswered`, in
    order; the process answers every operation of a batch at once, in that order, so
    an answer of n results belongs to the n oldest unanswered futures.
    """

    def __init__(self, repo: str, *, durable: bool = False) -> None:
        self.repo = repo
        self.durable = durable
        self.restarts = 0
        self.batches = 0  # batches answered
        self.ops = 0  # operations answered
        self._conn: Connection | None = None  # answers from the process
        self._ops_fd: int | None = None  # the ops pipe's write end (non-blocking)
        self._ops_conn: Connection | None = None  # (kept to close the fd with it)
        self._proc: Any = None
        self._ops: list[Op] = []  # queued, not yet encoded
        self._futures: list[asyncio.Future[Any]] = []
        self._out = bytearray()  # encoded frames the pipe has not taken yet
        self._writing = False  # waiting for the pipe to become writable
        self._flush_due = False
        self._unanswered: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._starting: asyncio.Future[None] | None = None
        self._restarting: asyncio.Task[None] | None = None
        self._closing = False
        # The policy root the process gated its last batch under: the daemon signs
        # envelopes under it (no ref read per message); if the root moved since, the
        # process signs those envelopes again (`BusLog.plan_many`).
        self.policy_root: str | None = None

    def _start_blocking(self) -> tuple[Connection, Connection, Any]:
        """Start the process (in a thread: it takes a second); its answers and ops pipes."""
        ctx = multiprocessing.get_context("spawn")
        answers, child_answers = ctx.Pipe(duplex=False)
        child_ops, ops = ctx.Pipe(duplex=False)
        with contextlib.suppress(AttributeError, OSError):  # Linux only; 64 KiB otherwise
            fcntl.fcntl(ops.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        proc = ctx.Process(target=_serve, args=(self.repo, self.durable, child_ops, child_answers),
                           name="gatos-bus-writer", daemon=True)
        proc.start()
        child_answers.close()
        child_ops.close()
        if not answers.poll(START_TIMEOUT):
            proc.kill()
            answers.close()
            ops.close()
            raise StorageError(f"the bus writer did not start within {START_TIMEOUT:g}s")
        try:
            hello = answers.recv()
        except (EOFError, OSError):
            hello = None
        if hello != "ready":
            proc.join(timeout=5)
            answers.close()
            ops.close()
            raise StorageError(f"the bus writer failed to open {self.repo} (exit {proc.exitcode})")
        os.set_blocking(ops.fileno(), False)
        return answers, ops, proc

    def _attach(self, started: tuple[Connection, Connection, Any]) -> None:
        """Take a started process on (on the loop: `_flush` sees all of it or none)."""
        answers, ops, proc = started
        self._ops_conn, self._ops_fd, self._proc = ops, ops.fileno(), proc
        self._conn = answers
        add_blocking_reader(asyncio.get_running_loop(), answers.fileno(), self._readable)

    async def _ensure_started(self) -> None:
        # The start is a task of its own, awaited through a shield: a caller cancelled
        # meanwhile (its client gone) must not leave a process started but never read.
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self._start(), name="bus-writer-start")
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        try:
            self._attach(await asyncio.get_running_loop().run_in_executor(None, self._start_blocking))
        except BaseException:
            self._starting = None
            for future in self._futures:  # their callers get this exception, nothing is written
                if not future.done():
                    future.cancel()
            self._ops.clear()
            self._futures.clear()
            raise
        self._flush()  # what was queued while it started

    async def submit(self, op: Op) -> Any:
        """Run one operation in the next batch; its raw result (a dict, or an error tuple)."""
        if self._closing:
            raise ProtocolError("the daemon is shutting down", "SHUTTING_DOWN")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._ops.append(op)
        self._futures.append(future)
        if self._conn is None:
            await self._ensure_started()
        elif not self._flush_due:
            # After the rest of this turn: the requests read together leave as one frame.
            self._flush_due = True
            loop.call_soon(self._flush)
        return await future  # a cancelled caller's op is still written; its answer is dropped

    def _flush(self) -> None:
        """Encode what is queued as frames and write what the pipe takes now."""
        self._flush_due = False
        if not self._ops or self._conn is None or self._restarting is not None:
            return
        while self._ops:
            ops, futures = self._ops[:MAX_BATCH], self._futures[:MAX_BATCH]
            del self._ops[:MAX_BATCH], self._futures[:MAX_BATCH]
            try:
                data = pickle.dumps(ops, pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # (nothing a request can hold; but never leave a caller waiting)
                for future in futures:
                    if not future.done():
                        future.set_result(("STORAGE", f"cannot send to the bus writer: {exc}", None))
                continue
            self._out += _frame_header(len(data))
            self._out += data
            self._unanswered.extend(futures)
        if not self._writing:
            self._write_out()

    def _write_out(self) -> None:
        assert self._ops_fd is not None
        try:
            while self._out:
                written = os.write(self._ops_fd, self._out)
                del self._out[:written]
        except BlockingIOError:
            if not self._writing:
                self._writing = True
                asyncio.get_running_loop().add_writer(self._ops_fd, self._writable)
            return
        except OSError:
            self._died()
            return
        if self._writing:
            self._writing = False
            asyncio.get_running_loop().remove_writer(self._ops_fd)

    def _writable(self) -> None:
        if self._ops_fd is not None:
            self._write_out()

    def _readable(self) -> None:
        assert self._conn is not None
        try:
            self.policy_root, results = self._conn.recv()
        except (EOFError, OSError):
            self._died()
            return
        self.batches += 1
        self.ops += len(results)
        unanswered = self._unanswered
        for result in results:
            future = unanswered.popleft()
            if not future.done():
                future.set_result(result)

    def _died(self) -> None:
        """The process is gone: fail what it held, start a new one."""
        if self._restarting is not None or self._conn is None:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._conn.fileno())
        if self._writing and self._ops_fd is not None:
            loop.remove_writer(self._ops_fd)
        self._writing = False
        reason = ("the bus writer died during this batch; it may or may not have been "
                  "written: retry with the same ulid")
        while self._unanswered:
            future = self._unanswered.popleft()
            if not future.done():
                future.set_result(("STORAGE", reason, None))
        self._out.clear()
        self._conn.close()
        if self._ops_conn is not None:
            self._ops_conn.close()
        self._ops_conn = self._ops_fd = None
        self._restarting = loop.create_task(self._restart(), name="bus-writer-restart")

    async def _restart(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._proc.join, 5)
            self.restarts += 1
            self._attach(await asyncio.get_running_loop().run_in_executor(None, self._start_blocking))
        except BaseException:
            # No process: what is queued fails, the next submit starts one again.
            self._conn = None
            self._starting = None
            for future in self._futures:
                if not future.done():
                    future.set_result(("STORAGE", "the bus writer could not be restarted", None))
            self._ops.clear()
            self._futures.clear()
            raise
        finally:
            self._restarting = None
        self._flush()

    async def close(self) -> None:
        """Write everything queued, then let the process exit."""
        self._closing = True
        while self._conn is not None and (self._unanswered or self._ops or self._restarting is not None):
            self._flush()
            await asyncio.sleep(0.002)
        if self._restarting is not None:
            with contextlib.suppress(Exception):
                await self._restarting
        if self._conn is not None and not self._conn.closed:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(self._conn.fileno())
            if self._ops_conn is not None:
                if self._writing and self._ops_fd is not None:
                    loop.remove_writer(self._ops_fd)
                with contextlib.suppress(OSError):
                    os.set_blocking(self._ops_conn.fileno(), True)
                    self._ops_conn.send(None)
            await loop.run_in_executor(None, self._proc.join, 30)
            if self._proc.is_alive():
                self._proc.kill()
            self._conn.close()
            if self._ops_conn is not None:
                self._ops_conn.close()
