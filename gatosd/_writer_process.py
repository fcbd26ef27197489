"""The journal writer in a process of its own.

Appending is CPU-bound Python (building commits, packs, compression) and so is serving
the protocol (parsing, building and signing events). In one process both share one
GIL and the daemon reached less than half of the in-process append rate on two cores.
Here the group committer's batches go over a pipe to a writer process that owns the
repository's journal writes; the daemon's event loop keeps the other core.

The promise is unchanged: a request is answered only after the writer process
reports the batch's ref update. If the writer process dies, that batch is answered
`STORAGE` (it may or may not have landed: a retry with the same ULID is safe, it is
either appended or reported as a duplicate) and a new writer process is started.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from ledger_core import AppendResult, SignedEvent
from ledger_core.errors import LedgerError, StorageError

Items = Sequence[tuple[str, SignedEvent]]


def _serve(repo: str, durable: bool, conn: Connection) -> None:
    # The writer stops when the daemon closes the pipe, never halfway through a batch
    # because a signal meant for the daemon's process group reached it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from gatosd.node import Node

    node = Node.open(repo, durable=durable)
    while True:
        try:
            items = conn.recv()
        except EOFError:
            return
        if items is None:
            return
        try:
            results = node.append_many(items, preverified=True)
            out: list[Any] = [r if isinstance(r, AppendResult) else (r.code, r.reason)
                              for r in results]
        except LedgerError as exc:
            out = [(exc.code, exc.reason)] * len(items)
        except Exception as exc:  # reported to every caller of the batch
            out = [("STORAGE", f"writer failed: {exc}")] * len(items)
        conn.send(out)


def _error(code: str, reason: str) -> LedgerError:
    error = LedgerError(reason)
    error.code = code
    return error


class WriterProcess:
    """`append_many` that runs in a child process. Call it from one thread at a time."""

    def __init__(self, repo: str, *, durable: bool = False) -> None:
        self.repo = repo
        self.durable = durable
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(self.repo, self.durable, child),
                                 name="gatos-writer", daemon=True)
        self._proc.start()
        child.close()

    def append_many(self, items: Items) -> list[AppendResult | LedgerError]:
        try:
            self._conn.send(list(items))
            raw = self._conn.recv()
        except (EOFError, OSError):
            self._proc.join(timeout=5)
            self.restarts += 1
            self._start()
            error = StorageError("the writer process died during this batch; it may or may not "
                                 "have been written: retry with the same ulid")
            return [error] * len(items)
        return [r if isinstance(r, AppendResult) else _error(*r) for r in raw]

    def close(self) -> None:
        """Let the writer finish and exit (after the committer has flushed)."""
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._conn.close()
