"""Journal rules on the in-memory adapter: append, idempotency, group commit, retries,
reading, verification and the trust store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from ledger_core import (
    TRUST_REF,
    Event,
    GitObject,
    Journal,
    ObjectId,
    PublicKeyText,
    RefLock,
    RefName,
    RefStore,
    RetryPolicy,
    SignedEvent,
    SigningKey,
    TrustStore,
    canonical_json,
    encode_commit,
    encode_ulid,
    journal_commit,
    journal_ref,
    parse_commit,
    read_range,
    sign_event,
    verify_all,
)
from ledger_core.errors import (
    BadSignature,
    Conflict,
    InvalidName,
    InvalidNamespace,
    LedgerError,
    NotFound,
    RefLocked,
    UlidReused,
    UnknownActor,
)
from ledger_core.memory import MemoryObjectStore, MemoryRefStore

ALICE = SigningKey(bytes([1]) * 32)
BOB = SigningKey(bytes([2]) * 32)
MALLORY = SigningKey(bytes([3]) * 32)
NS = "finance"
ALICE_REF = journal_ref(NS, "user:alice")


class Keys:
    """A fixed key resolver: alice and bob are trusted, mallory is not."""

    def __init__(self) -> None:
        self.keys = {"user:alice": [ALICE.public_key], "user:bob": [BOB.public_key]}

    def keys_for(self, actor: str) -> Sequence[PublicKeyText]:
        return self.keys.get(actor, [])


def ulid(n: int) -> str:
    return encode_ulid(1_700_000_000_000 + n, n.to_bytes(10, "big"))


def signed(n: int, *, actor: str = "user:alice", key: SigningKey = ALICE,
           payload: Any = None, ulid_n: int | None = None) -> SignedEvent:
    ev = Event.from_value({
        "type": "invoice.created", "ulid": ulid(n if ulid_n is None else ulid_n), "actor": actor,
        "payload": {"n": n} if payload is None else payload, "policy_root": "0" * 40,
        "ts": "2026-01-02T03:04:05Z",
    })
    return sign_event(ev, key)


class Recorder:
    """Fake sleep and random: records every delay, returns scripted jitter."""

    def __init__(self, jitter: Sequence[float] = (0.5,)) -> None:
        self.sleeps: list[float] = []
        self.jitter = list(jitter)
        self.calls = 0

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def random(self) -> float:
        value = self.jitter[self.calls % len(self.jitter)]
        self.calls += 1
        return value


def make_journal(refs: RefStore | None = None, retry: RetryPolicy | None = None,
                 clock: Recorder | None = None, gate: Any = None,
                 ) -> tuple[Journal, MemoryObjectStore, RefStore, Recorder]:
    objects = MemoryObjectStore()
    refs = refs if refs is not None else MemoryRefStore()
    clock = clock or Recorder()
    journal = Journal(objects, refs, Keys(), sleep=clock.sleep, random=clock.random,
                      retry=retry, gate=gate)
    return journal, objects, refs, clock


def state(objects: MemoryObjectStore, refs: RefStore) -> tuple[dict[RefName, ObjectId], int]:
    return refs.list(""), len(objects)


def chain(objects: MemoryObjectStore, head: ObjectId | None) -> list[ObjectId]:
    """First-parent history from the root to `head`, asserting no merges."""
    found = []
    while head is not None:
        commit = objects.read_commit(head)
        assert len(commit.parents) <= 1
        found.append(head)
        head = commit.parents[0] if commit.parents else None
    return found[::-1]


class _CountedLock(RefLock):
    def __init__(self, owner: CountingRefs, inner: RefLock) -> None:
        super().__init__(inner.name, inner.old)
        self.owner, self.inner = owner, inner

    def commit(self, new: ObjectId) -> None:
        self.owner.commits[self.name] = self.owner.commits.get(self.name, 0) + 1
        self.inner.commit(new)

    def release(self) -> None:
        self.inner.release()


class CountingRefs(RefStore):
    """Delegates to a memory ref store and counts lock attempts and ref moves per ref."""

    def __init__(self, inner: RefStore | None = None) -> None:
        self.inner = inner or MemoryRefStore()
        self.cas_calls: dict[str, int] = {}  # lock attempts
        self.commits: dict[str, int] = {}

    def get(self, name: RefName) -> ObjectId | None:
        return self.inner.get(name)

    def lock(self, name: RefName) -> RefLock:
        self.cas_calls[name] = self.cas_calls.get(name, 0) + 1
        return _CountedLock(self, self.inner.lock(name))

    def list(self, prefix: str) -> dict[RefName, ObjectId]:
        return self.inner.list(prefix)


# -- append -----------------------------------------------------------------------------


def test_append_creates_linear_journal() -> None:
    """Each append adds one commit on top of the previous head under the actor's journal ref."""
    journal, objects, refs, _ = make_journal()
    first = journal.append(NS, signed(1))
    second = journal.append(NS, signed(2))
    assert first.ref == ALICE_REF == "refs/gatos/journal/finance/user/alice"
    assert not first.duplicate and not second.duplicate
    assert refs.get(ALICE_REF) == second.commit == journal.head(NS, "user:alice")
    assert chain(objects, second.commit) == [first.commit, second.commit]
    assert len(objects) == 8
    assert first.to_dict()["duplicate"] is False
    assert first.event_cid == signed(1).cid


