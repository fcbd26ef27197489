"""Append throughput and latency of `gatosd` over its unix socket, against in-process group commit.

What is measured (issue 3: the daemon must not cost much on top of the ledger):

1. in-process group commit: `Node.append_many` on pre-signed events in batches of
   `--batch` (the daemon's own `max_batch` by default), on a fresh repository, as
   `bench_ledger.py` does. This is the ceiling the daemon is compared with.
2. closed loop, one round per entry of `--clients` (default 1, 4, 16, 64): that many
   raw asyncio unix-socket connections (not `gatosd.client`) share `--events` events;
   each keeps up to `--window` `append_event` frames in flight (pipelined) and sends
   the next one when a reply arrives. Reported: events/s (events / time from the first
   send to the last reply) and p50/p99 latency from writing a frame to reading its
   final reply.
3. open loop: `--open-clients` connections each send at `--open-rate` / clients
   frames per second on a fixed schedule for `--open-seconds`, whatever the replies
   do. Reported: the offered and achieved rates and p50/p99 latency from the write
   (and p99 from the scheduled send time, which does not hide queueing behind a late
   sender).

Frames are built (and, with `--client-signed`, signed) before any timer starts. By
default they are node-signed: the daemon builds the envelope (ULID, ts, policy root)
and signs it with ed25519 in its event loop, which in-process append_many does not
pay. With `--client-signed` the bench loads the node owner's seed from
`.git/gatos/keys/user/<name>.key`, signs every envelope itself and sends `event` +
`sig`, which is like for like with append_many (both verify, neither signs).

Every round uses a fresh repository and a fresh daemon process (`python -m
gatosd.daemon`), stopped with SIGTERM (exit status must be 0). Afterwards `gatos
verify` must pass and the journal must hold exactly the events sent.

    .venv/bin/python bench/bench_daemon.py --runs 3 --markdown
    .venv/bin/python bench/bench_daemon.py --runs 3 --markdown --client-signed
    .venv/bin/python bench/bench_daemon.py --runs 1 --clients 16 --profile-daemon /tmp/prof
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from gatosd.node import Node
from ledger_core import SignedEvent, SigningKey, journal_ref, sign_event
from ledger_core.errors import LedgerError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ledger import machine  # same machine facts as the ledger bench

NS = "bench"
OWNER = "user:bench"
NOTE = "a benchmark event with a short human-readable note"
VENV_BIN = Path(sys.executable).parent


# -- frames -------------------------------------------------------------------------


def node_signed_frames(n: int) -> list[bytes]:
    """`append_event` bodies the daemon fills in and signs; `{id}` is set per client."""
    return [orjson.dumps({"type": "append_event", "ns": NS,
                          "event": {"type": "bench.event", "payload": {"i": i, "note": NOTE}}})
            for i in range(n)]


def client_signed_frames(repo: Path, n: int) -> list[bytes]:
    """Envelopes built and signed here with the owner's seed read from the node's key file."""
    node = Node.open(str(repo))
    doc = json.loads((repo / ".git" / "gatos" / "keys" / "user" / "bench.key").read_text())
    key = SigningKey(bytes.fromhex(doc["seed"]))
    out = []
    for i in range(n):
        event = node.build_event(type="bench.event", payload={"i": i, "note": NOTE}, actor=OWNER)
        signed = sign_event(event, key)
        out.append(orjson.dumps({"type": "append_event", "ns": NS, "event": event.to_value(),
                                 "sig": signed.signature_text}))
    return out


def with_id(body: bytes, request_id: int) -> bytes:
    """Insert `"id":N` after the opening brace (bodies are built without it)."""
    return b'{"id":%d,' % request_id + body[1:] + b"\n"


# -- one daemon -----------------------------------------------------------------------


@dataclass
class Daemon:
    repo: Path
    proc: subprocess.Popen[bytes]
    socket: str
    log: Path

    @classmethod
    def start(cls, repo: Path, profile_to: Path | None = None) -> Daemon:
        log = repo.parent / (repo.name + ".gatosd.log")
        cmd = [sys.executable]
        if profile_to is not None:
            cmd += ["-m", "cProfile", "-o", str(profile_to)]
        cmd += ["-m", "gatosd.daemon", "--repo", str(repo)]
        handle = open(log, "wb")  # noqa: SIM115  (the daemon owns it until it exits)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=handle)
        handle.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("{") and '"ready"' in line:
                    return cls(repo, proc, json.loads(line)["socket"], log)
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        proc.kill()
        raise SystemExit(f"gatosd did not get ready:\n{log.read_text(errors='replace')}")

    def stop(self) -> float:
        """SIGTERM; returns seconds until exit; exit status must be 0."""
        start = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise SystemExit("gatosd did not stop within 60 s of SIGTERM") from None
        if rc != 0:
            raise SystemExit(f"gatosd exited {rc}:\n{self.log.read_text(errors='replace')}")
        return time.perf_counter() - start


def fresh_repo(path: Path) -> Path:
    Node.init(str(path), OWNER, discover=False)
    return path


def check_repo(repo: Path, expected: int) -> None:
    """`gatos verify` passes and the journal holds exactly `expected` commits."""
    done = subprocess.run([str(VENV_BIN / "gatos"), "--repo", str(repo), "verify"],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"gatos verify failed in {repo}:\n{done.stdout}{done.stderr}")
    count = subprocess.run(["git", "-C", str(repo), "rev-list", "--count", journal_ref(NS, OWNER)],
                           capture_output=True, text=True, check=True).stdout.strip()
    if int(count) != expected:
        raise SystemExit(f"{repo}: journal holds {count} events, expected {expected}")


# -- clients --------------------------------------------------------------------------


class Failed(Exception):
    pass


async def _connect(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(path, limit=1 << 22)


async def _read_replies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: int,
                        on_reply: object) -> None:
    got = 0
    while got < count:
        line = await reader.readline()
        now = time.perf_counter()
        if not line:
            raise Failed(f"connection closed after {got} of {count} replies")
        reply = orjson.loads(line)
        if "kind" in reply:  # keep-alive from the daemon
            if reply["kind"] == "ping":
                writer.write(b'{"kind":"pong"}\n')
            continue
        if not reply.get("ok"):
            raise Failed(f"error reply: {reply}")
        on_reply(reply["id"], now)  # type: ignore[operator]
        got += 1


async def closed_client(path: str, bodies: Sequence[bytes], window: int, go: asyncio.Event,
                        latencies: list[float]) -> float:
    """Keep `window` appends in flight until all are answered; returns the last reply time."""
    reader, writer = await _connect(path)
    frames = [with_id(body, i) for i, body in enumerate(bodies)]
    sent = [0.0] * len(frames)
    slots = asyncio.Semaphore(window)
    last = [0.0]

    def on_reply(request_id: int, now: float) -> None:
        latencies.append(now - sent[request_id])
        last[0] = now
        slots.release()

    await go.wait()
    replies = asyncio.create_task(_read_replies(reader, writer, len(frames), on_reply))
    for i, frame in enumerate(frames):
        await slots.acquire()
        if replies.done():
            break
        sent[i] = time.perf_counter()
        writer.write(frame)
    await replies
    writer.close()
    return last[0]


async def open_client(path: str, bodies: Sequence[bytes], rate: float, offset: float,
                      start: float, from_send: list[float], from_schedule: list[float]) -> float:
    """Send on a fixed schedule (`rate` per second) regardless of replies."""
    reader, writer = await _connect(path)
    frames = [with_id(body, i) for i, body in enumerate(bodies)]
    sent = [0.0] * len(frames)
    due = [start + offset + i / rate for i in range(len(frames))]

    def on_reply(request_id: int, now: float) -> None:
        from_send.append(now - sent[request_id])
        from_schedule.append(now - due[request_id])

    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    replies = asyncio.create_task(_read_replies(reader, writer, len(frames), on_reply))
    for i, frame in enumerate(frames):
        delay = due[i] - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if replies.done():
            break
        sent[i] = time.perf_counter()
        writer.write(frame)
    last_send = time.perf_counter()
    await replies
    writer.close()
    return last_send


async def status(path: str) -> dict[str, object]:
    reader, writer = await _connect(path)
    writer.write(b'{"type":"status","id":"s"}\n')
    reply = orjson.loads(await reader.readline())
    writer.close()
    return reply  # type: ignore[no-any-return]


@dataclass
class Round:
    label: str
    clients: int
    rate: float                      # events/s (achieved)
    p50_ms: float
    p99_ms: float
    extra: dict[str, float] = field(default_factory=dict)


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run_closed(path: str, bodies: Sequence[bytes], clients: int, window: int) -> Round:
    share = [bodies[k::clients] for k in range(clients)]
    latencies: list[float] = []
    go = asyncio.Event()
    tasks = [asyncio.create_task(closed_client(path, share[k], window, go, latencies))
             for k in range(clients)]
    await asyncio.sleep(0.2)  # let every client connect
    start = time.perf_counter()
    go.set()
    ends = await asyncio.gather(*tasks)
    elapsed = max(ends) - start
    info = await status(path)
    batches = int(info["batches"])  # type: ignore[call-overload]
    return Round(f"closed, {clients} client(s) x window {window}", clients, len(bodies) / elapsed,
                 pct(latencies, 0.50), pct(latencies, 0.99),
                 {"seconds": elapsed, "mean_batch": int(info["events"]) / max(1, batches)})  # type: ignore[call-overload]


async def run_open(path: str, bodies: Sequence[bytes], clients: int, rate: float) -> Round:
    share = [bodies[k::clients] for k in range(clients)]
    per_client = rate / clients
    from_send: list[float] = []
    from_schedule: list[float] = []
    start = time.perf_counter() + 0.3
    tasks = [asyncio.create_task(open_client(path, share[k], per_client, k / rate, start,
                                             from_send, from_schedule))
             for k in range(clients)]
    last_sends = await asyncio.gather(*tasks)
    offered = len(bodies) / (max(last_sends) - start)
    info = await status(path)
    batches = int(info["batches"])  # type: ignore[call-overload]
    return Round(f"open loop, {clients} clients x {per_client:g}/s", clients, offered,
                 pct(from_send, 0.50), pct(from_send, 0.99),
                 {"p99_sched_ms": pct(from_schedule, 0.99), "max_ms": max(from_send) * 1000,
                  "mean_batch": int(info["events"]) / max(1, batches)})  # type: ignore[call-overload]


# -- in-process group commit -------------------------------------------------------------


def in_process(repo: Path, n: int, batch: int) -> float:
    """events/s of `Node.append_many` over pre-signed events in batches of `batch`."""
    node = Node.open(str(fresh_repo(repo)))
    signed: list[SignedEvent] = [node.sign(node.build_event(type="bench.event",
                                                            payload={"i": i, "note": NOTE}))
                                 for i in range(n)]
    start = time.perf_counter()
    for k in range(0, n, batch):
        results = node.append_many([(NS, s) for s in signed[k:k + batch]])
        bad = [r for r in results if isinstance(r, LedgerError)]
        if bad:
            raise SystemExit(f"append_many refused {len(bad)} events: {bad[0]!r}")
    elapsed = time.perf_counter() - start
    check_repo(repo, n)
    return n / elapsed


# -- main ---------------------------------------------------------------------------------


def one_round(root: Path, name: str, args: argparse.Namespace, coro_factory: object,
              n: int) -> tuple[Round, float]:
    repo = fresh_repo(root / name)
    bodies = client_signed_frames(repo, n) if args.client_signed else node_signed_frames(n)
    prof = args.profile_daemon / f"{name}.prof" if args.profile_daemon else None
    daemon = Daemon.start(repo, prof)
    spy = None
    if args.py_spy:  # sample every thread of the daemon (py-spy from PyPI, on PATH or given)
        spy = subprocess.Popen([args.py_spy_bin, "record", "--pid", str(daemon.proc.pid), "--rate", "250",
                                "--threads", "--format", "raw", "-o", str(args.py_spy / f"{name}.txt")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # let it attach
    try:
        result: Round = asyncio.run(coro_factory(daemon.socket, bodies))  # type: ignore[operator]
    except BaseException:
        daemon.proc.kill()
        raise
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
    stop_s = daemon.stop()
    check_repo(repo, n)
    if prof is not None:
        print(f"\n--- cProfile of the daemon's main thread, {name} ---")
        pstats.Stats(str(prof), stream=sys.stdout).strip_dirs().sort_stats("tottime").print_stats(22)
    return result, stop_s


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=5000, help="events per closed-loop round")
    parser.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 4, 16, 64], help="comma-separated client counts (rounds)")
    parser.add_argument("--window", type=int, default=8, help="appends in flight per client")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=512,
                        help="events per in-process append_many (default: gatosd's max_batch)")
    parser.add_argument("--open-rate", type=float, default=1000.0, help="offered events/s, open loop")
    parser.add_argument("--open-clients", type=int, default=8)
    parser.add_argument("--open-seconds", type=float, default=5.0)
    parser.add_argument("--no-open", action="store_true", help="skip the open-loop round")
    parser.add_argument("--client-signed", action="store_true",
                        help="sign envelopes in the bench and send `event` + `sig`")
    parser.add_argument("--markdown", action="store_true", help="also print a RESULTS.md block")
    parser.add_argument("--dir", type=Path, default=None, help="where temporary repositories go")
    parser.add_argument("--profile-daemon", type=Path, default=None,
                        help="run each daemon under cProfile (main thread only), write DIR/<round>.prof")
    parser.add_argument("--py-spy", type=Path, default=None,
                        help="sample the daemon with `py-spy record --threads` into DIR/<round>.txt")
    parser.add_argument("--py-spy-bin", default="py-spy", help="the py-spy executable")
    args = parser.parse_args(argv)
    if args.py_spy:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    if args.profile_daemon:
        args.profile_daemon.mkdir(parents=True, exist_ok=True)
    mode = "client-signed" if args.client_signed else "node-signed"
    open_n = int(args.open_rate * args.open_seconds)

    rounds: dict[str, list[Round]] = {}
    inproc: list[float] = []
    stops: list[float] = []
    with tempfile.TemporaryDirectory(prefix="gatos-dbench-", dir=args.dir) as tmp:
        root = Path(tmp)
        for run in range(args.runs):
            rate = in_process(root / f"r{run}-inproc", args.events, args.batch)
            inproc.append(rate)
            print(f"run {run + 1}/{args.runs} in-process append_many (batch {args.batch}) "
                  f"{rate:>8,.0f} ev/s", flush=True)
            for c in args.clients:
                result, stop_s = one_round(
                    root, f"r{run}-c{c}", args,
                    lambda path, bodies, c=c: run_closed(path, bodies, c, args.window), args.events)
                rounds.setdefault(result.label, []).append(result)
                stops.append(stop_s)
                print(f"run {run + 1}/{args.runs} {mode} {result.label:<32} {result.rate:>8,.0f} ev/s "
                      f"p50 {result.p50_ms:6.2f} ms p99 {result.p99_ms:7.2f} ms "
                      f"mean batch {result.extra['mean_batch']:6.1f}  (SIGTERM→exit {stop_s:.2f}s)",
                      flush=True)
            if not args.no_open:
                result, stop_s = one_round(
                    root, f"r{run}-open", args,
                    lambda path, bodies: run_open(path, bodies, args.open_clients, args.open_rate),
                    open_n)
                rounds.setdefault(result.label, []).append(result)
                stops.append(stop_s)
                print(f"run {run + 1}/{args.runs} {mode} {result.label:<32} offered {result.rate:>6,.0f} "
                      f"ev/s p50 {result.p50_ms:6.2f} ms p99 {result.p99_ms:7.2f} ms "
                      f"p99 from schedule {result.extra['p99_sched_ms']:7.2f} ms "
                      f"max {result.extra['max_ms']:7.2f} ms", flush=True)
        info = machine(root.parent)

    ceiling = statistics.median(inproc)
    table = []
    for label, results in rounds.items():
        med = statistics.median(r.rate for r in results)
        table.append((label, med, min(r.rate for r in results), max(r.rate for r in results),
                      statistics.median(r.p50_ms for r in results),
                      statistics.median(r.p99_ms for r in results),
                      statistics.median(r.extra["mean_batch"] for r in results),
                      statistics.median(r.extra.get("p99_sched_ms", float("nan")) for r in results),
                      label.startswith("open")))
    print(f"\n{mode}; medians of {args.runs} run(s); in-process append_many "
          f"(batch {args.batch}): {ceiling:,.0f} ev/s (min {min(inproc):,.0f}, max {max(inproc):,.0f})")
    print(f"{'round':<34} {'ev/s':>8} {'min':>8} {'max':>8} {'p50 ms':>7} {'p99 ms':>8} "
          f"{'batch':>6} {'daemon/in-process':>18}")
    for label, med, lo, hi, p50, p99, batch, _sched, is_open in table:
        ratio = "" if is_open else f"{med / ceiling:.3f}"
        print(f"{label:<34} {med:>8,.0f} {lo:>8,.0f} {hi:>8,.0f} {p50:>7.2f} {p99:>8.2f} "
              f"{batch:>6.1f} {ratio:>18}")
    best = max((row for row in table if not row[-1]), key=lambda row: row[1], default=None)
    if best:
        verdict = "met" if best[1] / ceiling >= 0.8 else "MISSED"
        print(f"best closed-loop round / in-process = {best[1] / ceiling:.3f} (goal ≥ 0.80: {verdict})")
    for row in table:
        if row[-1]:
            print(f"open loop p99 = {row[5]:.2f} ms (goal ≤ 10 ms: {'met' if row[5] <= 10 else 'MISSED'})")
    print(f"SIGTERM → exit 0 in {min(stops):.2f}-{max(stops):.2f} s; every round: gatos verify ok, "
          "journal count as expected")

    if args.markdown:
        cmd = " ".join([os.path.relpath(sys.executable), *sys.argv])
        print(f"\n```\n$ {cmd}\n```\n")
        print(f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}")
        for key, value in info.items():
            print(f"- {key}: {value}")
        print(f"- mode: {mode}; events per closed-loop round: {args.events}; window: {args.window} "
              f"per client; runs: {args.runs}; open loop: {args.open_clients} clients x "
              f"{args.open_rate / args.open_clients:g}/s for {args.open_seconds:g} s ({open_n} events)")
        print(f"- in-process `append_many` (batch {args.batch}, pre-signed): median {ceiling:,.0f} ev/s "
              f"(min {min(inproc):,.0f}, max {max(inproc):,.0f})")
        print(f"- every round: fresh repository and daemon, SIGTERM → exit 0 "
              f"({min(stops):.2f}-{max(stops):.2f} s), `gatos verify` ok, journal count as expected")
        print("\n| round | median events/s | min | max | p50 ms | p99 ms | mean batch | daemon / in-process |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for label, med, lo, hi, p50, p99, batch, sched, is_open in table:
            ratio = f"p99 from schedule {sched:.2f} ms" if is_open else f"{med / ceiling:.3f}"
            print(f"| {label} | {med:,.0f} | {lo:,.0f} | {hi:,.0f} | {p50:.2f} | {p99:.2f} "
                  f"| {batch:.1f} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
