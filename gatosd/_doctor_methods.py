"""The daemon's `doctor` method: the same checks and report as `gatos doctor --json`.

Runs on its own thread with its own repository handle (the checks call `git` and read
objects; the event loop keeps serving). Frame: `{"type": "doctor", "id": …,
"checks": ["refs", …] (optional), "record": true (optional)}`; reply: `healthy`,
`checks`, `facts`, `findings` (each with `severity`, `what` and the `fix` command).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gatosd._doctor import CHECKS, run_doctor
from gatosd._registry import Context, Registry
from gatosd.errors import bad_frame
from gatosd.node import Node


class DoctorMethods:
    def __init__(self, repo_path: str) -> None:
        self.repo_path = repo_path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gatos-doctor")

    def register(self, registry: Registry) -> None:
        registry.add("doctor", self.doctor)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def doctor(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """Check the node's health; each finding names what is wrong and the command that fixes it."""
        checks = frame.get("checks")
        if checks is not None and (not isinstance(checks, list)
                                   or not all(isinstance(c, str) and c in CHECKS for c in checks)):
            raise bad_frame(f"`checks` must be a list of: {', '.join(CHECKS)}")
        record = frame.get("record", True)
        if not isinstance(record, bool):
            raise bad_frame("`record` must be true or false")
        loop = asyncio.get_running_loop()
        report = await loop.run_in_executor(
            self._pool, lambda: run_doctor(Node.open(self.repo_path), checks, record=record))
        return report.to_dict()


__all__ = ["DoctorMethods"]
