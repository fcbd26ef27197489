"""The WebAssembly runner: a WASI preview1 command module run by wasmtime, in-process.

`spec.argv` is `["wasm", "blake3:<module hash>", *args]`. The module's bytes come from
the blob store (which checks them against the hash) and run in a fresh wasmtime
`Engine` and `Store` per attempt, so nothing leaks from one attempt to the next.

What the guest gets, and nothing more:

* `argv` = `["blake3:<module hash>", *args]` and exactly `spec.env`;
* one preopened directory, the workspace, under the guest path `/` (file descriptor 3).
  A WASI preview1 process always starts in `/` (wasi-libc resolves relative paths
  against it), so relative and absolute guest paths both land in the workspace root;
  `spec.cwd` must therefore be `.` (anything else ends the attempt with `error`);
* an empty stdin; stdout and stderr go to in-memory buffers capped at
  `limits.output_bytes` each (bytes past the cap are counted, not kept: neither the
  workspace nor a temp folder can be filled through them);
* a virtual clock and a seeded random stream (see `_Determinism`), so the same
  module, arguments and inputs give the same bytes; no sockets (preview1 has none
  without preopened socket descriptors, and none are given).

How an attempt ends (`RunOutcome.reason`): `exit` (returned from `_start` = 0, or
`proc_exit(n)`), `fuel` (the store's fuel, `limits.wasm_fuel`, ran out), `memory`
(the module needs more linear memory than `limits.memory_bytes` at instantiation;
a `memory.grow` over the limit returns -1 to the guest, which decides what to do),
`timeout` (wall clock, `spec.timeout`), `signal` (`cancelled()` became true) or
`error` (invalid module, no `_start`, any other trap).

Timeout and cancellation use epoch interruption: a watchdog thread polls the clock and
`cancelled()` and bumps the engine's epoch, which traps the guest at its next loop
back-edge or function entry. Host calls cannot block for long: the only blocking
preview1 call with a wall-clock wait, `poll_oneoff`, is replaced by the virtual clock.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from importlib import metadata
from typing import Any

import blake3

from compute._blobs import BlobStore, hex_of
from compute._runner import RunOutcome, RunSpec
from compute.errors import InvalidJob, RunnerUnavailable

PLATFORM = "wasm32-wasip1"
WASI = "wasi_snapshot_preview1"
POLL_SECONDS = 0.01
MAX_TABLE_ELEMENTS = 1 << 20

PROTECTIONS: dict[str, bool] = {
    "fuel": True,
    "memory_limit": True,
    "wasi_preopen_workspace_only": True,
    "network": True,
    "timeout": True,
    "cancel": True,
    "deterministic_clock_random": True,
    "output_cap": True,
    # Not enforceable per attempt in-process: a guest can write files in the workspace
    # up to what its fuel allows, and open as many descriptors as it likes.
    "file_bytes": False,
    "open_files": False,
}


@lru_cache(maxsize=1)
def wasm_available() -> bool:
    """True when wasmtime imports and can build an engine here."""
    try:
        import wasmtime

        wasmtime.Engine()
    except Exception:
        return False
    return True


def wasmtime_version() -> str:
    try:
        return metadata.version("wasmtime")
    except metadata.PackageNotFoundError:
        return ""


def wasm_health() -> dict[str, Any]:
    """What this runner can run and which limits it enforces (for `gatos doctor`)."""
    available = wasm_available()
    return {
        "runner": "wasm",
        "available": available,
        "version": wasmtime_version() if available else "",
        "platform": PLATFORM,
        "enforced": sorted(k for k, v in PROTECTIONS.items() if v) if available else [],
        "not_enforced": sorted(k for k, v in PROTECTIONS.items() if not v),
        "guest_root": "workspace preopened as '/' (fd 3); cwd must be '.'",
    }


class _CappedOutput:
    """A stdout/stderr sink keeping the first `cap` bytes and counting the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.total = 0

    def __call__(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.total += len(chunk)

    @property
    def truncated(self) -> bool:
        return self.total > len(self.data)


# Errno values of WASI preview1.
_EFAULT, _EINVAL, _ENOTSUP = 21, 28, 58
_CLOCKS = 4          # realtime, monotonic, process cputime, thread cputime
_TICK_NS = 1_000     # the virtual clock advances this much on every read
_SUBSCRIPTION, _EVENT = 48, 32


class _Determinism:
    """Virtual `clock_time_get`, `clock_res_get`, `poll_oneoff` and seeded `random_get`.

    wasmtime's own versions read the host clock, the host's entropy and can sleep; these
    make a run a function of its inputs. All clocks read one counter starting at 0 (the
    Unix epoch for the realtime clock) that moves by `_TICK_NS` per read and jumps to
    the deadline of a `poll_oneoff` clock subscription instead of sleeping. Random bytes
    are the BLAKE3 XOF of the module hash: fine for hash seeds, useless for secrets.
    """

    def __init__(self, seed: str) -> None:
        self.now = 0
        self.random = blake3.blake3(b"gatos wasm random\0" + seed.encode())
        self.random_offset = 0

    def define(self, linker: Any) -> None:
        from wasmtime import FuncType, ValType

        i32, i64 = ValType.i32(), ValType.i64()
        linker.allow_shadowing = True
        linker.define_func(WASI, "clock_time_get", FuncType([i32, i64, i32], [i32]),
                           self.clock_time_get, access_caller=True)
        linker.define_func(WASI, "clock_res_get", FuncType([i32, i32], [i32]),
                           self.clock_res_get, access_caller=True)
        linker.define_func(WASI, "random_get", FuncType([i32, i32], [i32]),
                           self.random_get, access_caller=True)
        linker.define_func(WASI, "poll_oneoff", FuncType([i32, i32, i32, i32], [i32]),
                           self.poll_oneoff, access_caller=True)

    @staticmethod
    def _write(caller: Any, offset: int, data: bytes) -> bool:
        memory = caller.get("memory")
        if memory is None:
            return False
        try:
            memory.write(caller, data, offset)
        except (IndexError, ValueError):
            return False
        return True

    @staticmethod
    def _read(caller: Any, offset: int, size: int) -> bytes | None:
        memory = caller.get("memory")
        if memory is None or offset < 0 or offset + size > memory.data_len(caller):
            return None
        return bytes(memory.read(caller, offset, offset + size))

    def clock_time_get(self, caller: Any, clock: int, _precision: int, out: int) -> int:
        if not 0 <= clock < _CLOCKS:
            return _EINVAL
        self.now += _TICK_NS
        return 0 if self._write(caller, out, self.now.to_bytes(8, "little")) else _EFAULT

    def clock_res_get(self, caller: Any, clock: int, out: int) -> int:
        if not 0 <= clock < _CLOCKS:
            return _EINVAL
        return 0 if self._write(caller, out, _TICK_NS.to_bytes(8, "little")) else _EFAULT

    def random_get(self, caller: Any, buf: int, size: int) -> int:
        data = self.random.digest(length=size, seek=self.random_offset) if size else b""
        self.random_offset += size
        return 0 if self._write(caller, buf, data) else _EFAULT

    def poll_oneoff(self, caller: Any, subs: int, events: int, count: int, nevents: int) -> int:
        # Descriptor subscriptions are reported ready at once (stdin is empty, output
        # never blocks, files are always ready); with none, the earliest clock fires and
        # the virtual clock jumps to it.
        if count <= 0:
            return _EINVAL
        raw = self._read(caller, subs, count * _SUBSCRIPTION)
        if raw is None:
            return _EFAULT
        fds, clocks = [], []
        for i in range(count):
            sub = raw[i * _SUBSCRIPTION:(i + 1) * _SUBSCRIPTION]
            userdata, tag = sub[0:8], sub[8]
            if tag == 0:
                timeout = int.from_bytes(sub[24:32], "little")
                absolute = int.from_bytes(sub[40:42], "little") & 1
                clocks.append((timeout if absolute else self.now + timeout, userdata))
            elif tag in (1, 2):
                fds.append((userdata, tag))
            else:
                return _EINVAL
        out = bytearray()
        if fds:
            for userdata, tag in fds:
                out += userdata + bytes([0, 0, tag]) + bytes(21)
        else:
            due = min(deadline for deadline, _ in clocks)
            self.now = max(self.now, due)
            for deadline, userdata in clocks:
                if deadline <= due:
                    out += userdata + bytes([0, 0, 0]) + bytes(21)
        ok = self._write(caller, events, bytes(out))
        n = len(out) // _EVENT
        return 0 if ok and self._write(caller, nevents, n.to_bytes(4, "little")) else _EFAULT


class _Watchdog:
    """Bumps the engine's epoch once the deadline passes or `cancelled()` turns true."""

    def __init__(self, engine: Any, timeout: float, cancelled: Callable[[], bool] | None) -> None:
        self.engine = engine
        self.deadline = time.monotonic() + timeout
        self.cancelled = cancelled
        self.reason = ""
        self.detail = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="wasm-watchdog", daemon=True)

    def __enter__(self) -> _Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            if time.monotonic() >= self.deadline:
                self.reason, self.detail = "timeout", "wall-clock timeout"
            elif self.cancelled is not None:
                try:
                    if self.cancelled():
                        self.reason, self.detail = "signal", "cancelled"
                except Exception as exc:
                    self.reason, self.detail = "signal", f"cancelled (cancelled() raised {exc!r})"
            if self.reason:
                self.engine.increment_epoch()
                return