def test_journal_commit_layout() -> None:
    """The commit holds event.cbor and event.sig, the type as subject and all trailers."""
    journal, objects, _, _ = make_journal()
    ev = signed(1)
    result = journal.append(NS, ev)
    commit = objects.read_commit(result.commit)
    assert commit.subject == "invoice.created"
    assert commit.trailers == {
        "Event-CID": ev.cid, "Event-Type": "invoice.created", "Actor": "user:alice",
        "Ulid": ulid(1), "Policy-Root": "0" * 40, "Sig-Alg": "ed25519", "Sig": ev.signature_text}
    assert commit.author == "user:alice <user:alice> 1767323045 +0000"
    tree = {e.name: e.oid for e in objects.read_tree(commit.tree)}
    assert objects.read_blob(tree["event.cbor"]) == ev.canonical
    assert objects.read_blob(tree["event.sig"]) == ev.signature


def test_same_event_same_commit_everywhere() -> None:
    """The same events on two fresh nodes give the same commit ids."""
    a, _, _, _ = make_journal()
    b, _, _, _ = make_journal()
    assert [a.append(NS, signed(i)).commit for i in range(3)] == [
        b.append(NS, signed(i)).commit for i in range(3)]


def test_duplicate_ulid_same_content() -> None:
    """The same event again returns the first commit with duplicate=True and writes nothing."""
    journal, objects, refs, _ = make_journal()
    first = journal.append(NS, signed(1))
    journal.append(NS, signed(2))
    before, writes = state(objects, refs), objects.write_calls
    again = journal.append(NS, signed(1))
    assert again.duplicate and again.commit == first.commit
    assert state(objects, refs) == before
    assert objects.write_calls == writes


def test_duplicate_detected_by_a_fresh_journal() -> None:
    """A new Journal instance finds an existing ULID by walking the history."""
    journal, objects, refs, clock = make_journal()
    first = journal.append(NS, signed(1))
    journal.append(NS, signed(2))
    fresh = Journal(objects, refs, Keys(), sleep=clock.sleep, random=clock.random)
    assert fresh.append(NS, signed(1)).commit == first.commit
    with pytest.raises(UlidReused):
        fresh.append(NS, signed(9, ulid_n=2))


def test_duplicate_with_another_signature_is_a_duplicate() -> None:
    """Dedupe is on the Event-CID, not on signature bytes: a second valid signature is a duplicate."""
    keys = Keys()
    extra = SigningKey(bytes([7]) * 32)
    keys.keys["user:alice"].append(extra.public_key)
    objects, refs, clock = MemoryObjectStore(), MemoryRefStore(), Recorder()
    journal = Journal(objects, refs, keys, sleep=clock.sleep, random=clock.random)
    first = journal.append(NS, signed(1))
    again = journal.append(NS, signed(1, key=extra))
    assert again.duplicate and again.commit == first.commit


