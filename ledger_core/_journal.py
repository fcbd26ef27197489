"""Journal rules (SPEC §5): verify → gate → lock → build → write → move the ref.

A journal is one actor's linear history in one namespace. `Journal` appends signed
events to it through the ports:

* idempotency: a ULID already in the journal returns the existing commit
  (`duplicate=True`) when the unsigned bytes are the same (same Event-CID), and is
  `UlidReused` when they differ. Dedupe is on the CID, never on signature bytes;
* fast-forward only: the head is read under the journal's ref lock and the new
  head always has it as parent, so the ref move is a compare-and-swap that cannot
  lose (concurrent writers queue on the lock instead of redoing work);
* a busy lock is retried with jittered exponential backoff; `CONFLICT`/`LOCKED`
  after `RetryPolicy.tries`, at once when the lock looks abandoned;
* group commit: `append_many` writes every new object of a batch in one
  `write_many` call (one pack) and moves each journal ref once.

The core has no clock and no randomness: `sleep` and `random` are injected. A
`Journal` instance is not thread-safe; safety between threads and processes comes
from the ref store's locks, so use one instance per thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger_core._envelope import SignedEvent
from ledger_core._gitobj import GitObject, ObjectId
from ledger_core._journal_commit import journal_commit
from ledger_core._names import RefName, journal_ref, validate_namespace
from ledger_core._ports import KeyResolver, ObjectStore, RefLock, RefStore
from ledger_core.errors import (
    BadSignature,
    Conflict,
    LedgerError,
    NotFound,
    RefLocked,
    UlidReused,
    UnknownActor,
)

Gate = Callable[[str, SignedEvent], None]
"""Decides a write: returns to allow, raises a `LedgerError` (e.g. a policy denial) to refuse."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: try `tries` times, waiting about base·2^n, at most cap.

    A busy journal lock is held for a few milliseconds by whoever has it, so the
    defaults poll often and give up only after several seconds (a lock that looks
    abandoned is reported at once instead).
    """

    tries: int = 200
    base: float = 0.002
    cap: float = 0.05

    def delay(self, attempt: int, rnd: float) -> float:
        ceiling = min(self.cap, self.base * (2**attempt))
        return ceiling / 2 + rnd * ceiling / 2


@dataclass(frozen=True)
class AppendResult:
    """Where an event landed. `duplicate` is true when the ULID was already there."""

    ns: str
    ref: RefName
    commit: ObjectId
    event_cid: str
    ulid: str
    actor: str
    duplicate: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True, "ns": self.ns, "ref": self.ref, "commit": self.commit,
            "event_cid": self.event_cid, "ulid": self.ulid, "actor": self.actor,
            "duplicate": self.duplicate,
        }


@dataclass
class _Plan:
    """What one attempt will write to one journal."""

    ref: RefName
    objects: list[GitObject] = field(default_factory=list)
    new_head: ObjectId | None = None
    results: dict[int, AppendResult] = field(default_factory=dict)


@dataclass
class _UlidIndex:
    """ULID → (commit, Event-CID) for one journal, valid up to `head`."""

    head: ObjectId | None = None
    seen: dict[str, tuple[ObjectId, str]] = field(default_factory=dict)

    def add(self, plan: _Plan) -> None:
        for res in plan.results.values():
            if not res.duplicate:
                self.seen[res.ulid] = (res.commit, res.event_cid)
        self.head = plan.new_head


def verify_signed(signed: SignedEvent, keys: KeyResolver) -> None:
    """Raise unless one of the actor's trusted keys signed the event."""
    trusted = keys.keys_for(signed.event.actor)
    if not trusted:
        raise UnknownActor(f"no trusted public key for actor {signed.event.actor}")
    last: LedgerError | None = None
    for key in trusted:
        try:
            signed.verify(key)
            return
        except BadSignature as exc:
            last = exc
    assert last is not None
    raise last


