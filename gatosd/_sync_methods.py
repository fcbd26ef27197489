"""The daemon's `sync` method and its background sync (`gatosd --sync REMOTE`).

Both run `gatos sync` on one worker thread with a fresh repository handle, so the event
loop keeps serving while Git talks to the remote, and two syncs never overlap. Every
local ref move of a sync is a compare-and-swap under the same ref locks the daemon's
writers take, which is what makes syncing a running node safe.

Frame: `{"type": "sync", "id": …, "remote": "hub" (optional), "push": true (optional)}`;
reply: the sync report (`adopted`, `pushed`, `joined`, `forks`, `refused`, …, and `clean`:
nothing refused or rejected). A remote
that cannot be reached is reported by the background loop and retried next interval: a
node keeps working offline and converges when the hub returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gatosd._cli_sync import sync_node
from gatosd._registry import Context, Registry
from gatosd.errors import bad_frame
from gatosd.node import Node
from ledger_core.errors import LedgerError

log = logging.getLogger("gatosd.sync")


class SyncMethods:
    def __init__(self, repo_path: str, remote: str | None = None, interval: float = 0.0) -> None:
        self.repo_path = repo_path
        self.remote = remote
        self.interval = interval
        self.last: dict[str, Any] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gatos-sync")
        self._task: asyncio.Task[None] | None = None

    def register(self, registry: Registry) -> None:
        registry.add("sync", self.sync)

    def start(self) -> None:
        if self.remote and self.interval > 0:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def _run(self, remote: str | None, push: bool) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        report = await loop.run_in_executor(
            self._pool, lambda: sync_node(Node.open(self.repo_path), remote, push=push))
        value = report.to_dict()
        value["clean"] = value.pop("ok")  # `ok` is the frame's own success flag
        self.last = value
        return value

    async def _loop(self) -> None:
        while True:
            try:
                report = await self._run(self.remote, True)
                if report["forks"] or report["refused"] or report["push_rejected"]:
                    log.warning("sync %s: forks %s refused %s rejected %s", self.remote,
                                report["forks"], report["refused"], report["push_rejected"])
            except LedgerError as exc:  # hub unreachable: keep working, try again later
                log.warning("sync %s failed: %s", self.remote, exc.reason)
                self.last = {"ok": False, "remote": self.remote, "error": exc.reason}
            await asyncio.sleep(self.interval)

    async def sync(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """Sync with a remote now; the reply is the sync report."""
        remote = frame.get("remote", self.remote)
        if remote is not None and not isinstance(remote, str):
            raise bad_frame("`remote` must be a remote name")
        push = frame.get("push", True)
        if not isinstance(push, bool):
            raise bad_frame("`push` must be true or false")
        return await self._run(remote, push)


__all__ = ["SyncMethods"]
