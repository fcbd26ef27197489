"""What kind of replicated ref a name is, and how each kind may move between nodes.

Sync (`gatos sync`) and the hub's pre-receive hook must agree on these rules, so they
live in one table: a journal is fast-forward only and never merged (a divergence is a
fork, kept and reported); the trust graph and the policy audit are logs that two nodes
extend concurrently, so their divergences are joined by a union merge commit (still a
fast-forward from both sides); state checkpoints are derived, so a divergence is
settled by taking the other side (the local fold can always be redone); job claims
and results are created once; caches are never replicated.
"""

from __future__ import annotations

import re
from enum import Enum

GATOS = "refs/gatos/"
FORKS_PREFIX = "refs/gatos/forks/"


class Kind(Enum):
    JOURNAL = "journal"
    TRUST = "trust"
    AUDIT = "audit"              # refs/gatos/audit/policy: union-merged log
    POLICY_ACTIVE = "policy"     # descendant wins, incomparable is a conflict
    STATE = "state"              # derived: the remote side wins a divergence
    CLAIM = "claim"              # created once; renewals and takeovers fast-forward
    ONCE = "once"                # a job or its result: created once, never moved
    FORK = "fork"                # a kept side of a divergence: created once
    LOCAL = "local"              # never replicated (caches, sessions, remote-tracking)
    LOG = "log"                  # every other gatos ref: fast-forward only


_JOB = re.compile(r"^refs/gatos/jobs/[0-9a-f]{64}/(job|claim|result)$")


def classify(ref: str) -> Kind:
    """The replication kind of a full ref name (anything outside refs/gatos/ is LOCAL)."""
    if not ref.startswith(GATOS):
        return Kind.LOCAL
    rest = ref[len(GATOS):]
    if rest.startswith("journal/"):
        return Kind.JOURNAL
    if rest == "trust":
        return Kind.TRUST
    if rest == "audit/policy":
        return Kind.AUDIT
    if rest == "policies/active":
        return Kind.POLICY_ACTIVE
    if rest.startswith("state/"):
        return Kind.STATE
    if rest.startswith(("cache/", "sessions/")):
        return Kind.LOCAL
    if rest.startswith("forks/"):
        return Kind.FORK
    match = _JOB.match(ref)
    if match:
        return Kind.CLAIM if match.group(1) == "claim" else Kind.ONCE
    return Kind.LOG


def replicated(ref: str) -> bool:
    return classify(ref) is not Kind.LOCAL


def fork_ref(ref: str, remote_oid: str) -> str:
    """Where the other side of a diverged `ref` is kept: `refs/gatos/forks/<rest>/<oid>`.

    `<rest>` is always a folder under forks/ (its leaves are object ids), so the
    layout never puts a ref and a folder at the same path.
    """
    return f"{FORKS_PREFIX}{ref[len(GATOS):]}/{remote_oid}"


def forked_ref(fork: str) -> tuple[str, str]:
    """`refs/gatos/forks/<rest>/<oid>` → (`refs/gatos/<rest>`, `<oid>`)."""
    rest, _, oid = fork[len(FORKS_PREFIX):].rpartition("/")
    return GATOS + rest, oid


__all__ = ["FORKS_PREFIX", "GATOS", "Kind", "classify", "fork_ref", "forked_ref", "replicated"]
