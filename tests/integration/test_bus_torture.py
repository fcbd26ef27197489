"""Bus torture: kill -9 under publish load, consumers dying before/after their ack, a slow
consumer, per-shard order through the daemon, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gatosd._client_bus import DedupeStore, ExactlyOnceConsumer
from gatosd._client_sync import Client
from gatosd.node import Node
from mind_bus import BusLog
from tests.integration.conftest import gatos, git
from tests.integration.daemon_support import JsonlClient, make_node, short_dir, start_daemon


def _ulid(i: int, salt: int = 0) -> str:
    from ledger_core import encode_ulid
    return encode_ulid(1_700_000_000_000 + i, (salt * 1_000_000 + i).to_bytes(10, "big"))


def stored(repo: Path, topic: str) -> dict[str, tuple[int, int, Any]]:
    """ulid → (shard, position, payload) of every stored message, read with a fresh Node."""
    node = Node.open(str(repo))
    log = BusLog(node.repo.objects, node.repo.refs, sign=node.sign, clock=time.time, sleep=time.sleep)
    out = {}
    for shard in log.shard_heads(topic):
        msgs = log.read(topic, shard)
        assert [m.position for m in msgs] == list(range(1, len(msgs) + 1))
        for m in msgs:
            out[m.ulid] = (shard, m.position, m.payload)
    return out


def bus_messages(c: JsonlClient, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(got)} of {count} messages"
        frame = c.recv(left)
        assert frame is not None
        if frame.get("kind") == "ping":
            c.send({"kind": "pong"})
        elif frame.get("type") == "bus.message":
            got.append(frame)
    return got


def test_kill9_under_publish_load_loses_no_acknowledged_message(tmp_path: Path) -> None:
    """kill -9 while 4 clients publish: every acknowledged message is stored; the group resumes at its acks."""
    repo = make_node(tmp_path / "node")
    with short_dir() as sock:
        d = start_daemon(repo, socket_dir=sock)
        acked_pub: list[str] = []
        stop = threading.Event()

        def load(worker: int) -> None:
            try:
                c = d.client(timeout=10)
                for i in range(100_000):
                    if stop.is_set():
                        return
                    u = _ulid(i, worker + 1)
                    c.send({"type": "bus.publish", "id": i, "topic": "orders", "key": f"k{i % 7}",
                            "ulid": u, "payload": {"w": worker, "i": i}})
                    reply = c.final(i)
                    if reply.get("ok"):
                        acked_pub.append(u)
            except (ConnectionError, OSError, AssertionError, ValueError):
                return

        threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        # A consumer group acks the first 50 messages while the load runs.
        with d.client() as c:
            c.send({"type": "bus.subscribe", "id": "s", "topic": "orders", "group": "g",
                    "from": "earliest", "max_in_flight": 50})
            first = bus_messages(c, 50)
            for m in first:
                c.send({"type": "bus.ack", "id": f"a{m['ulid']}", "topic": "orders", "group": "g",
                        "ulid": m["ulid"]})
            acks_done = 0
            while acks_done < 50:
                f = c.recv(10)
                assert f is not None
                if str(f.get("id", "")).startswith("a") and "ok" in f:
                    assert f["ok"], f
                    acks_done += 1
        while len(acked_pub) < 400:
            time.sleep(0.01)
        d.kill_and_wait_for_writer()
        stop.set()
        for t in threads:
            t.join(10)
        have = stored(repo, "orders")
        missing = [u for u in acked_pub if u not in have]
        assert not missing, f"{len(missing)} acknowledged messages lost"
        git(repo, "fsck", "--strict")
        acked_ulids = {m["ulid"] for m in first}
        d2 = start_daemon(repo, socket_dir=sock)
        try:
            with d2.client() as c:
                c.send({"type": "bus.subscribe", "id": "s2", "topic": "orders", "group": "g",
                        "max_in_flight": 10_000})
                again = bus_messages(c, len(have) - 50, timeout=60)
                got = {m["ulid"] for m in again}
                assert got.isdisjoint(acked_ulids) and got == set(have) - acked_ulids
        finally:
            d2.stop()


CONSUMER = r"""
import os, sys
from gatosd._client_bus import DedupeStore, ExactlyOnceConsumer
from gatosd._client_sync import Client
sock, store_path, crash_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = DedupeStore(store_path)
store.db.execute("CREATE TABLE IF NOT EXISTS effects (ulid TEXT, n INTEGER)")
client = Client.connect_unix(sock)
count = [0]
def effect(message, db):
    db.execute("INSERT INTO effects VALUES (?, ?)", (message["ulid"], message["payload"]["n"]))
    count[0] += 1
consumer = ExactlyOnceConsumer(client, "pay", "billing", store, ack_wait_ms=500)
import gatosd._client_bus as cb
real_ack = cb.ack
def ack(client, message, group):
    if crash_at and count[0] >= crash_at:
        os._exit(9)   # killed after the effect and its record, before the ack
    return real_ack(client, message, group)
