"""The subprocess runner against escapes: each is tried for real and must be contained.

Protections that depend on the host (namespaces, dropping to `nobody`) are asserted when
`health()` says they are enforced here, and the test is skipped with the reason otherwise,
so a host that cannot enforce one says so instead of passing silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compute import Limits, RunSpec, SubprocessRunner, subprocess_health
from compute._sandbox import SAFE_PATH

pytestmark = pytest.mark.integration
HEALTH = subprocess_health()
MODE: str | None = None  # the probed way; the shell way is run too (test_shell_mode_contains_the_same)
# An interpreter the job can reach: /tmp is a private tmpfs inside the sandbox, so a venv
# under /tmp (a CI clone) is invisible there; the system's python3 is on the job's PATH.
PY = shutil.which("python3", path=SAFE_PATH)
needs_python = pytest.mark.skipif(PY is None, reason=f"no python3 on {SAFE_PATH}")


def needs(feature: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not HEALTH[feature], reason=f"{feature} is not enforceable on this host")


def run(tmp_path: Path, script: str, *, timeout: float = 10, env: dict[str, str] | None = None,
        limits: Limits | None = None, argv: list[str] | None = None):  # type: ignore[no-untyped-def]
    workspace = tmp_path / "ws"
    workspace.mkdir(parents=True, exist_ok=True)
    spec = RunSpec(argv or ["sh", "-c", script], env or {}, str(workspace), timeout,
                   limits=limits or Limits())
    return SubprocessRunner(mode=MODE).run(spec), workspace


def unique_sleep(seconds: int) -> str:
    """A `sleep` command line no other process on the machine has (`pgrep -f` matches any
    process's command line: a plain `sleep 300` elsewhere made the check fail)."""
    return f"sleep {seconds}.{os.getpid()}{time.monotonic_ns() % 10**9:09d}"


def gone(pattern: str, within: float = 3.0) -> bool:
    """No process matches `pattern` (killed processes of a namespace take a moment to be reaped)."""
    deadline = time.monotonic() + within
    while subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def nobody_processes() -> int:
    out = subprocess.run(["ps", "-o", "pid=", "-u", "65534"], capture_output=True, text=True).stdout
    return len(out.split())


def test_plain_run_exit_code_and_output(tmp_path: Path) -> None:
    """A normal job runs in its workspace with its exit code and output."""
    outcome, workspace = run(tmp_path, 'echo out; echo err >&2; echo f > made.txt; exit 3')
    assert (outcome.reason, outcome.exit_code) == ("exit", 3)
    assert outcome.stdout == b"out\n" and outcome.stderr == b"err\n"
    assert (workspace / "made.txt").read_text() == "f\n"
    assert outcome.program.startswith("blake3:")


def test_endless_loop_is_killed_at_the_timeout_with_its_group(tmp_path: Path) -> None:
    """A loop with a background child ends at the timeout and leaves no process behind."""
    started = time.monotonic()
    marker = unique_sleep(300)
    outcome, _ = run(tmp_path, f"{marker} & while :; do :; done", timeout=1)
    assert outcome.reason == "timeout" and time.monotonic() - started < 5
    assert gone(marker)


def test_stragglers_die_when_the_main_process_ends(tmp_path: Path) -> None:
    """Children left running after the job's main process exits are killed at once."""
    started = time.monotonic()
    marker = unique_sleep(301)
    outcome, _ = run(tmp_path, f"{marker} & echo started", timeout=30)
    assert outcome.exit_code == 0 and time.monotonic() - started < 5
    assert gone(marker)


def test_cpu_limit(tmp_path: Path) -> None:
    """CPU time over the rlimit ends the run (SIGXCPU/SIGKILL), long before the timeout."""
    outcome, _ = run(tmp_path, "while :; do :; done", timeout=20, limits=Limits(cpu_seconds=1))
    assert outcome.reason in ("cpu", "signal"), outcome


@needs("rlimit_processes")
def test_fork_bomb_is_contained(tmp_path: Path) -> None:
    """A fork bomb hits the process limit and nothing of it outlives the run."""
    outcome, _ = run(tmp_path, "b() { b | b & }; b; sleep 2", timeout=5, limits=Limits(processes=40))
    assert outcome.reason in ("exit", "timeout", "signal")
    time.sleep(0.2)
    assert nobody_processes() == 0 or not HEALTH["unprivileged_user"]


@needs_python
def test_memory_bomb_is_refused(tmp_path: Path) -> None:
    """Allocating past the address-space limit fails inside the job, not on the host."""
    outcome, _ = run(tmp_path, "", argv=[PY or "python3", "-c", "x = bytearray(2 << 30)"],
                     limits=Limits(memory_bytes=512 << 20))
    assert outcome.exit_code != 0 and b"MemoryError" in outcome.stderr


def test_huge_output_is_capped_and_flagged(tmp_path: Path) -> None:
    """Output past the cap is dropped and flagged; the run still ends normally."""
    outcome, _ = run(tmp_path, "head -c 5000000 /dev/zero; echo done >&2", limits=Limits(output_bytes=1000))
    assert len(outcome.stdout) == 1000 and outcome.stdout_truncated and not outcome.stderr_truncated
    assert outcome.exit_code == 0


def test_environment_is_an_allowlist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's environment never reaches the job; the manifest's env does."""
    monkeypatch.setenv("GATOS_SECRET_TOKEN", "s3cret")
    outcome, _ = run(tmp_path, "env", env={"GREETING": "hello"})
    assert b"s3cret" not in outcome.stdout and b"GREETING=hello" in outcome.stdout
    names = {line.split(b"=", 1)[0] for line in outcome.stdout.splitlines()}
    assert names <= {b"PATH", b"HOME", b"TMPDIR", b"LANG", b"LC_ALL", b"TZ", b"GREETING", b"PWD", b"SHLVL",
                     b"_"}


@needs("pid_namespace")
def test_cannot_read_the_daemons_environment_through_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """/proc shows only the job's own processes: the worker's environ is out of reach."""
    monkeypatch.setenv("GATOS_SECRET_TOKEN", "s3cret")
    outcome, _ = run(tmp_path, f"cat /proc/{os.getpid()}/environ; cat /proc/*/environ; ls /proc")
    assert b"s3cret" not in outcome.stdout + outcome.stderr
    assert str(os.getpid()).encode() not in outcome.stdout.split()


@needs("readonly_outside_workspace")
def test_cannot_write_outside_the_workspace(tmp_path: Path) -> None:
    """Writes outside the workspace fail; /tmp is a private, throwaway tmpfs."""
    target = tmp_path / "outside.txt"
    outcome, workspace = run(tmp_path, f"echo x > {target}; echo y > /tmp/gatos-escape; echo z > inside.txt")
    assert not target.exists() and not Path("/tmp/gatos-escape").exists()
    assert (workspace / "inside.txt").exists()
    assert b"Read-only file system" in outcome.stderr or b"Permission denied" in outcome.stderr


@needs("network_cut")
@needs_python
def test_network_is_cut_off(tmp_path: Path) -> None:
    """No route anywhere, not even to the host's loopback services."""
    code = ("import socket\nfor a in [('1.1.1.1', 53), ('127.0.0.1', 22)]:\n"
            "    try:\n        socket.create_connection(a, timeout=2); print('CONNECTED')\n"
            "    except OSError as e:\n        print('refused', e.errno)\n")
    outcome, _ = run(tmp_path, "", argv=[PY or "python3", "-c", code])
    assert b"CONNECTED" not in outcome.stdout and outcome.stdout.count(b"refused") == 2


def test_cwd_may_not_leave_the_workspace(tmp_path: Path) -> None:
    """A cwd of `..` is refused before anything runs."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    outcome = SubprocessRunner().run(RunSpec(["true"], {}, str(workspace), 5, cwd="../.."))
    assert outcome.reason == "error" and "leaves the workspace" in outcome.detail


def test_cancel_kills_the_run(tmp_path: Path) -> None:
    """cancelled() turning true ends the run within a poll."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    deadline = time.monotonic() + 0.5
    outcome = SubprocessRunner().run(RunSpec(["sleep", "30"], {}, str(workspace), 30),
                                     cancelled=lambda: time.monotonic() > deadline)
    assert outcome.reason == "signal" and outcome.detail == "cancelled"


def test_health_reports_every_protection() -> None:
    """`gatos health` names each protection with a boolean."""
    assert set(HEALTH) >= {"process_group", "rlimit_cpu", "rlimit_processes", "network_cut", "pid_namespace",
                           "readonly_outside_workspace", "env_allowlist", "output_cap"}
    assert all(isinstance(v, bool) for v in HEALTH.values())


@pytest.mark.skipif(not HEALTH["readonly_outside_workspace"], reason="no namespaces on this host")
def test_shell_mode_contains_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback (mounts by the shell script) contains writes, /proc, network and signals alike."""
    monkeypatch.setattr(sys.modules[__name__], "MODE", "shell")
    test_cannot_write_outside_the_workspace(tmp_path)
    test_cannot_read_the_daemons_environment_through_proc(tmp_path / "b", monkeypatch)
    test_network_is_cut_off(tmp_path / "c")
    test_cpu_limit(tmp_path / "d")
    test_plain_run_exit_code_and_output(tmp_path / "e")
