"""The WebAssembly runner: WASI command modules (written in WAT here) under fuel, memory and time limits."""

from __future__ import annotations

import os
import threading
import time

import pytest

wasmtime = pytest.importorskip("wasmtime")

from compute._blobs import BlobStore  # noqa: E402
from compute._runner import Limits, RunSpec  # noqa: E402
from compute._wasm import PROTECTIONS, WasmRunner, wasm_available, wasm_health  # noqa: E402
from compute.errors import BlobCorrupt, BlobNotFound, InvalidJob  # noqa: E402

WASI_IMPORTS = """
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
"""

# print(addr, len): one iovec at 0..8, bytes-written at 8.
PRINT = """
  (func $print (param $fd i32) (param $addr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $addr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
"""


def command(body: str, *, imports: str = "", data: str = "", memory: str = "1") -> bytes:
    return wasmtime.wat2wasm(f"""(module {WASI_IMPORTS}{imports}
      (memory (export "memory") {memory})
      {data}
      {PRINT}
      (func (export "_start") {body}))""")


HELLO = command('(call $print (i32.const 1) (i32.const 100) (i32.const 6))',
                data='(data (i32.const 100) "hello\\n")')
EXIT3 = command("(call $proc_exit (i32.const 3))")
LOOP = command("(loop $l (br $l))")


@pytest.fixture
def store(tmp_path):
    return BlobStore(str(tmp_path / "repo"))


@pytest.fixture
def workspace(tmp_path):
    path = tmp_path / "ws"
    path.mkdir()
    return path


def run(store, workspace, module, *args, env=None, timeout=5.0, cancelled=None, **limits):
    name = store.put(module)
    spec = RunSpec(argv=["wasm", name, *args], env=env or {}, workspace=str(workspace),
                   timeout=timeout, limits=Limits(**limits))
    return WasmRunner(store).run(spec, cancelled=cancelled)


def test_available_and_health():
    """wasmtime works here and the health report lists what is enforced."""
    assert wasm_available()
    health = wasm_health()
    assert health["available"] and health["version"]
    assert {"fuel", "memory_limit", "timeout", "wasi_preopen_workspace_only"} <= set(health["enforced"])


def test_hello_world(store, workspace):
    """fd_write to stdout reaches the outcome; returning from _start is exit 0."""
    out = run(store, workspace, HELLO)
    assert (out.reason, out.exit_code, out.stdout, out.stderr) == ("exit", 0, b"hello\n", b"")
    assert out.ok and not out.stdout_truncated
    assert out.program == store.put(HELLO) and out.runner == "wasm"
    assert out.version and out.platform == "wasm32-wasip1"
    assert out.protections == PROTECTIONS and out.protections["network"]


def test_proc_exit_code(store, workspace):
    """proc_exit(3) ends the run with reason exit and exit code 3."""
    out = run(store, workspace, EXIT3)
    assert (out.reason, out.exit_code) == ("exit", 3)
    assert not out.ok


def test_endless_loop_runs_out_of_fuel(store, workspace):
    """An endless loop stops when the fuel is gone."""
    out = run(store, workspace, LOOP, wasm_fuel=1_000_000)
    assert out.reason == "fuel" and out.exit_code is None


def test_memory_grow_refused_at_the_limit(store, workspace):
    """memory.grow past memory_bytes returns -1; the module sees it and the memory stays under the limit."""
    # Grow one page at a time until refused, then exit with the page count reached.
    bomb = command("""
      (loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
      (call $proc_exit (memory.size))""")
    out = run(store, workspace, bomb, memory_bytes=4 * 65536)
    assert (out.reason, out.exit_code) == ("exit", 4)
    assert "memory.grow refused" in out.detail


def test_big_single_grow_refused(store, workspace):
    """One huge memory.grow (1 GiB) is refused under a 1 MiB limit."""
    bomb = command("(call $proc_exit (i32.add (memory.grow (i32.const 16384)) (i32.const 10)))")
    out = run(store, workspace, bomb, memory_bytes=1 << 20)
    assert (out.reason, out.exit_code) == ("exit", 9)  # -1 + 10


def test_initial_memory_over_the_limit(store, workspace):
    """A module whose declared memory exceeds the limit ends with reason memory, not running at all."""
    out = run(store, workspace, command("", memory="64"), memory_bytes=1 << 20)
    assert out.reason == "memory" and out.exit_code is None
    assert "memory" in out.detail


PATH_OPEN = """
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
"""


def open_module(path: str, *, oflags: int, rights: int) -> bytes:
    """A module that path_opens `path` under fd 3 and exits with the errno (0 = opened)."""
    return command(f"""
      (call $proc_exit (call $path_open (i32.const 3) (i32.const 0) (i32.const 200)
        (i32.const {len(path)}) (i32.const {oflags}) (i64.const {rights}) (i64.const {rights})
        (i32.const 0) (i32.const 300)))""",
                   imports=PATH_OPEN, data=f'(data (i32.const 200) "{path}")')