cb.ack = ack
consumer.run(effect, limit=int(sys.argv[4]))
print(consumer.applied, consumer.skipped)
"""


def test_consumer_killed_after_effect_before_ack_is_deduped(tmp_path: Path) -> None:
    """The message comes again (at-least-once) but the exactly-once helper applies it once."""
    repo = make_node(tmp_path / "node")
    store = str(tmp_path / "effects.sqlite")
    with short_dir() as sock:
        d = start_daemon(repo, socket_dir=sock)
        try:
            with Client.connect_unix(d.socket) as client:
                for n in range(10):
                    client.request("bus.publish", topic="pay", payload={"n": n})
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
            crashed = subprocess.run([sys.executable, "-c", CONSUMER, d.socket, store, "3", "10"],
                                     env=env, capture_output=True, text=True, timeout=60)
            assert crashed.returncode == 9, crashed.stderr
            done = subprocess.run([sys.executable, "-c", CONSUMER, d.socket, store, "0", "8"],
                                  env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            applied, skipped = map(int, done.stdout.split())
            assert (applied, skipped) == (7, 1)
        finally:
            d.stop()
    db = DedupeStore(store)
    rows = db.db.execute("SELECT n, COUNT(*) FROM effects GROUP BY n ORDER BY n").fetchall()
    assert rows == [(n, 1) for n in range(10)]
    assert ExactlyOnceConsumer  # the helper under test


def test_slow_consumer_does_not_hold_others_up(tmp_path: Path) -> None:
    """A subscriber that never reads does not slow publishing or a fast subscriber."""
    repo = make_node(tmp_path / "node")
    with short_dir() as sock:
        d = start_daemon(repo, socket_dir=sock)
        try:
            slow, fast, pub = d.client(), d.client(), d.client()
            slow.send({"type": "bus.subscribe", "id": "slow", "topic": "feed", "from": "earliest"})
            fast.send({"type": "bus.subscribe", "id": "fast", "topic": "feed", "from": "earliest"})
            started = time.monotonic()
            payload = {"blob": "x" * 2000}
            for i in range(0, 1500, 50):
                for j in range(i, i + 50):
                    pub.send({"type": "bus.publish", "id": j, "topic": "feed", "payload": payload})
                for j in range(i, i + 50):
                    reply = pub.final(j)
                    assert reply["ok"], reply
            got = bus_messages(fast, 1500, timeout=60)
            assert len(got) == 1500 and time.monotonic() - started < 60
            with d.client() as c:
                assert c.hello()["ok"]
            for c in (slow, fast, pub):
                c.close()
        finally:
            d.stop()


def test_daemon_keeps_per_shard_order(tmp_path: Path) -> None:
    """2,000 keyed messages from 4 connections: per shard gapless, per key in each publisher's order."""
    repo = make_node(tmp_path / "node")
    with short_dir() as sock:
        d = start_daemon(repo, socket_dir=sock)
        try:
            def load(w: int) -> None:
                with d.client() as c:
                    for i in range(0, 500, 25):
                        for j in range(i, i + 25):
                            c.send({"type": "bus.publish", "id": j, "topic": "o", "key": f"w{w}",
                                    "payload": {"w": w, "i": j}})
                        for j in range(i, i + 25):
                            assert c.final(j)["ok"]
            threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            with d.client() as c:
                c.send({"type": "bus.subscribe", "id": "s", "topic": "o", "from": "earliest"})
                got = bus_messages(c, 2000)
        finally:
            d.stop()
    by_shard: dict[int, list[int]] = {}
    by_key: dict[int, list[int]] = {}
    for m in got:
        by_shard.setdefault(m["shard"], []).append(m["position"])
        by_key.setdefault(m["payload"]["w"], []).append(m["payload"]["i"])
    for positions in by_shard.values():
        assert positions == list(range(1, len(positions) + 1))
    assert all(v == list(range(500)) for v in by_key.values())


def test_cli_publish_and_subscribe(tmp_path: Path) -> None:
    """`gatos bus publish/subscribe` in-process and through the daemon print JSON lines."""
    repo = make_node(tmp_path / "node")
    r = gatos(repo, "bus", "publish", "--topic", "cli/t", "--payload", '{"a":1}', "--key", "k")
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    assert first["position"] == 1 and not first["duplicate"]
    r = gatos(repo, "bus", "publish", "--topic", "cli/t", "--payload", '{"a":1}', "--key", "k",
              "--ulid", first["ulid"])
    assert json.loads(r.stdout)["duplicate"] is True
    bad = gatos(repo, "bus", "publish", "--topic", "cli//t", "--payload", "1")
    assert bad.returncode == 2 and "INVALID_NAME" in bad.stderr
    r = gatos(repo, "bus", "subscribe", "--topic", "cli/t")
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["payload"] for x in lines] == [{"a": 1}]
    with short_dir() as sock:
        d = start_daemon(repo, socket_dir=sock)
        try:
            r = gatos(repo, "bus", "publish", "--topic", "cli/t", "--payload", "2")
            assert json.loads(r.stdout)["position"] == 2, r.stderr
            r = gatos(repo, "bus", "subscribe", "--topic", "cli/t", "--group", "g", "--limit", "2")
            assert r.returncode == 0, r.stderr
            assert [json.loads(x)["payload"] for x in r.stdout.splitlines()] == [{"a": 1}, 2]
        finally:
            d.stop()
    assert '"floor":3' in git(repo, "show", "refs/gatos/mbus-ack/cli/t/-g:offsets.json")