def _engine_config() -> Any:
    from wasmtime import Config

    config = Config()
    config.consume_fuel = True
    config.epoch_interruption = True
    # One bounded linear memory and nothing the memory limit does not cover.
    config.wasm_multi_memory = False
    config.wasm_memory64 = False
    config.wasm_threads = False
    config.shared_memory = False
    config.wasm_gc = False
    return config


class WasmRunner:
    """Runs `["wasm", "blake3:<hex>", *args]` with wasmtime under fuel, memory and time limits."""

    name = "wasm"

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    def run(self, spec: RunSpec, *, cancelled: Any = None) -> RunOutcome:
        """Run one attempt of a WASI command module.

        Args:
            spec: `argv[1]` names the module; `argv[2:]` are its arguments.
            cancelled: polled every few milliseconds; when it returns true the guest is
                interrupted and the outcome is `signal` / `cancelled`.

        Returns:
            The outcome; a module that cannot be compiled or has no `_start` is an
            outcome with reason `error`, not an exception.

        Raises:
            InvalidJob: argv is not `["wasm", "blake3:<64 hex>", ...]`.
            BlobNotFound: the module is not in the blob store (nothing was attempted).
            BlobCorrupt: the stored module does not match its hash.
            RunnerUnavailable: wasmtime is not installed or does not work here.
        """
        if len(spec.argv) < 2 or spec.argv[0] != "wasm":
            raise InvalidJob(f"a wasm run needs argv ['wasm', 'blake3:<hex>', ...], got {spec.argv!r}")
        program = "blake3:" + hex_of(spec.argv[1])
        if not wasm_available():
            raise RunnerUnavailable("wasmtime is not installed or cannot build an engine here")
        module_bytes = self.blobs.get(program)
        outcome = RunOutcome(reason="error", exit_code=None, stdout=b"", stderr=b"",
                             program=program, runner=self.name, version=wasmtime_version(),
                             platform=PLATFORM, protections=dict(PROTECTIONS))
        if not os.path.isdir(spec.workspace):
            outcome.detail = f"workspace {spec.workspace!r} is not a directory"
            return outcome
        if os.path.normpath(spec.cwd) != ".":
            outcome.detail = (f"cwd {spec.cwd!r} not supported: a WASI guest starts in '/', "
                              "which is the workspace root")
            return outcome
        stdout = _CappedOutput(spec.limits.output_bytes)
        stderr = _CappedOutput(spec.limits.output_bytes)
        try:
            self._execute(spec, program, module_bytes, stdout, stderr, outcome, cancelled)
        finally:
            outcome.stdout, outcome.stderr = bytes(stdout.data), bytes(stderr.data)
            outcome.stdout_truncated, outcome.stderr_truncated = stdout.truncated, stderr.truncated
        return outcome

    def _execute(self, spec: RunSpec, program: str, module_bytes: bytes, stdout: _CappedOutput,
                 stderr: _CappedOutput, outcome: RunOutcome, cancelled: Any) -> None:
        from wasmtime import (
            Engine,
            ExitTrap,
            Func,
            Linker,
            Module,
            Store,
            Trap,
            TrapCode,
            WasiConfig,
            WasmtimeError,
        )

        engine = Engine(_engine_config())
        try:
            module = Module(engine, module_bytes)
        except WasmtimeError as exc:
            outcome.detail = f"invalid module: {_cause(exc)}"
            return

        try:
            wasi = WasiConfig()
            wasi.argv = [program, *spec.argv[2:]]
            wasi.env = sorted(spec.env.items())
            wasi.stdout_custom = stdout
            wasi.stderr_custom = stderr
            wasi.preopen_dir(os.path.realpath(spec.workspace), "/")
            store = Store(engine)
            store.set_wasi(wasi)
            store.set_fuel(spec.limits.wasm_fuel)
            store.set_epoch_deadline(1)
            store.set_limits(memory_size=spec.limits.memory_bytes, memories=1, tables=8,
                             table_elements=MAX_TABLE_ELEMENTS)
            linker = Linker(engine)
            linker.define_wasi()
            _Determinism(program).define(linker)
        except (WasmtimeError, ValueError) as exc:
            outcome.detail = f"cannot set up the WASI store: {_cause(exc)}"
            return

        instance = None
        with _Watchdog(engine, spec.timeout, cancelled) as watchdog:
            try:
                instance = linker.instantiate(store, module)
                start = instance.exports(store).get("_start")
                if not isinstance(start, Func):
                    outcome.detail = "module exports no _start function (not a WASI command)"
                    return
                start(store)
            except ExitTrap as exc:
                outcome.reason, outcome.exit_code = "exit", exc.code
            except Trap as exc:
                code = exc.trap_code
                if code == TrapCode.OUT_OF_FUEL:
                    outcome.reason, outcome.detail = "fuel", f"fuel {spec.limits.wasm_fuel} exhausted"
                elif code == TrapCode.INTERRUPT:
                    outcome.reason = watchdog.reason or "timeout"
                    outcome.detail = watchdog.detail or "interrupted"
                else:
                    outcome.detail = f"trap ({code.name.lower() if code else 'unknown'}): {_cause(exc)}"
            except WasmtimeError as exc:
                message = _cause(exc)
                if "memory" in message and ("limit" in message or "exceed" in message):
                    outcome.reason = "memory"
                outcome.detail = message
            else:
                outcome.reason, outcome.exit_code = "exit", 0
        if outcome.reason == "exit" and outcome.exit_code != 0:
            outcome.detail = _memory_note(store, instance, spec.limits.memory_bytes)


def _memory_note(store: Any, instance: Any, limit: int) -> str:
    """Say so when a failing guest's memory ended within a page of the limit (a likely refused grow)."""
    from wasmtime import Memory

    memory = instance.exports(store).get("memory") if instance is not None else None
    if isinstance(memory, Memory) and memory.data_len(store) + 65536 > limit:
        return f"linear memory at {memory.data_len(store)} of {limit} bytes (memory.grow refused?)"
    return ""


def _cause(exc: BaseException) -> str:
    """The root cause of a wasmtime error: its last line (the first is often a backtrace header)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


__all__ = ["PLATFORM", "PROTECTIONS", "WasmRunner", "wasm_available", "wasm_health"]