def test_ulid_reused_with_other_content() -> None:
    """The same ULID with different content raises `UlidReused`; refs and objects are unchanged."""
    journal, objects, refs, _ = make_journal()
    journal.append(NS, signed(1))
    before = state(objects, refs)
    with pytest.raises(UlidReused) as info:
        journal.append(NS, signed(1, payload={"n": "other"}))
    assert info.value.code == "ULID_REUSED"
    assert state(objects, refs) == before


def test_unknown_actor() -> None:
    """An actor without a trusted key is refused with `UnknownActor`; nothing is written."""
    journal, objects, refs, _ = make_journal()
    with pytest.raises(UnknownActor):
        journal.append(NS, signed(1, actor="user:mallory", key=MALLORY))
    assert state(objects, refs) == ({}, 0)


def test_bad_signature() -> None:
    """A signature by a key the actor does not own is refused; refs and objects are unchanged."""
    journal, objects, refs, _ = make_journal()
    journal.append(NS, signed(1))
    before = state(objects, refs)
    with pytest.raises(BadSignature):
        journal.append(NS, signed(2, key=MALLORY))
    forged = SignedEvent.create(signed(3).event, signed(4).signature)
    with pytest.raises(BadSignature):
        journal.append(NS, forged)
    assert state(objects, refs) == before


def test_per_item_preverified_flags_check_only_the_unchecked_items() -> None:
    """In a batch, items flagged unverified get their signature checked (a forged one is
    refused alone); the others go through as the caller vouched for them."""
    journal, _objects, _refs, _ = make_journal()
    forged = SignedEvent.create(signed(3).event, signed(4).signature)
    results = journal.append_many([(NS, signed(1)), (NS, forged), (NS, signed(2, key=MALLORY))],
                                  preverified=[False, False, True])
    assert not isinstance(results[0], Exception)
    assert isinstance(results[1], BadSignature)
    assert not isinstance(results[2], Exception)  # vouched for by the caller: not re-checked
    with pytest.raises(ValueError, match="one preverified flag per item"):
        journal.append_many([(NS, signed(5))], preverified=[True, False])


def test_invalid_namespace() -> None:
    """A bad namespace is `INVALID_NS` and nothing is written."""
    journal, objects, refs, _ = make_journal()
    for bad in ("../x", "a:b", "x.lock", "", "a" * 65, ".x", "-x", "a b", "a."):
        with pytest.raises(InvalidNamespace):
            journal.append(bad, signed(1))
    assert state(objects, refs) == ({}, 0)


def test_gate_can_refuse() -> None:
    """An exception from the gate refuses the event; nothing is written."""
    class Denied(LedgerError):
        code = "POLICY_DENY"

    def gate(ns: str, ev: SignedEvent) -> None:
        if ev.event.payload["n"] == 2:
            raise Denied("no")

    journal, objects, refs, _ = make_journal(gate=gate)
    journal.append(NS, signed(1))
    before = state(objects, refs)
    with pytest.raises(Denied):
        journal.append(NS, signed(2))
    assert state(objects, refs) == before


# -- group commit ------------------------------------------------------------------------


def test_append_many_group_commit() -> None:
    """A batch writes objects once, moves each ref once and keeps per-item errors in order."""
    refs = CountingRefs()
    journal, objects, _, _ = make_journal(refs=refs)
    journal.append(NS, signed(1))
    writes, cas = objects.write_calls, dict(refs.commits)
    items = [
        (NS, signed(2)),
        (NS, signed(3, key=MALLORY)),
        (NS, signed(4)),
        (NS, signed(5, actor="user:mallory", key=MALLORY)),
        (NS, signed(6, actor="user:bob", key=BOB)),
        (NS, signed(1)),
        (NS, signed(2)),
        (NS, signed(7, ulid_n=4)),
        ("bad ns", signed(8)),
        (NS, signed(9)),
    ]
    results = journal.append_many(items)
    assert objects.write_calls == writes + 1
    bob_ref = journal_ref(NS, "user:bob")
    assert refs.commits[ALICE_REF] == cas[ALICE_REF] + 1
    assert refs.commits[bob_ref] == 1
    kinds = [type(r).__name__ for r in results]
    assert kinds == ["AppendResult", "BadSignature", "AppendResult", "UnknownActor",
                     "AppendResult", "AppendResult", "AppendResult", "UlidReused",
                     "InvalidNamespace", "AppendResult"]
    ok = [r for r in results if not isinstance(r, LedgerError)]
    assert [r.duplicate for r in ok] == [False, False, False, True, True, False]
    assert ok[4].commit == ok[0].commit
    alice = chain(objects, refs.get(ALICE_REF))
    assert alice[1:] == [ok[0].commit, ok[1].commit, ok[5].commit]
    assert chain(objects, refs.get(bob_ref)) == [ok[2].commit]
    assert verify_all(objects, refs, Keys()).ok


