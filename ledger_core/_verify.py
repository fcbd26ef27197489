"""Journal verification: everything a reader with Git and public keys can check.

For each commit of a journal: one parent at most (never a merge), a tree of exactly
`event.cbor` + `event.sig`, canonical bytes that decode strictly, an actor that owns
the journal, a signature by one of the actor's trusted keys, a ULID seen once, and a
commit that is byte-for-byte the one `journal_commit` builds from that event and its
parent (which pins the trailers, subject, identity and time).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger_core._envelope import SignedEvent
from ledger_core._gitobj import ObjectId
from ledger_core._journal import verify_signed
from ledger_core._journal_commit import event_trailers, journal_commit
from ledger_core._names import JOURNAL_PREFIX, RefName, parse_journal_ref
from ledger_core._ports import KeyResolver, ObjectStore, RefStore
from ledger_core._reading import event_blobs
from ledger_core.errors import LedgerError


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

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "journals": self.journals, "events": self.events,
                "problems": [p.to_dict() for p in self.problems]}


def verify_journal(objects: ObjectStore, ref: RefName, head: ObjectId,
                   keys: KeyResolver) -> tuple[int, list[Problem]]:
    """Verify one journal from `head` back to its root. Returns (events, problems)."""
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
        oid = parent
    return count, problems


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
    """Verify every journal under `prefix`."""
    report = VerifyReport()
    for ref, head in refs.list(prefix).items():
        count, problems = verify_journal(objects, ref, head, keys)
        report.journals += 1
        report.events += count
        report.problems.extend(problems)
    return report
