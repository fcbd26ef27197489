"""The Git-backed topic log: publish (group commit, dedupe), read, heads.

`publish_many` is the bus's counterpart of `Journal.append_many`:

* every message is checked (topic name, canonical payload, the gate) before anything
  is written; a refused one gets its error and changes nothing;
* under the topic's writer exclusion (`exclusive`: the bus flock held by the daemon's
  writer process, else the topic's `-writer` ref lock) the ULID index is caught up to
  the shards' heads, every new message commit is written with one `write_many` (one
  pack), and each shard written is moved under its own Git ref lock (one ref move per
  shard written; keyless messages stick to one shard per batch);
* `plan_many` + `apply` split that in two for the daemon's writer, which trusts its
  in-memory heads between batches;
* envelopes may come signed ahead (`PublishRequest.presigned`), used when their policy
  root is the gate's;
* a ULID already published on the topic inside the dedupe window returns the first
  place (`duplicate=True`); the same ULID with another body is `ULID_REUSED`.

A `BusLog` is not thread-safe: use one per thread (the daemon runs one in its bus
writer process). Time, sleeping and signing are injected; nothing here does I/O other
than through the ports.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from ledger_core import (
    Event,
    GitObject,
    ObjectId,
    ObjectStore,
    PackedObjects,
    RefLock,
    RefName,
    RefStore,
    SignedEvent,
    ulid_ms,
    validate_actor,
)
from ledger_core._gitobj import validate_oid
from ledger_core.errors import LedgerError, RefConflict, RefLocked
from mind_bus._config import TopicConfig, shard_for_key
from mind_bus._message import (
    MessageSpec,
    Presigned,
    StoredMessage,
    body_hash,
    build_messages,
    check_commit_fields,
    check_message,
    is_summary,
    message_event,
    read_message,
)
from mind_bus._names import current_shards, shard_prefix, shard_ref, validate_topic, writer_lock_ref
from mind_bus.errors import UlidConflict

BusGate = Callable[[str, str, str], None]
"""`gate(actor, action, topic)`: returns to allow, raises (e.g. a policy denial) to refuse."""
Signer = Callable[[Event], SignedEvent]
Exclusive = Callable[[str], AbstractContextManager[object]]
"""`exclusive(topic)`: a context in which no other bus writer writes the topic."""
LOCK_TRIES = 200
_ULID, _SHARD, _POSITION, _DIGEST = 5, 8, 9, 16  # fields of a `MessageSpec`
STICKY_MAX = 256  # keyless messages of one batch written to one shard before the next


@dataclass(frozen=True)
class PublishRequest:
    topic: str
    payload: Any
    ulid: str
    publisher: str
    key: str | None = None
    headers: dict[str, str] | None = None
    presigned: Presigned | None = None
    """The envelope checked and signed ahead (`mind_bus.presign`), by a trusted caller."""


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
    trusted: bool = False  # planned by `plan_many`: `heads` is trusted, the refs are not re-read


@dataclass
class _Plan:
    parts: list[Sequence[GitObject]] = field(default_factory=list)  # each topic's objects
    moves: dict[RefName, tuple[ObjectId | None, ObjectId]] = field(default_factory=dict)
    topics: list[str] = field(default_factory=list)

    @property
    def objects(self) -> Sequence[GitObject]:
        """Every part's objects as one sequence (`PackedObjects` when every part is one)."""
        parts = [part for part in self.parts if part]
        if len(parts) == 1:
            return parts[0]
        if parts and all(isinstance(part, PackedObjects) for part in parts):
            return PackedObjects.concat(parts)  # type: ignore[arg-type]
        return [obj for part in parts for obj in part]


class MessageBuilder(Protocol):
    """Builds a batch's message commits: `mind_bus.build_messages` does it in Python; the
    daemon's bus writer injects a native one (`gatosd._bus_native`) when it is built."""

    def seed(self, actor: str) -> bytes:
        """The actor's 32-byte ed25519 seed. Raises `LedgerError` when there is none."""

    def build(self, specs: list[MessageSpec]) -> tuple[list[ObjectId], Sequence[GitObject]] | None:
        """What `build_messages(specs)` gives (the same ids and objects), or None to leave
        the batch to it."""