def test_append_many_all_refused_writes_nothing() -> None:
    """A batch in which every item is refused or a duplicate writes nothing and moves no ref."""
    refs = CountingRefs()
    journal, objects, _, _ = make_journal(refs=refs)
    journal.append(NS, signed(1))
    before, writes = state(objects, refs), objects.write_calls
    results = journal.append_many([(NS, signed(1)), (NS, signed(2, key=MALLORY))])
    assert [type(r).__name__ for r in results] == ["AppendResult", "BadSignature"]
    assert state(objects, refs) == before
    assert objects.write_calls == writes
    assert refs.commits[ALICE_REF] == 1


def test_append_many_empty() -> None:
    """An empty batch returns nothing and writes nothing."""
    journal, objects, _, _ = make_journal()
    assert journal.append_many([]) == []
    assert objects.write_calls == 0


# -- races and retries -------------------------------------------------------------------


class RacingRefs(CountingRefs):
    """At the first lock attempt another writer holds the lock and appends `intruder`."""

    def __init__(self, objects: MemoryObjectStore, intruder: SignedEvent) -> None:
        super().__init__()
        self.objects = objects
        self.intruder = intruder
        self.raced = False

    def lock(self, name: RefName) -> RefLock:
        if not self.raced:
            self.raced = True
            self.cas_calls[name] = self.cas_calls.get(name, 0) + 1
            head = self.inner.get(name)
            new_objects, commit = journal_commit(self.intruder, head)
            self.objects.write_many(new_objects)
            self.inner.compare_and_swap(name, head, commit)
            raise RefLocked(f"{name} is locked by the other writer")
        return super().lock(name)


def test_lost_race_is_retried_linearly() -> None:
    """A lock held by another writer is retried and the event lands on the new head; linear."""
    objects = MemoryObjectStore()
    refs = RacingRefs(objects, signed(100))
    clock = Recorder()
    journal = Journal(objects, refs, Keys(), sleep=clock.sleep, random=clock.random)
    result = journal.append(NS, signed(1))
    history = chain(objects, refs.get(ALICE_REF))
    assert len(history) == 2 and history[-1] == result.commit
    intruder = objects.read_commit(history[0]).trailers["Ulid"]
    assert intruder == ulid(100)
    assert refs.cas_calls[ALICE_REF] == 2
    assert len(clock.sleeps) == 1
    assert verify_all(objects, refs, Keys()).ok
    assert journal.append(NS, signed(100)).duplicate


def test_lost_race_to_the_same_ulid() -> None:
    """If the racing writer appended the same event, the retry reports a duplicate."""
    objects = MemoryObjectStore()
    refs = RacingRefs(objects, signed(1))
    clock = Recorder()
    journal = Journal(objects, refs, Keys(), sleep=clock.sleep, random=clock.random)
    result = journal.append(NS, signed(1))
    assert result.duplicate
    assert chain(objects, refs.get(ALICE_REF)) == [result.commit]


def test_lost_race_to_a_reused_ulid() -> None:
    """If the racing writer used our ULID with other content, the retry raises `UlidReused`."""
    objects = MemoryObjectStore()
    refs = RacingRefs(objects, signed(50, ulid_n=1))
    clock = Recorder()
    journal = Journal(objects, refs, Keys(), sleep=clock.sleep, random=clock.random)
    with pytest.raises(UlidReused):
        journal.append(NS, signed(1))
    assert len(chain(objects, refs.get(ALICE_REF))) == 1


class AlwaysConflicting(CountingRefs):
    """Every lock attempt finds the lock taken: the journal must give up after its tries."""

    def __init__(self, error: Callable[[RefName, ObjectId | None], LedgerError]) -> None:
        super().__init__()
        self.error = error

    def lock(self, name: RefName) -> RefLock:
        self.cas_calls[name] = self.cas_calls.get(name, 0) + 1
        raise self.error(name, None)


