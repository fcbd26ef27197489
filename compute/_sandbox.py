"""The subprocess runner: one attempt of a job in a sandbox made of the parts this host allows.

Always enforced: its own session and process group (a timeout, a cancel or the end of the
main process kills the whole group), rlimits on CPU seconds, address space, open files,
processes and file size, no core dumps, an environment built only from an allowlist
plus the manifest's `env`, a fresh workspace, and stdout/stderr capped (the rest is read
and dropped, and the truncation flagged).

Enforced when the host allows it, probed once per process (see `health()`):
- **Namespaces** (`unshare`, util-linux): a new network namespace (no interface but a
  downed loopback: no network), a new PID namespace with its own `/proc` (the job cannot
  see or read the daemon's processes or environment, and when the job's init dies the
  kernel kills every process in it, even ones that left the process group), and a new
  mount namespace in which every mount is read-only except the workspace, with empty
  private tmpfs on `/tmp`, `/var/tmp` and `/dev/shm`.
- **An unprivileged user**: a worker running as root drops the job to `nobody` with
  `setpriv` (no new privileges, no capabilities), which also makes the process-count
  rlimit bite (the kernel does not apply it to root).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import blake3

from compute import _mountns
from compute._runner import Limits, RunOutcome, RunSpec

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
ALLOWED_HOST_ENV = ("LANG", "LC_ALL", "TZ")
NOBODY = (65534, 65534)

# Runs inside the new mount namespace as its root: make every mount read-only but the
# workspace, give the job private empty temp dirs, then drop to the job's user.
# The workspace is bound onto itself *before* the read-only remount and re-bound from an
# open descriptor afterwards, because a tmpfs on /tmp may hide its path.
_INNER = r"""
set -e
WS=$1; RUN_UID=$2; RUN_GID=$3; CWD=$4; shift 4
mount --make-rprivate /
mount --bind "$WS" "$WS"
exec 3<"$WS"
for m in $(awk '{print $5}' /proc/self/mountinfo | sort -r); do
  [ "$m" = "$WS" ] || mount -o remount,ro,bind "$m" 2>/dev/null || true
done
for d in /tmp /var/tmp /dev/shm; do
  if [ -d "$d" ]; then mount -t tmpfs -o size=64m,mode=1777,nosuid,nodev tmpfs "$d"; fi
done
mkdir -p "$WS" 2>/dev/null || true
mount --no-canonicalize --bind /proc/self/fd/3 "$WS"
exec 3<&-
cd "$WS/$CWD"
unset OLDPWD
set +e
# Not `exec`: this shell stays the namespace's init and passes on a death by signal N
# as exit status 128+N (unshare cannot re-raise it), which the supervisor reads back.
if [ "$RUN_UID" = "-" ]; then "$@"; exit $?; fi
setpriv --reuid="$RUN_UID" --regid="$RUN_GID" --clear-groups --no-new-privs \
  --inh-caps=-all --bounding-set=-all -- "$@"
exit $?
"""


# The fast path's namespace init (mounts are already made, see _mountns): stay PID 1 of
# the new PID namespace, drop to the job's user, pass a death by signal N on as 128+N.
_INIT = r"""
set +e
RUN_UID=$1; RUN_GID=$2; shift 2
unset OLDPWD
if [ "$RUN_UID" = "-" ]; then "$@"; exit $?; fi
setpriv --reuid="$RUN_UID" --regid="$RUN_GID" --clear-groups --no-new-privs \
  --inh-caps=-all --bounding-set=-all -- "$@"
