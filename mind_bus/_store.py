"""The Git-backed topic log: publish (group commit, dedupe), read, heads.

`publish_many` is the bus's counterpart of `Journal.append_many`:

* every message is checked (topic name, canonical payload, the gate) before anything
  is written; a refused one gets its error and changes nothing;
* the shard refs of each topic in the batch are locked, the ULID index is caught up
  to their heads, and every new message commit of the batch is written with one
  `write_many` (one pack) and one ref move per shard;
* a ULID already published on the topic inside the dedupe window returns the first
  place (`duplicate=True`); the same ULID with another body is `ULID_REUSED`.

A `BusLog` is not thread-safe: use one per thread (the daemon runs one in its bus
writer process). Time, sleeping and signing are injected; nothing here does I/O other
than through the ports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger_core import Event, GitObject, ObjectId, ObjectStore, RefLock, RefStore, SignedEvent, ulid_ms
from ledger_core.errors import LedgerError, RefLocked
from mind_bus._config import TopicConfig, shard_for_key
from mind_bus._message import (
    Place,
    StoredMessage,
    body_hash,
    check_message,
    is_summary,
    message_commit,
    message_event,
    read_message,
)
from mind_bus._names import parse_shard_ref, shard_prefix, shard_ref, validate_topic
from mind_bus.errors import UlidConflict

BusGate = Callable[[str, str, str], None]
"""`gate(actor, action, topic)`: returns to allow, raises (e.g. a policy denial) to refuse."""
Signer = Callable[[Event], SignedEvent]
LOCK_TRIES = 200


@dataclass(frozen=True)
class PublishRequest:
    topic: str
    payload: Any
    ulid: str
    publisher: str
    key: str | None = None
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class PublishResult:
    """Where a message landed; `duplicate` when its ULID was already on the topic."""

    topic: str
    shard: int
    position: int
    ulid: str
    commit: ObjectId
    duplicate: bool

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "shard": self.shard, "position": self.position,
                "ulid": self.ulid, "commit": self.commit, "duplicate": self.duplicate}


@dataclass
class _Head:
    """What the writer needs of a shard's head to place the next message."""

    oid: ObjectId | None = None
    position: int = 0
    segment: int = 0
    segment_start: int = 1
    segment_bytes: int = 0


@dataclass
class _Seen:
    shard: int
    position: int
    digest: str
    ms: int
    commit: ObjectId


@dataclass
class _TopicIndex:
    heads: dict[int, _Head] = field(default_factory=dict)
    seen: dict[str, _Seen] = field(default_factory=dict)
    next_rr: int = 0
    kept: int = 1024


def _head_from_commit(objects: ObjectStore, oid: ObjectId | None) -> _Head:
    if oid is None:
        return _Head()
    commit = objects.read_commit(oid)
    t = commit.trailers
    if is_summary(commit):  # a pruned shard whose retained part is empty
        last = int(t["Last-Position"])
        return _Head(oid, last, int(t["Segment"]) + 1, last + 1, 0)
    return _Head(oid, int(t["Position"]), int(t["Segment"]), int(t["Segment-Start"]),
                 int(t["Segment-Bytes"]))