def test_endless_conflict_gives_up_with_backoff() -> None:
    """After `tries` busy locks the append fails with `LOCKED`; sleeps grow with jitter."""
    refs = AlwaysConflicting(lambda name, expected: RefLocked(f"{name} is locked"))
    clock = Recorder(jitter=[0.0, 1.0, 0.3, 0.9, 0.1, 0.6, 0.2])
    retry = RetryPolicy(tries=7, base=0.025, cap=0.5)
    journal, _, _, _ = make_journal(refs=refs, retry=retry, clock=clock)
    with pytest.raises(Conflict) as info:
        journal.append(NS, signed(1))
    assert type(info.value) is RefLocked
    assert info.value.code == "LOCKED"
    assert refs.cas_calls[ALICE_REF] == 7
    assert len(clock.sleeps) == 6
    ceilings = [min(0.5, 0.025 * 2**i) for i in range(6)]
    assert ceilings == [0.025, 0.05, 0.1, 0.2, 0.4, 0.5]
    for delay, ceiling, rnd in zip(clock.sleeps, ceilings, clock.jitter, strict=False):
        assert delay == pytest.approx(ceiling / 2 + rnd * ceiling / 2)
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(clock.sleeps)) == 6
    assert clock.sleeps[-1] > clock.sleeps[0]
    assert refs.list("") == {}


def test_backoff_without_jitter_increases() -> None:
    """With constant jitter the delays double until the cap."""
    refs = AlwaysConflicting(lambda name, expected: RefLocked(f"{name} is locked"))
    clock = Recorder(jitter=[1.0])
    journal, _, _, _ = make_journal(refs=refs, clock=clock,
                                    retry=RetryPolicy(tries=6, base=0.025, cap=0.5))
    with pytest.raises(Conflict):
        journal.append(NS, signed(1))
    assert clock.sleeps == pytest.approx([0.025, 0.05, 0.1, 0.2, 0.4])
    assert all(a < b for a, b in zip(clock.sleeps, clock.sleeps[1:], strict=False))


def test_endless_lock_reports_locked() -> None:
    """A lock that never goes away ends in `RefLocked` (`LOCKED`), not a generic conflict."""
    refs = AlwaysConflicting(lambda name, expected: RefLocked(f"{name}.lock exists"))
    journal, _, _, _ = make_journal(refs=refs, retry=RetryPolicy(tries=3))
    with pytest.raises(RefLocked) as info:
        journal.append(NS, signed(1))
    assert info.value.code == "LOCKED"
    assert refs.cas_calls[ALICE_REF] == 3


def test_stale_lock_fails_at_once() -> None:
    """A lock that looks abandoned is reported as `LOCKED` at once, without waiting."""
    refs = AlwaysConflicting(lambda name, expected: RefLocked(f"{name} is stale", stale=True))
    clock = Recorder()
    journal, _, _, _ = make_journal(refs=refs, clock=clock)
    with pytest.raises(RefLocked):
        journal.append(NS, signed(1))
    assert refs.cas_calls[ALICE_REF] == 1 and clock.sleeps == []


def test_retry_policy_delay_bounds() -> None:
    """`RetryPolicy.delay` stays within [ceiling/2, ceiling] with ceiling = min(cap, base·2^n)."""
    policy = RetryPolicy(tries=6, base=0.025, cap=0.5)
    assert policy.delay(0, 0.0) == pytest.approx(0.0125)
    assert policy.delay(0, 1.0) == pytest.approx(0.025)
    assert policy.delay(10, 1.0) == pytest.approx(0.5)
    assert policy.delay(10, 0.0) == pytest.approx(0.25)


def test_two_journals_race_on_one_ref() -> None:
    """Two Journal instances sharing stores both land their events, one after the other."""
    objects, refs, clock = MemoryObjectStore(), MemoryRefStore(), Recorder()
    a = Journal(objects, refs, Keys(), sleep=clock.sleep, random=clock.random)
    b = Journal(objects, refs, Keys(), sleep=clock.sleep, random=clock.random)
    a.append(NS, signed(1))
    b.append(NS, signed(2))
    a.append(NS, signed(3))
    assert a.append(NS, signed(2)).duplicate
    assert len(chain(objects, refs.get(ALICE_REF))) == 3


