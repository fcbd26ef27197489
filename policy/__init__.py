"""Policy/trust plane: trust graph, capability grants, policy bundles, the gate, the audit.

Imports `ledger_core` only. The decision (`decide`) is a pure function of a request,
a compiled bundle, a trust view and a time; `PolicyEngine` caches the node's active
bundle and trust view by ref value and is the journal's gate. See docs/policy.md.
"""

from __future__ import annotations

from policy._admin import apply_policy, bootstrap, issue_grant, revoke_grant, set_groups
from policy._audit import AUDIT_REF, AuditLog, AuditRecord, read_log, replay
from policy._caps import ACTIONS, capability_for, covers, matches, validate_pattern
from policy._decide import Bundle, Decision, Request, decide, redact_payload
from policy._default import DEFAULT_FILE, DEFAULT_RULES
from policy._engine import PolicyEngine
from policy._grants import (
    Grant,
    Revocation,
    check_grant,
    check_revocation,
    format_time,
    make_grant,
    make_revocation,
    parse_time,
)
from policy._rules import compile_sources, parse_file, parse_rule
from policy._store import (
    ACTIVE_REF,
    GRANTS_DIR,
    GRAPH_PATH,
    POLICY_PREFIX,
    REVOCATIONS_DIR,
    ApplyResult,
    StoredBundle,
    apply_bundle,
    bundle_ref,
    is_ancestor,
    load_bundle,
    load_trust,
    move_fast_forward,
    update_trust,
)
from policy._trustview import ActorInfo, TrustView
from policy.errors import AuditFailed, InvalidGrant, InvalidPolicy, PolicyDenied, PolicyError

__all__ = [
    "ACTIONS",
    "ACTIVE_REF",
    "AUDIT_REF",
    "DEFAULT_FILE",
    "DEFAULT_RULES",
    "GRANTS_DIR",
    "GRAPH_PATH",
    "POLICY_PREFIX",
    "REVOCATIONS_DIR",
    "ActorInfo",
    "ApplyResult",
    "AuditFailed",
    "AuditLog",
    "AuditRecord",
    "Bundle",
    "Decision",
    "Grant",
    "InvalidGrant",
    "InvalidPolicy",
    "PolicyDenied",
    "PolicyEngine",
    "PolicyError",
    "Request",
    "Revocation",
    "StoredBundle",
    "TrustView",
    "apply_bundle",
    "apply_policy",
    "bootstrap",
    "bundle_ref",
    "capability_for",
    "check_grant",
    "check_revocation",
    "compile_sources",
    "covers",
    "decide",
    "format_time",
    "is_ancestor",
    "issue_grant",
    "load_bundle",
    "load_trust",
    "make_grant",
    "make_revocation",
    "matches",
    "move_fast_forward",
    "parse_file",
    "parse_rule",
    "parse_time",
    "read_log",
    "redact_payload",
    "replay",
    "revoke_grant",
    "set_groups",
    "update_trust",
    "validate_pattern",
]
