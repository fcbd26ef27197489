"""Indexes on real repositories: the CLI, git-level determinism, staleness, and the daemon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import gatos, git, snapshot
from tests.integration.daemon_support import make_node, short_dir, start_daemon

pytestmark = pytest.mark.integration


def add(node: Path, n: int, *, ns: str = "shop") -> None:
    for i in range(n):
        out = gatos(node, "event", "add", "--ns", ns, "--type", "order.paid" if i % 2 else "order.placed",
                    "--payload", json.dumps({"customer": f"c{i % 3}", "amount": i}))
        assert out.returncode == 0, out.stderr


def lines(text: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in text.splitlines() if line]


def test_query_rebuild_and_identical_trees(node: Path) -> None:
    """Queries answer from the index; deleting every cache ref and rebuilding gives identical trees."""
    (node / "gatos" / "indexes").mkdir(parents=True)
    (node / "gatos" / "indexes" / "customers.yaml").write_text("ns: shop\nfields: [customer]\nbucket: hour\n")
    add(node, 9)
    found = lines(gatos(node, "query", "--ns", "shop", "--type", "order.paid", "--where", "customer=c1").stdout)
    assert [e["payload"] for e in found] == [{"customer": "c1", "amount": 1}, {"customer": "c1", "amount": 7}]
    assert all(e["type"] == "order.paid" and e["commit"] and e["event_cid"] for e in found)
    count = json.loads(gatos(node, "query", "--ns", "shop", "--actor", "alice", "--count").stdout)
    assert count["matches"] == 9 and count["index"] == "default"
    trees = git(node, "for-each-ref", "--format=%(refname) %(objectname:short) %(tree)", "refs/gatos/cache/")
    assert "refs/gatos/cache/shop-customers" in trees and "refs/gatos/cache/shop-default" in trees
    for ref in ("refs/gatos/cache/shop-customers", "refs/gatos/cache/shop-default"):
        git(node, "update-ref", "-d", ref)
    rebuilt = lines(gatos(node, "cache", "rebuild", "shop").stdout)
    assert {r["mode"] for r in rebuilt} == {"full"}
    after = git(node, "for-each-ref", "--format=%(refname) %(objectname:short) %(tree)", "refs/gatos/cache/")
    assert after == trees
    git(node, "fsck", "--strict", "--no-dangling")


def test_stale_index_is_seen_and_caught_up_on_query(node: Path) -> None:
    """After an append the index is stale (status exit 1); the next query catches up incrementally."""
    add(node, 4)
    assert gatos(node, "cache", "rebuild", "shop").returncode == 0
    assert gatos(node, "cache", "status").returncode == 0
    add(node, 2)
    status = gatos(node, "cache", "status")
    assert status.returncode == 1 and json.loads(status.stdout)["stale"][0]["ns"] == "shop"
    summary = json.loads(gatos(node, "query", "--ns", "shop", "--count").stdout)
    assert summary["update"] == "incremental" and summary["matches"] == 6
    assert gatos(node, "cache", "status").returncode == 0


def test_bad_queries_change_nothing(node: Path) -> None:
    """An unindexed field, a bad time and a bad --where are clear errors; no ref moves."""
    add(node, 2)
    gatos(node, "cache", "rebuild", "shop")
    before = snapshot(node)
    for args, needle in ((["--where", "amount=1"], "INVALID_QUERY"), (["--since", "soon"], "INVALID_QUERY"),
                         (["--where", "amount"], "field=value")):
        out = gatos(node, "query", "--ns", "shop", *args)
        assert out.returncode != 0 and needle in out.stderr, out.stderr
    assert snapshot(node) == before


def test_state_get_reads_one_key(node: Path) -> None:
    """`gatos state get` answers one key of the main channel, and follows new checkpoints."""
    add(node, 3)
    assert gatos(node, "fold", "--ns", "shop").returncode == 0
    got = json.loads(gatos(node, "state", "get", "shop", "by_type").stdout)
    assert got["found"] is True and got["value"] == {"order.paid": 1, "order.placed": 2}
    missing = json.loads(gatos(node, "state", "get", "shop", "nope").stdout)
    assert missing["found"] is False
    add(node, 1)
    gatos(node, "fold", "--ns", "shop")
    after = json.loads(gatos(node, "state", "get", "shop", "by_type").stdout)
    assert after["value"] == {"order.paid": 1, "order.placed": 3}
    assert after["state_commit"] != got["state_commit"]


def test_daemon_cache_query_rebuild_and_state_key(tmp_path: Path) -> None:
    """cache.rebuild streams progress; cache.query and state.get with a key answer over the socket."""
    repo = make_node(tmp_path / "node")
    with short_dir() as sockets:
        daemon = start_daemon(repo, socket_dir=sockets)
        try:
            client = daemon.client(timeout=60)
            for i in range(6):
                body = {"type": "order.placed", "payload": {"customer": f"c{i % 2}"}}
                reply = client.request({"type": "append_event", "id": f"a{i}", "ns": "shop", "event": body})
                assert reply["ok"] is True, reply
            frames = client.request_frames({"type": "cache.rebuild", "id": "r", "ns": "shop"})
            assert frames[0] == {"ack": True, "id": "r"} and frames[-1]["ok"] is True
            assert frames[-1]["indexes"][0]["count"] == 6
            answer = client.request({"type": "cache.query", "id": "q", "ns": "shop",
                                     "actor": "user:a", "limit": 2})
            assert answer["matches"] == 6 and len(answer["events"]) == 2
            typed = client.request({"type": "cache.query", "id": "t", "ns": "shop",
                                    "event_type": "order.placed", "count": True})
            assert typed["matches"] == 6 and typed["events"] == []
            bad = client.request({"type": "cache.query", "id": "b", "ns": "shop", "where": {"customer": "c1"}})
            assert bad["ok"] is False and bad["error"]["code"] == "INVALID_QUERY"
            folded = client.request_frames({"type": "fold_state", "id": "f", "ns": "shop"})
            assert folded[-1]["ok"] is True
            one = client.request({"type": "state.get", "id": "k", "ns": "shop", "key": "by_actor"})
            assert one["found"] is True and one["value"] == {"user:a": 6}
        finally:
            daemon.stop()


def test_index_over_a_compacted_journal(node: Path) -> None:
    """After an epoch compaction the index holds the retained events and queries still answer."""
    add(node, 4)
    assert gatos(node, "epoch", "new", "shop").returncode == 0
    add(node, 3)
    compact = gatos(node, "epoch", "compact", "shop")
    assert compact.returncode == 0, compact.stderr
    rebuilt = lines(gatos(node, "cache", "rebuild", "shop").stdout)
    assert rebuilt[0]["mode"] == "full" and 3 <= rebuilt[0]["count"] <= 7
    found = lines(gatos(node, "query", "--ns", "shop", "--type", "order.placed").stdout)
    assert found and all(e["type"] == "order.placed" for e in found)


def test_parallel_rebuild_equals_serial(tmp_path: Path) -> None:
    """Journals walked in worker processes give the same tree as one walk in-process."""
    from gatosd._cache_wiring import cache_store
    from gatosd.node import Node
    from kv_cache import IndexSpec
    from tests.integration.daemon_support import make_node

    repo = make_node(tmp_path / "node", "user:a", "user:b", "user:c")
    node = Node.open(str(repo))
    for i in range(30):
        node.add_event("shop", type=f"t{i % 3}", payload={"i": i}, actor=("user:a", "user:b", "user:c")[i % 3])
    (repo / "gatos" / "indexes").mkdir(parents=True)
    (repo / "gatos" / "indexes" / "by-i.yaml").write_text("ns: shop\nfields: [i]\n")
    parallel = lines(gatos(repo, "cache", "rebuild", "shop").stdout)
    assert [r["count"] for r in parallel] == [30, 30]
    for spec in (IndexSpec("shop"), IndexSpec("shop", "by-i", ("i",))):
        tree = git(repo, "rev-parse", f"{spec.ref}^{{tree}}")
        git(repo, "update-ref", "-d", spec.ref)
        serial = cache_store(Node.open(str(repo))).update(spec, full=True)
        assert serial.count == 30 and git(repo, "rev-parse", f"{spec.ref}^{{tree}}") == tree
    hit = lines(gatos(repo, "query", "--ns", "shop", "--where", "i=7").stdout)
    assert [e["payload"] for e in hit] == [{"i": 7}]