READ_RIGHTS = 2  # fd_read


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/passwd", "../../../../../etc/passwd"])
def test_paths_outside_the_workspace_are_refused(store, workspace, path):
    """path_open of anything outside the preopened workspace fails with a WASI errno."""
    (workspace.parent / "outside.txt").write_text("secret")
    out = run(store, workspace, open_module(path, oflags=0, rights=READ_RIGHTS))
    assert out.reason == "exit" and out.exit_code not in (0, None)


def test_symlink_out_of_the_workspace_is_refused(store, workspace):
    """A symlink inside the workspace pointing out of it cannot be followed."""
    (workspace.parent / "outside.txt").write_text("secret")
    os.symlink(workspace.parent / "outside.txt", workspace / "link")
    out = run(store, workspace, open_module("link", oflags=0, rights=READ_RIGHTS))
    assert out.reason == "exit" and out.exit_code != 0


def test_only_the_workspace_is_preopened(store, workspace):
    """fd 3 is a directory preopen named '/', and fd 4 does not exist (EBADF = 8)."""
    prestat = command("""
      (drop (call $prestat_get (i32.const 3) (i32.const 16)))
      (drop (call $dir_name (i32.const 3) (i32.const 100) (i32.load (i32.const 20))))
      (call $print (i32.const 1) (i32.const 100) (i32.load (i32.const 20)))
      (call $proc_exit (call $prestat_get (i32.const 4) (i32.const 16)))""", imports="""
      (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat_get (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_prestat_dir_name"
        (func $dir_name (param i32 i32 i32) (result i32)))""")
    out = run(store, workspace, prestat)
    assert (out.stdout, out.exit_code) == (b"/", 8)


def test_write_a_file_in_the_workspace(store, workspace):
    """A file created and written by the guest appears in the workspace on the host."""
    writer = command("""
      (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 200) (i32.const 7)
            (i32.const 9) (i64.const 64) (i64.const 64) (i32.const 0) (i32.const 300))
        (then (call $proc_exit (i32.const 99))))
      (call $print (i32.load (i32.const 300)) (i32.const 220) (i32.const 5))""",
                     imports=PATH_OPEN,  # oflags 9 = creat|trunc, rights 64 = fd_write
                     data='(data (i32.const 200) "out.txt") (data (i32.const 220) "done\\n")')
    out = run(store, workspace, writer)
    assert out.ok
    assert (workspace / "out.txt").read_bytes() == b"done\n"


def test_huge_output_is_truncated(store, workspace):
    """Output past output_bytes is dropped and the truncated flag set, on each stream separately."""
    spam = command("""
      (local $i i32)
      (loop $l
        (call $print (i32.const 1) (i32.const 1024) (i32.const 4096))
        (call $print (i32.const 2) (i32.const 1024) (i32.const 10))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $l (i32.lt_u (local.get $i) (i32.const 100))))""")
    out = run(store, workspace, spam, output_bytes=10_000)
    assert out.ok
    assert len(out.stdout) == 10_000 and out.stdout_truncated
    assert len(out.stderr) == 1000 and not out.stderr_truncated


ARGS_ENV = """
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $env_get (param i32 i32) (result i32)))
"""


def test_args_and_env_reach_the_module(store, workspace):
    """The guest sees argv [module, *args] and exactly spec.env, nothing inherited."""
    # Prints the argv buffer then the environ buffer (NUL-separated strings).
    dump = command("""
      (drop (call $args_sizes (i32.const 16) (i32.const 20)))
      (drop (call $args_get (i32.const 1024) (i32.const 4096)))
      (call $print (i32.const 1) (i32.const 4096) (i32.load (i32.const 20)))
      (drop (call $env_sizes (i32.const 24) (i32.const 28)))
      (drop (call $env_get (i32.const 1024) (i32.const 8192)))
      (call $print (i32.const 1) (i32.const 8192) (i32.load (i32.const 28)))
      (call $proc_exit (i32.load (i32.const 16)))""", imports=ARGS_ENV)
    os.environ["GATOS_TEST_LEAK"] = "1"
    try:
        out = run(store, workspace, dump, "a b", "c", env={"X": "1", "HOME": "/nowhere"})
    finally:
        del os.environ["GATOS_TEST_LEAK"]
    name = store.put(dump).encode()
    assert out.exit_code == 3
    assert out.stdout == name + b"\0a b\0c\0" + b"HOME=/nowhere\0X=1\0"


