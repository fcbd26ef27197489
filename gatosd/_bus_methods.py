"""Bus methods of the daemon: bus.publish, bus.subscribe, bus.ack, bus.nack, bus.commit,
bus.unsubscribe, bus.prune.

Writes (messages, acks, dead letters) go through the bus writer process in batches
(`_bus_writer`). Delivery lives here, on the event loop: per topic the newest
position of every shard and a cache of recent messages (filled by publishes, and by
reads from Git on a reader thread for older positions); per consumer group one
`mind_bus.GroupState` shared by its members. Each subscription is a streaming request
whose task loops: expire overdue deliveries, take the next message for this member
(bounded by `max_in_flight`), push it as a `bus.message` frame, or wait for a publish,
an ack or the next ack deadline. A subscription ends with `bus.unsubscribe`, when its
client goes away (its pending messages go to the other members at once) or when the
daemon stops; acks are durable (their ack-ref commit is written) before `bus.ack`
answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gatosd._bus_native import native_envelope
from gatosd._bus_writer import BusWriter, ConfigLoader, error_of
from gatosd._clock import new_ulid
from gatosd._group_commit import GroupCommitter
from gatosd._registry import Context, Registry
from gatosd._server import Server
from gatosd.errors import bad_frame
from gatosd.node import Node
from ledger_core import blake3_hex, encode_ulid, normalize_actor, ulid_ms, validate_namespace, validate_ulid
from ledger_core.errors import NotFound
from mind_bus import (
    AckLog,
    BusLog,
    GroupState,
    Pending,
    UnknownGroup,
    dlq_topic,
    parse_from,
    presign,
    start_positions,
    validate_group,
    validate_topic,
)

T = TypeVar("T")
CACHE_PER_SHARD = 4096
READ_AHEAD = 256
POLL = 0.2  # how often an idle subscription looks for a closed client or a stopping daemon


@dataclass
class _Group:
    state: GroupState
    stored: int = 0
    flushing: asyncio.Future[None] | None = None
    members: int = 0


@dataclass
class _Topic:
    heads: dict[int, int]
    cache: dict[int, OrderedDict[int, dict[str, Any]]] = field(default_factory=dict)
    signal: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.signal.set()
        self.signal = asyncio.Event()

    def remember(self, shard: int, position: int, message: dict[str, Any]) -> None:
        cache = self.cache.setdefault(shard, OrderedDict())
        cache[position] = message
        while len(cache) > CACHE_PER_SHARD:
            cache.popitem(last=False)


def _opt_int(frame: dict[str, Any], key: str, default: int, low: int = 1) -> int:
    value = frame.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise bad_frame(f"`{key}` must be an integer >= {low}")
    return value


def _opt_str(frame: dict[str, Any], key: str) -> str | None:
    value = frame.get(key)
    if value is not None and not isinstance(value, str):
        raise bad_frame(f"`{key}` must be a string")
    return value


def derived_ulid(ulid: str, salt: str) -> str:
    """A ULID at the same millisecond as `ulid`, fixed by (ulid, salt): retries dedupe."""
    return encode_ulid(ulid_ms(ulid), bytes.fromhex(blake3_hex(f"{salt}\0{ulid}".encode())[:20]))


class BusMethods:
    """Binds `mind_bus` to the protocol."""

    def __init__(self, repo_path: str, front: Node, committer: GroupCommitter, server: Server, *,
                 durable: bool = False) -> None:
        self.repo_path = repo_path
        self.front = front
        self.committer = committer
        self.server = server
        self.writer = BusWriter(front.repo.git_dir, durable=durable)
        self._envelope = native_envelope()  # None: presign encodes in Python
        self.topics: dict[str, _Topic] = {}
        self.groups: dict[tuple[str, str], _Group] = {}
        self.subscriptions: dict[tuple[int, Any], asyncio.Event] = {}
        self._local = threading.local()
        self._readers = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gatos-bus-reader")
        self._topic_locks: dict[str, asyncio.Lock] = {}
        self.configs = ConfigLoader(front.repo.repo.workdir or front.repo.git_dir)

    def register(self, registry: Registry) -> None:
        registry.add("bus.publish", self.publish)
        registry.add("bus.subscribe", self.subscribe, stream=True)
        registry.add("bus.unsubscribe", self.unsubscribe)
        registry.add("bus.ack", self.ack)
        registry.add("bus.nack", self.nack)
        registry.add("bus.commit", self.commit)
        registry.add("bus.prune", self.prune)

    async def close(self) -> None:
        await self.writer.close()
        self._readers.shutdown(wait=True)

    # -- helpers --------------------------------------------------------------------------

    async def _read(self, fn: Callable[[BusLog], T]) -> T:
        def run() -> T:
            log = getattr(self._local, "log", None)
            if log is None:
                node = Node.open(self.repo_path)
                log = self._local.log = BusLog(node.repo.objects, node.repo.refs, sign=node.sign,
                                               clock=time.time, sleep=time.sleep)
            return fn(log)

        return await asyncio.get_running_loop().run_in_executor(self._readers, run)

    async def _topic(self, topic: str) -> _Topic:
        hub = self.topics.get(topic)
        if hub is not None:
            return hub
        lock = self._topic_locks.setdefault(topic, asyncio.Lock())
        async with lock:
            if topic not in self.topics:
                config = self.configs(topic)
                heads = await self._read(lambda log: log.shard_heads(topic))
                for shard in range(config.shards):
                    heads.setdefault(shard, 0)
                self.topics[topic] = _Topic(heads)
        return self.topics[topic]

    def _actor(self, frame: dict[str, Any]) -> str:
        actor = frame.get("actor")
        return normalize_actor(actor) if actor is not None else self.front.default_actor

    async def announce(self, topic: str, payload: Any, *, actor: str) -> dict[str, Any]:
        """Publish a message on behalf of another plane (e.g. `gatos.jobs.pending`), through the
        same writer and delivery path as `bus.publish`, with a fresh ULID and no key."""
        ulid, ms = new_ulid.new()
        return await self._publish(topic, payload, key=None, headers=None, ulid=ulid, actor=actor, ms=ms)

    async def _publish(self, topic: str, payload: Any, *, key: str | None, headers: Any,
                       ulid: str, actor: str, ms: int | None = None) -> dict[str, Any]:
        # The envelope is checked and encoded here, on the loop (about 15 us), and signed
        # (ed25519, about 22 us) in the bus writer process: on two cores the daemon's
        # loop, which also reads every request and writes every reply, was the busier
        # side (bench/RESULTS.md, Bus). It names the policy root the writer last gated
        # under (no ref read per message); the writer encodes and signs again if its
        # root moved meanwhile.
        front = self.front
        front.signing_key(actor)  # an actor without a node-held key is refused here, not in a batch
        pre = presign(front.signing_key, front.max_event_bytes, topic, payload, key=key,
                      headers=headers, ulid=ulid, publisher=actor,
                      policy_root=self.writer.policy_root or front.policy_root, ms=ms, sign=False,
                      envelope=self._envelope)
        raw = await self.writer.submit(("pub", topic, payload, key, headers, ulid, actor, pre))
        error = error_of(raw)
        if error is not None:
            raise error
        hub = self.topics.get(topic) or await self._topic(topic)
        shard, position = raw["shard"], raw["position"]
        if not raw["duplicate"]:
            hub.remember(shard, position, {"topic": topic, "shard": shard, "position": position,
                                           "ulid": ulid, "key": key, "headers": headers or {},
                                           "publisher": actor, "commit": raw["commit"],
                                           "payload": payload})
        if position > hub.heads.get(shard, 0):
            hub.heads[shard] = position
            hub.notify()
        return raw  # type: ignore[no-any-return]  # a fresh dict (the writer's answer)

    async def _message(self, topic: str, hub: _Topic, shard: int, position: int
                       ) -> tuple[int, dict[str, Any]] | None:
        """The message at (or, when pruned, the first one after) a position; None if none."""
        cached = hub.cache.get(shard, {}).get(position)
        if cached is not None:
            return position, cached
        end = min(hub.heads.get(shard, 0), position + READ_AHEAD - 1)
        found = await self._read(lambda log: log.read(topic, shard, position, end))
        for msg in found:
            hub.remember(shard, msg.position, msg.frame())
        if not found:
            return None
        return found[0].position, hub.cache[shard][found[0].position]

    async def _group(self, topic: str, group: str, *, create: tuple[Any, ...] | None = None
                     ) -> _Group:
        """A group's runtime: in memory, loaded from its ack ref, or created (`create`)."""
        rt = self.groups.get((topic, group))
        if rt is not None:
            return rt
        stored = await self._read(lambda log: AckLog(log.objects, log.refs, clock=time.time).load(topic, group))
        rt = self.groups.get((topic, group))  # another request may have made it meanwhile
        if rt is not None:
            return rt
        if stored is None and create is None:
            raise UnknownGroup(f"topic {topic} has no consumer group {group!r} (subscribe with it first)")
        ack_wait, max_deliver, spec = create or (30.0, 5, ("earliest", 0))
        state = GroupState(topic, group, clock=time.monotonic, ack_wait=ack_wait, max_deliver=max_deliver)
        if stored is not None:
            state.load(stored)
        else:
            hub = await self._topic(topic)
            starts = await self._read(lambda log: start_positions(
                spec, hub.heads, lambda s, u: log.first_at_or_after(topic, s, u)))
            state.start_at(starts)
        rt = self.groups[(topic, group)] = _Group(state)
        return rt

    async def _persist(self, topic: str, group: str, rt: _Group) -> None:
        """Write the group's offsets (batched with others) until they are stored."""
        while rt.stored < rt.state.version:
            if rt.flushing is not None:
                await asyncio.shield(rt.flushing)
                continue
            version, offsets = rt.state.version, rt.state.offsets()
            rt.flushing = asyncio.get_running_loop().create_future()
            try:
                raw = await self.writer.submit(("ack", topic, group, offsets))
                error = error_of(raw)
                if error is not None:
                    raise error
                rt.stored = max(rt.stored, version)
            finally:
                rt.flushing.set_result(None)
                rt.flushing = None

    async def _dead_letter(self, topic: str, group: str, item: Pending) -> None:
        hub = await self._topic(topic)
        found = await self._message(topic, hub, item.shard, item.position)
        message = found[1] if found else {}
        ulid = item.ulid or message.get("ulid") or new_ulid()
        await self._publish(dlq_topic(topic), {
            "topic": topic, "group": group, "shard": item.shard, "position": item.position,
            "ulid": ulid, "deliveries": item.deliveries, "payload": message.get("payload")},
            key=None, headers={"reason": "max_deliver"}, ulid=derived_ulid(ulid, f"dlq/{group}"),
            actor=self.front.default_actor)

    # -- methods ---------------------------------------------------------------------------

    async def publish(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """Publish one message; answered after its ref update (`duplicate` for a known ULID)."""
        topic = validate_topic(frame.get("topic"))
        if "payload" not in frame:
            raise bad_frame("`payload` is required")
        ulid = frame.get("ulid")
        ms = None
        if ulid is None:
            ulid, ms = new_ulid.new()
        else:
            ulid = validate_ulid(ulid)
        return await self._publish(topic, frame["payload"], key=_opt_str(frame, "key"),
                                   headers=frame.get("headers"), ulid=ulid, actor=self._actor(frame),
                                   ms=ms)

    async def subscribe(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """Stream `bus.message` frames from `from` on (a group shares them between members)."""
        topic = validate_topic(frame.get("topic"))
        group = frame.get("group")
        group = validate_group(group) if group is not None else None
        spec = parse_from(frame.get("from"))
        ack_wait = _opt_int(frame, "ack_wait_ms", 30_000) / 1000
        max_in_flight = _opt_int(frame, "max_in_flight", 256)
        max_deliver = _opt_int(frame, "max_deliver", 5)
        self.front.policy.check_now(self._actor(frame), "bus.subscribe", topic)
        hub = await self._topic(topic)
        if group is not None:
            rt = await self._group(topic, group, create=(ack_wait, max_deliver, spec))
            rt.state.ack_wait, rt.state.max_deliver = ack_wait, max_deliver
            state = rt.state
        else:
            rt = None
            state = GroupState(topic, "-", clock=time.monotonic, ack_none=True)
            state.start_at(await self._read(lambda log: start_positions(
                spec, hub.heads, lambda s, u: log.first_at_or_after(topic, s, u))))
        await ctx.ack()
        conn = getattr(ctx, "_conn", None)
        key = (id(conn), ctx.request_id)
        stop = self.subscriptions[key] = asyncio.Event()
        member = object()
        delivered = 0
        if rt is not None:
            rt.members += 1
        try:
            while not stop.is_set() and not self.server.stopping and not self._gone(conn):
                if rt is not None:
                    for item in state.expire():
                        await self._dead_letter(topic, group or "", item)
                    if state.version > rt.stored:
                        await self._persist(topic, group or "", rt)
                take = state.take(member, hub.heads, max_in_flight)
                if take is None:
                    deadline = state.next_deadline()
                    wait = POLL if deadline is None else max(0.0, min(POLL, deadline - time.monotonic()))
                    signal = hub.signal
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(signal.wait(), wait)
                    continue
                found = await self._message(topic, hub, take.shard, take.position)
                if found is None or found[0] != take.position:
                    state.skip(take.shard, take.position)  # pruned: nothing to deliver there
                    continue
                message = found[1]
                if rt is not None and take.delivery > 1 and state.version > rt.stored:
                    await self._persist(topic, group or "", rt)  # its count, before it goes out
                state.bind(take.shard, take.position, message["ulid"])
                out = {"type": "bus.message", **message, "delivery": take.delivery}
                if group is not None:
                    out["group"] = group
                await ctx.send(out)
                delivered += 1
        finally:
            self.subscriptions.pop(key, None)
            if rt is not None:
                rt.members -= 1
                state.member_left(member)
                hub.notify()
        return {"topic": topic, "group": group, "delivered": delivered, "unsubscribed": True}

    @staticmethod
    def _gone(conn: Any) -> bool:
        if conn is None:
            return False
        return bool(conn.closing or conn.reader.at_eof())

    async def unsubscribe(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """End a subscription of this connection (`subscription`: the subscribe request's id)."""
        sub_id = frame.get("subscription")
        key = (id(getattr(ctx, "_conn", None)), sub_id)
        stop = self.subscriptions.get(key)
        if stop is None:
            raise bad_frame(f"no subscription {sub_id!r} on this connection")
        stop.set()
        return {"subscription": sub_id}

    async def _ack_target(self, frame: dict[str, Any]) -> tuple[str, str, _Group, int, int]:
        topic = validate_topic(frame.get("topic"))
        group = validate_group(frame.get("group"))
        ulid = _opt_str(frame, "ulid")
        shard, position = frame.get("shard"), frame.get("position")
        for name, value in (("shard", shard), ("position", position)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise bad_frame(f"`{name}` must be an integer")
        rt = await self._group(topic, group)
        where = rt.state.locate(ulid, shard, position)
        return topic, group, rt, where[0], where[1]

    async def ack(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """Finish a delivered message for the group; answered once the ack is stored."""
        topic, group, rt, shard, position = await self._ack_target(frame)
        changed = rt.state.ack(shard, position)
        (await self._topic(topic)).notify()
        await self._persist(topic, group, rt)
        return {"topic": topic, "group": group, "shard": shard, "position": position,
                "acked": changed}

    async def nack(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """Give a delivered message back: it is redelivered (to any member) at once."""
        topic, group, rt, shard, position = await self._ack_target(frame)
        rt.state.nack(shard, position)
        (await self._topic(topic)).notify()
        return {"topic": topic, "group": group, "shard": shard, "position": position}

    async def commit(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """Append a `gmb.commit` event once `quorum` of `groups` have acked the message."""
        topic = validate_topic(frame.get("topic"))
        ulid = validate_ulid(frame.get("ulid"))
        config = self.configs(topic)
        groups = frame.get("groups", list(config.commit_groups))
        if not isinstance(groups, list) or not groups:
            raise bad_frame("`groups` must be a non-empty list (or set commit_groups for the topic)")
        groups = [validate_group(g) for g in groups]
        quorum = _opt_int(frame, "quorum", config.commit_quorum or len(groups))
        ns = validate_namespace(frame.get("ns", config.commit_ns))
        shard, position = frame.get("shard"), frame.get("position")
        if not isinstance(shard, int) or not isinstance(position, int):
            found = await self._read(lambda log: log.find(topic, ulid))
            if found is None:
                raise NotFound(f"no message {ulid} on {topic}")
            shard, position = found.shard, found.position
        acked = []
        for group in groups:
            try:
                rt = await self._group(topic, group)
            except UnknownGroup:
                continue
            if rt.state.is_done(shard, position):
                acked.append(group)
        out: dict[str, Any] = {"topic": topic, "ulid": ulid, "shard": shard, "position": position,
                               "acked_groups": acked, "quorum": quorum, "committed": False}
        if len(acked) < quorum:
            return out
        event = self.front.build_event(
            type="gmb.commit", ulid=derived_ulid(ulid, f"commit/{topic}"),
            payload={"topic": topic, "ulid": ulid, "shard": shard, "position": position,
                     "groups": sorted(acked), "quorum": quorum})
        signed = self.front.sign(event)
        self.front.check_signed(signed, signed_here=True)
        result = await self.committer.submit(ns, signed)
        return {**out, "committed": True, "event": {k: v for k, v in result.to_dict().items() if k != "ok"}}

    async def prune(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """Apply the topic's retention now (or `ttl_seconds` given here): summaries written."""
        topic = validate_topic(frame.get("topic"))
        ttl = frame.get("ttl_seconds")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 0):
            raise bad_frame("`ttl_seconds` must be a non-negative integer")
        self.front.policy.check_now(self._actor(frame), "bus.publish", topic)
        raw = await self.writer.submit(("prune", topic, ttl))
        error = error_of(raw)
        if error is not None:
            raise error
        hub = self.topics.get(topic)
        if hub is not None:
            hub.cache.clear()
        return {"topic": topic, **raw}
