"""Exceptions of the Python client: one class per wire error code, under one root.

An error frame `{"ok": false, "error": {"code", "reason", "rule"}}` becomes the class
that `CODE_TO_ERROR` names for its code (the root `GatosError` for a code this client
does not know yet, so a newer daemon never breaks an older client). The hierarchy
mirrors the ledger's (`InvalidNamespace` is an `InvalidName`, `NotFastForward` and
`Locked` are `Conflict`s), so callers can catch by cause.

`GatosError` derives from `ledger_core.errors.LedgerError`: code that handles errors of
an in-process `Node` (such as the CLI's `gatos: <CODE>: <reason>` line) handles the
daemon's errors the same way.
"""

from __future__ import annotations

from typing import Any

from ledger_core.errors import LedgerError


class GatosError(LedgerError):
    """Root of every error the client raises: the daemon's error frames and local failures."""

    code = "INTERNAL"

    def __init__(self, reason: str, code: str | None = None, rule: str | None = None,
                 request_id: Any = None) -> None:
        super().__init__(reason)
        if code is not None:
            self.code = code
        self.rule = rule
        self.request_id = request_id

    def to_wire(self) -> dict[str, str]:
        wire = super().to_wire()
        if self.rule:
            wire["rule"] = self.rule
        return wire

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


class BadEncoding(GatosError):
    code = "BAD_ENCODING"


class BadFrame(GatosError):
    code = "BAD_FRAME"


class BadSignature(GatosError):
    code = "BAD_SIGNATURE"


class UnknownSigAlg(BadSignature):
    code = "UNKNOWN_SIG_ALG"


class Busy(GatosError):
    code = "BUSY"


class Conflict(GatosError):
    code = "CONFLICT"


class NotFastForward(Conflict):
    code = "NOT_FAST_FORWARD"


class Locked(Conflict):
    code = "LOCKED"


class Internal(GatosError):
    code = "INTERNAL"


class InvalidEvent(GatosError):
    code = "INVALID_EVENT"


class InvalidName(GatosError):
    code = "INVALID_NAME"


class InvalidNamespace(InvalidName):
    code = "INVALID_NS"


class NotFound(GatosError):
    code = "NOT_FOUND"


class PolicyDenied(GatosError):
    code = "POLICY_DENY"


class InvalidPolicy(GatosError):
    """Policy rule text that does not parse, or a stored bundle that does not match its id."""

    code = "INVALID_POLICY"


class InvalidGrant(GatosError):
    """A grant, revocation or trust graph document that is malformed or cannot be issued."""

    code = "INVALID_GRANT"


class RefInTheWay(GatosError):
    code = "REF_IN_THE_WAY"


class ShuttingDown(GatosError):
    code = "SHUTTING_DOWN"


class StorageFailed(GatosError):
    code = "STORAGE"


class Corrupt(StorageFailed):
    code = "CORRUPT"


class Timeout(GatosError):
    code = "TIMEOUT"


class TooLarge(GatosError):
    code = "TOO_LARGE"


class UlidReused(GatosError):
    code = "ULID_REUSED"


class Unauthorized(GatosError):
    code = "UNAUTHORIZED"


class UnknownActor(GatosError):
    code = "UNKNOWN_ACTOR"


class UnknownType(GatosError):
    code = "UNKNOWN_TYPE"


class NoActor(GatosError):
    code = "NO_ACTOR"


class InvalidConfig(GatosError):
    code = "INVALID_CONFIG"


class FoldFailed(GatosError):
    """A fold could not run or finish (root of the fold codes)."""

    code = "FOLD_ERROR"


class InvalidFoldSpec(FoldFailed):
    code = "INVALID_FOLD_SPEC"


class FoldProgramFailed(FoldFailed):
    code = "FOLD_FAILED"


class FoldFuelExhausted(FoldProgramFailed):
    code = "FOLD_FUEL"


class FoldMemoryExhausted(FoldProgramFailed):
    code = "FOLD_MEMORY"


class FoldStateInvalid(FoldProgramFailed):
    code = "FOLD_STATE"


class ProofMismatch(FoldFailed):
    code = "PROOF_MISMATCH"


class BusFailed(GatosError):
    """A bus request could not be served (root of the bus codes)."""

    code = "BUS_ERROR"