@dataclass
class PlannedBatch:
    """A batch planned by `BusLog.plan_many`: write it with `BusLog.apply`, then answer."""

    objects: Sequence[GitObject]
    moves: dict[RefName, tuple[ObjectId | None, ObjectId]]
    results: list[PublishResult | LedgerError]
    topics: list[str]


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
                 gate: BusGate | None = None, policy_root: Callable[[], str] | None = None,
                 exclusive: Exclusive | None = None,
                 sign_bytes: Callable[[str, bytes], bytes] | None = None,
                 builder: MessageBuilder | None = None) -> None:
        self.objects = objects
        self.refs = refs
        self._sign = sign
        # (actor, canonical envelope) -> ed25519 signature: signs envelopes that came
        # checked and encoded but unsigned (`Presigned` with an empty signature).
        self._sign_bytes = sign_bytes
        # Builds (and signs) the batch's commits; None: `build_messages`, signing with
        # `sign_bytes` as each message is placed.
        self._builder = builder
        self._clock = clock
        self._sleep = sleep
        self.config_for = config_for or (lambda _topic: TopicConfig())
        self.gate = gate
        self._policy_root = policy_root or (lambda: "0" * 40)
        self._exclusive = exclusive
        self._topics: dict[str, _TopicIndex] = {}
        self._listed: dict[str, tuple[TopicConfig, dict[int, RefName]]] = {}

    # -- publishing ------------------------------------------------------------------

    def publish(self, request: PublishRequest) -> PublishResult:
        result = self.publish_many([request])[0]
        if isinstance(result, LedgerError):
            raise result
        return result

    def publish_many(self, requests: Sequence[PublishRequest]) -> list[PublishResult | LedgerError]:
        """Group commit: one object write per topic, one ref move per shard written.

        Each request succeeds or fails on its own; results are in input order. Each
        topic is planned and written under its writer exclusion (`exclusive`); a shard
        moved by someone else meanwhile (a `git update-ref`) fails nothing: the topic's
        part is planned again.
        """
        results, by_topic, configs, checked, policy_root = self._check(requests)
        for topic, indices in by_topic.items():
            try:
                exclusion = self.exclusive(topic)
                exclusion.__enter__()
            except LedgerError as exc:
                for i in indices:
                    results[i] = exc
                continue
            try:
                for _attempt in range(3):
                    part: list[PublishResult | LedgerError | None] = [None] * len(requests)
                    plan = _Plan()
                    try:
                        self._plan_topic(topic, configs[topic], requests, indices, checked, part,
                                         policy_root, plan)
                        self.apply(plan)
                    except RefConflict:
                        continue  # someone else moved a shard: start over (the index was dropped)
                    except LedgerError as exc:
                        for i in indices:
                            results[i] = part[i] if isinstance(part[i], LedgerError) else exc
                        break
                    for i in indices:
                        results[i] = part[i]
                    break
                else:
                    for i in indices:
                        results[i] = RefLocked(f"the shards of {topic} kept moving under the bus writer; retry")
            finally:
                exclusion.__exit__(None, None, None)
        done = [r for r in results if r is not None]
        assert len(done) == len(requests)
        return done

    def plan_many(self, requests: Sequence[PublishRequest]) -> PlannedBatch:
        """Plan a batch without writing it: its objects, ref moves and results.

        For a caller that holds every topic's exclusion for as long as it uses this log
        (the daemon's bus writer keeps the bus flock for its life): the in-memory heads
        and dedupe index count the batch at once and are trusted from then on (the
        shard refs are not read again), so call `apply` right after, before planning
        another batch, and give the results out only once it returned. A failed `apply`
        drops the index of the batch's topics; a shard moved by someone else (a `git
        update-ref`) is found by `apply` (`RefConflict`).
        """
        results, by_topic, configs, checked, policy_root = self._check(requests)
        plan = _Plan()
        for topic, indices in by_topic.items():
            try:
                self._plan_topic(topic, configs[topic], requests, indices, checked, results,
                                 policy_root, plan)
                self._topics[topic].trusted = True
            except LedgerError as exc:
                self.forget(topic)
                for i in indices:
                    if results[i] is None:
                        results[i] = exc
        return PlannedBatch(plan.objects, plan.moves, [r for r in results if r is not None], plan.topics)

    def apply(self, batch: PlannedBatch | _Plan) -> None:
        """Write a planned batch: its objects (one write), then each ref move under Git's lock.

        Raises:
            RefConflict: a shard was not at the planned head (nothing of it moved; the
                topic's index is dropped).
            LedgerError: the write failed (the batch's topics' indexes are dropped).
        """
        try:
            if batch.objects:
                self.objects.write_many(batch.objects)
            if not batch.moves:
                return
            held = self._lock(list(batch.moves))
            try:
                for ref, (old, _new) in batch.moves.items():
                    if held[ref].old != old:
                        raise RefConflict(ref, old, held[ref].old)  # type: ignore[arg-type]
                for ref, (_old, new) in batch.moves.items():
                    held[ref].commit(new)
            finally:
                for lock in held.values():
                    lock.release()
        except BaseException:
            for topic in batch.topics:
                self.forget(topic)
            raise

    def _check(self, requests: Sequence[PublishRequest]) -> tuple[
            list[PublishResult | LedgerError | None], dict[str, list[int]], dict[str, TopicConfig],
            dict[int, tuple[str, int]], str]:
        """Validate and gate every request; what `_plan_topic` needs."""
        results: list[PublishResult | LedgerError | None] = [None] * len(requests)
        checked: dict[int, tuple[str, int]] = {}  # index -> (body hash, ULID milliseconds)
        by_topic: dict[str, list[int]] = {}
        configs: dict[str, TopicConfig] = {}
        actors: set[str] = set()
        for i, req in enumerate(requests):
            try:
                topic = validate_topic(req.topic)
                if req.presigned is not None:
                    digest = req.presigned.digest
                else:
                    digest = body_hash(check_message(req.payload, req.key, req.headers))
                ms = ulid_ms(req.ulid)
                if req.publisher not in actors:
                    validate_actor(req.publisher)
                    actors.add(req.publisher)
                if self.gate is not None:
                    self.gate(req.publisher, "bus.publish", topic)
                if topic not in configs:
                    configs[topic] = self.config_for(topic)
            except LedgerError as exc:
                results[i] = exc
                continue
            checked[i] = (digest, ms)
            by_topic.setdefault(topic, []).append(i)
        policy_root = validate_oid(self._policy_root()) if by_topic else ""
        return results, by_topic, configs, checked, policy_root

    def _lock(self, refs: list[str]) -> dict[str, RefLock]:
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

    def _shard_refs(self, topic: str, config: TopicConfig) -> dict[int, RefName]:
        """Every shard ref the topic has or may get under `config` (listed once per config).

        Shards beyond the current map (left by an earlier, larger map) still hold ULIDs
        the dedupe window must see. A shard outside the map is only ever created by a
        writer with a larger map, i.e. after a config change, which lists again.
        """
        cached = self._listed.get(topic)
        if cached is not None and cached[0] is config:
            return cached[1]
        refs = {shard: shard_ref(topic, shard) for shard in range(config.shards)}
        for shard, (ref, _oid) in self._current(topic).items():
            refs[shard] = ref
        self._listed[topic] = (config, refs)
        return refs

    def _current(self, topic: str) -> dict[int, tuple[RefName, ObjectId]]:
        """Each shard's current ref (its newest generation) and head."""
        return current_shards(self.refs.list(shard_prefix(topic)))

    def exclusive(self, topic: str) -> AbstractContextManager[object]:
        """The topic's writer exclusion: the injected one, else the topic's writer ref lock.

        The writer lock (`<topic>/-writer.lock`, a ref that is never written) makes the
        heads of all shards, and so the dedupe index, stable for every bus writer. The
        daemon's bus writer process injects a no-op instead: it holds an flock on
        `gatos/mbus-writer.lock` for its whole life (released by the kernel if it dies),
        which the CLI's local publishes take too; two file operations less per batch.
        """
        if self._exclusive is not None:
            return self._exclusive(topic)
        return self._writer_lock(topic)

    @contextlib.contextmanager
    def _writer_lock(self, topic: str) -> Iterator[None]:
        held = self._lock([writer_lock_ref(topic)])
        try:
            yield
        finally:
            for lock in held.values():
                lock.release()

    def _plan_topic(self, topic: str, config: TopicConfig, requests: Sequence[PublishRequest],
                    indices: list[int], checked: dict[int, tuple[str, int]],
                    results: list[PublishResult | LedgerError | None], policy_root: str,
                    plan: _Plan) -> None:
        """Place, sign and build one topic's part of a batch; the index counts it at once.

        Under the topic's exclusion the in-memory heads are the stored ones, except
        after a planned batch not yet applied (pipelining, see `plan_many`). A new head
        read from the refs (someone else wrote) is caught up first.
        """
        shard_refs = self._shard_refs(topic, config)
        index = self._topics.get(topic)
        if index is None or not index.trusted or index.heads.keys() != shard_refs.keys():
            index = self._index(topic, config, {s: self.refs.get(r) for s, r in shard_refs.items()})
        heads = dict(index.heads)
        specs: list[MessageSpec] = []
        pending: list[tuple[int, int]] = []  # (request, ULID milliseconds) per spec
        in_batch: dict[str, int] = {}  # ulid -> its spec in this batch
        repeats: list[tuple[int, int]] = []  # (request, spec): a ULID repeated in the batch
        last: dict[int, int] = {}  # shard -> the spec of its newest message in this batch
        builder = self._builder
        # Keyless messages stick to one shard per batch (Kafka's sticky partitioner): one
        # ref update per batch instead of one per shard; the next batch takes the next shard.
        sticky, sticky_count = index.next_rr % config.shards, 0
        for i in indices:
            req = requests[i]
            digest, ms = checked[i]
            k = in_batch.get(req.ulid)
            if k is not None:
                if specs[k][_DIGEST] != digest:
                    results[i] = UlidConflict(
                        f"ulid {req.ulid} is already on {topic} (shard {specs[k][_SHARD]}, position "
                        f"{specs[k][_POSITION]}) with a different message")
                else:
                    repeats.append((i, k))
                continue
            known = index.seen.get(req.ulid)
            if known is not None:
                if known.digest != digest:
                    results[i] = UlidConflict(
                        f"ulid {req.ulid} is already on {topic} (shard {known.shard}, position "
                        f"{known.position}) with a different message")
                else:
                    results[i] = PublishResult(topic, known.shard, known.position, req.ulid,
                                               known.commit, True)
                continue
            if req.key is not None:
                shard = shard_for_key(req.key, config.shards)
            else:
                if sticky_count >= STICKY_MAX:
                    sticky, sticky_count = (sticky + 1) % config.shards, 0
                shard, sticky_count = sticky, sticky_count + 1
            pre = req.presigned
            seed: bytes | None = None
            try:
                check_commit_fields(req.publisher, topic, req.ulid)
                if pre is not None and pre.policy_root == policy_root and (
                        pre.signature or builder is not None or self._sign_bytes is not None):
                    canonical, signature, cid = pre.canonical, pre.signature, pre.cid
                    if not signature:  # encoded ahead, signed here (the same bytes either way)
                        if builder is not None:  # by the builder, with the actor's seed
                            seed = builder.seed(req.publisher)
                        else:
                            signature = self._sign_bytes(req.publisher, canonical)  # type: ignore[misc]
                else:  # not signed ahead, or under another policy root than the gate's: sign here
                    signed = self._sign(message_event(
                        topic, req.payload, key=req.key, headers=req.headers, ulid=req.ulid,
                        publisher=req.publisher, policy_root=policy_root, checked=True, ms=ms))
                    canonical, signature, cid = signed.canonical, signed.signature, signed.cid
            except LedgerError as exc:  # (no key for the actor, a bad name): this message only
                results[i] = exc
                continue
            head = heads[shard]
            size = len(canonical)
            segment, start, used = head.segment, head.segment_start, head.segment_bytes
            count = head.position - start + 1 if head.oid is not None or shard in last else 0
            if count >= config.segment_max_messages or (count and used + size > config.segment_max_bytes):
                segment, start, used = segment + 1, head.position + 1, 0
            chain = last.get(shard, -1)
            in_batch[req.ulid] = last[shard] = len(specs)
            specs.append((canonical, signature, seed, cid, req.publisher, req.ulid, ms // 1000, topic, shard,
                          head.position + 1, segment, start, used + size, config.shard_map_version,
                          head.oid if chain < 0 else None, chain, digest))
            pending.append((i, ms))
            heads[shard] = _Head(None, head.position + 1, segment, start, used + size)
        built = builder.build(specs) if builder is not None and specs else None
        oids, objects = built if built is not None else build_messages(specs)
        for shard, k in last.items():
            heads[shard].oid = oids[k]
        for (i, ms), spec, oid in zip(pending, specs, oids, strict=True):
            index.seen[spec[_ULID]] = _Seen(spec[_SHARD], spec[_POSITION], spec[_DIGEST], ms, oid)
            results[i] = PublishResult(topic, spec[_SHARD], spec[_POSITION], spec[_ULID], oid, False)
        for i, k in repeats:
            spec = specs[k]
            results[i] = PublishResult(topic, spec[_SHARD], spec[_POSITION], spec[_ULID], oids[k], True)
        for shard, head in heads.items():
            if head.oid != index.heads[shard].oid:
                plan.moves[shard_refs[shard]] = (index.heads[shard].oid, head.oid)  # type: ignore[assignment]
        plan.parts.append(objects)
        plan.topics.append(topic)
        index.heads = heads
        if sticky_count:
            index.next_rr = sticky + 1

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
        return {shard: _head_from_commit(self.objects, oid).position
                for shard, (_ref, oid) in self._current(topic).items()}

    def read(self, topic: str, shard: int, start: int = 1, end: int | None = None
             ) -> list[StoredMessage]:
        """Messages of one shard with `start <= position <= end`, oldest first.

        Pruned positions are skipped: reading starts at the first retained message.
        """
        oid = self._current(topic).get(shard, (None, None))[1]
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
        oid = self._current(topic).get(shard, (None, None))[1]
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
        for _ref, oid in self._current(topic).values():
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
        self._listed.pop(topic, None)


__all__ = ["BusGate", "BusLog", "Exclusive", "MessageBuilder", "PlannedBatch", "PublishRequest",
           "PublishResult", "Signer"]
