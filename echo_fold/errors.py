"""Errors of the fold plane.

One root (`FoldError`), one subclass per cause, each with the wire `code` the daemon
puts in its error frames. The root derives from `LedgerError` so the CLI and the
daemon report fold failures exactly as they report ledger failures.
"""

from __future__ import annotations

from ledger_core.errors import LedgerError


class FoldError(LedgerError):
    """Root of every error raised by `echo_fold`."""

    code = "FOLD_ERROR"


class SpecError(FoldError):
    """A fold spec is missing, malformed, or names something that does not exist."""

    code = "INVALID_FOLD_SPEC"


class ProgramError(FoldError):
    """The fold program failed: syntax error, runtime error, or a forbidden operation."""

    code = "FOLD_FAILED"


class FuelExhausted(ProgramError):
    """The program ran more Lua instructions on one event than its fuel allows."""

    code = "FOLD_FUEL"


class MemoryExhausted(ProgramError):
    """The Lua runtime went over its memory limit."""

    code = "FOLD_MEMORY"


class StateError(ProgramError):
    """The state cannot be stored: a float, a shared or cyclic table, a bad key, a metatable."""

    code = "FOLD_STATE"


class ProofMismatch(FoldError):
    """A checkpoint does not prove what it claims (used in reports; `verify` returns them)."""

    code = "PROOF_MISMATCH"


ERROR_CODES: tuple[str, ...] = tuple(sorted({
    cls.code for cls in (FoldError, SpecError, ProgramError, FuelExhausted, MemoryExhausted,
                         StateError, ProofMismatch)
}))

__all__ = [
    "ERROR_CODES",
    "FoldError",
    "FuelExhausted",
    "MemoryExhausted",
    "ProgramError",
    "ProofMismatch",
    "SpecError",
    "StateError",
]
