"""Bus benchmark: acknowledged publish throughput and end-to-end latency, GATOS against
NATS JetStream and Redis Streams, measured in the same run.

Every system gets the same message (a JSON object padded to `--size` bytes), the same
number of concurrent publishers (`--publishers`, each on its own connection, each
waiting for the acknowledgement of a publish before sending the next one), and a
fresh server and store per run:

* GATOS: `gatosd` on a fresh node, `bus.publish` over its unix socket (raw asyncio
  JSONL, not the client SDK); acknowledged after the shard ref update; topic with the
  default 4 shards, keyless (round-robin).
* NATS JetStream: `nats-server -js` with file storage in a temp dir, one stream,
  `js.publish` (acknowledged by the server once stored).
* Redis Streams: `redis-server` with `appendonly yes` (`appendfsync everysec`, the
  default), `XADD` (its reply is the acknowledgement).

Latency: one publisher paced at `--rate` messages/s for `--seconds` (open loop: the
schedule never waits for acks), one subscriber (GATOS `bus.subscribe` from HEAD; a
JetStream push consumer; Redis `XREADGROUP BLOCK`); latency = receive time - send time
(same host, same clock). Reported p50/p99.

Every client encodes and decodes its application JSON with orjson (what the GATOS SDKs
use). Each system's store goes in a fresh folder under `--dir` (default: the temp
folder); folders are removed only when the whole run ends, and the report gives the cost
of creating a file there before and after the runs: GATOS creates two files per batch
(a pack and its index), and on a journal-less ext4 that cost grows with recent file
removals (20 us in a quiet folder, 300-800 us after heavy churn), so it explains runs
that differ for no reason in the code. Before each measurement the bench calls `sync`,
so that no measurement pays for the previous one's writeback, and collects and freezes
its own heap (`gc.freeze`), so that no client stalls while the collector walks objects
left by the previous measurements.

Each measurement is repeated `--runs` times; medians are printed, with GATOS/peer
ratios. The peers' Python clients (`nats-py`, `redis`) are installed into the running
interpreter with pip when they are missing (`--no-install` refuses instead); the
`nats-server` and `redis-server` binaries must be on PATH (Debian: `apt-get install
nats-server redis-server`; or `go install github.com/nats-io/nats-server/v2@latest`).

    .venv/bin/python bench/bench_bus.py --runs 3 --markdown
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


_STORES: list[str] = []  # removed when the whole run ends, see `_store`
_STORE_DIR = [tempfile.gettempdir()]


def _store(prefix: str) -> str:
    """A fresh folder for one server's store, under `--dir`.

    Folders are removed only when the whole run ends: removing a store frees its files,
    and on a filesystem without a journal (ext4 here) the kernel skips inodes freed in
    the last minutes whenever it creates a file, which would slow the next GATOS run
    (it creates two files per batch) for reasons of the benchmark's own cleanup.
    """
    folder = tempfile.mkdtemp(prefix=prefix, dir=_STORE_DIR[0])
    _STORES.append(folder)
    return folder


def create_cost_us(directory: str, count: int = 200) -> float:
    """Median microseconds to create (and close) an empty file in a new folder under `directory`."""
    folder = tempfile.mkdtemp(prefix="bc-", dir=directory)
    times = []
    try:
        for i in range(count):
            t0 = time.perf_counter()
            os.close(os.open(os.path.join(folder, str(i)), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            times.append((time.perf_counter() - t0) * 1e6)
    finally:
        _STORES.append(folder)
    return statistics.median(times)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _payload(size: int, i: int) -> dict[str, Any]:
    base = {"i": i, "t": 0, "pad": ""}
    pad = size - len(json.dumps(base, separators=(",", ":")))
    return {**base, "pad": "x" * max(0, pad)}


def _now_us() -> int:
    """Integer microseconds: GATOS refuses floats in signed data, so every system gets integers."""
    return time.time_ns() // 1000


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# -- GATOS -----------------------------------------------------------------------------------

class _Jsonl:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, path: str) -> _Jsonl:
        r, w = await asyncio.open_unix_connection(path, limit=16 * 1024 * 1024)
        return cls(r, w)

    async def send(self, frame: dict[str, Any]) -> None:
        self.writer.write(orjson.dumps(frame, option=orjson.OPT_APPEND_NEWLINE))

    async def recv(self) -> dict[str, Any]:
        while True:
            frame = orjson.loads(await self.reader.readline())
            if frame.get("kind") == "ping":
                await self.send({"kind": "pong"})
                continue
            return frame  # type: ignore[no-any-return]

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def gatos_server() -> AsyncIterator[str]:
    from gatosd.node import Node

    folder = _store("bb-")
    repo = os.path.join(folder, "node")
    Node.init(repo, "user:bench", discover=False)
    sock = os.path.join(folder, "s")
    err = open(os.path.join(folder, "err"), "w+b")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "gatosd.daemon", "--repo", repo, "--socket", sock],
                            stderr=err, stdout=subprocess.DEVNULL, cwd=ROOT)
    try:
        for _ in range(1000):
            err.seek(0)
            if b'"ready"' in err.read():
                break
            await asyncio.sleep(0.02)
        c = await _Jsonl.open(sock)  # start the bus writer before timing
        await c.send({"type": "bus.publish", "id": "w", "topic": "warm", "payload": 0})
        await c.recv()
        await c.close()
        yield sock
    finally:
        proc.terminate()
        proc.wait(30)
        err.close()


async def gatos_throughput(total: int, publishers: int, size: int) -> float:
    async with gatos_server() as sock:
        conns = [await _Jsonl.open(sock) for _ in range(publishers)]

        async def run(c: _Jsonl, n: int) -> None:
            for i in range(n):
                await c.send({"type": "bus.publish", "id": i, "topic": "bench", "payload": _payload(size, i)})
                reply = await c.recv()
                assert reply.get("ok"), reply

        started = time.perf_counter()
        await asyncio.gather(*(run(c, total // publishers) for c in conns))
        elapsed = time.perf_counter() - started
        for c in conns:
            await c.close()
        return (total // publishers) * publishers / elapsed


async def gatos_latency(rate: int, seconds: float, size: int) -> list[float]:
    async with gatos_server() as sock:
        sub, pub = await _Jsonl.open(sock), await _Jsonl.open(sock)
        await sub.send({"type": "bus.subscribe", "id": "s", "topic": "lat", "from": "HEAD"})
        await sub.recv()  # ack
        await asyncio.sleep(0.3)
        count = int(rate * seconds)
        lat: list[float] = []

        async def receive() -> None:
            while len(lat) < count:
                frame = await sub.recv()
                if frame.get("type") == "bus.message":
                    lat.append((_now_us() - frame["payload"]["t"]) / 1000)

        async def drain() -> None:
            for _ in range(count):
                await pub.recv()

        tasks = [asyncio.create_task(receive()), asyncio.create_task(drain())]
        await _paced(rate, count, lambda i: pub.send({"type": "bus.publish", "id": i, "topic": "lat",
                                                      "payload": {**_payload(size, i), "t": _now_us()}}))
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        await sub.close()
        await pub.close()
        return lat


async def _paced(rate: int, count: int, send: Callable[[int], Awaitable[Any]]) -> None:
    start = time.perf_counter()
    for i in range(count):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(i)


# -- NATS JetStream --------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def nats_server() -> AsyncIterator[str]:
    folder = _store("bn-")
    port = _free_port()
    proc = subprocess.Popen(["nats-server", "-js", "-sd", folder, "-a", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(500):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                break
            await asyncio.sleep(0.02)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


async def nats_throughput(total: int, publishers: int, size: int) -> float:
    import nats
    from nats.js.api import StorageType, StreamConfig

    async with nats_server() as url:
        conns = [await nats.connect(url) for _ in range(publishers)]
        await conns[0].jetstream().add_stream(StreamConfig(name="BENCH", subjects=["bench"],
                                                           storage=StorageType.FILE))

        async def run(nc: Any, n: int) -> None:
            js = nc.jetstream()
            for i in range(n):
                await js.publish("bench", orjson.dumps(_payload(size, i)))

        started = time.perf_counter()
        await asyncio.gather(*(run(nc, total // publishers) for nc in conns))
        elapsed = time.perf_counter() - started
        for nc in conns:
            await nc.close()
        return (total // publishers) * publishers / elapsed


async def nats_latency(rate: int, seconds: float, size: int) -> list[float]:
    import nats
    from nats.js.api import StorageType, StreamConfig

    async with nats_server() as url:
        nc_sub, nc_pub = await nats.connect(url), await nats.connect(url)
        await nc_pub.jetstream().add_stream(StreamConfig(name="LAT", subjects=["lat"],
                                                         storage=StorageType.FILE))
        count = int(rate * seconds)
        lat: list[float] = []
        done = asyncio.Event()

        async def on_msg(msg: Any) -> None:
            lat.append((_now_us() - orjson.loads(msg.data)["t"]) / 1000)
            await msg.ack()
            if len(lat) >= count:
                done.set()

        await nc_sub.jetstream().subscribe("lat", cb=on_msg, manual_ack=True)
        js = nc_pub.jetstream()
        pending: set[asyncio.Task[Any]] = set()

        async def send(i: int) -> None:
            data = orjson.dumps({**_payload(size, i), "t": _now_us()})
            task = asyncio.create_task(js.publish("lat", data))
            pending.add(task)
            task.add_done_callback(pending.discard)

        await _paced(rate, count, send)
        await asyncio.wait_for(done.wait(), 60)
        await nc_sub.close()
        await nc_pub.close()
        return lat


# -- Redis Streams ---------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def redis_server() -> AsyncIterator[int]:
    folder = _store("br-")
    port = _free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", folder,
                             "--appendonly", "yes", "--save", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(500):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                break
            await asyncio.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


async def redis_throughput(total: int, publishers: int, size: int) -> float:
    import redis.asyncio as aioredis

    async with redis_server() as port:
        conns = [aioredis.Redis(port=port, single_connection_client=True) for _ in range(publishers)]

        async def run(r: Any, n: int) -> None:
            for i in range(n):
                await r.xadd("bench", {"d": orjson.dumps(_payload(size, i))})

        started = time.perf_counter()
        await asyncio.gather(*(run(r, total // publishers) for r in conns))
        elapsed = time.perf_counter() - started
        for r in conns:
            await r.aclose()
        return (total // publishers) * publishers / elapsed


async def redis_latency(rate: int, seconds: float, size: int) -> list[float]:
    import redis.asyncio as aioredis

    async with redis_server() as port:
        sub = aioredis.Redis(port=port, single_connection_client=True)
        pub = aioredis.Redis(port=port, single_connection_client=True)
        await sub.xgroup_create("lat", "g", id="$", mkstream=True)
        count = int(rate * seconds)
        lat: list[float] = []

        async def receive() -> None:
            while len(lat) < count:
                got = await sub.xreadgroup("g", "c", {"lat": ">"}, count=100, block=1000)
                for _, entries in got or []:
                    ids = []
                    for entry_id, fields in entries:
                        lat.append((_now_us() - orjson.loads(fields[b"d"])["t"]) / 1000)
                        ids.append(entry_id)
                    await sub.xack("lat", "g", *ids)

        task = asyncio.create_task(receive())
        pending: set[asyncio.Task[Any]] = set()

        async def send(i: int) -> None:
            t = asyncio.create_task(pub.xadd("lat", {"d": orjson.dumps({**_payload(size, i), "t": _now_us()})}))
            pending.add(t)
            t.add_done_callback(pending.discard)

        await _paced(rate, count, send)
        await asyncio.wait_for(task, 60)
        await sub.aclose()
        await pub.aclose()
        return lat


# -- peers' clients and servers ----------------------------------------------------------------

CLIENTS = {"nats": "nats-py", "redis": "redis"}  # import name -> pip package
SERVERS = ("nats-server", "redis-server")


def ensure_peers(install: bool) -> dict[str, str]:
    """Import (installing with pip if allowed and needed) the peers' clients; check the
    servers are on PATH. Returns the versions used, for the report."""
    import importlib
    import importlib.metadata
    import importlib.util

    missing = [pkg for mod, pkg in CLIENTS.items() if importlib.util.find_spec(mod) is None]
    if missing:
        if not install:
            sys.exit(f"missing Python clients {missing}: pip install {' '.join(missing)}")
        print(f"installing {' '.join(missing)} with pip", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)
        importlib.invalidate_caches()
    absent = [name for name in SERVERS if shutil.which(name) is None]
    if absent:
        sys.exit(f"{', '.join(absent)} not on PATH (Debian: apt-get install {' '.join(absent)})")
    versions = {pkg: importlib.metadata.version(pkg) for pkg in CLIENTS.values()}
    for name in SERVERS:
        out = subprocess.run([name, "--version"], capture_output=True, text=True).stdout.strip()
        versions[name] = out.splitlines()[0] if out else "?"
    return versions


# -- driver ------------------------------------------------------------------------------------

SYSTEMS = {
    "gatos": (gatos_throughput, gatos_latency),
    "jetstream": (nats_throughput, nats_latency),
    "redis": (redis_throughput, redis_latency),
}


def _quiet_heap() -> None:
    """Collect this process's garbage and freeze what is left, before a measurement.

    This process is every system's client. Without this, its collector walks every
    object alive (the three client libraries, asyncio, earlier results) from time to
    time during a measurement, and the publishers all wait for that walk. How often
    that happens depended on what ran before: GATOS's first run in a session was its
    slowest in 13 of 14 sets. Frozen objects are never walked; new garbage is still
    collected as usual.
    """
    gc.collect()
    gc.freeze()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {name: {"rate": [], "p50": [], "p99": []} for name in SYSTEMS}
    for run in range(args.runs):
        for name, (tput, latency) in SYSTEMS.items():  # interleaved: each run measures every system
            os.sync()  # the previous measurement's dirty pages are not written back during this one
            _quiet_heap()
            rate = await tput(args.messages, args.publishers, args.size)
            os.sync()
            _quiet_heap()
            lat = await latency(args.rate, args.seconds, args.size)
            results[name]["rate"].append(rate)
            results[name]["p50"].append(_pct(lat, 0.50))
            results[name]["p99"].append(_pct(lat, 0.99))
            print(f"run {run + 1} {name:9s} publish {rate:8.0f} msg/s  e2e p50 {_pct(lat, .5):6.2f} ms "
                  f"p99 {_pct(lat, .99):6.2f} ms", file=sys.stderr, flush=True)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--messages", type=int, default=8000)
    p.add_argument("--publishers", type=int, default=16)
    p.add_argument("--size", type=int, default=256, help="message bytes (JSON)")
    p.add_argument("--rate", type=int, default=1000, help="latency: messages/s")
    p.add_argument("--seconds", type=float, default=5.0, help="latency: seconds per run")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--no-install", action="store_true", help="never pip install the peers' clients")
    p.add_argument("--dir", default=tempfile.gettempdir(),
                   help="where every system's store goes (default: the temp folder)")
    args = p.parse_args()
    versions = ensure_peers(not args.no_install)
    _STORE_DIR[0] = args.dir
    create_us = create_cost_us(args.dir)
    try:
        results = asyncio.run(main_async(args))
        create_after_us = create_cost_us(args.dir)
    finally:
        for folder in _STORES:
            shutil.rmtree(folder, ignore_errors=True)
    med = {name: {k: statistics.median(v) for k, v in r.items()} for name, r in results.items()}
    print(json.dumps({"args": vars(args), "versions": versions, "load": os.getloadavg(),
                      "create_file_us": {"before": create_us, "after": create_after_us},
                      "runs": results, "medians": med}, indent=1))
    if args.markdown:
        g = med["gatos"]
        print(f"\n| system | acked publish msg/s | e2e p50 ms | e2e p99 ms |  (medians of {args.runs} runs; "
              f"{args.publishers} publishers, {args.size}-byte messages, latency at {args.rate} msg/s)")
        print("| --- | ---: | ---: | ---: |")
        for name, m in med.items():
            print(f"| {name} | {m['rate']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} |")
        for peer in ("jetstream", "redis"):
            print(f"\nGATOS / {peer}: publish {g['rate'] / med[peer]['rate']:.2f}x, "
                  f"p99 {g['p99'] / med[peer]['p99']:.2f}x")
        print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
              f"({os.cpu_count()} CPUs); versions: {', '.join(f'{k} {v}' for k, v in versions.items())}")
        print(f"\nstores under {args.dir}: creating a file there took {create_us:.0f} us (median) "
              f"before the runs and {create_after_us:.0f} us after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
