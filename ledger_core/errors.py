"""Errors of the ledger core.

One root (`LedgerError`), one subclass per cause. Every error carries the wire
`code` the daemon puts in its error frames (SPEC §7), so adapters and the daemon
never have to guess how to report a failure.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Root of every error raised by `ledger_core` and its adapters."""

    code = "INTERNAL"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def to_wire(self) -> dict[str, str]:
        """The `error` object of a protocol failure frame."""
        return {"code": self.code, "reason": self.reason}


class InvalidName(LedgerError):
    """An actor, consumer group, index id or ref name is not allowed."""

    code = "INVALID_NAME"


class InvalidNamespace(InvalidName):
    """A namespace is not one safe path component."""

    code = "INVALID_NS"


class InvalidEvent(LedgerError):
    """An envelope field is missing, malformed or of the wrong type."""

    code = "INVALID_EVENT"


class EncodingError(LedgerError):
    """Bytes are not canonical DAG-CBOR / canonical JSON, or a value cannot be encoded."""

    code = "BAD_ENCODING"


class TooLarge(LedgerError):
    """An event or payload is over its configured size limit."""

    code = "TOO_LARGE"


class BadSignature(LedgerError):
    """A signature or key is malformed, or does not verify."""

    code = "BAD_SIGNATURE"


class UnknownSigAlg(BadSignature):
    """`sig_alg` names an algorithm we do not accept, or contradicts the key type."""

    code = "UNKNOWN_SIG_ALG"


class UnknownActor(LedgerError):
    """No trusted public key is known for the actor."""

    code = "UNKNOWN_ACTOR"


class UlidReused(LedgerError):
    """A ULID already in the journal was sent again with different content."""

    code = "ULID_REUSED"


class NotFound(LedgerError):
    """An object, ref or key does not exist."""

    code = "NOT_FOUND"


class Conflict(LedgerError):
    """A compare-and-swap kept losing: the ref moved under us on every try."""

    code = "CONFLICT"


class RefConflict(Conflict):
    """One compare-and-swap found another value than expected."""

    def __init__(self, name: str, expected: str | None, actual: str | None) -> None:
        super().__init__(f"ref {name} is at {actual or 'nothing'}, expected {expected or 'nothing'}")
        self.name = name
        self.expected = expected
        self.actual = actual


class NotFastForward(Conflict):
    """A ref update would drop history."""

    code = "NOT_FAST_FORWARD"


class RefLocked(Conflict):
    """Another writer holds the ref's lock file (or a crashed one left it behind)."""

    code = "LOCKED"

    def __init__(self, reason: str, *, stale: bool = False) -> None:
        super().__init__(reason)
        self.stale = stale


class RefInTheWay(LedgerError):
    """A ref cannot be created because a file or folder of that name is in the way."""

    code = "REF_IN_THE_WAY"


class StorageError(LedgerError):
    """The object or ref store failed (I/O error, disk full, corrupt object)."""

    code = "STORAGE"


class CorruptObject(StorageError):
    """A stored object does not hash to its id or cannot be parsed."""

    code = "CORRUPT"


ERROR_CODES: tuple[str, ...] = tuple(
    sorted(
        {
            cls.code
            for cls in (
                LedgerError, InvalidName, InvalidNamespace, InvalidEvent, EncodingError,
                TooLarge, BadSignature, UnknownSigAlg, UnknownActor, UlidReused, NotFound,
                Conflict, NotFastForward, RefLocked, RefInTheWay, StorageError, CorruptObject,
            )
        }
    )
)
