"""Errors of the job plane: one root, one subclass per cause, each with its wire code."""

from __future__ import annotations

from ledger_core.errors import LedgerError


class JobError(LedgerError):
    """Root of every error raised by `compute`."""

    code = "JOB_ERROR"


class InvalidJob(JobError):
    """A manifest does not validate against the v1 job schema (or cannot be parsed)."""

    code = "INVALID_JOB"


class JobNotFound(JobError):
    """No job, claim or result under the id given."""

    code = "JOB_NOT_FOUND"


class ClaimLost(JobError):
    """Another worker holds the claim (or took it over after the lease expired)."""

    code = "CLAIM_LOST"


class JobFinished(JobError):
    """The job already has a result (succeeded, failed or aborted): nothing more may be written."""

    code = "JOB_FINISHED"


class BlobNotFound(JobError):
    """The blob store has no object under the hash asked for."""

    code = "BLOB_NOT_FOUND"


class BlobCorrupt(JobError):
    """A blob's bytes do not hash to its name: it was damaged on disk."""

    code = "BLOB_CORRUPT"


class RunnerUnavailable(JobError):
    """The runtime a job asks for cannot run here (for example wasmtime missing)."""

    code = "RUNNER_UNAVAILABLE"


class BadProof(JobError):
    """A Proof-of-Execution does not verify: hash, signature, schema or job id."""

    code = "BAD_PROOF"


__all__ = ["BadProof", "BlobCorrupt", "BlobNotFound", "ClaimLost", "InvalidJob", "JobError",
           "JobFinished", "JobNotFound", "RunnerUnavailable"]
