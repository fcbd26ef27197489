"""Reading journal ranges: by commit, by ULID, by count.

A journal is a first-parent chain, so a range is a walk back from its newest commit
to its oldest (exclusive) boundary; only the commits in range are read, and event
bytes are decoded only for the entries returned.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger_core._envelope import SignedEvent
from ledger_core._gitobj import Commit, ObjectId
from ledger_core._journal_commit import EVENT_FILE, SIG_FILE
from ledger_core._ports import ObjectStore
from ledger_core.errors import CorruptObject, NotFound


@dataclass(frozen=True)
class JournalEntry:
    """One event of a journal with the commit that holds it."""

    commit: ObjectId
    parent: ObjectId | None
    signed: SignedEvent

    def to_dict(self) -> dict[str, object]:
        ev = self.signed.event
        out = {"commit": self.commit, "event_cid": self.signed.cid, "sig": self.signed.signature_text}
        out.update(ev.to_value())
        return out


def event_blobs(objects: ObjectStore, commit: Commit) -> tuple[bytes, bytes]:
    """`event.cbor` and `event.sig` of a journal commit; `CorruptObject` if the tree is wrong."""
    entries = {e.name: e for e in objects.read_tree(commit.tree)}
    if set(entries) != {EVENT_FILE, SIG_FILE}:
        raise CorruptObject(
            f"journal tree holds {sorted(entries)}, expected exactly {EVENT_FILE} and {SIG_FILE}")
    return (objects.read_blob(entries[EVENT_FILE].oid), objects.read_blob(entries[SIG_FILE].oid))


def read_entry(objects: ObjectStore, oid: ObjectId, commit: Commit | None = None) -> JournalEntry:
    commit = commit or objects.read_commit(oid)
    canonical, sig = event_blobs(objects, commit)
    return JournalEntry(oid, commit.parents[0] if commit.parents else None,
                        SignedEvent.from_bytes(canonical, sig))


def read_range(objects: ObjectStore, head: ObjectId | None, *,
               after: ObjectId | None = None, after_ulid: str | None = None,
               until: ObjectId | None = None, limit: int | None = None,
               last: int | None = None) -> list[JournalEntry]:
    """Entries of the journal ending at `head`, oldest first.

    Args:
        after: exclusive lower bound (a commit of the journal).
        after_ulid: exclusive lower bound given as the ULID of an event in the journal.
        until: inclusive upper bound (default: `head`).
        limit: at most this many entries, counted from the lower bound.
        last: at most this many entries, counted back from the upper bound.

    Raises:
        NotFound: a bound is not in this journal.
    """
    start = until or head
    if until is not None and until != head:
        # `until` must be on the chain; walking from head proves it.
        _walk(objects, head, stop=until, stop_ulid=None, need_stop=True)
    chain = _walk(objects, start, stop=after, stop_ulid=after_ulid,
                  need_stop=after is not None or after_ulid is not None,
                  max_count=last)
    if last is not None:
        chain = chain[:last]  # the walk cannot stop early when it must reach a lower bound
    chain.reverse()
    if limit is not None:
        chain = chain[:limit]
    return [read_entry(objects, oid, commit) for oid, commit in chain]


def _walk(objects: ObjectStore, start: ObjectId | None, *, stop: ObjectId | None,
          stop_ulid: str | None, need_stop: bool, max_count: int | None = None,
          ) -> list[tuple[ObjectId, Commit]]:
    found: list[tuple[ObjectId, Commit]] = []
    oid = start
    while oid is not None:
        if oid == stop:
            return found
        try:
            commit = objects.read_commit(oid)
        except NotFound:
            if not found or need_stop:
                raise
            return found  # the oldest retained commit of a compacted journal (epochs)
        if stop_ulid is not None and commit.trailers.get("Ulid") == stop_ulid:
            return found
        if max_count is not None and len(found) >= max_count and not need_stop:
            return found
        found.append((oid, commit))
        oid = commit.parents[0] if commit.parents else None
    if need_stop:
        bound = stop or stop_ulid
        raise NotFound(f"{bound} is not in this journal")
    return found
