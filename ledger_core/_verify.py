"""Journal verification: everything a reader with Git and public keys can check.

For each commit of a journal: one parent at most (never a merge), a tree of exactly
`event.cbor` + `event.sig`, canonical bytes that decode strictly, an actor that owns
the journal, a signature by one of the actor's trusted keys, a ULID seen once, and a
commit that is byte-for-byte the one `journal_commit` builds from that event and its
parent (which pins the trailers, subject, identity and time).

A compacted journal (see `ledger_core._epoch`) ends at a commit whose parent is no
longer stored. That is accepted only when the commit is a head recorded by a signed
epoch anchor of the journal's namespace (`boundaries`); a missing parent anywhere else
stays an error. The commit's own OID still pins its parent's OID, so the retained part
is verified as strictly as before; what was archived is checked from its bundle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger_core._envelope import SignedEvent
from ledger_core._epoch import anchored_boundaries
from ledger_core._gitobj import ObjectId
from ledger_core._journal import verify_signed
from ledger_core._journal_commit import event_trailers, journal_commit
from ledger_core._names import JOURNAL_PREFIX, RefName, parse_journal_ref
from ledger_core._ports import KeyResolver, ObjectStore, RefStore
from ledger_core._reading import event_blobs
from ledger_core.errors import LedgerError, NotFound


@dataclass(frozen=True)
class Problem:
    ref: str
    commit: str | None
    reason: str

    def to_dict(self) -> dict[str, str | None]:
        return {"ref": self.ref, "commit": self.commit, "reason": self.reason}


@dataclass
class VerifyReport:
    journals: int = 0
    events: int = 0
    problems: list[Problem] = field(default_factory=list)
    boundaries: int = 0  # journals that end at an anchored (compacted) boundary

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"ok": self.ok, "journals": self.journals, "events": self.events,
                                  "problems": [p.to_dict() for p in self.problems]}
        if self.boundaries:
            out["compacted_journals"] = self.boundaries
        return out


def verify_journal(objects: ObjectStore, ref: RefName, head: ObjectId,
                   keys: KeyResolver, boundaries: frozenset[ObjectId] = frozenset()
                   ) -> tuple[int, list[Problem]]:
    """Verify one journal from `head` back to its root. Returns (events, problems).

    Args:
        boundaries: commits recorded by signed epoch anchors; the walk may end at one of
            them when its parent is not stored (a compacted journal), nowhere else.
    """
    problems: list[Problem] = []
    try:
        _ns, owner = parse_journal_ref(ref)
    except LedgerError as exc:
        return 0, [Problem(ref, None, exc.reason)]
    seen: dict[str, ObjectId] = {}
    count = 0
    oid: ObjectId | None = head
    while oid is not None:
        count += 1
        try:
            commit = objects.read_commit(oid)
        except NotFound as exc:
            problems.append(Problem(ref, oid, f"unreadable commit: {exc.reason} (a missing "
                                              "parent is allowed only below an epoch anchor)"))
            break
        except LedgerError as exc:
            problems.append(Problem(ref, oid, f"unreadable commit: {exc.reason}"))
            break
        parent = commit.parents[0] if commit.parents else None
        if len(commit.parents) > 1:
            problems.append(Problem(ref, oid, f"merge commit with {len(commit.parents)} parents"))
        try:
            canonical, sig = event_blobs(objects, commit)
            signed = SignedEvent.from_bytes(canonical, sig)
        except LedgerError as exc:
            problems.append(Problem(ref, oid, exc.reason))
            oid = parent
            continue
        reasons = _check_event(signed, owner, keys)
        if signed.event.ulid in seen:
            reasons.append(f"ulid {signed.event.ulid} also in commit {seen[signed.event.ulid]}")
        seen[signed.event.ulid] = oid
        _objs, expected = journal_commit(signed, parent)
        if expected != oid:
            reasons.append(_diagnose(commit.trailers, commit.subject, signed))
        problems.extend(Problem(ref, oid, r) for r in reasons)
        if parent is not None and oid in boundaries and not objects.contains(parent):
            break  # the oldest retained commit of a compacted journal
        oid = parent
    return count, problems


def verify_commit(objects: ObjectStore, ref: RefName, oid: ObjectId, keys: KeyResolver) -> list[Problem]:
    """Check one commit of a journal on its own (a sample): everything `verify_journal`
    checks of it except ULID uniqueness, which needs the whole journal."""
    try:
        _ns, owner = parse_journal_ref(ref)
        commit = objects.read_commit(oid)
    except LedgerError as exc:
        return [Problem(ref, oid, exc.reason)]
    problems = []
    if len(commit.parents) > 1:
        problems.append(Problem(ref, oid, f"merge commit with {len(commit.parents)} parents"))
    try:
        signed = SignedEvent.from_bytes(*event_blobs(objects, commit))
    except LedgerError as exc:
        return [*problems, Problem(ref, oid, exc.reason)]
    reasons = _check_event(signed, owner, keys)
    _objs, expected = journal_commit(signed, commit.parents[0] if commit.parents else None)
    if expected != oid:
        reasons.append(_diagnose(commit.trailers, commit.subject, signed))
    return [*problems, *(Problem(ref, oid, r) for r in reasons)]


def _check_event(signed: SignedEvent, owner: str, keys: KeyResolver) -> list[str]:
    reasons = []
    if signed.event.actor != owner:
        reasons.append(f"event actor {signed.event.actor} does not own this journal ({owner})")
    try:
        verify_signed(signed, keys)
    except LedgerError as exc:
        reasons.append(exc.reason)
    return reasons


def _diagnose(trailers: dict[str, str], subject: str, signed: SignedEvent) -> str:
    wrong = [key for key, value in event_trailers(signed) if trailers.get(key) != value]
    if subject != signed.event.type:
        wrong.append("subject")
    if wrong:
        return f"commit does not match its event bytes: {', '.join(wrong)} differ"
    return "commit does not match its event bytes (identity, time or layout differ)"


def verify_all(objects: ObjectStore, refs: RefStore, keys: KeyResolver,
               prefix: str = JOURNAL_PREFIX) -> VerifyReport:
    """Verify every journal under `prefix` (compacted ones down to their anchored boundary)."""
    report = VerifyReport()
    anchored = anchored_boundaries(objects, refs, keys)
    for ref, head in refs.list(prefix).items():
        bounds = anchored.get(ref, frozenset())
        count, problems = verify_journal(objects, ref, head, keys, bounds)
        report.journals += 1
        report.events += count
        report.problems.extend(problems)
        if bounds and not problems and _ends_at_boundary(objects, head, bounds):
            report.boundaries += 1
    return report


def _ends_at_boundary(objects: ObjectStore, head: ObjectId, bounds: frozenset[ObjectId]) -> bool:
    """Whether some boundary of the journal is stored while its parent is not."""
    for oid in bounds:
        if objects.contains(oid):
            parents = objects.read_commit(oid).parents
            if parents and not objects.contains(parents[0]):
                return True
    return False
