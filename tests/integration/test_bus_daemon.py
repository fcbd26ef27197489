"""The bus through the real daemon: publish, the upstream subscribe frame, groups, acks,
redelivery, dead letters, bus.commit, bad input, and what `git` sees."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import git
from tests.integration.daemon_support import (
    Daemon,
    JsonlClient,
    assert_unchanged,
    make_node,
    short_dir,
    snapshot,
    start_daemon,
)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    repo = make_node(tmp_path / "node", "user:a")
    with short_dir() as sock:
        d = start_daemon(repo, socket_dir=sock)
        try:
            yield d
        finally:
            d.stop()


def publish(c: JsonlClient, topic: str, payload: Any, rid: str = "p", **extra: Any) -> dict[str, Any]:
    return c.request({"type": "bus.publish", "id": rid, "topic": topic, "payload": payload, **extra})


def messages(c: JsonlClient, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The next `count` bus.message frames (pings answered, other frames kept out)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        frame = c.recv(max(0.1, deadline - time.monotonic()))
        assert frame is not None, f"closed after {got}"
        if frame.get("kind") == "ping":
            c.send({"kind": "pong"})
        elif frame.get("type") == "bus.message":
            got.append(frame)
    return got


def reply(c: JsonlClient, rid: str, timeout: float = 15.0) -> dict[str, Any]:
    """The final frame of `rid`, skipping frames of other requests."""
    while True:
        frame = c.recv(timeout)
        assert frame is not None
        if frame.get("kind") == "ping":
            c.send({"kind": "pong"})
        elif frame.get("id") == rid and "ok" in frame:
            return frame


def test_publish_then_upstream_subscribe_frame(daemon: Daemon) -> None:
    """The exact upstream frame works; frames carry id, topic, shard, position, ulid, delivery, payload."""
    with daemon.client() as c:
        sent = [publish(c, "echo/jobs", {"n": i}, f"p{i}", key="k") for i in range(5)]
        assert all(r["ok"] and not r["duplicate"] for r in sent)
        assert [r["position"] for r in sent] == [1, 2, 3, 4, 5]
        c.send_raw(b'{"type":"bus.subscribe","id":"01B","topic":"echo/jobs","from":"HEAD-100"}\n')
        assert c.recv() == {"ack": True, "id": "01B"}
        got = messages(c, 5)
        assert [m["payload"] for m in got] == [{"n": i} for i in range(5)]
        first = got[0]
        assert {k: first[k] for k in ("type", "id", "topic", "shard", "position", "ulid", "delivery")} == {
            "type": "bus.message", "id": "01B", "topic": "echo/jobs", "shard": sent[0]["shard"],
            "position": 1, "ulid": sent[0]["ulid"], "delivery": 1}
        # Live: a new publish reaches the subscriber.
        c.send({"type": "bus.publish", "id": "live", "topic": "echo/jobs", "payload": "x", "key": "k"})
        frames = []
        while not any(f.get("type") == "bus.message" for f in frames):
            frames.append(c.recv())
        assert next(f for f in frames if f.get("type") == "bus.message")["payload"] == "x"
        reply = c.request({"type": "bus.unsubscribe", "id": "u", "subscription": "01B"})
        assert reply["ok"], reply
    ref = f"refs/gatos/mbus/echo/jobs/-{sent[0]['shard']}"
    log = git(daemon.repo, "log", "--format=%s|%(trailers:key=Position,valueonly,separator=)", ref)
    assert log.split("\n")[0] == "gmb.message|6"
    assert git(daemon.repo, "cat-file", "-t", sent[0]["commit"]).strip() == "commit"
    git(daemon.repo, "fsck", "--strict")


def test_duplicate_and_bad_input(daemon: Daemon) -> None:
    """A known ULID replies the first position with duplicate; bad input changes nothing."""
    with daemon.client() as c:
        first = publish(c, "t", {"a": 1}, ulid="01HZZZZZZZZZZZZZZZZZZZZZZZ")
        again = publish(c, "t", {"a": 1}, ulid="01HZZZZZZZZZZZZZZZZZZZZZZZ")
        assert again["duplicate"] and (again["shard"], again["position"]) == (first["shard"], first["position"])
        before = snapshot(daemon.repo)
        bad = [
            ({"topic": "a//b", "payload": 1}, "INVALID_NAME"),
            ({"topic": "t", "payload": 1.5}, "INVALID_MESSAGE"),
            ({"topic": "t"}, "BAD_FRAME"),
            ({"topic": "t", "payload": 1, "ulid": "nope"}, "INVALID_EVENT"),
            ({"topic": "t", "payload": {"b": 2}, "ulid": "01HZZZZZZZZZZZZZZZZZZZZZZZ"}, "ULID_REUSED"),
        ]
        for i, (frame, code) in enumerate(bad):
            reply = c.request({"type": "bus.publish", "id": f"b{i}", **frame})
            assert reply["ok"] is False and reply["error"]["code"] == code, reply
        reply = c.request({"type": "bus.ack", "id": "x", "topic": "t", "group": "nobody",
                           "ulid": first["ulid"]})
        assert reply["error"]["code"] == "UNKNOWN_GROUP"
        reply = c.request({"type": "bus.subscribe", "id": "s", "topic": "t", "from": "HEAD+1"})
        assert reply["error"]["code"] == "INVALID_POSITION"
        assert_unchanged(daemon.repo, before)


def test_group_shares_acks_and_redelivers_after_a_member_dies(daemon: Daemon) -> None:
    """Two members share a group; the dead member's unacked message goes to the other (delivery 2)."""
    with daemon.client() as pub:
        for i in range(6):
            publish(pub, "jobs", {"n": i}, f"p{i}")
    a, b = daemon.client(), daemon.client()
    try:
        sub = {"type": "bus.subscribe", "topic": "jobs", "group": "workers", "from": "earliest",
               "max_in_flight": 3, "ack_wait_ms": 60_000}
        a.send({**sub, "id": "sa"})
        got_a = messages(a, 3)
        b.send({**sub, "id": "sb"})
        got_b = messages(b, 3)
        assert {m["position"] + 10 * m["shard"] for m in got_a}.isdisjoint(
            {m["position"] + 10 * m["shard"] for m in got_b})
        for m in got_b:
            r = b.request({"type": "bus.ack", "id": f"ack{m['ulid']}", "topic": "jobs", "group": "workers",
                           "ulid": m["ulid"]})
            assert r["ok"] and r["acked"], r
        a.close()  # killed before acking: its three go to b at once
        again = messages(b, 3)
        assert sorted(m["ulid"] for m in again) == sorted(m["ulid"] for m in got_a)
        assert all(m["delivery"] == 2 for m in again)
        for m in again:
            b.request({"type": "bus.ack", "id": f"ack{m['ulid']}", "topic": "jobs", "group": "workers",
                       "ulid": m["ulid"]})
    finally:
        a.close()
        b.close()
    offsets = git(daemon.repo, "show", "refs/gatos/mbus-ack/jobs/-workers:offsets.json")
    assert '"acked":[]' in offsets and '"group":"workers"' in offsets


