"""The trust graph as one value: actors, keys, groups, intrinsic caps, grants, revocations.

Built from one commit of `refs/gatos/trust` (see `_store.load_trust`) and never
changed afterwards, so a decision is a function of (request, bundle, trust view,
time). Whether an actor *holds* a capability at time `now`:

* the trust graph gives it intrinsically (`graph.json`: the node owner holds `*`), or
* a grant to it matches, and that grant is live (`iat ≤ now < exp`), is for this
  node (`aud`), is not revoked, and its issuer holds `trust:grant` and covers every
  capability it granted — recursively, so delegation can narrow but never widen
  (no escalation), and revoking or expiring a link cuts everything below it.

Documents that fail their own checks (forged signature, wrong id, wrong audience)
are kept in `rejected` with the reason, so a denial can say why a grant did not count.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field

from ledger_core import PublicKeyText
from policy._caps import covers, matches
from policy._grants import Grant, Revocation


@dataclass(frozen=True)
class ActorInfo:
    keys: tuple[PublicKeyText, ...] = ()
    groups: tuple[str, ...] = ()
    caps: tuple[str, ...] = ()


@dataclass
class TrustView:
    """Everything the gate knows about who may do what. Treat as immutable."""

    root: str = "0" * 40
    audience: str = ""
    actors: Mapping[str, ActorInfo] = field(default_factory=dict)
    grants: Mapping[str, Grant] = field(default_factory=dict)
    revocations: Mapping[str, tuple[Revocation, ...]] = field(default_factory=dict)
    rejected: Mapping[str, tuple[str | None, str]] = field(default_factory=dict)  # id → (subject, why)
    error: str | None = None  # the trust graph itself did not load: everything is denied
    by_subject: dict[str, tuple[Grant, ...]] = field(default_factory=dict)
    # (subject, literal capability) → grants naming it, and subject → grants with a `*`
    # capability: a concrete capability is checked against those few grants, not all.
    by_cap: dict[tuple[str, str], tuple[Grant, ...]] = field(default_factory=dict)
    wild: dict[str, tuple[Grant, ...]] = field(default_factory=dict)
    _bounds: tuple[int, ...] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, list[Grant]] = {}
        for grant in self.grants.values():
            index.setdefault(grant.subject, []).append(grant)
        self.by_subject = {k: tuple(sorted(v, key=lambda g: g.grant_id)) for k, v in index.items()}
        by_cap: dict[tuple[str, str], list[Grant]] = {}
        wild: dict[str, list[Grant]] = {}
        for subject, grants in self.by_subject.items():  # grant-id order is kept in each list
            for grant in grants:
                for cap in dict.fromkeys(grant.caps):
                    if "*" in cap:
                        if not wild.get(subject) or wild[subject][-1] is not grant:
                            wild.setdefault(subject, []).append(grant)
                    else:
                        by_cap.setdefault((subject, cap), []).append(grant)
        self.by_cap = {k: tuple(v) for k, v in by_cap.items()}
        self.wild = {k: tuple(v) for k, v in wild.items()}

    def _candidates(self, actor: str, cap: str) -> list[Grant]:
        """The grants to `actor` that match the concrete `cap`, in grant-id order."""
        found = list(self.by_cap.get((actor, cap), ()))
        found += [g for g in self.wild.get(actor, ())
                  if g not in found and any(matches(held, cap) for held in g.caps)]
        if len(found) > 1:
            found.sort(key=lambda g: g.grant_id)
        return found

    def stable_span(self, now: int) -> tuple[float, float]:
        """The times `[lo, hi)` around `now` in which no grant starts or ends.

        Time enters a decision only through grants' `iat` and `exp` (`iat <= now < exp`),
        so every decision made at `now` under this view is the same at any time in
        that span: a cached decision may be reused inside it and never outside it.
        """
        bounds = self._bounds
        if bounds is None:
            times = {g.iat for g in self.grants.values()}
            times.update(g.exp for g in self.grants.values() if g.exp is not None)
            bounds = self._bounds = tuple(sorted(times))
        i = bisect_right(bounds, now)
        return (bounds[i - 1] if i else float("-inf"),
                bounds[i] if i < len(bounds) else float("inf"))

    def known(self, actor: str) -> bool:
        info = self.actors.get(actor)
        return info is not None and bool(info.keys)

    def groups_of(self, actor: str) -> tuple[str, ...]:
        info = self.actors.get(actor)
        return info.groups if info else ()

    # -- holding capabilities ------------------------------------------------------

    def holds(self, actor: str, cap: str, now: int) -> bool:
        """Whether `actor` holds the concrete capability `cap` at `now`."""
        return self._holds(actor, cap, now, matches, set())

    def holds_pattern(self, actor: str, pattern: str, now: int) -> bool:
        """Whether `actor` holds every capability `pattern` stands for (for delegation)."""
        return self._holds(actor, pattern, now, covers, set())

    def _holds(self, actor: str, cap: str, now: int, test: object, seen: set[str]) -> bool:
        info = self.actors.get(actor)
        if info is not None and any(test(held, cap) for held in info.caps):  # type: ignore[operator]
            return True
        if test is matches:
            return any(self._counts(grant, now, seen) for grant in self._candidates(actor, cap))
        for grant in self.by_subject.get(actor, ()):
            if any(test(held, cap) for held in grant.caps) and \
                    self._counts(grant, now, seen):  # type: ignore[operator]
                return True
        return False

    def grant_problem(self, grant: Grant, now: int) -> str | None:
        """Why `grant` does not count at `now` (None when it does)."""
        return self._problem(grant, now, set())

    def _counts(self, grant: Grant, now: int, seen: set[str]) -> bool:
        return self._problem(grant, now, seen) is None

    def _problem(self, grant: Grant, now: int, seen: set[str]) -> str | None:
        if grant.aud != self.audience:
            return f"grant {grant.grant_id} is for another node ({grant.aud})"
        if now < grant.iat:
            return f"grant {grant.grant_id} is not valid before {grant.doc['iat']}"
        if grant.exp is not None and now >= grant.exp:
            return f"grant {grant.grant_id} expired at {grant.doc['exp']}"
        for revocation in self.revocations.get(grant.grant_id, ()):
            if revocation.revoked_by == grant.issuer or \
                    self._holds(revocation.revoked_by, "trust:revoke", now, matches,
                                seen | {grant.grant_id}):
                return f"grant {grant.grant_id} was revoked by {revocation.revoked_by}"
        if grant.grant_id in seen:
            return f"grant {grant.grant_id} depends on itself"
        chain = seen | {grant.grant_id}
        if not self._holds(grant.issuer, "trust:grant", now, matches, chain):
            return f"issuer {grant.issuer} of grant {grant.grant_id} does not hold trust:grant"
        for cap in grant.caps:
            if not self._holds(grant.issuer, cap, now, covers, chain):
                return (f"issuer {grant.issuer} of grant {grant.grant_id} does not hold {cap} "
                        "(no escalation by delegation)")
        return None

    def explain_missing(self, actor: str, cap: str, now: int) -> str:
        """Why none of the grants to `actor` that name `cap` counts (for denial reasons)."""
        notes = [problem for grant in self._candidates(actor, cap)
                 if (problem := self.grant_problem(grant, now)) is not None]
        notes += [f"grant {gid} rejected: {why}" for gid, (subject, why) in sorted(self.rejected.items())
                  if subject == actor]
        return "; ".join(notes[:3])


__all__ = ["ActorInfo", "TrustView"]
