"""Job plane benchmark: trivial jobs per second end to end, and claim latency under contention.

    .venv/bin/python bench/bench_jobs.py [--jobs 200] [--workers 1,2,4] [--claimers 4] [--markdown]

1. Jobs/s end to end: `--jobs` trivial jobs (`/bin/true` with a distinct ULID) are enqueued
   in-process, then `W` worker processes (`gatos worker --exit-when-idle`, concurrency 1)
   claim, run each job in the sandbox, write the signed result and the lifecycle events.
   Timed from the workers' start to the last worker's exit; every job must have a result.
   The issue names no peer, so the same run measures two references on the same machine:
   a plain `subprocess.run(["/bin/true"])` loop (what one process spawn costs) and the
   sandboxed runner alone (`SubprocessRunner.run`, no Git), to show where the time goes.
2. Claim latency under contention: `--claimers` processes race to claim the same
   `--jobs` fresh jobs (claim only, nothing runs); every claim attempt (won or lost) is
   timed. Each job must be won exactly once.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compute import Limits, Manifest, RunSpec, SubprocessRunner  # noqa: E402
from gatosd._clock import new_ulid  # noqa: E402
from gatosd._jobs_wiring import job_store, local_service  # noqa: E402
from gatosd.node import Node  # noqa: E402

BIN = Path(sys.executable).parent


def make_node(path: Path) -> Node:
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    node, _ = Node.init(str(path), "user:bench", discover=False)
    return node


def enqueue(node: Node, count: int) -> tuple[list[str], float]:
    service = local_service(node, node.default_actor)
    started = time.perf_counter()
    ids = [service.enqueue(Manifest.from_value({"command": ["/bin/true"], "timeout": 30, "ulid": new_ulid()}),
                           "bench", node.default_actor)["job_id"] for _ in range(count)]
    return ids, time.perf_counter() - started


def run_workers(repo: Path, workers: int) -> float:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    started = time.perf_counter()
    procs = [subprocess.Popen([str(BIN / "gatos"), "--repo", str(repo), "worker", "--exit-when-idle"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(workers)]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"worker failed: {err.decode()}")
    return time.perf_counter() - started


def end_to_end(jobs: int, workers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="gatos-bench-jobs-") as tmp:
        repo = Path(tmp) / "node"
        node = make_node(repo)
        ids, enqueue_s = enqueue(node, jobs)
        run_s = run_workers(repo, workers)
        store = job_store(Node.open(str(repo)))
        missing = [i for i in ids if store.result(i) is None]
        if missing:
            raise SystemExit(f"{len(missing)} jobs without a result")
        return {"workers": workers, "jobs_per_s": jobs / run_s, "enqueue_per_s": jobs / enqueue_s,
                "seconds": run_s}


def plain_spawn(count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        subprocess.run(["/bin/true"], check=True)
    return count / (time.perf_counter() - started)


def sandbox_only(count: int) -> float:
    runner = SubprocessRunner()
    with tempfile.TemporaryDirectory() as ws:
        started = time.perf_counter()
        for _ in range(count):
            outcome = runner.run(RunSpec(["/bin/true"], {}, ws, 30, limits=Limits()))
            assert outcome.ok, outcome
        return count / (time.perf_counter() - started)


def _claimer(repo: str, ids: list[str], worker: int, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = job_store(Node.open(repo))
    won, times = [], []
    for job_id in ids:
        started = time.perf_counter()
        claim = store.claim(job_id, "ed25519:" + f"{worker:064x}", f"agent:w{worker}", 600_000)
        times.append(time.perf_counter() - started)
        if claim is not None:
            won.append(job_id)
    queue.put((won, times))


def claim_contention(jobs: int, claimers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="gatos-bench-claims-") as tmp:
        repo = Path(tmp) / "node"
        node = make_node(repo)
        ids, _ = enqueue(node, jobs)
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        procs = [ctx.Process(target=_claimer, args=(str(repo), ids, w, queue)) for w in range(claimers)]
        for proc in procs:
            proc.start()
        results = [queue.get() for _ in procs]
        for proc in procs:
            proc.join()
        won = [j for w, _ in results for j in w]
        if sorted(won) != sorted(ids):
            raise SystemExit(f"claims won {len(won)} times for {len(ids)} jobs (must be exactly once each)")
        times = sorted(t for _, ts in results for t in ts)
        return {"attempts": len(times), "p50_ms": statistics.median(times) * 1000,
                "p99_ms": times[int(len(times) * 0.99) - 1] * 1000, "max_ms": times[-1] * 1000,
                "won": len(won)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--claimers", type=int, default=4)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if shutil.which("git") is None:
        raise SystemExit("git is needed")
    rows = [end_to_end(args.jobs, int(w)) for w in args.workers.split(",")]
    spawn = plain_spawn(args.jobs)
    sandbox = sandbox_only(min(args.jobs, 100))
    claims = claim_contention(args.jobs, args.claimers)
    report = {"end_to_end": rows, "plain_spawn_per_s": spawn, "sandbox_only_per_s": sandbox,
              "claims": claims, "cpus": os.cpu_count()}
    if not args.markdown:
        print(json.dumps(report, indent=2))
        return
    print(f"| workers (processes) | jobs/s end to end | enqueue/s | seconds for {args.jobs} |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['workers']} | {row['jobs_per_s']:.1f} | {row['enqueue_per_s']:.1f} "
              f"| {row['seconds']:.2f} |")
    print(f"\nSame run, same machine: plain `subprocess.run(['/bin/true'])` {spawn:.0f}/s; "
          f"sandboxed runner alone {sandbox:.1f}/s.\n")
    print(f"Claim latency, {args.claimers} processes racing for {args.jobs} jobs: "
          f"{claims['attempts']} attempts, p50 {claims['p50_ms']:.2f} ms, p99 {claims['p99_ms']:.2f} ms, "
          f"max {claims['max_ms']:.2f} ms; each job won exactly once ({claims['won']}).")


if __name__ == "__main__":
    main()
