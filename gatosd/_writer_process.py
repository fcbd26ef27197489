"""The journal writer in a process of its own.

Appending is CPU-bound Python (building commits, packs, compression) and so is serving
the protocol (parsing, building and signing events). In one process both share one
GIL and the daemon reached less than half of the in-process append rate on two cores.
Here the group committer's batches go over a pipe to a writer process that owns the
repository's journal writes; the daemon's event loop keeps the other core.

Every batch, however small, is written as one pack (two files) rather than loose
objects (four files per event): on a disk where a file costs ~0.35 ms that is most of
a small batch's latency. A `PackMaintainer` keeps the pack count bounded with
merging small packs and `git repack --geometric=2 -d` in the background.

The promise is unchanged: a request is answered only after the writer process
reports the batch's ref update. If the writer process dies, that batch is answered
`STORAGE` (it may or may not have landed: a retry with the same ULID is safe, it is
either appended or reported as a duplicate) and a new writer process is started.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import signal
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from gatosd._pipe import exchange
from gatosd.errors import ProtocolError
from ledger_core import AppendResult, SignedEvent
from ledger_core.errors import LedgerError, StorageError
from ledger_git import PackMaintainer

START_TIMEOUT = 60.0

if TYPE_CHECKING:
    from gatosd.node import Node

# (namespace, event, whether its signature was already checked by the daemon)
Items = Sequence[tuple[str, SignedEvent, bool]]


def _serve(repo: str, durable: bool, conn: Connection, maintain: bool) -> None:
    # The writer stops when the daemon closes the pipe, never halfway through a batch
    # because a signal meant for the daemon's process group reached it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from gatosd.node import Node  # imported here: the module is loaded in the spawned child

    node = Node.open(repo, durable=durable)
    maintainer: PackMaintainer | None = None
    if maintain:
        node.repo.objects.pack_threshold = 1
        maintainer = PackMaintainer(node.repo.objects, node.repo.git_dir)
    gc.collect()
    gc.freeze()  # the modules and the repository handle live as long as the writer
    conn.send("ready")
    try:
        _loop(node, conn, maintainer)
    finally:
        if maintainer is not None:
            maintainer.close()


def _loop(node: Node, conn: Connection, maintainer: PackMaintainer | None) -> None:
    while True:
        try:
            items = conn.recv()
        except EOFError:
            return
        if items is None:
            return
        try:
            results = node.append_many([(ns, signed) for ns, signed, _ in items],
                                       preverified=[verified for _, _, verified in items])
            out: list[Any] = [r if isinstance(r, AppendResult)
                              else (r.code, r.reason, getattr(r, "rule", None)) for r in results]
        except LedgerError as exc:
            out = [(exc.code, exc.reason, None)] * len(items)
        except Exception as exc:  # reported to every caller of the batch
            out = [("STORAGE", f"writer failed: {exc}")] * len(items)
        conn.send(out)
        if maintainer is not None:  # after the answer: callers never wait for upkeep
            maintainer.after_write()


def _error(code: str, reason: str, rule: str | None = None) -> LedgerError:
    if rule is not None:  # a policy denial keeps the rule that decided it on the wire
        return ProtocolError(reason, code, rule)
    error = LedgerError(reason)
    error.code = code
    return error


class WriterProcess:
    """`append_many` that runs in a child process. Call it from one thread at a time."""

    def __init__(self, repo: str, *, durable: bool = False, maintain: bool = True) -> None:
        self.repo = repo
        self.durable = durable
        self.maintain = maintain
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(self.repo, self.durable, child, self.maintain),
                                 name="gatos-writer", daemon=True)
        self._proc.start()
        child.close()
        # Wait until the writer has opened the repository: a daemon that says it is
        # ready must not make its first client wait for a child's imports.
        if not self._conn.poll(START_TIMEOUT):
            self._proc.kill()
            raise StorageError(f"the writer process did not start within {START_TIMEOUT:g}s")
        try:
            hello = self._conn.recv()
        except (EOFError, OSError):
            hello = None
        if hello != "ready":
            self._proc.join(timeout=5)
            raise StorageError(f"the writer process failed to open {self.repo} "
                               f"(exit status {self._proc.exitcode})")

    def append_many(self, items: Items) -> list[AppendResult | LedgerError]:
        try:
            self._conn.send(list(items))
            raw = self._conn.recv()
        except (EOFError, OSError):
            return self._died(len(items))
        return [r if isinstance(r, AppendResult) else _error(*r) for r in raw]

    async def append_many_async(self, items: Items) -> list[AppendResult | LedgerError]:
        """`append_many` for the event loop, without a thread hop each way.

        (see `_pipe.exchange`: no thread hop each way).
        """
        try:
            raw = await exchange(self._conn, list(items))
        except (EOFError, OSError):
            return self._died(len(items))
        return [r if isinstance(r, AppendResult) else _error(*r) for r in raw]

    def _died(self, count: int) -> list[AppendResult | LedgerError]:
        self._proc.join(timeout=5)
        self.restarts += 1
        self._start()
        error = StorageError("the writer process died during this batch; it may or may not "
                             "have been written: retry with the same ulid")
        return [error] * count

    def close(self) -> None:
        """Let the writer finish and exit (after the committer has flushed)."""
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._conn.close()