class Journal:
    """Appends to and reads journals through an `ObjectStore` and a `RefStore`."""

    def __init__(self, objects: ObjectStore, refs: RefStore, keys: KeyResolver, *,
                 sleep: Callable[[float], None], random: Callable[[], float],
                 retry: RetryPolicy | None = None, gate: Gate | None = None) -> None:
        self.objects = objects
        self.refs = refs
        self.keys = keys
        self._sleep = sleep
        self._random = random
        self.retry = retry or RetryPolicy()
        self.gate = gate
        self._indexes: dict[RefName, _UlidIndex] = {}

    # -- appending -----------------------------------------------------------------

    def append(self, ns: str, signed: SignedEvent) -> AppendResult:
        """Append one event (verified, gated, idempotent on its ULID).

        Raises:
            InvalidNamespace, BadSignature, UnknownActor, UlidReused, Conflict,
            RefLocked, StorageError, or whatever the gate raises.
        """
        result = self.append_many([(ns, signed)])[0]
        if isinstance(result, LedgerError):
            raise result
        return result

    def append_many(self, items: Sequence[tuple[str, SignedEvent]], *,
                    preverified: bool | Sequence[bool] = False) -> list[AppendResult | LedgerError]:
        """Group commit: append a batch, one object write and one ref update per journal.

        Each item succeeds or fails on its own; the result list is in input order and
        holds an `AppendResult` or the `LedgerError` that refused that item.

        `preverified=True` says the caller already ran `verify_signed` on every item
        against this journal's key resolver (the daemon does, on other threads, so the
        single writer thread does not spend its time on ed25519). The gate still runs.
        A sequence of flags says it per item (the daemon's writer verifies client-signed
        events of a batch itself and trusts the node-signed ones it was handed).
        """
        flags = [preverified] * len(items) if isinstance(preverified, bool) else list(preverified)
        if len(flags) != len(items):
            raise ValueError("one preverified flag per item")
        results: list[AppendResult | LedgerError | None] = [None] * len(items)
        by_ref: dict[RefName, list[int]] = {}
        for i, (ns, signed) in enumerate(items):
            try:
                ref = journal_ref(validate_namespace(ns), signed.event.actor)
                if not flags[i]:
                    verify_signed(signed, self.keys)
                if self.gate is not None:
                    self.gate(ns, signed)
            except LedgerError as exc:
                results[i] = exc
                continue
            by_ref.setdefault(ref, []).append(i)

        pending: dict[RefName, list[int]] = by_ref
        lost: dict[RefName, Conflict] = {}
        for attempt in range(self.retry.tries):
            if not pending:
                break
            if attempt:
                self._sleep(self.retry.delay(attempt - 1, self._random()))
            lost = self._try_commit(items, pending, results)
            for ref, exc in list(lost.items()):
                if isinstance(exc, RefLocked) and exc.stale:  # waiting will not help
                    for i in pending[ref]:
                        results[i] = exc
                    del lost[ref]
            pending = {ref: pending[ref] for ref in lost}
        for ref, indices in pending.items():
            last = lost[ref]
            error: LedgerError = last if isinstance(last, RefLocked) else Conflict(
                f"journal {ref} stayed busy; gave up after {self.retry.tries} tries")
            for i in indices:
                results[i] = error
        done = [r for r in results if r is not None]
        assert len(done) == len(items), "append_many left an item without a result"
        return done

    def _try_commit(self, items: Sequence[tuple[str, SignedEvent]],
                    pending: dict[RefName, list[int]],
                    results: list[AppendResult | LedgerError | None],
                    ) -> dict[RefName, Conflict]:
        """One attempt: lock every journal it can, build, write once, move each ref.

        Returns the refs whose lock was busy (with the error): they are tried again.
        """
        held: dict[RefName, RefLock] = {}
        busy: dict[RefName, Conflict] = {}
        try:
            for ref in pending:
                try:
                    held[ref] = self.refs.lock(ref)
                except RefLocked as exc:
                    busy[ref] = exc
                except LedgerError as exc:
                    for i in pending[ref]:
                        results[i] = exc
            plans = [self._plan(items, ref, held[ref].old, pending[ref], results) for ref in held]
            objects = [obj for plan in plans for obj in plan.objects]
            try:
                if objects:
                    self.objects.write_many(objects)
            except LedgerError as exc:
                for plan in plans:
                    for i in plan.results:
                        results[i] = exc
                return busy
            for plan in plans:
                try:
                    if plan.new_head is not None:
                        held[plan.ref].commit(plan.new_head)
                        self._indexes[plan.ref].add(plan)
                except LedgerError as exc:
                    for i in plan.results:
                        results[i] = exc
                    continue
                for i, res in plan.results.items():
                    results[i] = res
        finally:
            for lock in held.values():
                lock.release()
        return busy

    def _plan(self, items: Sequence[tuple[str, SignedEvent]], ref: RefName,
              head: ObjectId | None, indices: list[int],
              results: list[AppendResult | LedgerError | None]) -> _Plan:
        """Build the new commits of one journal on `head` (read under its lock)."""
        index = self._index(ref, head)
        plan = _Plan(ref)
        parent = head
        batch_seen: dict[str, tuple[ObjectId, str]] = {}
        for i in indices:
            ns, signed = items[i]
            ulid = signed.event.ulid
            known = index.seen.get(ulid) or batch_seen.get(ulid)
            if known is not None:
                if known[1] != signed.cid:
                    results[i] = UlidReused(
                        f"ulid {ulid} is already in {ref} as {known[1]} "
                        f"(commit {known[0]}), with different content")
                else:
                    plan.results[i] = AppendResult(ns, ref, known[0], signed.cid, ulid,
                                                   signed.event.actor, True)
                continue
            new_objects, parent = journal_commit(signed, parent)
            plan.objects.extend(new_objects)
            batch_seen[ulid] = (parent, signed.cid)
            plan.results[i] = AppendResult(ns, ref, parent, signed.cid, ulid,
                                           signed.event.actor, False)
        if parent != head:
            plan.new_head = parent
        return plan

    # -- the ULID index -----------------------------------------------------------

    def _index(self, ref: RefName, head: ObjectId | None) -> _UlidIndex:
        """The ULID index of `ref`, caught up to `head` by walking only the new commits."""
        index = self._indexes.get(ref)
        if index is None or index.head == head:
            if index is None:
                index = self._indexes[ref] = _UlidIndex()
                self._catch_up(index, head)
            return index
        self._catch_up(index, head)
        return index

    def _catch_up(self, index: _UlidIndex, head: ObjectId | None) -> None:
        found: list[tuple[str, ObjectId, str]] = []
        oid = head
        while oid is not None and oid != index.head:
            try:
                commit = self.objects.read_commit(oid)
            except NotFound:
                if not found:
                    raise
                # A compacted journal (epoch archive): the history below its oldest retained
                # commit is gone, so ULIDs are deduplicated over the retained part only.
                oid = None
                break
            trailers = commit.trailers
            found.append((trailers.get("Ulid", ""), oid, trailers.get("Event-CID", "")))
            oid = commit.parents[0] if commit.parents else None
        if oid is None and index.head is not None:
            index.seen.clear()  # the old head is not an ancestor: rebuild from scratch
        for ulid, commit_oid, cid in reversed(found):
            index.seen.setdefault(ulid, (commit_oid, cid))
        index.head = head

    # -- reading --------------------------------------------------------------------

    def head(self, ns: str, actor: str) -> ObjectId | None:
        return self.refs.get(journal_ref(ns, actor))

