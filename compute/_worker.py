"""The worker: claim a job, run it in a sandbox, write its signed result exactly once.

One attempt = one claim. While it runs, a heartbeat renews the lease every third of
its length; if a renewal finds the claim taken over (this worker was presumed dead),
the run is stopped and no result is written. Within one claim a failing run is retried
by `RetryPolicy` (exponential backoff), and every step is a lifecycle event in the job's
namespace: `job.claimed`, `job.running`, `job.retry`, then `job.succeeded` or
`job.failed`. A cancel writes the result ref first, so a worker still running sees the
result appear, stops, and writes nothing.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from compute._blobs import BlobStore, hex_of
from compute._jobs import Claim, Job, JobStore
from compute._poe import POE_FILE, Output, build_envelope, describe_outputs, result_trailers, sign_envelope
from compute._runner import Limits, Runner, RunOutcome, RunSpec
from compute.errors import ClaimLost, JobFinished, RunnerUnavailable
from ledger_core import ObjectId, SigningKey, format_timestamp_ms
from ledger_core.errors import LedgerError

Emit = Callable[[str, str, dict[str, Any]], None]
Gate = Callable[[str, str, str], None]
OUT_DIR = "out"
IN_DIR = "inputs"


@dataclass(frozen=True)
class RetryPolicy:
    """Runs per claim and the wait between them (`backoff_ms * factor**(n-1)`, at most `cap_ms`)."""

    max_attempts: int = 1
    backoff_ms: int = 500
    factor: int = 2
    cap_ms: int = 30_000

    def delay_ms(self, failed_runs: int) -> int:
        return min(self.cap_ms, self.backoff_ms * self.factor ** max(0, failed_runs - 1))


def collect_outputs(workspace: str, outcome: RunOutcome) -> list[Output]:
    """stdout, stderr and every regular file under `out/` (symlinks are not followed)."""
    outputs = [Output("stdout", outcome.stdout, outcome.stdout_truncated),
               Output("stderr", outcome.stderr, outcome.stderr_truncated)]
    root = os.path.join(workspace, OUT_DIR)
    for dirpath, _dirs, files in os.walk(root, followlinks=False):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            rel = os.path.relpath(path, workspace).replace(os.sep, "/")
            with open(path, "rb") as handle:
                outputs.append(Output(rel, handle.read()))
    return outputs


def prepare_workspace(root: str | None, job: Job, blobs: BlobStore) -> str:
    """A fresh directory with `inputs/<hex>` for every input and an empty `out/`."""
    workspace = tempfile.mkdtemp(prefix=f"gatos-job-{job.hex[:12]}-", dir=root)
    os.makedirs(os.path.join(workspace, IN_DIR))
    os.makedirs(os.path.join(workspace, OUT_DIR))
    for item in job.manifest.inputs:
        data = blobs.get(item["hash"])
        if "size" in item and item["size"] != len(data):
            raise LedgerError(f"input {item['hash']} is {len(data)} bytes, the manifest says {item['size']}")
        path = os.path.join(workspace, IN_DIR, hex_of(item["hash"]))
        with open(path, "wb") as handle:
            handle.write(data)
        os.chmod(path, 0o444)
    cwd = job.manifest.value.get("cwd")
    if cwd and not os.path.isabs(cwd) and ".." not in cwd.split("/"):
        os.makedirs(os.path.join(workspace, cwd), exist_ok=True)
    return workspace


def run_job(job: Job, runners: dict[str, Runner], blobs: BlobStore, limits: Limits, work_root: str | None,
            cancelled: Callable[[], bool] | None = None) -> tuple[RunOutcome, list[Output]]:
    """One run of a job in a fresh workspace: (outcome, outputs). Used by workers and `reproduce`."""
    runner = runners.get(job.manifest.runtime)
    if runner is None:
        raise RunnerUnavailable(f"this worker has no {job.manifest.runtime} runner")
    workspace = prepare_workspace(work_root, job, blobs)
    try:
        spec = RunSpec(argv=job.manifest.command + job.manifest.args,
                       env=dict(job.manifest.value.get("env", {})),
                       workspace=workspace, timeout=job.manifest.timeout_seconds or 1e9,
                       cwd=job.manifest.value.get("cwd", "."), limits=limits)
        outcome = runner.run(spec, cancelled=cancelled)
        return outcome, collect_outputs(workspace, outcome)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


class Worker:
    """Claims and runs jobs of a node; thread-safe (one instance may serve many threads)."""

    def __init__(self, store: JobStore, blobs: BlobStore, runners: dict[str, Runner], *, actor: str,
                 key: SigningKey, emit: Emit, gate: Gate | None = None, sleep: Callable[[float], None],
                 lease_ms: int = 30_000, retry: RetryPolicy | None = None, limits: Limits | None = None,
                 work_root: str | None = None) -> None:
        self.store = store
        self.blobs = blobs
        self.runners = runners
        self.actor = actor
        self.key = key
        self.worker_id = key.public_key
        self.emit = emit
        self.gate = gate
        self.sleep = sleep
        self.lease_ms = lease_ms
        self.retry = retry or RetryPolicy()
        self.limits = limits or Limits()
        self.work_root = work_root

    def _allowed(self, action: str, ns: str) -> bool:
        if self.gate is None:
            return True
        try:
            self.gate(self.actor, action, ns)
        except LedgerError:
            return False
        return True

    def poll(self, ns: str | None = None) -> str | None:
        """Claim and run at most one job; its id, or None when nothing was claimable."""
        runtimes = set(self.runners)
        candidates = self.store.claimable(ns)
        # Start at a random place so concurrent workers do not all race for the same job first.
        start = random.randrange(len(candidates)) if candidates else 0
        for job_id in candidates[start:] + candidates[:start]:
            job = self.store.get(job_id)
            if job.manifest.runtime not in runtimes or not self._allowed("jobs.claim", job.ns):
                continue
            claim = self.store.claim(job_id, self.worker_id, self.actor, self.lease_ms)
            if claim is None:
                continue  # lost the race: move on
            self.execute(job, claim)
            return job_id
        return None

    def execute(self, job: Job, claim: Claim) -> ObjectId | None:
        """Run a claimed job and write its result; None if the claim was lost or the job cancelled."""
        base = {"job_id": job.job_id, "attempt": claim.attempt, "worker": self.worker_id}
        self.emit(job.ns, "job.claimed", {**base, "lease_until_ms": claim.lease_until_ms})
        beat = _Heartbeat(self.store, claim, self.lease_ms)
        beat.start()
        started = format_timestamp_ms(self.store.clock_ms())
        try:
            outcome, outputs, runs = self._runs(job, base, beat.cancelled)
        finally:
            beat.stop()
        if beat.lost:
            return None
        finished = format_timestamp_ms(self.store.clock_ms())
        status = "succeeded" if outcome.ok else "failed"
        entries, files = describe_outputs(outputs, self.blobs)
        exit_info = {**outcome.summary(), "attempt": claim.attempt, "runs": runs}
        poe = build_envelope(job.job_id, outcome.program, outcome.version, outcome.platform, entries,
                             exit_info, started, finished)
        poe_id, sig = sign_envelope(poe, self.key)
        files[POE_FILE] = poe
        if not self._allowed("jobs.result", job.ns):
            self.emit(job.ns, "job.failed", {**base, "reason": "policy", "detail": "jobs.result denied"})
            return None
        try:
            oid = self.store.write_result(job.job_id, files, result_trailers(
                job.job_id, poe_id, self.worker_id, outcome.program, sig, status),
                f"result {job.hex} {status}", beat.claim)
        except (JobFinished, ClaimLost):
            return None
        self.emit(job.ns, f"job.{status}", {**base, "result": oid, "poe": poe_id, **outcome.summary()})
        return oid

    def _runs(self, job: Job, base: dict[str, Any], cancelled: Callable[[], bool]
              ) -> tuple[RunOutcome, list[Output], int]:
        runs = 0
        while True:
            runs += 1
            self.emit(job.ns, "job.running", {**base, "run": runs})
            try:
                outcome, outputs = run_job(job, self.runners, self.blobs, self.limits, self.work_root,
                                           cancelled)
            except LedgerError as exc:
                outcome = RunOutcome("error", None, b"", b"", detail=exc.reason, runner=job.manifest.runtime)
                outputs = []
            if outcome.ok or runs >= self.retry.max_attempts or cancelled():
                return outcome, outputs, runs
            delay = self.retry.delay_ms(runs)
            self.emit(job.ns, "job.retry", {**base, "run": runs, "delay_ms": delay, **outcome.summary()})
            self.sleep(delay / 1000)


class _Heartbeat:
    """Renews a lease in the background; `cancelled()` turns true when the lease is lost or a result
    (a cancel) appears."""

    def __init__(self, store: JobStore, claim: Claim, lease_ms: int) -> None:
        self.store = store
        self.claim = claim
        self.lease_ms = lease_ms
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gatos-lease", daemon=True)
        self._lock = threading.Lock()
        self._finished = False
        self._checked = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.lease_ms / 3000):
            try:
                renewed = self.store.renew(self.claim, self.lease_ms)
                with self._lock:
                    self.claim = renewed
            except ClaimLost:
                self.lost = True
                return
            except LedgerError:
                continue  # a transient storage error: try again at the next beat

    def cancelled(self) -> bool:
        """True once the lease is lost or a result (a cancel) exists (the ref is read ≤ 4 times a second)."""
        if self.lost or self._finished:
            return True
        now = time.monotonic()
        if now - self._checked >= 0.25:
            self._checked = now
            self._finished = self.store.has_result(self.claim.job_id)
        return self._finished


__all__ = ["IN_DIR", "OUT_DIR", "RetryPolicy", "Worker", "collect_outputs", "prepare_workspace", "run_job"]
