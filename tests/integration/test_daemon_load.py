"""The real `gatosd` under many concurrent writers, and its Prometheus metrics."""

from __future__ import annotations

import re
import threading
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import git
from tests.integration.daemon_support import (
    append_frame,
    fsck,
    journal_entries,
    make_node,
    short_dir,
    start_daemon,
    verify_ok,
)
from tests.integration.test_daemon_lifecycle import Appender

pytestmark = pytest.mark.integration


def test_twenty_clients_appending_concurrently_are_all_written_once(tmp_path: Path) -> None:
    """20 clients, 50 appends each: each event exactly once, the journal linear, verify clean."""
    repo = make_node(tmp_path / "node")
    clients, per = 20, 50
    with short_dir() as sockets:
        daemon = start_daemon(repo, socket_dir=sockets)
        try:
            appenders = [Appender(daemon.socket, f"c{i}", window=5, limit=per, ns="many")
                         for i in range(clients)]
            for a in appenders:
                a.start()
            for a in appenders:
                a.join(120)
            for a in appenders:
                assert a.failure is None and a.errors == [], (a.failure, a.errors[:3])
                assert len(a.acked) == per
            with daemon.client() as c:
                status = c.request({"type": "status", "id": "s"})
            assert status["events"] == clients * per
            assert status["batches"] < clients * per  # group commit did group
        finally:
            daemon.stop()
    entries = journal_entries(repo, "many", "user:a")
    seen = [(e["payload"]["w"], e["payload"]["i"]) for e in entries]
    assert sorted(seen) == sorted((f"c{w}", i) for w in range(clients) for i in range(per))
    assert len(set(seen)) == len(seen)
    acked = {ack["commit"] for a in appenders for ack in a.acked.values()}
    assert acked == {e["commit"] for e in entries}
    ref = "refs/gatos/journal/many/user/a"
    assert int(git(repo, "rev-list", "--count", ref)) == clients * per
    assert git(repo, "rev-list", "--merges", ref).strip() == ""
    verify_ok(repo)
    fsck(repo)
    # Every batch was a pack of its own; merging and geometric repacks keep them few.
    packs = list((repo / ".git" / "objects" / "pack").glob("*.idx"))
    assert len(packs) <= 40, f"{len(packs)} packs left for {status['batches']} batches"


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_metrics_endpoint_exposes_the_spec_metrics_and_counts_appends(tmp_path: Path) -> None:
    """GET /metrics names the SPEC's metrics, and the append counter grows with appends."""
    repo = make_node(tmp_path / "node")
    with short_dir() as sockets:
        daemon = start_daemon(repo, "--metrics", "127.0.0.1:0", socket_dir=sockets)
        try:
            url = f"http://{daemon.info['metrics']}/metrics"

            def scrape() -> str:
                with urllib.request.urlopen(url, timeout=10) as response:
                    assert response.status == 200
                    return str(response.read().decode())

            before = scrape()
            for name in ("gatos_journal_append_latency_ms", "gatos_fold_latency_ms",
                         "gatos_bus_ack_lag", "gatos_cache_rebuilds_total"):
                assert re.search(rf"^{name}(_bucket|_count|_sum)?[ {{]", before, re.MULTILINE), name
            assert _metric(before, "gatos_journal_appends_total") == 0
            threads = []
            with daemon.client() as c:
                for i in range(7):
                    assert c.request(append_frame(f"m{i}", "metrics", actor="user:a"))["ok"] is True
                threads = [threading.Thread(target=scrape) for _ in range(3)]  # scrapes race appends
                for t in threads:
                    t.start()
                fixed = {**append_frame("dup", "metrics", actor="user:a"),
                         "event": {"type": "t", "payload": {}, "ulid": "01JZZZZZZZZZZZZZZZZZZZZZZZ"}}
                first, again = c.request(fixed), c.request(fixed)
            for t in threads:
                t.join(10)
            assert first["duplicate"] is False and again["duplicate"] is True
            after = scrape()
            assert _metric(after, "gatos_journal_appends_total") == 8  # a replay is not an append
            assert _metric(after, "gatos_journal_append_latency_ms_count") == 9
            with daemon.client() as c:
                c.request({"type": "no.such.method", "id": "x"})
                assert _metric(scrape(), "gatos_connections") >= 1
            assert 'gatos_requests_failed_total{code="UNKNOWN_TYPE"} 1.0' in scrape()
        finally:
            daemon.stop()