def test_clock_and_random_are_deterministic(store, workspace):
    """Two runs print the same clock readings and random bytes; a sleep via poll_oneoff costs no time."""
    probe = command("""
      (drop (call $clock (i32.const 0) (i64.const 0) (i32.const 100)))
      (drop (call $clock (i32.const 1) (i64.const 0) (i32.const 108)))
      (drop (call $random (i32.const 116) (i32.const 16)))
      ;; sleep 1000 s: one relative clock subscription at 512
      (i64.store (i32.const 536) (i64.const 1000000000000))
      (drop (call $poll (i32.const 512) (i32.const 600) (i32.const 1) (i32.const 640)))
      (drop (call $clock (i32.const 1) (i64.const 0) (i32.const 132)))
      (call $print (i32.const 1) (i32.const 100) (i32.const 40))
      (call $proc_exit (i32.load (i32.const 640)))""", imports="""
      (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
      (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))""")
    began = time.monotonic()
    first = run(store, workspace, probe)
    second = run(store, workspace, probe)
    assert time.monotonic() - began < 5
    assert first.exit_code == 1 and first.stdout == second.stdout and len(first.stdout) == 40
    after_sleep = int.from_bytes(first.stdout[32:40], "little")
    assert after_sleep >= 1_000_000_000_000


def test_missing_blob_raises(store, workspace):
    """A module hash not in the blob store raises BlobNotFound: nothing was attempted."""
    spec = RunSpec(argv=["wasm", "blake3:" + "0" * 64], env={}, workspace=str(workspace), timeout=5)
    with pytest.raises(BlobNotFound):
        WasmRunner(store).run(spec)


def test_corrupt_blob_raises(store, workspace):
    """A stored module whose bytes no longer match its hash raises BlobCorrupt."""
    name = store.put(HELLO)
    path = os.path.join(store.dir, name[7:])
    os.chmod(path, 0o644)
    with open(path, "r+b") as handle:
        handle.seek(10)
        handle.write(b"\xff")
    spec = RunSpec(argv=["wasm", name], env={}, workspace=str(workspace), timeout=5)
    with pytest.raises(BlobCorrupt):
        WasmRunner(store).run(spec)


def test_bad_argv_raises(store, workspace):
    """argv that is not ['wasm', 'blake3:<hex>', ...] raises InvalidJob."""
    for argv in (["wasm"], ["python", "x"], ["wasm", "sha256:abc"]):
        with pytest.raises(InvalidJob):
            WasmRunner(store).run(RunSpec(argv=argv, env={}, workspace=str(workspace), timeout=5))


def test_invalid_module_is_an_error_outcome(store, workspace):
    """Bytes that are not WebAssembly end with reason error."""
    out = run(store, workspace, b"\0asm\x01\0\0\0garbage")
    assert out.reason == "error" and "invalid module" in out.detail


def test_module_without_start(store, workspace):
    """A module exporting no _start ends with reason error and says why."""
    out = run(store, workspace, wasmtime.wat2wasm('(module (func (export "main")))'))
    assert out.reason == "error" and "_start" in out.detail


def test_trap_is_an_error(store, workspace):
    """An unreachable trap ends with reason error and the trap in the detail."""
    out = run(store, workspace, command("unreachable"))
    assert out.reason == "error" and "unreachable" in out.detail


def test_missing_workspace_is_an_error_outcome(store, tmp_path):
    """A workspace that does not exist ends with reason error, not an exception."""
    out = run(store, tmp_path / "nowhere", HELLO)
    assert out.reason == "error" and "workspace" in out.detail


def test_cwd_other_than_workspace_root_is_refused(store, workspace):
    """spec.cwd must be '.' (the guest always starts in '/', the workspace root)."""
    (workspace / "sub").mkdir()
    spec = RunSpec(argv=["wasm", store.put(HELLO)], env={}, workspace=str(workspace), timeout=5,
                   cwd="sub")
    out = WasmRunner(store).run(spec)
    assert out.reason == "error" and "cwd" in out.detail


def test_timeout(store, workspace):
    """An endless loop with huge fuel is stopped by the wall-clock timeout."""
    began = time.monotonic()
    out = run(store, workspace, LOOP, timeout=0.2, wasm_fuel=10**15)
    assert out.reason == "timeout" and out.exit_code is None
    assert time.monotonic() - began < 1.5


def test_cancel(store, workspace):
    """cancelled() turning true ends the run with reason signal, detail cancelled."""
    flag = threading.Event()
    threading.Timer(0.1, flag.set).start()
    out = run(store, workspace, LOOP, timeout=30, wasm_fuel=10**15, cancelled=flag.is_set)
    assert (out.reason, out.detail) == ("signal", "cancelled")


def test_same_inputs_same_output(store, workspace):
    """The same module and arguments give the same stdout bytes."""
    assert run(store, workspace, HELLO).stdout == run(store, workspace, HELLO).stdout == b"hello\n"
