"""Job plane: manifests, exclusive claims, sandboxed runners, Proof-of-Execution (issue 7).

Imports `ledger_core` (ports, canonical JSON, keys) and no daemon code: the CLI and
`gatosd` inject the event appender, the bus publisher, the gate and the clock.
See docs/jobs.md.
"""

from __future__ import annotations

from compute._blobs import BlobStore, blob_hash, blob_pointer
from compute._jobs import JOBS_PREFIX, PENDING_TOPIC, Claim, Job, JobStore, job_ref
from compute._manifest import WASM, Manifest, duration_seconds, parse_job_id
from compute._poe import POE_FILE, Output, verify_result
from compute._runner import Limits, Runner, RunOutcome, RunSpec
from compute._sandbox import SubprocessRunner
from compute._sandbox import health as subprocess_health
from compute._service import JobService
from compute._status import TERMINAL, fold_lifecycle, reconcile
from compute._worker import RetryPolicy, Worker, run_job
from compute.errors import (
    BadProof,
    BlobCorrupt,
    BlobNotFound,
    ClaimLost,
    InvalidJob,
    JobError,
    JobFinished,
    JobNotFound,
    RunnerUnavailable,
)

__all__ = [
    "JOBS_PREFIX",
    "PENDING_TOPIC",
    "POE_FILE",
    "TERMINAL",
    "WASM",
    "job_ref",
    "verify_result",
    "BadProof",
    "BlobCorrupt",
    "BlobNotFound",
    "BlobStore",
    "Claim",
    "ClaimLost",
    "InvalidJob",
    "Job",
    "JobError",
    "JobFinished",
    "JobNotFound",
    "JobService",
    "JobStore",
    "Limits",
    "Manifest",
    "Output",
    "RetryPolicy",
    "RunOutcome",
    "RunSpec",
    "Runner",
    "RunnerUnavailable",
    "SubprocessRunner",
    "Worker",
    "blob_hash",
    "blob_pointer",
    "duration_seconds",
    "fold_lifecycle",
    "parse_job_id",
    "reconcile",
    "run_job",
    "subprocess_health",
]