# -- reading ------------------------------------------------------------------------------


@pytest.fixture
def five() -> tuple[MemoryObjectStore, MemoryRefStore, list[ObjectId]]:
    journal, objects, refs, _ = make_journal()
    commits = [journal.append(NS, signed(i)).commit for i in range(1, 6)]
    journal.append(NS, signed(1, actor="user:bob", key=BOB))
    assert isinstance(refs, MemoryRefStore)
    return objects, refs, commits


def _ns(entries: list[Any]) -> list[int]:
    return [e.signed.event.payload["n"] for e in entries]


def test_read_range_all(five: Any) -> None:
    """Without bounds every entry is returned, oldest first, with its parent."""
    objects, _, commits = five
    entries = read_range(objects, commits[-1])
    assert _ns(entries) == [1, 2, 3, 4, 5]
    assert [e.commit for e in entries] == commits
    assert [e.parent for e in entries] == [None, *commits[:-1]]
    assert entries[0].to_dict()["ulid"] == ulid(1)
    assert read_range(objects, None) == []


def test_read_range_bounds(five: Any) -> None:
    """after / after_ulid are exclusive, until is inclusive, limit and last cut the window."""
    objects, _, c = five
    head = c[-1]
    assert _ns(read_range(objects, head, after=c[1])) == [3, 4, 5]
    assert _ns(read_range(objects, head, after_ulid=ulid(2))) == [3, 4, 5]
    assert _ns(read_range(objects, head, until=c[3])) == [1, 2, 3, 4]
    assert _ns(read_range(objects, head, after=c[0], until=c[3])) == [2, 3, 4]
    assert _ns(read_range(objects, head, limit=2)) == [1, 2]
    assert _ns(read_range(objects, head, last=2)) == [4, 5]
    assert _ns(read_range(objects, head, after=c[1], limit=2)) == [3, 4]
    assert _ns(read_range(objects, head, until=c[3], last=2)) == [3, 4]
    assert read_range(objects, head, after=head) == []
    assert read_range(objects, head, last=0) == []


def test_read_range_after_with_last(five: Any) -> None:
    """`last` counts back from the upper bound even when a lower bound is given."""
    objects, _, c = five
    assert _ns(read_range(objects, c[-1], after=c[0], last=2)) == [4, 5]
    assert _ns(read_range(objects, c[-1], after_ulid=ulid(1), last=10)) == [2, 3, 4, 5]


def test_read_range_bound_not_in_journal(five: Any) -> None:
    """A bound that is not in the journal raises `NotFound`."""
    objects, refs, c = five
    bob_head = refs.get(journal_ref(NS, "user:bob"))
    with pytest.raises(NotFound):
        read_range(objects, c[-1], after=bob_head)
    with pytest.raises(NotFound):
        read_range(objects, c[-1], after_ulid=ulid(99))
    with pytest.raises(NotFound):
        read_range(objects, c[-1], until=bob_head)
    with pytest.raises(NotFound):
        read_range(objects, c[2], after=c[3])
    with pytest.raises(NotFound):
        read_range(objects, None, after=c[0])
    with pytest.raises(NotFound):
        read_range(objects, None, until=c[0])


# -- verification -----------------------------------------------------------------------


def _journal_with(n: int) -> tuple[MemoryObjectStore, MemoryRefStore, list[ObjectId]]:
    journal, objects, refs, _ = make_journal()
    commits = [journal.append(NS, signed(i)).commit for i in range(1, n + 1)]
    journal.append(NS, signed(1, actor="user:bob", key=BOB))
    assert isinstance(refs, MemoryRefStore)
    return objects, refs, commits


def _put(objects: MemoryObjectStore, refs: MemoryRefStore, ev: SignedEvent,
         parents: Sequence[ObjectId] | None = None) -> ObjectId:
    """Write `ev` as a journal commit on alice's head (or on `parents`) and move the ref."""
    head = refs.get(ALICE_REF)
    new_objects, commit = journal_commit(ev, head)
    if parents is not None:
        parsed = parse_commit(new_objects[-1].data)
        data = encode_commit(parsed.tree, tuple(parents), parsed.author, parsed.committer,
                             parsed.message)
        new_objects[-1] = GitObject("commit", data)
        commit = new_objects[-1].oid
    objects.write_many(new_objects)
    refs.compare_and_swap(ALICE_REF, head, commit)
    return commit