exit $?
"""
_PID_PREFIX = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]


def _is_root() -> bool:
    return os.geteuid() == 0


def _namespace_prefix() -> list[str]:
    prefix = ["unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child"]
    if not _is_root():
        prefix.insert(1, "--user")
        prefix.insert(2, "--map-root-user")
    return prefix


def _ns_command(mode: str, workspace: str, cwd: str, run_uid: str, argv: list[str]) -> list[str]:
    """The command line that runs `argv` in new namespaces (`fast`: mounts made by preexec)."""
    if mode == "fast":
        return [*_PID_PREFIX, "--", "sh", "-c", _INIT, "sh", run_uid, str(NOBODY[1]), *argv]
    return [*_namespace_prefix(), "--", "sh", "-c", _INNER, "sh", workspace, run_uid, str(NOBODY[1]), cwd,
            *argv]


def _try_mode(mode: str, can_drop: bool) -> bool:
    with tempfile.TemporaryDirectory(prefix="gatos-probe-") as ws:
        if can_drop:
            os.chown(ws, *NOBODY)
        run_uid = str(NOBODY[0]) if can_drop else "-"
        argv = _ns_command(mode, ws, ".", run_uid, ["sh", "-c", "echo ok > probe && ! echo x > /probe-ro"])
        preexec = (lambda: _mountns.enter(ws, ".")) if mode == "fast" else None
        try:
            done = subprocess.run(argv, env={"PATH": SAFE_PATH}, capture_output=True, timeout=10, check=False,
                                  preexec_fn=preexec, cwd=None if mode == "fast" else ws)
        except (OSError, subprocess.SubprocessError):
            return False
        return done.returncode == 0 and os.path.exists(os.path.join(ws, "probe"))


@functools.lru_cache(maxsize=1)
def _probe() -> dict[str, Any]:
    """Try the sandbox for real once: a feature counts only if it worked here.

    `mode` is `fast` (namespaces and mounts by system calls, root only), `shell` (the
    `_INNER` script; also unprivileged through a user namespace) or None.
    """
    can_drop = _is_root() and shutil.which("setpriv") is not None
    mode = None
    if shutil.which("unshare") and shutil.which("sh"):
        if _mountns.available() and _try_mode("fast", can_drop):
            mode = "fast"
        elif _try_mode("shell", can_drop):
            mode = "shell"
    return {"namespaces": mode is not None, "setpriv": can_drop, "mode": mode}


def health() -> dict[str, Any]:
    """Which protections the subprocess runner enforces on this host, and which it cannot."""
    probe = _probe()
    ns = probe["namespaces"]
    unprivileged = probe["setpriv"] or not _is_root()
    return {
        "process_group": True,
        "timeout_kills_group": True,
        "rlimit_cpu": True,
        "rlimit_address_space": True,
        "rlimit_open_files": True,
        "rlimit_file_size": True,
        "rlimit_processes": unprivileged,
        "env_allowlist": True,
        "fresh_workspace": True,
        "output_cap": True,
        "unprivileged_user": unprivileged,
        "network_cut": ns,
        "pid_namespace": ns,
        "readonly_outside_workspace": ns,
        "private_tmp": ns,
    }


def sandbox_mode() -> str | None:
    """How namespaces are made here: `fast`, `shell`, or None (not available)."""
    return _probe()["mode"]


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _set_limits(limits: Limits, enter: Callable[[], None] | None = None) -> Callable[[], None]:
    def apply() -> None:
        if enter is not None:
            enter()  # namespaces and mounts first: rlimits (file size, …) would get in their way
        if _LIBC is not None:
            # If the worker dies (kill -9), its job dies with it instead of running on
            # unsupervised; with a PID namespace the whole tree goes (see _INNER).
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        cpu = max(1, limits.cpu_seconds)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def program_hash(executable: str | None) -> str:
    """`blake3:` of the executable's bytes (what ran), or of its name when it cannot be read."""
    if executable:
        try:
            st = os.stat(executable)
        except OSError:
            pass
        else:
            return _file_hash(executable, st.st_size, st.st_mtime_ns, st.st_ino)
    return "blake3:" + blake3.blake3(executable.encode() if executable else b"").hexdigest()


@functools.lru_cache(maxsize=256)
def _file_hash(path: str, _size: int, _mtime_ns: int, _ino: int) -> str:
    """Hash of a file, cached by its stat identity (an interpreter is megabytes, read once)."""
    digest = blake3.blake3()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return "blake3:" + blake3.blake3(path.encode()).hexdigest()
    return "blake3:" + digest.hexdigest()


def _inside(workspace: str, cwd: str) -> str:
    """`cwd` relative to the workspace, refusing absolute paths and `..` escapes."""
    norm = os.path.normpath(cwd)
    if os.path.isabs(norm) or norm == ".." or norm.startswith("../"):
        raise ValueError(f"cwd {cwd!r} leaves the workspace")
    return norm


