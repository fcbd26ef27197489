"""The audit of gate decisions: one commit per kept decision on `refs/gatos/audit/policy`.

Every denial is kept; allowed decisions too when the bundle says `audit all` or an
`audit` rule matches. A record commit's tree holds `decision.json` (canonical JSON:
the request with redacted payload fields replaced, the decision, the policy and
trust roots it was made under and the decision time); its trailers are
`Decision`, `Policy-Rule`, `Actor`, `Action`, `Target`, `Policy-Root`, `Trust-Root`,
`Decided-At` and `Reason`. Commit time is the decision time, so a record is a
function of its inputs and its parent (the same history gives the same OIDs).

Records are queued by the gate and written by `flush` in one object write and one
ref move per batch, under the audit ref's lock: the journal writer calls it once
per batch, after the batch's journal refs moved and before anyone is answered.

`replay` re-decides every record with the bundle and trust view it names and the
time it was made at, and reports any record whose decision comes out different.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ledger_core import ObjectId, ObjectStore, RefName, RefStore, canonical_json, parse_json
from ledger_core.errors import LedgerError, RefLocked
from policy._decide import Bundle, Decision, Request, decide, redact_payload
from policy._grants import format_time
from policy._store import ACTIVE_REF, ZERO, load_bundle, load_trust
from policy._tree import commit_object, read_file, with_files
from policy._trustview import TrustView
from policy.errors import AuditFailed

AUDIT_REF = RefName("refs/gatos/audit/policy")
LOCK_TRIES = 200


@dataclass(frozen=True)
class AuditRecord:
    request: Request
    decision: Decision
    policy_root: str
    trust_root: str
    time: int

    def to_value(self) -> dict[str, Any]:
        request = self.request.to_value()
        if self.decision.redact and "payload" in request:
            request["payload"] = redact_payload(request["payload"], self.decision.redact)
        if "payload" in request:
            try:
                canonical_json(request["payload"])
            except LedgerError:  # bytes in a CBOR payload have no JSON form: keep the rest
                request["payload"] = {"$omitted": "payload has no canonical JSON form"}
        return {"request": request, "decision": self.decision.to_value(),
                "policy_root": self.policy_root, "trust_root": self.trust_root, "time": self.time}

    @classmethod
    def from_value(cls, value: dict[str, Any]) -> AuditRecord:
        d = value["decision"]
        return cls(Request.from_value(value["request"]),
                   Decision(d["allowed"], d["rule"], d["reason"], d["audit"], tuple(d["redact"])),
                   value["policy_root"], value["trust_root"], value["time"])

    def trailers(self) -> list[tuple[str, str]]:
        def one_line(text: str) -> str:
            return " ".join(text.split())[:500] or "-"
        return [("Decision", "allow" if self.decision.allowed else "deny"),
                ("Policy-Rule", one_line(self.decision.rule)), ("Actor", one_line(self.request.actor)),
                ("Action", one_line(self.request.action)), ("Target", one_line(self.request.target)),
                ("Policy-Root", self.policy_root), ("Trust-Root", self.trust_root),
                ("Decided-At", format_time(self.time)), ("Reason", one_line(self.decision.reason))]

    def subject(self) -> str:
        verb = "allow" if self.decision.allowed else "deny"
        return f"{verb} {self.request.action} {self.request.target} by {self.request.actor}"[:200]


@dataclass
class AuditLog:
    """Queues records and writes them as a chain of commits on the audit ref."""

    objects: ObjectStore
    refs: RefStore
    sleep: Callable[[float], None]
    pending: list[AuditRecord] = field(default_factory=list)

    def record(self, record: AuditRecord) -> None:
        self.pending.append(record)

    def flush(self) -> list[ObjectId]:
        """Write every queued record (one pack, one ref move); return their commit OIDs.

        Raises:
            AuditFailed: the records could not be written (they are dropped from the queue;
                the caller reports that to whoever was denied).
        """
        if not self.pending:
            return []
        records, self.pending = self.pending, []
        try:
            for attempt in range(LOCK_TRIES):
                try:
                    lock = self.refs.lock(AUDIT_REF)
                    break
                except RefLocked as exc:
                    if exc.stale or attempt == LOCK_TRIES - 1:
                        raise
                    self.sleep(min(0.05, 0.001 * 2 ** min(attempt, 6)))
            with lock:
                parent = lock.old
                made = []
                oids = []
                for rec in records:
                    blob_objects, tree = with_files(self.objects, None, {
                        ("decision.json",): canonical_json(rec.to_value())})
                    commit = commit_object(tree, parent, "gatos-gate", rec.time, rec.subject(),
                                           rec.trailers())
                    made += [*blob_objects, commit]
                    parent = commit.oid
                    oids.append(commit.oid)
                self.objects.write_many(made)
                assert parent is not None
                lock.commit(parent)
            return oids
        except LedgerError as exc:
            raise AuditFailed(f"audit records not written: {exc.reason}") from exc


def read_log(objects: ObjectStore, refs: RefStore, limit: int | None = None
             ) -> Iterator[tuple[ObjectId, AuditRecord]]:
    """Audit records, newest first.

    Two nodes that both kept decisions while apart extend the audit log separately;
    sync joins the two sides with a commit of two parents and no record of its own
    (`gatosd._merge.join_log`). So the log is walked as a graph, newest commit time
    first (ties by id), each record once.
    """
    head = refs.get(AUDIT_REF)
    if head is None:
        return
    count = 0
    heap: list[tuple[int, str, ObjectId]] = []
    seen: set[ObjectId] = set()

    def push(oid: ObjectId) -> None:
        if oid not in seen:
            seen.add(oid)
            commit = objects.read_commit(oid)
            heapq.heappush(heap, (-_commit_seconds(commit.committer), oid, oid))

    push(head)
    while heap and (limit is None or count < limit):
        _t, _k, oid = heapq.heappop(heap)
        commit = objects.read_commit(oid)
        for parent in commit.parents:
            push(parent)
        if len(commit.parents) > 1:
            continue  # a join of two sides, not a record
        data = read_file(objects, commit.tree, ("decision.json",))
        if data is None:
            raise AuditFailed(f"audit commit {oid} has no decision.json")
        yield oid, AuditRecord.from_value(parse_json(data, "decision.json"))
        count += 1


def _commit_seconds(ident: str) -> int:
    """The seconds of a `Name <email> <seconds> <tz>` line (0 when unreadable)."""
    try:
        return int(ident.rsplit(" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def replay(objects: ObjectStore, refs: RefStore, *, current: tuple[Bundle | None, TrustView, int] | None = None
           ) -> dict[str, Any]:
    """Re-decide every record; list those whose decision differs.

    By default each record is re-decided under the bundle, trust view and time it
    names (a difference means the record or the engine cannot be trusted). With
    `current=(bundle, trust, now)` they are decided under those instead (with the
    commit `refs/gatos/policies/active` holds as the bundle's), to see what the active
    policy would now decide differently.
    """
    bundles: dict[str, Bundle | None] = {ZERO: None}
    trusts: dict[str, TrustView] = {}
    cache: dict[Any, Any] = {}
    checked, differ = 0, []
    active = (refs.get(ACTIVE_REF) or ZERO) if current is not None else ZERO
    for oid, rec in read_log(objects, refs):
        checked += 1
        try:
            if current is not None:
                bundle, trust, now = current
                commit = active
            else:
                commit = rec.policy_root
                if rec.policy_root not in bundles:
                    bundles[rec.policy_root] = load_bundle(objects, ObjectId(rec.policy_root)).bundle
                if rec.trust_root not in trusts:
                    trusts[rec.trust_root] = load_trust(
                        objects, None if rec.trust_root == ZERO else ObjectId(rec.trust_root), cache)
                bundle, trust, now = bundles[rec.policy_root], trusts[rec.trust_root], rec.time
            again = decide(rec.request, bundle, trust, now, commit)
        except LedgerError as exc:
            differ.append({"commit": oid, "recorded": rec.decision.to_value(),
                           "error": f"{exc.code}: {exc.reason}"})
            continue
        if (again.allowed, again.rule, again.reason) != (
                rec.decision.allowed, rec.decision.rule, rec.decision.reason):
            differ.append({"commit": oid, "request": rec.request.to_value(),
                           "recorded": rec.decision.to_value(), "now": again.to_value()})
    return {"ok": not differ, "checked": checked, "differ": differ}


__all__ = ["AUDIT_REF", "AuditLog", "AuditRecord", "read_log", "replay"]
