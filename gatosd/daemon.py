"""`gatosd`: serve one node over stdio, a unix socket and (when asked) loopback TCP.

Lifecycle: one daemon per repository (an flock on `.git/gatos/gatosd.lock`; a second
one exits with a clear message). SIGTERM/SIGINT stop accepting, answer and flush what
is in flight, and exit 0. `.git/gatos/gatosd.json` tells clients (and `gatos status`)
where the running daemon listens; it is removed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import gc
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gatosd._bus_methods import BusMethods
from gatosd._cache_methods import CacheMethods
from gatosd._doctor_methods import DoctorMethods
from gatosd._fold_methods import FoldMethods
from gatosd._group_commit import GroupCommitConfig, GroupCommitter
from gatosd._jobs_methods import JobMethods
from gatosd._ledger_methods import LedgerMethods
from gatosd._metrics import Metrics, MetricsObserver, parse_loopback
from gatosd._registry import Registry
from gatosd._server import Limits, Server
from gatosd._sync_methods import SyncMethods
from gatosd._writer_process import WriterProcess
from gatosd.node import Node
from ledger_core.errors import LedgerError

log = logging.getLogger("gatosd")
MAX_UNIX_PATH = 107


class AlreadyRunning(LedgerError):
    code = "ALREADY_RUNNING"


@dataclass
class DaemonConfig:
    repo: str
    stdio: bool = False
    socket: str | None = None
    listen: str | None = None
    token_file: str | None = None
    metrics: str | None = None
    durable: bool = False
    limits: Limits = field(default_factory=Limits)
    group: GroupCommitConfig = field(default_factory=GroupCommitConfig)
    grace: float = 30.0
    sync: str | None = None
    sync_interval: float = 30.0


def state_paths(gatos_dir: str) -> tuple[str, str, str]:
    """(lock file, state file, default socket) of a node's daemon."""
    return (os.path.join(gatos_dir, "gatosd.lock"), os.path.join(gatos_dir, "gatosd.json"),
            os.path.join(gatos_dir, "gatosd.sock"))