class SubprocessRunner:
    """Runs `spec.argv` as a sandboxed process tree."""

    name = "subprocess"

    def __init__(self, *, use_namespaces: bool | None = None, drop_privileges: bool | None = None,
                 mode: str | None = None) -> None:
        """`mode` forces `fast` or `shell` (tests run both); by default the probed one is used."""
        probe = _probe()
        self.mode: str | None = (mode or probe["mode"]) if use_namespaces in (None, True) else None
        self.drop = probe["setpriv"] if drop_privileges is None else drop_privileges

    def _argv(self, spec: RunSpec, cwd: str) -> tuple[list[str], str | None, Callable[[], None] | None]:
        """(command line, cwd for Popen, extra step in the child before exec)."""
        uid, gid = NOBODY
        if self.mode is not None:
            run_uid = str(uid) if self.drop else "-"
            argv = _ns_command(self.mode, spec.workspace, cwd, run_uid, list(spec.argv))
            if self.mode == "fast":
                workspace = spec.workspace
                return argv, None, lambda: _mountns.enter(workspace, cwd)
            return argv, None, None
        run_dir = os.path.join(spec.workspace, cwd)
        if self.drop:
            return (["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs",
                     "--inh-caps=-all", "--", *spec.argv], run_dir, None)
        return list(spec.argv), run_dir, None

    def _env(self, spec: RunSpec) -> dict[str, str]:
        env = {"PATH": SAFE_PATH, "HOME": spec.workspace, "TMPDIR": "/tmp", "LANG": "C.UTF-8"}
        env.update({k: os.environ[k] for k in ALLOWED_HOST_ENV if k in os.environ and k != "LANG"})
        env.update(spec.env)
        return env

    def run(self, spec: RunSpec, *, cancelled: Callable[[], bool] | None = None) -> RunOutcome:
        try:
            cwd = _inside(spec.workspace, spec.cwd)
        except ValueError as exc:
            return RunOutcome("error", None, b"", b"", runner=self.name, detail=str(exc))
        env = self._env(spec)
        executable = shutil.which(spec.argv[0], path=env["PATH"]) if spec.argv else None
        outcome = RunOutcome("error", None, b"", b"", program=program_hash(executable or spec.argv[0]),
                             runner=self.name, version=platform.python_version(),
                             platform=f"{platform.system().lower()}-{platform.machine()}",
                             protections={k: bool(v) for k, v in health().items()})
        if executable is None:
            outcome.detail = f"{spec.argv[0]!r} is not an executable on {env['PATH']}"
            return outcome
        if self.drop:
            _chown_tree(spec.workspace)
        argv, run_dir, enter = self._argv(spec, cwd)
        try:
            proc = subprocess.Popen(argv, env=env, cwd=run_dir, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True, preexec_fn=_set_limits(spec.limits, enter))
        except OSError as exc:
            outcome.detail = f"cannot start {spec.argv[0]!r}: {exc}"
            return outcome
        return _supervise(proc, spec, outcome, cancelled)


def _chown_tree(root: str) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        os.chown(dirpath, *NOBODY)
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), *NOBODY)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _supervise(proc: subprocess.Popen[bytes], spec: RunSpec, outcome: RunOutcome,
               cancelled: Callable[[], bool] | None) -> RunOutcome:
    """Read both pipes with a cap until the main process ends, a timeout or a cancel."""
    cap = spec.limits.output_bytes
    bufs = {"stdout": bytearray(), "stderr": bytearray()}
    truncated = {"stdout": False, "stderr": False}
    selector = selectors.DefaultSelector()
    assert proc.stdout is not None and proc.stderr is not None
    for stream, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
        os.set_blocking(stream.fileno(), False)
        selector.register(stream, selectors.EVENT_READ, name)
    deadline = time.monotonic() + spec.timeout
    reason = None
    open_streams = 2
    while open_streams:
        if proc.poll() is not None and reason is None:
            # The main process is done: anything it left behind dies now, so a
            # straggler holding the pipes open cannot stall the worker.
            _kill_group(proc)
            reason = "done"
        left = deadline - time.monotonic()
        if reason is None and left <= 0:
            reason = "timeout"
            _kill_group(proc)
        if reason is None and cancelled is not None and cancelled():
            reason = "cancelled"
            _kill_group(proc)
        for key, _ in selector.select(timeout=min(0.05, max(left, 0.001))):
            name = key.data
            try:
                chunk = os.read(key.fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                selector.unregister(key.fileobj)
                open_streams -= 1
                continue
            room = cap - len(bufs[name])
            if room > 0:
                bufs[name] += chunk[:room]
            if len(chunk) > room:
                truncated[name] = True
    selector.close()
    proc.wait()
    _kill_group(proc)
    outcome.stdout, outcome.stderr = bytes(bufs["stdout"]), bytes(bufs["stderr"])
    outcome.stdout_truncated, outcome.stderr_truncated = truncated["stdout"], truncated["stderr"]
    code = proc.returncode
    if reason == "timeout":
        outcome.reason, outcome.detail = "timeout", f"killed after {spec.timeout:g} s"
    elif reason == "cancelled":
        outcome.reason, outcome.detail = "signal", "cancelled"
    elif code < 0 or (128 < code < 128 + signal.NSIG and outcome.protections.get("pid_namespace")):
        # In a namespace the job's death by signal N comes back as 128+N (see _INNER); a
        # job that itself exits with such a status is reported the same way, as shells do.
        number = -code if code < 0 else code - 128
        outcome.reason = "cpu" if number == signal.SIGXCPU else "signal"
        outcome.detail = f"ended by {_signal_name(number)}"
    else:
        outcome.reason, outcome.exit_code = "exit", code
    return outcome


__all__ = ["ALLOWED_HOST_ENV", "SAFE_PATH", "SubprocessRunner", "health", "program_hash"]
