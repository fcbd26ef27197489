"""Bus helpers of the Python client: publish, subscribe, and an exactly-once consumer.

The bus delivers at least once: a consumer that dies after its effect but before its
ack gets the message again. `ExactlyOnceConsumer` makes the effect happen once anyway:
it keeps a dedupe store (SQLite, on the consumer's side) of the ULIDs it finished, runs
the effect and records the ULID *in one transaction of that store* (an effect written
to the same database is atomic with its record), and acks only after the commit. A
redelivered message whose ULID is recorded is acked without running the effect again.
Effects outside the store's database (an HTTP call, a file) must be idempotent
themselves, keyed by the ULID the helper passes in.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

from gatosd._client_sync import Client


def publish(client: Client, topic: str, payload: Any, *, key: str | None = None,
            ulid: str | None = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Publish one message; `{"topic","shard","position","ulid","commit","duplicate"}`."""
    fields: dict[str, Any] = {"topic": topic, "payload": payload}
    for name, value in (("key", key), ("ulid", ulid), ("headers", headers)):
        if value is not None:
            fields[name] = value
    return client.request("bus.publish", **fields)


def subscribe(client: Client, topic: str, *, start: str | int = "earliest", group: str | None = None,
              ack_wait_ms: int | None = None, max_in_flight: int | None = None,
              max_deliver: int | None = None) -> Iterator[dict[str, Any]]:
    """Yield the `bus.message` frames of a subscription (closing the generator ends it)."""
    fields: dict[str, Any] = {"topic": topic, "from": start}
    for name, value in (("group", group), ("ack_wait_ms", ack_wait_ms),
                        ("max_in_flight", max_in_flight), ("max_deliver", max_deliver)):
        if value is not None:
            fields[name] = value
    for frame in client.stream("bus.subscribe", timeout=None, **fields):
        if frame.get("type") == "bus.message":
            yield frame


def ack(client: Client, message: dict[str, Any], group: str) -> dict[str, Any]:
    """Ack a delivered message (by ULID, with its place so it works after a daemon restart)."""
    return client.request("bus.ack", topic=message["topic"], group=group, ulid=message["ulid"],
                          shard=message["shard"], position=message["position"])


class DedupeStore:
    """ULIDs whose effect is done, in a SQLite file the effect may also write to."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS gatos_done "
                        "(topic TEXT, ulid TEXT, PRIMARY KEY (topic, ulid))")

    def seen(self, topic: str, ulid: str) -> bool:
        row = self.db.execute("SELECT 1 FROM gatos_done WHERE topic=? AND ulid=?", (topic, ulid)).fetchone()
        return row is not None

    def run_once(self, topic: str, ulid: str, effect: Callable[[sqlite3.Connection], None]) -> bool:
        """Run `effect` and record the ULID in one transaction; False when it was done before."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if self.seen(topic, ulid):
                self.db.execute("ROLLBACK")
                return False
            effect(self.db)
            self.db.execute("INSERT INTO gatos_done (topic, ulid) VALUES (?, ?)", (topic, ulid))
            self.db.execute("COMMIT")
            return True
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()


class ExactlyOnceConsumer:
    """Consume a topic in a group so that each message's effect runs once (see the module doc)."""

    def __init__(self, client: Client, topic: str, group: str, store: DedupeStore, *,
                 start: str | int = "earliest", ack_wait_ms: int | None = None,
                 max_in_flight: int | None = None) -> None:
        self.client = client
        self.topic = topic
        self.group = group
        self.store = store
        self.start = start
        self.ack_wait_ms = ack_wait_ms
        self.max_in_flight = max_in_flight
        self.applied = 0
        self.skipped = 0

    def run(self, effect: Callable[[dict[str, Any], sqlite3.Connection], None], *,
            limit: int | None = None) -> int:
        """Handle messages until `limit` were handled (or forever); the number handled."""
        handled = 0
        stream = subscribe(self.client, self.topic, start=self.start, group=self.group,
                           ack_wait_ms=self.ack_wait_ms, max_in_flight=self.max_in_flight)
        try:
            for message in stream:
                if self.store.run_once(self.topic, message["ulid"], lambda db, m=message: effect(m, db)):
                    self.applied += 1
                else:
                    self.skipped += 1
                ack(self.client, message, self.group)
                handled += 1
                if limit is not None and handled >= limit:
                    break
        finally:
            stream.close()
        return handled


__all__ = ["DedupeStore", "ExactlyOnceConsumer", "ack", "publish", "subscribe"]