def test_ack_wait_redelivery_dead_letter_and_commit(daemon: Daemon) -> None:
    """Unacked past ack_wait comes again; after max_deliver it lands on dlq/<topic>; bus.commit on quorum."""
    with daemon.client() as c:
        p = publish(c, "mail", {"to": "x"})
        c.send({"type": "bus.subscribe", "id": "s", "topic": "mail", "group": "g", "from": "earliest",
                "ack_wait_ms": 200, "max_deliver": 2})
        got = messages(c, 2, timeout=10)
        assert [m["delivery"] for m in got] == [1, 2]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            dlq = git(daemon.repo, "for-each-ref", "refs/gatos/mbus/dlq/mail/")
            if dlq:
                break
            time.sleep(0.05)
        assert dlq, "no dead letter"
        c.send({"type": "bus.unsubscribe", "id": "u", "subscription": "s"})
        reply(c, "u")
        c.send({"type": "bus.publish", "id": "p2", "topic": "mail", "payload": {"to": "y"}})
        p2 = reply(c, "p2")
        for group in ("g1", "g2"):
            c.send({"type": "bus.subscribe", "id": group, "topic": "mail", "group": group, "from": "earliest"})
            for m in messages(c, 2):
                c.send({"type": "bus.ack", "id": f"a-{group}-{m['ulid']}", "topic": "mail",
                        "group": group, "ulid": m["ulid"]})
            c.send({"type": "bus.unsubscribe", "id": f"u{group}", "subscription": group})
        reply(c, "ug2")
        c.send({"type": "bus.commit", "id": "c", "topic": "mail", "ulid": p2["ulid"],
                "groups": ["g1", "g2"]})
        r = reply(c, "c")
        assert r["ok"] and r["committed"] and sorted(r["acked_groups"]) == ["g1", "g2"], r
        c.send({"type": "bus.commit", "id": "c2", "topic": "mail", "ulid": p2["ulid"],
                "groups": ["g1", "g2"]})
        again = reply(c, "c2")
        assert again["event"]["duplicate"] is True
        assert p["ok"]
    assert "gmb.commit" in git(daemon.repo, "log", "--format=%s", "refs/gatos/journal/mbus/user/a")