def _reasons(objects: MemoryObjectStore, refs: MemoryRefStore) -> list[tuple[str | None, str]]:
    report = verify_all(objects, refs, Keys())
    assert not report.ok
    return [(p.commit, p.reason) for p in report.problems]


def test_verify_clean() -> None:
    """A journal built by `Journal` verifies without problems."""
    objects, refs, _ = _journal_with(3)
    report = verify_all(objects, refs, Keys())
    assert report.ok and report.journals == 2 and report.events == 4
    assert report.to_dict()["ok"] is True


def test_verify_tampered_trailer() -> None:
    """A commit whose trailer was edited no longer matches its event bytes."""
    objects, refs, commits = _journal_with(2)
    head = commits[-1]
    raw = objects.read(head).data
    tampered = GitObject("commit", raw.replace(b"Event-Type: invoice.created",
                                               b"Event-Type: invoice.deleted"))
    assert tampered.data != raw
    objects.write(tampered)
    refs.compare_and_swap(ALICE_REF, head, tampered.oid)
    reasons = _reasons(objects, refs)
    assert reasons == [(tampered.oid, "commit does not match its event bytes: Event-Type differ")]


def test_verify_tampered_subject_and_time() -> None:
    """A changed subject or commit time is reported too."""
    objects, refs, commits = _journal_with(1)
    raw = objects.read(commits[0]).data
    for old, new in ((b"\n\ninvoice.created\n", b"\n\ninvoice.paid\n"),
                     (b"1767323045 +0000", b"1767323046 +0000")):
        tampered = GitObject("commit", raw.replace(old, new, 1))
        objects.write(tampered)
        refs.compare_and_swap(ALICE_REF, refs.get(ALICE_REF), tampered.oid)
        (commit, reason), = _reasons(objects, refs)
        assert commit == tampered.oid and "does not match" in reason


def test_verify_merge_commit() -> None:
    """A merge commit in a journal is reported."""
    objects, refs, commits = _journal_with(2)
    merge = _put(objects, refs, signed(3), parents=[commits[1], commits[0]])
    reasons = _reasons(objects, refs)
    assert (merge, "merge commit with 2 parents") in reasons


def test_verify_signed_by_another_key() -> None:
    """An event signed by a key the actor does not own is reported."""
    objects, refs, _ = _journal_with(2)
    bad = _put(objects, refs, signed(3, key=MALLORY))
    reasons = _reasons(objects, refs)
    assert reasons == [(bad, "signature does not verify under the actor's key")]


def test_verify_event_in_another_actors_journal() -> None:
    """An event by bob (validly signed) inside alice's journal is reported."""
    objects, refs, _ = _journal_with(2)
    bad = _put(objects, refs, signed(3, actor="user:bob", key=BOB))
    reasons = _reasons(objects, refs)
    assert len(reasons) == 1
    assert reasons[0][0] == bad and "does not own this journal" in reasons[0][1]


def test_verify_duplicated_ulid() -> None:
    """A ULID that appears twice in one journal is reported."""
    objects, refs, commits = _journal_with(2)
    bad = _put(objects, refs, signed(3, ulid_n=1))
    reasons = _reasons(objects, refs)
    assert len(reasons) == 1
    assert reasons[0][0] in (bad, commits[0]) and f"ulid {ulid(1)} also in commit" in reasons[0][1]


def test_verify_untrusted_actor_and_bad_tree() -> None:
    """An unknown actor's journal and a commit with a wrong tree are reported."""
    objects, refs, _ = _journal_with(1)
    ev = signed(1, actor="user:mallory", key=MALLORY)
    new_objects, commit = journal_commit(ev, None)
    objects.write_many(new_objects)
    refs.compare_and_swap(journal_ref(NS, "user:mallory"), None, commit)
    head = refs.get(ALICE_REF)
    assert head is not None
    blob = GitObject("blob", b"x")
    empty = GitObject("tree", b"")
    ident = "user:alice <user:alice> 0 +0000"
    odd = GitObject("commit", encode_commit(empty.oid, (head,), ident, ident, "x\n"))
    objects.write_many([blob, empty, odd])
    refs.compare_and_swap(ALICE_REF, head, odd.oid)
    reasons = [r for _, r in _reasons(objects, refs)]
    assert any("no trusted public key" in r for r in reasons)
    assert any("expected exactly event.cbor and event.sig" in r for r in reasons)