class BusLog:
    """Topics as shard refs of message commits, through an `ObjectStore` and a `RefStore`."""

    def __init__(self, objects: ObjectStore, refs: RefStore, *, sign: Signer,
                 clock: Callable[[], float], sleep: Callable[[float], None],
                 config_for: Callable[[str], TopicConfig] | None = None,
                 gate: BusGate | None = None, policy_root: Callable[[], str] | None = None) -> None:
        self.objects = objects
        self.refs = refs
        self._sign = sign
        self._clock = clock
        self._sleep = sleep
        self.config_for = config_for or (lambda _topic: TopicConfig())
        self.gate = gate
        self._policy_root = policy_root or (lambda: "0" * 40)
        self._topics: dict[str, _TopicIndex] = {}

    # -- publishing ------------------------------------------------------------------

    def publish(self, request: PublishRequest) -> PublishResult:
        result = self.publish_many([request])[0]
        if isinstance(result, LedgerError):
            raise result
        return result

    def publish_many(self, requests: Sequence[PublishRequest]) -> list[PublishResult | LedgerError]:
        """Group commit: one object write for the batch, one ref move per shard touched.

        Each request succeeds or fails on its own; results are in input order.
        """
        results: list[PublishResult | LedgerError | None] = [None] * len(requests)
        digests: dict[int, str] = {}
        by_topic: dict[str, list[int]] = {}
        configs: dict[str, TopicConfig] = {}
        for i, req in enumerate(requests):
            try:
                topic = validate_topic(req.topic)
                digests[i] = body_hash(check_message(req.payload, req.key, req.headers))
                ulid_ms(req.ulid)
                if self.gate is not None:
                    self.gate(req.publisher, "bus.publish", topic)
                if topic not in configs:
                    configs[topic] = self.config_for(topic)
            except LedgerError as exc:
                results[i] = exc
                continue
            by_topic.setdefault(topic, []).append(i)
        for topic, indices in by_topic.items():
            self._publish_topic(topic, configs[topic], requests, indices, digests, results)
        done = [r for r in results if r is not None]
        assert len(done) == len(requests)
        return done

    def _lock_all(self, refs: list[str]) -> dict[str, RefLock]:
        """Lock every ref (in name order, so two writers cannot deadlock), retrying busy ones."""
        for attempt in range(LOCK_TRIES):
            held: dict[str, RefLock] = {}
            try:
                for ref in sorted(refs):
                    held[ref] = self.refs.lock(ref)  # type: ignore[arg-type]
                return held
            except RefLocked as exc:
                for lock in held.values():
                    lock.release()
                if exc.stale or attempt == LOCK_TRIES - 1:
                    raise
                self._sleep(min(0.05, 0.002 * 2 ** min(attempt, 5)))
            except BaseException:
                for lock in held.values():
                    lock.release()
                raise
        raise AssertionError("unreachable")

    def _publish_topic(self, topic: str, config: TopicConfig, requests: Sequence[PublishRequest],
                       indices: list[int], digests: dict[int, str],
                       results: list[PublishResult | LedgerError | None]) -> None:
        shard_refs = {shard: shard_ref(topic, shard) for shard in range(config.shards)}
        # Shards beyond the current map (left by an earlier, larger map) still hold
        # ULIDs the dedupe window must see.
        for ref in self.refs.list(shard_prefix(topic)):
            shard_refs.setdefault(parse_shard_ref(ref)[1], ref)
        try:
            held = self._lock_all(list(shard_refs.values()))
        except LedgerError as exc:
            for i in indices:
                results[i] = exc
            return
        try:
            index = self._index(topic, config, {s: held[r].old for s, r in shard_refs.items()})
            heads = {s: _Head(**vars(h)) for s, h in index.heads.items()}
            objects: list[GitObject] = []
            batch_seen: dict[str, _Seen] = {}
            planned: dict[int, PublishResult] = {}
            rr = index.next_rr
            policy_root = self._policy_root()
            for i in indices:
                req = requests[i]
                known = batch_seen.get(req.ulid) or index.seen.get(req.ulid)
                if known is not None:
                    if known.digest != digests[i]:
                        results[i] = UlidConflict(
                            f"ulid {req.ulid} is already on {topic} (shard {known.shard}, position "
                            f"{known.position}) with a different message")
                    else:
                        planned[i] = PublishResult(topic, known.shard, known.position, req.ulid,
                                                   known.commit, True)
                    continue
                if req.key is not None:
                    shard = shard_for_key(req.key, config.shards)
                else:
                    shard, rr = rr % config.shards, rr + 1
                try:
                    signed = self._sign(message_event(
                        topic, req.payload, key=req.key, headers=req.headers, ulid=req.ulid,
                        publisher=req.publisher, policy_root=policy_root))
                except LedgerError as exc:
                    results[i] = exc
                    continue
                head = heads[shard]
                size = len(signed.canonical)
                segment, start, used = head.segment, head.segment_start, head.segment_bytes
                count = head.position - start + 1 if head.oid is not None else 0
                if count >= config.segment_max_messages or (count and used + size > config.segment_max_bytes):
                    segment, start, used = segment + 1, head.position + 1, 0
                place = Place(topic, shard, head.position + 1, segment, config.shard_map_version,
                              start, used + size)
                new, oid = message_commit(signed, place, head.oid, digests[i])
                objects.extend(new)
                heads[shard] = _Head(oid, place.position, segment, start, used + size)
                batch_seen[req.ulid] = _Seen(shard, place.position, digests[i], ulid_ms(req.ulid), oid)
                planned[i] = PublishResult(topic, shard, place.position, req.ulid, oid, False)
            if objects:
                self.objects.write_many(objects)
            for shard, head in heads.items():
                if head.oid != index.heads[shard].oid:
                    held[shard_refs[shard]].commit(head.oid)  # type: ignore[arg-type]
                    index.heads[shard] = head
            index.seen.update(batch_seen)
            index.next_rr = rr
            for i, res in planned.items():
                results[i] = res
        except LedgerError as exc:
            for i in indices:
                if results[i] is None:
                    results[i] = exc
        finally:
            for lock in held.values():
                lock.release()

    # -- the ULID index ------------------------------------------------------------------

    def _index(self, topic: str, config: TopicConfig, heads: dict[int, ObjectId | None]) -> _TopicIndex:
        """The topic's index, caught up to `heads` (read under the shard locks)."""
        index = self._topics.setdefault(topic, _TopicIndex())
        cutoff = int(self._clock() * 1000) - config.dedupe_window_seconds * 1000
        for shard, oid in heads.items():
            cached = index.heads.get(shard)
            if cached is not None and cached.oid == oid:
                continue
            stop = cached.oid if cached is not None else None
            walked, found = self._walk_back(oid, stop, cutoff)
            if cached is not None and stop is not None and not found:
                # History was rewritten (pruned elsewhere): forget this shard's ULIDs.
                index.seen = {u: s for u, s in index.seen.items() if s.shard != shard}
            for seen_ulid, seen in walked:
                index.seen[seen_ulid] = seen
            index.heads[shard] = _head_from_commit(self.objects, oid)
        if len(index.seen) > 2 * index.kept:  # amortized: the window is swept when it doubled
            index.seen = {u: s for u, s in index.seen.items() if s.ms >= cutoff}
            index.kept = max(1024, len(index.seen))
        return index

    def _walk_back(self, oid: ObjectId | None, stop: ObjectId | None, cutoff: int
                   ) -> tuple[list[tuple[str, _Seen]], bool]:
        """ULIDs from `oid` back to `stop` (or to the window's start); oldest first."""
        found: list[tuple[str, _Seen]] = []
        while oid is not None and oid != stop:
            commit = self.objects.read_commit(oid)
            if is_summary(commit):
                break
            t = commit.trailers
            ms = ulid_ms(t["Ulid"])
            if stop is None and ms < cutoff:
                break
            found.append((t["Ulid"], _Seen(int(t["Shard"]), int(t["Position"]), t["Body-Hash"], ms, oid)))
            oid = commit.parents[0] if commit.parents else None
        found.reverse()
        return found, oid == stop

    # -- reading -------------------------------------------------------------------------

    def shard_heads(self, topic: str) -> dict[int, int]:
        """shard → position of its newest message (0 when empty)."""
        out: dict[int, int] = {}
        for ref, oid in self.refs.list(shard_prefix(topic)).items():
            out[parse_shard_ref(ref)[1]] = _head_from_commit(self.objects, oid).position
        return out

    def read(self, topic: str, shard: int, start: int = 1, end: int | None = None
             ) -> list[StoredMessage]:
        """Messages of one shard with `start <= position <= end`, oldest first.

        Pruned positions are skipped: reading starts at the first retained message.
        """
        oid = self.refs.get(shard_ref(topic, shard))
        commits = []
        while oid is not None:
            commit = self.objects.read_commit(oid)
            if is_summary(commit):
                break
            position = int(commit.trailers["Position"])
            if position < start:
                break
            if end is None or position <= end:
                commits.append((oid, commit))
            oid = commit.parents[0] if commit.parents else None
        return [read_message(self.objects, c_oid, c) for c_oid, c in reversed(commits)]

    def first_at_or_after(self, topic: str, shard: int, ulid: str) -> int:
        """The position of the shard's first message whose ULID sorts at or after `ulid`."""
        oid = self.refs.get(shard_ref(topic, shard))
        position = _head_from_commit(self.objects, oid).position + 1
        while oid is not None:
            commit = self.objects.read_commit(oid)
            if is_summary(commit) or commit.trailers["Ulid"] < ulid:
                break
            position = int(commit.trailers["Position"])
            oid = commit.parents[0] if commit.parents else None
        return position

    def find(self, topic: str, ulid: str) -> StoredMessage | None:
        """The message with this ULID (newest first search over every shard), or None."""
        for ref, oid in self.refs.list(shard_prefix(topic)).items():
            del ref
            cur: ObjectId | None = oid
            while cur is not None:
                commit = self.objects.read_commit(cur)
                if is_summary(commit):
                    break
                if commit.trailers.get("Ulid") == ulid:
                    return read_message(self.objects, cur, commit)
                cur = commit.parents[0] if commit.parents else None
        return None

    def forget(self, topic: str) -> None:
        """Drop the cached index of a topic (after this log rewrote it, e.g. pruning)."""
        self._topics.pop(topic, None)


__all__ = ["BusGate", "BusLog", "PublishRequest", "PublishResult", "Signer"]
