"""Consumer groups: who gets which message, acks, redelivery and dead letters. Pure.

A group reads every shard of a topic once between its members (each message goes to
one member). The state is a small table per shard:

* `floor`: every position below it is finished (acked, or dead-lettered);
* `acked`: finished positions at or above the floor (acks arrive out of order);
* `cursor`: the next position never delivered;
* `pending`: delivered, not yet finished: (shard, position) → member, delivery count,
  deadline (`now + ack_wait`).

`take` hands a member the next message: first one waiting for redelivery, then the
next new position of the shards in turn, never more than `max_in_flight` at once per
member. `expire(now)` returns overdue messages to the redelivery queue, or — after
`max_deliver` deliveries — finishes them as dead letters for the caller to publish.
A member that leaves gives its pending messages back at once.

Durable (`offsets()` / `load()`): `floor`, `acked`, and the delivery count of every
message delivered more than once and not finished (`deliveries`). After a restart the
cursor is the floor, so everything not acked is delivered again (at-least-once); a
redelivered message goes on counting from its stored count, so `max_deliver` holds
across restarts (a message delivered once only starts again at 1). A redelivery bumps
`version`: the daemon stores the count before it sends the message. Time is the
injected `clock` (seconds); nothing sleeps.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mind_bus.errors import InvalidPosition, NotPending


@dataclass
class Pending:
    shard: int
    position: int
    member: object
    deliveries: int
    deadline: float
    ulid: str | None = None


@dataclass(frozen=True)
class Take:
    """A delivery to make: the member sends this message and calls `bind` with its ULID."""

    shard: int
    position: int
    delivery: int


@dataclass
class _Shard:
    floor: int = 1
    acked: set[int] = field(default_factory=set)
    cursor: int = 1


class GroupState:
    """The delivery state of one consumer group on one topic."""

    def __init__(self, topic: str, group: str, *, clock: Callable[[], float],
                 ack_wait: float = 30.0, max_deliver: int = 5, ack_none: bool = False) -> None:
        self.topic = topic
        self.group = group
        self._clock = clock
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.ack_none = ack_none
        self.shards: dict[int, _Shard] = {}
        self.pending: dict[tuple[int, int], Pending] = {}
        self.by_ulid: dict[str, tuple[int, int]] = {}
        self.redeliver: deque[tuple[int, int]] = deque()
        self.in_flight: dict[object, int] = {}
        self._rr = 0
        self.version = 0  # bumps on every change of the durable part (floor/acked/deliveries)
        self.stored_deliveries: dict[tuple[int, int], int] = {}  # loaded counts, not yet redelivered

    # -- durable part ----------------------------------------------------------------

    def start_at(self, starts: dict[int, int]) -> None:
        """A new group: deliver from these positions (everything before counts as done)."""
        for shard, position in starts.items():
            self.shards[shard] = _Shard(floor=position, cursor=position)

    def load(self, offsets: dict[str, Any]) -> None:
        """Resume from `offsets()` as stored: cursor = floor, acked positions skipped."""
        for key, item in offsets.get("shards", {}).items():
            shard = int(key)
            self.shards[shard] = _Shard(floor=int(item["floor"]), acked=set(item["acked"]),
                                        cursor=int(item["floor"]))
            for position, count in item.get("deliveries", {}).items():
                self.stored_deliveries[(shard, int(position))] = int(count)

    def offsets(self) -> dict[str, Any]:
        counts: dict[int, dict[str, int]] = {}
        for (shard, position), count in self.stored_deliveries.items():
            counts.setdefault(shard, {})[str(position)] = count
        for (shard, position), item in self.pending.items():
            if item.deliveries > 1:
                counts.setdefault(shard, {})[str(position)] = item.deliveries
        out: dict[str, Any] = {}
        for s, st in sorted(self.shards.items()):
            entry: dict[str, Any] = {"floor": st.floor, "acked": sorted(st.acked)}
            if counts.get(s):
                entry["deliveries"] = {p: counts[s][p] for p in sorted(counts[s], key=int)}
            out[str(s)] = entry
        return {"shards": out}

    def _shard(self, shard: int) -> _Shard:
        st = self.shards.get(shard)
        if st is None:  # a shard created after the group (reshard): start at its beginning
            st = self.shards[shard] = _Shard()
        return st

    def is_done(self, shard: int, position: int) -> bool:
        st = self.shards.get(shard)
        return st is not None and (position < st.floor or position in st.acked)

    # -- delivering ------------------------------------------------------------------

    def take(self, member: object, heads: dict[int, int], max_in_flight: int) -> Take | None:
        """The next message for `member`, or None (nothing new, or the member is full)."""
        if not self.ack_none and self.in_flight.get(member, 0) >= max_in_flight:
            return None
        while self.redeliver:
            key = self.redeliver.popleft()
            item = self.pending.get(key)
            if item is None or item.member is not None:
                continue  # finished or already handed out again meanwhile
            return self._hand(member, item)
        shards = sorted(heads)
        for i in range(len(shards)):
            shard = shards[(self._rr + i) % len(shards)]
            st = self._shard(shard)
            while st.cursor <= heads[shard] and (st.cursor < st.floor or st.cursor in st.acked
                                                 or (shard, st.cursor) in self.pending):
                st.cursor += 1
            if st.cursor <= heads[shard]:
                position = st.cursor
                st.cursor += 1
                self._rr = (self._rr + i + 1) % len(shards)
                if self.ack_none:
                    return Take(shard, position, 1)
                item = Pending(shard, position, None,
                               self.stored_deliveries.pop((shard, position), 0), 0.0)
                self.pending[(shard, position)] = item
                return self._hand(member, item)
        return None

    def _hand(self, member: object, item: Pending) -> Take:
        item.member = member
        item.deliveries += 1
        if item.deliveries > 1:
            self.version += 1  # the count is durable: store it before sending
        item.deadline = self._clock() + self.ack_wait
        self.in_flight[member] = self.in_flight.get(member, 0) + 1
        return Take(item.shard, item.position, item.deliveries)

    def bind(self, shard: int, position: int, ulid: str) -> None:
        """Record the ULID of a delivered message so acks can name it."""
        item = self.pending.get((shard, position))
        if item is not None:
            item.ulid = ulid
            self.by_ulid[ulid] = (shard, position)

    def skip(self, shard: int, position: int) -> None:
        """A taken position that no longer exists (pruned): finish it without a delivery."""
        self._release((shard, position))
        self._finish(shard, position)

    # -- acks ------------------------------------------------------------------------------

    def locate(self, ulid: str | None, shard: int | None, position: int | None) -> tuple[int, int]:
        """(shard, position) of an ack: the delivered ULID, or the place given explicitly."""
        if shard is not None and position is not None:
            if position < 1 or shard < 0:
                raise InvalidPosition(f"no message at shard {shard}, position {position}")
            return shard, position
        if ulid is not None and ulid in self.by_ulid:
            return self.by_ulid[ulid]
        raise NotPending(f"{ulid} is not pending in group {self.group} of {self.topic} "
                         "(pass shard and position to ack a message delivered before a restart)")

    def ack(self, shard: int, position: int) -> bool:
        """Finish a message; False when it was already finished (acks are idempotent)."""
        if self.is_done(shard, position):
            self._release((shard, position))
            return False
        self._release((shard, position))
        self._finish(shard, position)
        return True

    def nack(self, shard: int, position: int) -> None:
        """Give a pending message back for redelivery now."""
        item = self.pending.get((shard, position))
        if item is None:
            raise NotPending(f"shard {shard} position {position} is not pending in group {self.group}")
        if item.member is not None:
            self.in_flight[item.member] -= 1
            item.member = None
            self.redeliver.appendleft((shard, position))

    def member_left(self, member: object) -> None:
        """A member went away: its pending messages are redelivered to the others at once."""
        for key, item in self.pending.items():
            if item.member is member:
                item.member = None
                self.redeliver.append(key)
        self.in_flight.pop(member, None)

    def expire(self) -> list[Pending]:
        """Overdue deliveries go back for redelivery; returns those that became dead letters."""
        now = self._clock()
        dead: list[Pending] = []
        for key, item in list(self.pending.items()):
            if item.member is None or item.deadline > now:
                continue
            self.in_flight[item.member] -= 1
            item.member = None
            if item.deliveries >= self.max_deliver:
                dead.append(item)
                del self.pending[key]
                if item.ulid is not None:
                    self.by_ulid.pop(item.ulid, None)
                self._finish(item.shard, item.position)
            else:
                self.redeliver.append(key)
        return dead

    def next_deadline(self) -> float | None:
        deadlines = [p.deadline for p in self.pending.values() if p.member is not None]
        return min(deadlines) if deadlines else None

    def has_redelivery(self) -> bool:
        return any(self.pending.get(k) is not None and self.pending[k].member is None
                   for k in self.redeliver)

    # -- internals ---------------------------------------------------------------------

    def _release(self, key: tuple[int, int]) -> None:
        item = self.pending.pop(key, None)
        if item is None:
            return
        if item.member is not None:
            self.in_flight[item.member] -= 1
        if item.ulid is not None:
            self.by_ulid.pop(item.ulid, None)

    def _finish(self, shard: int, position: int) -> None:
        self.stored_deliveries.pop((shard, position), None)
        st = self._shard(shard)
        if position < st.floor:
            return
        st.acked.add(position)
        while st.floor in st.acked:
            st.acked.discard(st.floor)
            st.floor += 1
        self.version += 1


__all__ = ["GroupState", "Pending", "Take"]