def _take_instance_lock(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        with contextlib.suppress(OSError):
            holder = os.read(fd, 64).decode(errors="replace").strip()
        os.close(fd)
        raise AlreadyRunning(
            f"another gatosd (pid {holder or '?'}) is already serving this repository "
            f"(lock {path}); use it, or stop it first") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _socket_in_use(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _read_token(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        token = handle.read().strip()
    if len(token) < 16:
        raise LedgerError(f"the token in {path} is shorter than 16 characters")
    return token


async def _serve_stdio(server: Server) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=server.limits.max_line)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, sys.stdout)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    await server.serve_stream(reader, writer)


async def run(config: DaemonConfig, ready: asyncio.Event | None = None) -> int:
    node = Node.open(config.repo, durable=config.durable)
    gatos_dir = node.repo.gatos_dir
    os.makedirs(gatos_dir, mode=0o700, exist_ok=True)
    lock_path, state_path, default_socket = state_paths(gatos_dir)
    lock_fd = _take_instance_lock(lock_path)
    metrics = Metrics()
    # Journal writes happen in a child process (see _writer_process); the handlers
    # verify every signature before an event reaches it.
    writer = WriterProcess(node.repo.git_dir, durable=config.durable)

    def on_batch(size: int, _seconds: float) -> None:
        metrics.batch_size.observe(size)

    committer = GroupCommitter(writer.append_many_async, config.group, on_batch)
    registry = Registry()
    server = Server(registry, config.limits, MetricsObserver(metrics))
    methods = LedgerMethods(os.path.realpath(config.repo), node, committer, server, metrics,
                            durable=config.durable)
    methods.register(registry)
    fold_methods = FoldMethods(methods.repo_path, metrics)  # fold_state, state.get
    fold_methods.register(registry)
    bus_methods = BusMethods(methods.repo_path, node, committer, server, durable=config.durable)
    bus_methods.register(registry)  # bus.* (its writer process starts on the first bus request)
    jobs_methods = JobMethods(methods.repo_path, node, committer, bus_methods)
    jobs_methods.register(registry)  # jobs.*
    doctor_methods = DoctorMethods(methods.repo_path)
    doctor_methods.register(registry)  # doctor
    cache_methods = CacheMethods(methods.repo_path, metrics)
    cache_methods.register(registry)  # cache.query, cache.rebuild
    sync_methods = SyncMethods(methods.repo_path, config.sync, config.sync_interval)
    sync_methods.register(registry)  # sync (and the background sync with --sync)
    committer.start()

    state: dict[str, Any] = {"pid": os.getpid(), "repo": methods.repo_path}
    socket_path = config.socket or (None if (config.stdio or config.listen) else default_socket)
    try:
        if socket_path:
            socket_path = os.path.abspath(socket_path)
            if len(socket_path.encode()) > MAX_UNIX_PATH:
                raise LedgerError(f"socket path {socket_path} is longer than {MAX_UNIX_PATH} "
                                  "bytes; pass a shorter --socket")
            # Our lock covers the repository, not a --socket path shared with another
            # repository's daemon: only a socket nobody answers on is a leftover to remove.
            if _socket_in_use(socket_path):
                raise LedgerError(f"socket {socket_path} is in use by another process; "
                                  "pass another --socket")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(socket_path)  # a leftover of a killed daemon
            await server.listen_unix(socket_path)
            state["socket"] = socket_path
        if config.listen:
            host, port = parse_loopback(config.listen)
            if not config.token_file:
                raise LedgerError("--listen needs --token-file: TCP clients must present a token")
            state["listen"] = f"{host}:{await server.listen_tcp(host, port, _read_token(config.token_file))}"
        if config.metrics:
            host, _ = parse_loopback(config.metrics)
            state["metrics"] = f"{host}:{metrics.serve(config.metrics)}"
        # Signal handlers before announcing readiness: a SIGTERM sent as soon as a client
        # sees the ready line must take the graceful path.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # Everything built so far (modules, pydantic schemas, the registry) lives as long
        # as the daemon: keep it out of the collector's way. A full collection over it
        # took ~11 ms here, a pause every request in flight would wait out.
        gc.collect()
        gc.freeze()
        with open(state_path + ".tmp", "w", encoding="utf-8") as handle:
            json.dump(state, handle)
        os.replace(state_path + ".tmp", state_path)
        log.info("gatosd serving %s", state)
        if not config.stdio:
            print(json.dumps({"ready": True, **state}), file=sys.stderr, flush=True)

        if ready is not None:
            ready.set()
        sync_methods.start()
        waiters = [asyncio.create_task(stop.wait())]
        if config.stdio:
            waiters.append(asyncio.create_task(_serve_stdio(server)))
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)

        # Shutdown: stop accepting, answer what is in flight, flush every queued append.
        await server.stop_accepting()
        await server.drain(config.grace)
        await sync_methods.stop()
        await bus_methods.close()
        await committer.close()
        for task in waiters:
            task.cancel()
        return 0
    finally:
        methods.close()
        fold_methods.close()
        jobs_methods.close()
        doctor_methods.close()
        cache_methods.close()
        sync_methods.close()
        writer.close()
        for path in (state_path, state.get("socket")):
            if path:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        os.close(lock_fd)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gatosd", description="GATOS node daemon (JSONL protocol)")
    p.add_argument("--repo", default=os.environ.get("GATOS_REPO") or os.getcwd())
    p.add_argument("--stdio", action="store_true", help="serve one client on stdin/stdout")
    p.add_argument("--socket", help="unix socket path (default .git/gatos/gatosd.sock)")
    p.add_argument("--listen", help="loopback TCP HOST:PORT (needs --token-file)")
    p.add_argument("--token-file", help="file holding the bearer token TCP clients must send")
    p.add_argument("--metrics", help="serve Prometheus /metrics on loopback HOST:PORT")
    p.add_argument("--durable", action="store_true", help="fsync objects, packs and refs")
    p.add_argument("--max-line", type=int, default=Limits.max_line)
    p.add_argument("--max-connections", type=int, default=Limits.max_connections)
    p.add_argument("--line-timeout", type=float, default=Limits.line_timeout)
    p.add_argument("--ping-interval", type=float, default=Limits.ping_interval)
    p.add_argument("--batch-max", type=int, default=GroupCommitConfig.max_batch)
    p.add_argument("--batch-delay-ms", type=float, default=GroupCommitConfig.max_delay * 1000)
    p.add_argument("--queue-max", type=int, default=GroupCommitConfig.max_queue)
    p.add_argument("--sync", metavar="REMOTE", help="sync with this remote in the background")
    p.add_argument("--sync-interval", type=float, default=30.0, metavar="S",
                   help="seconds between background syncs (default 30)")
    p.add_argument("--log-level", default="WARNING")
    return p


def _run_loop(main: Any) -> int:
    """Run the daemon on uvloop where it is installed (`GATOSD_LOOP=asyncio` opts out).

    uvloop is the same asyncio API on libuv. The selector, transports and callbacks are
    most of what a request costs the daemon: a trivial request measured 39 us of daemon
    CPU on uvloop against 48 us on the default loop (bench/RESULTS.md, Bus).
    """
    if os.environ.get("GATOSD_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)  # type: ignore[no-any-return]
    return asyncio.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s gatosd %(levelname)s %(message)s")
    config = DaemonConfig(
        repo=args.repo, stdio=args.stdio, socket=args.socket, listen=args.listen,
        token_file=args.token_file, metrics=args.metrics, durable=args.durable,
        limits=Limits(max_line=args.max_line, max_connections=args.max_connections,
                      line_timeout=args.line_timeout, ping_interval=args.ping_interval),
        group=GroupCommitConfig(max_batch=args.batch_max, max_delay=args.batch_delay_ms / 1000,
                                max_queue=args.queue_max),
        sync=args.sync, sync_interval=args.sync_interval,
    )
    try:
        return _run_loop(run(config))
    except LedgerError as exc:
        print(f"gatosd: {exc.code}: {exc.reason}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"gatosd: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
