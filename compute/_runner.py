"""What every runner takes and gives back: a run spec in, an outcome out.

Runners know nothing of Git, claims or proofs: the worker prepares a workspace with
the inputs in it, a runner executes one attempt inside its sandbox, and the worker
turns the outcome into outputs and a Proof-of-Execution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Limits:
    """Resource limits of one attempt (each enforced where the runner can; see `health`)."""

    cpu_seconds: int = 60
    memory_bytes: int = 512 * 1024 * 1024
    open_files: int = 64
    processes: int = 64
    file_bytes: int = 64 * 1024 * 1024
    output_bytes: int = 1024 * 1024  # per stream (stdout, stderr)
    wasm_fuel: int = 2_000_000_000

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RunSpec:
    """One attempt: `argv` run in `workspace/cwd` with exactly `env`, for at most `timeout` s."""

    argv: list[str]
    env: dict[str, str]
    workspace: str
    timeout: float
    cwd: str = "."
    limits: Limits = field(default_factory=Limits)


@dataclass
class RunOutcome:
    """What happened. `reason` is `exit`, `timeout`, `cpu`, `memory`, `fuel`, `signal` or `error`."""

    reason: str
    exit_code: int | None
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    program: str = ""          # blake3:<hex> of what ran (executable or module bytes)
    runner: str = ""           # `subprocess` or `wasm`
    version: str = ""
    platform: str = ""
    detail: str = ""
    protections: dict[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.reason == "exit" and self.exit_code == 0

    def summary(self) -> dict[str, Any]:
        return {"reason": self.reason, "exit_code": self.exit_code, "detail": self.detail}


class Runner(Protocol):
    name: str

    def run(self, spec: RunSpec, *, cancelled: Any = None) -> RunOutcome:
        """Run one attempt; `cancelled()` (if given) is polled and ends the run when true."""
        ...


__all__ = ["Limits", "RunOutcome", "RunSpec", "Runner"]