# -- trust store ----------------------------------------------------------------------------


def test_trust_store_add_and_read() -> None:
    """add_key commits the key; keys_for returns it; an unknown actor has no keys."""
    objects, refs = MemoryObjectStore(), MemoryRefStore()
    trust = TrustStore(objects, refs)
    assert trust.keys_for("user:alice") == ()
    assert trust.add_key("user:alice", ALICE.public_key, by="user:alice", seconds=10)
    assert trust.keys_for("user:alice") == (ALICE.public_key,)
    assert trust.keys_for("user:bob") == ()
    head = refs.get(TRUST_REF)
    assert head is not None
    commit = objects.read_commit(head)
    assert commit.parents == ()
    assert commit.trailers == {"Actor": "user:alice", "Key": ALICE.public_key}


def test_trust_store_idempotent() -> None:
    """Adding a key that is already trusted returns False and commits nothing."""
    objects, refs = MemoryObjectStore(), MemoryRefStore()
    trust = TrustStore(objects, refs)
    trust.add_key("user:alice", ALICE.public_key, by="user:alice", seconds=10)
    before = state(objects, refs)
    assert not trust.add_key("user:alice", ALICE.public_key, by="user:alice", seconds=11)
    assert state(objects, refs) == before


def test_trust_store_several_keys_and_actors() -> None:
    """Keys accumulate per actor in order; actors are independent; a new reader sees them."""
    objects, refs = MemoryObjectStore(), MemoryRefStore()
    trust = TrustStore(objects, refs)
    trust.add_key("user:alice", ALICE.public_key, by="user:alice", seconds=1)
    trust.add_key("user:bob", BOB.public_key, by="user:alice", seconds=2)
    trust.add_key("user:alice", MALLORY.public_key, by="user:alice", seconds=3)
    reader = TrustStore(objects, refs)
    assert reader.keys_for("user:alice") == (ALICE.public_key, MALLORY.public_key)
    assert reader.keys_for("user:bob") == (BOB.public_key,)
    assert set(reader.all_keys()) == {"user:alice", "user:bob"}
    head = refs.get(TRUST_REF)
    assert head is not None
    root = objects.read_commit(head).tree
    path = ["gatos", "trust", "actors", "user", "alice.json"]
    oid = root
    for part in path:
        oid = next(e.oid for e in objects.read_tree(oid) if e.name == part)
    doc = {"actor": "user:alice", "keys": [ALICE.public_key, MALLORY.public_key]}
    assert objects.read_blob(oid) == canonical_json(doc) + b"\n"
    assert len(chain(objects, head)) == 3


def test_trust_store_rejects_bad_input() -> None:
    """A malformed key or actor is refused before anything is written."""
    objects, refs = MemoryObjectStore(), MemoryRefStore()
    trust = TrustStore(objects, refs)
    with pytest.raises(BadSignature):
        trust.add_key("user:alice", PublicKeyText("ed25519:00"), by="user:alice", seconds=1)
    with pytest.raises(InvalidName):
        trust.add_key("user:../x", ALICE.public_key, by="user:alice", seconds=1)
    assert state(objects, refs) == ({}, 0)


def test_trust_store_as_key_resolver() -> None:
    """A Journal resolving keys through the TrustStore accepts trusted actors only."""
    objects, refs, clock = MemoryObjectStore(), MemoryRefStore(), Recorder()
    trust = TrustStore(objects, refs)
    journal = Journal(objects, refs, trust, sleep=clock.sleep, random=clock.random)
    with pytest.raises(UnknownActor):
        journal.append(NS, signed(1))
    trust.add_key("user:alice", ALICE.public_key, by="user:alice", seconds=1)
    assert not journal.append(NS, signed(1)).duplicate
    assert verify_all(objects, refs, trust).ok
