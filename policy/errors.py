"""Errors of the policy plane.

One root (`PolicyError`, a `LedgerError` so the daemon and the CLI report it like any
other ledger failure), one subclass per cause, each with its wire `code` (SPEC §7).
A denial carries the id of the rule that decided it (`<file>:<line>`, or a
`gatos:<name>` id for the built-in checks) so anyone can re-check the reason.
"""

from __future__ import annotations

from ledger_core.errors import LedgerError, StorageError


class PolicyError(LedgerError):
    """Root of every error raised by `policy`."""

    code = "INTERNAL"


class PolicyDenied(PolicyError):
    """The gate refused a request: `rule` decided it, `reason` says why."""

    code = "POLICY_DENY"

    def __init__(self, reason: str, rule: str) -> None:
        super().__init__(reason)
        self.rule = rule

    def to_wire(self) -> dict[str, str]:
        return {"code": self.code, "reason": self.reason, "rule": self.rule}


class InvalidPolicy(PolicyError):
    """Rule text that does not parse, or a stored bundle that does not match its id."""

    code = "INVALID_POLICY"


class InvalidGrant(PolicyError):
    """A grant, revocation or trust graph document that is malformed or cannot be issued."""

    code = "INVALID_GRANT"


class AuditFailed(StorageError):
    """A denial stands, but its audit record could not be written (the request is still refused)."""

    code = "STORAGE"


__all__ = ["AuditFailed", "InvalidGrant", "InvalidPolicy", "PolicyDenied", "PolicyError"]