class InvalidMessage(BusFailed):
    code = "INVALID_MESSAGE"


class InvalidPosition(BusFailed):
    code = "INVALID_POSITION"


class NotPending(BusFailed):
    code = "NOT_PENDING"


class UnknownGroup(BusFailed):
    code = "UNKNOWN_GROUP"


class JobFailed(GatosError):
    """A job request could not be served (root of the job codes)."""

    code = "JOB_ERROR"


class InvalidJob(JobFailed):
    code = "INVALID_JOB"


class JobNotFound(JobFailed):
    code = "JOB_NOT_FOUND"


class ClaimLost(JobFailed):
    code = "CLAIM_LOST"


class JobFinished(JobFailed):
    code = "JOB_FINISHED"


class BlobNotFound(JobFailed):
    code = "BLOB_NOT_FOUND"


class BlobCorrupt(JobFailed):
    code = "BLOB_CORRUPT"


class RunnerUnavailable(JobFailed):
    code = "RUNNER_UNAVAILABLE"


class BadProof(JobFailed):
    code = "BAD_PROOF"


class CacheFailed(GatosError):
    """A cache request could not be served (root of the cache codes)."""

    code = "CACHE_ERROR"


class InvalidQuery(CacheFailed):
    code = "INVALID_QUERY"


class InvalidIndexSpec(CacheFailed):
    code = "INVALID_INDEX_SPEC"


class CorruptIndex(CacheFailed):
    code = "CORRUPT_INDEX"


class SyncFailed(GatosError):
    """Git could not fetch from or push to the remote (unreachable, refused, …)."""

    code = "SYNC_FAILED"


# -- local failures: raised by the client itself, never sent by a daemon ----------------


class RequestTimeout(Timeout, TimeoutError):
    """No frame of the reply arrived within the client's timeout."""


class DaemonNotRunning(GatosError):
    """The repository has no running daemon the client can reach."""

    code = "NOT_RUNNING"


class ConnectionClosed(GatosError):
    """The connection ended (or was closed) before the reply was complete."""

    code = "CONNECTION_CLOSED"


class BadReply(GatosError):
    """The daemon sent something that is not a JSONL frame of the protocol."""

    code = "BAD_REPLY"


_WIRE_CLASSES: tuple[type[GatosError], ...] = (
    BadEncoding, BadFrame, BadSignature, BusFailed, Busy, Conflict, Corrupt, FoldFailed, FoldFuelExhausted,
    FoldMemoryExhausted, FoldProgramFailed, FoldStateInvalid, Internal, InvalidConfig, InvalidEvent,
    InvalidFoldSpec, InvalidGrant, InvalidMessage, InvalidName, InvalidNamespace, InvalidPolicy,
    InvalidPosition, Locked, NoActor, NotFastForward, NotFound, NotPending, PolicyDenied,
    ProofMismatch, RefInTheWay, ShuttingDown, StorageFailed, Timeout, TooLarge, UlidReused, Unauthorized,
    UnknownActor, UnknownGroup, UnknownSigAlg, UnknownType,
    JobFailed, InvalidJob, JobNotFound, ClaimLost, JobFinished, BlobNotFound, BlobCorrupt, RunnerUnavailable,
    BadProof, CacheFailed, InvalidQuery, InvalidIndexSpec, CorruptIndex, SyncFailed,
)

CODE_TO_ERROR: dict[str, type[GatosError]] = {cls.code: cls for cls in _WIRE_CLASSES}


def error_from_wire(error: object, request_id: Any = None) -> GatosError:
    """The typed exception for the `error` object of a failure frame.

    A malformed `error` object still gives a `GatosError` (code `INTERNAL`), never a
    `KeyError` or `TypeError` out of the client.
    """
    if not isinstance(error, dict):
        return BadReply(f"failure frame without an error object: {error!r}", request_id=request_id)
    code = error.get("code")
    code = code if isinstance(code, str) and code else "INTERNAL"
    reason = error.get("reason")
    rule = error.get("rule")
    cls = CODE_TO_ERROR.get(code, GatosError)
    return cls(reason if isinstance(reason, str) else "", code=code,
               rule=rule if isinstance(rule, str) else None, request_id=request_id)