def test_gate_denies_publish_and_subscribe_without_the_capability(tmp_path: Path) -> None:
    """Deny by default: user:b (only *:append) cannot publish or subscribe; nothing is written."""
    repo = make_node(tmp_path / "node", "user:a", "user:b")
    with short_dir() as sock:
        d = start_daemon(repo, socket_dir=sock)
        try:
            with d.client() as c:
                publish(c, "t", 1)  # the owner may
                before = git(repo, "for-each-ref", "refs/gatos/mbus/")
                r = publish(c, "t", 2, "p2", actor="user:b")
                assert r["error"]["code"] == "POLICY_DENY", r
                r = c.request({"type": "bus.subscribe", "id": "s", "topic": "t", "actor": "user:b"})
                assert r["error"]["code"] == "POLICY_DENY", r
                assert git(repo, "for-each-ref", "refs/gatos/mbus/") == before
        finally:
            d.stop()
    assert "bus:t:publish" in git(repo, "log", "-p", "refs/gatos/audit/policy")


def test_prune_through_the_daemon(tmp_path: Path) -> None:
    """bus.prune leaves a gmb.summary root; later positions and new publishes continue."""
    repo = make_node(tmp_path / "node")
    (repo / "gatos" / "mbus-config").mkdir(parents=True)
    (repo / "gatos" / "mbus-config" / "old.json").write_text('{"shards":1,"segment_max_messages":2}')
    with short_dir() as sock:
        d = start_daemon(repo, socket_dir=sock)
        try:
            with d.client() as c:
                for i in range(5):
                    publish(c, "old", i, f"p{i}", ulid=f"01H0000000000000000000000{i}")  # year 2023
                r = c.request({"type": "bus.prune", "id": "x", "topic": "old", "ttl_seconds": 60})
                assert r["ok"] and r["summaries"][0]["pruned"] == 4, r
                assert publish(c, "old", 9, "p9")["position"] == 6
                c.send({"type": "bus.subscribe", "id": "s", "topic": "old", "from": "earliest"})
                assert [m["position"] for m in messages(c, 2)] == [5, 6]
        finally:
            d.stop()
    # The retained chain is the shard's next generation ref; generation 0 was deleted,
    # never rewritten (refs only move forward, appear or disappear).
    subjects = git(repo, "log", "--format=%s", "refs/gatos/mbus/old/-0.1").split()
    assert subjects == ["gmb.message", "gmb.message", "gmb.summary"]
    assert git(repo, "for-each-ref", "--format=%(refname)", "refs/gatos/mbus/old/").split() == [
        "refs/gatos/mbus/old/-0.1"]
    git(repo, "fsck", "--strict")


def test_messages_are_signed_under_the_policy_root_in_force(tmp_path: Path) -> None:
    """After `gatos policy apply` the next message names the new root (the daemon signs under
    the root its writer last reported; the writer signs again when that root moved)."""
    from ledger_core import SignedEvent
    from tests.integration.conftest import gatos, git_bytes

    repo = make_node(tmp_path / "node", "user:a")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "10.rules").write_text('deny ns=closed reason="closed"\nrequire caps=$cap\n')
    with short_dir() as sock:
        d = start_daemon(repo, socket_dir=sock)
        try:
            with d.client() as c:
                first = publish(c, "t", 1, "p1", key="k")
                old_root = git(repo, "rev-parse", "refs/gatos/policies/active").strip()
                assert gatos(repo, "policy", "apply", str(rules)).returncode == 0
                new_root = git(repo, "rev-parse", "refs/gatos/policies/active").strip()
                assert new_root != old_root
                second, third = publish(c, "t", 2, "p2", key="k"), publish(c, "t", 3, "p3", key="k")
        finally:
            d.stop()
    roots = []
    for r in (first, second, third):
        assert r["ok"], r
        data = git_bytes(repo, "cat-file", "blob", f"{r['commit']}:event.cbor")
        sig = git_bytes(repo, "cat-file", "blob", f"{r['commit']}:event.sig")
        roots.append(SignedEvent.from_bytes(data, sig).event.policy_root)
    assert roots == [old_root, new_root, new_root]


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_large_batches_on_either_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            loop: str) -> None:
    """Batches too big for one pipe write reach the bus writer on both event loops.

    uvloop makes a watched fd non-blocking; the writer pipe must stay blocking, or a
    large batch fails half-sent and the writer is restarted (found by the slow-consumer
    torture test).
    """
    monkeypatch.setenv("GATOSD_LOOP", loop)
    repo = make_node(tmp_path / "node")
    with short_dir() as sock:
        d = start_daemon(repo, socket_dir=sock)
        try:
            with d.client() as c:
                payload = {"blob": "x" * 4000}
                for j in range(200):
                    c.send({"type": "bus.publish", "id": j, "topic": "big", "payload": payload})
                replies = [c.final(j) for j in range(200)]
            assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]][:2]
            assert sorted(r["position"] for r in replies if r["shard"] == replies[0]["shard"])[0] == 1
            assert "died" not in d.stderr()
        finally:
            d.stop()
    total = sum(int(git(repo, "rev-list", "--count", ref))
                for ref in git(repo, "for-each-ref", "--format=%(refname)", "refs/gatos/mbus/big/").split())
    assert total == 200
