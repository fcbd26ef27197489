"""Errors of the daemon's protocol layer. Ledger errors keep their own codes on the wire."""

from __future__ import annotations

from ledger_core.errors import LedgerError


class ProtocolError(LedgerError):
    """A request the daemon cannot serve as sent."""

    code = "BAD_FRAME"

    def __init__(self, reason: str, code: str | None = None, rule: str | None = None) -> None:
        super().__init__(reason)
        if code is not None:
            self.code = code
        self.rule = rule

    def to_wire(self) -> dict[str, str]:
        wire = super().to_wire()
        if self.rule:
            wire["rule"] = self.rule
        return wire


def bad_frame(reason: str) -> ProtocolError:
    return ProtocolError(reason, "BAD_FRAME")


def unknown_type(name: object) -> ProtocolError:
    return ProtocolError(f"unknown request type {name!r}; `hello` lists the methods", "UNKNOWN_TYPE")


def too_large(limit: int) -> ProtocolError:
    return ProtocolError(f"line over the {limit}-byte limit; it was dropped", "TOO_LARGE")


def busy(reason: str) -> ProtocolError:
    return ProtocolError(reason, "BUSY")


def timeout(reason: str) -> ProtocolError:
    return ProtocolError(reason, "TIMEOUT")


def unauthorized(reason: str) -> ProtocolError:
    return ProtocolError(reason, "UNAUTHORIZED")


def shutting_down() -> ProtocolError:
    return ProtocolError("the daemon is shutting down", "SHUTTING_DOWN")


# The closed set of codes a client can see (documented in docs/protocol.md).
WIRE_CODES: tuple[str, ...] = (
    "BAD_ENCODING", "BAD_FRAME", "BAD_SIGNATURE", "BUS_ERROR", "BUSY", "CONFLICT", "CORRUPT", "FOLD_ERROR",
    "FOLD_FAILED", "FOLD_FUEL", "FOLD_MEMORY", "FOLD_STATE", "INTERNAL", "INVALID_CONFIG",
    "INVALID_EVENT", "INVALID_FOLD_SPEC", "INVALID_GRANT", "INVALID_NAME", "INVALID_NS",
    "INVALID_MESSAGE", "INVALID_POLICY", "INVALID_POSITION", "LOCKED", "NO_ACTOR", "NOT_FOUND",
    "NOT_FAST_FORWARD", "NOT_PENDING",
    "POLICY_DENY", "PROOF_MISMATCH", "REF_IN_THE_WAY", "SHUTTING_DOWN", "STORAGE", "TIMEOUT", "TOO_LARGE",
    "ULID_REUSED", "UNAUTHORIZED", "UNKNOWN_ACTOR", "UNKNOWN_GROUP", "UNKNOWN_SIG_ALG",
    "UNKNOWN_TYPE",
    # the job plane (compute.errors)
    "BAD_PROOF", "BLOB_CORRUPT", "BLOB_NOT_FOUND", "CLAIM_LOST", "INVALID_JOB", "JOB_ERROR", "JOB_FINISHED",
    "JOB_NOT_FOUND", "RUNNER_UNAVAILABLE",
    # the cache plane (kv_cache.errors)
    "CACHE_ERROR", "CORRUPT_INDEX", "INVALID_INDEX_SPEC", "INVALID_QUERY",
    # replication (gatosd._sync)
    "SYNC_FAILED",
)
