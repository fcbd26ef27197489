"""Folds on real repositories: the CLI, `git` itself, and the real daemon's `fold_state`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from gatosd.node import Node
from tests.integration.conftest import gatos, git
from tests.integration.daemon_support import assert_unchanged, make_node, short_dir, snapshot, start_daemon
from tests.unit.fold_support import INVOICES

pytestmark = pytest.mark.integration

SPEC = """fold_id: invoices
version: 1
ns: finance
events: [invoice.created, invoice.paid]
program: invoices.lua
channels: [table, totals]
"""


def fold_node(tmp_path: Path, events: int = 5, program: str = INVOICES) -> Path:
    repo = make_node(tmp_path / "node", "user:alice", "user:bob")
    node = Node.open(str(repo))
    for i in range(events):
        node.add_event("finance", type="invoice.created", payload={"id": f"INV-{i}", "amount": 10 * i},
                       actor=("user:alice", "user:bob")[i % 2])
    node.add_event("finance", type="invoice.paid", payload={"id": "INV-1"}, actor="user:bob")
    folds = repo / "gatos" / "folds"
    folds.mkdir(parents=True)
    (folds / "invoices.yaml").write_text(SPEC)
    (folds / "invoices.lua").write_text(program)
    return repo


def run_json(repo: Path, *args: str) -> dict:
    result = gatos(repo, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_cli_fold_writes_a_checkpoint_git_can_read(tmp_path: Path) -> None:
    """`gatos fold` writes a commit git reads as is, and `git fsck --strict` stays clean."""
    repo = fold_node(tmp_path)
    out = run_json(repo, "fold", "--ns", "finance", "--channel", "totals")
    assert out["value"] == {"count": 5, "cents": 100} and out["written"] is True
    body = git(repo, "cat-file", "-p", "refs/gatos/state/finance")
    assert f"State-Root: {out['state_root']}" in body
    assert "Fold-Engine: echo@" in body and body.count("Ledger-Head: ") == 2
    assert git(repo, "cat-file", "-p", "refs/gatos/state/finance:state/finance/totals.json") == \
        '{"cents":100,"count":5}'
    assert git(repo, "cat-file", "-p", "refs/gatos/state/finance:fold/program.lua") == INVOICES
    git(repo, "fsck", "--strict")
    shown = run_json(repo, "state", "show", "finance", "--channel", "table")
    assert shown["value"]["INV-1"]["paid"] is True and shown["commit"] == out["commit"]


def test_cli_fold_verify_passes_then_fails_on_a_forged_state_root(tmp_path: Path) -> None:
    repo = fold_node(tmp_path)
    out = run_json(repo, "fold", "--ns", "finance")
    ok = gatos(repo, "fold", "verify", "refs/gatos/state/finance")
    assert ok.returncode == 0 and "ok:" in ok.stdout
    # Forge: same tree, another State-Root, put on the ref with plain git.
    message = git(repo, "log", "-1", "--format=%B", "refs/gatos/state/finance")
    forged_msg = message.replace(out["state_root"], "blake3:" + "1" * 64)
    tree = git(repo, "rev-parse", "refs/gatos/state/finance^{tree}").strip()
    forged = subprocess.run(["git", "-C", str(repo), "commit-tree", tree, "-m", forged_msg],
                            capture_output=True, text=True, check=True).stdout.strip()
    git(repo, "update-ref", "refs/gatos/state/finance", forged)
    bad = gatos(repo, "fold", "verify", "finance", "--json")
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert not report["ok"] and any("State-Root" in p for p in report["problems"])


@pytest.mark.parametrize("program", [
    "function step(s, e) s.totals.avg = 1 / 3 end",
    "function step(s, e) while true do end end",
    "function step(s, e) s.table.t = os.time() end",
])
def test_cli_poison_fold_exits_2_and_changes_nothing(tmp_path: Path, program: str) -> None:
    repo = fold_node(tmp_path, program=program)
    before = snapshot(repo)
    result = gatos(repo, "fold", "--ns", "finance")
    assert result.returncode == 2 and result.stderr.startswith("gatos: FOLD_"), result.stderr
    assert_unchanged(repo, before)


def test_cli_state_at_an_event_and_incremental_fold(tmp_path: Path) -> None:
    repo = fold_node(tmp_path)
    run_json(repo, "fold", "--ns", "finance")
    node = Node.open(str(repo))
    node.add_event("finance", type="invoice.created", payload={"id": "INV-9", "amount": 7})
    again = run_json(repo, "fold", "--ns", "finance", "--channel", "totals")
    assert again["incremental"] is True and again["new_events"] == 1 and again["value"]["count"] == 6
    full = run_json(repo, "fold", "--ns", "finance", "--full")
    assert full["state_root"] == again["state_root"]
    third = node.log("finance")[-3]  # log is newest first
    at = run_json(repo, "state", "at", "--ns", "finance", "--event", third.signed.event.ulid,
                  "--channel", "totals")
    assert at["value"]["count"] == 3 and at["event"]["position"] == 3


def test_daemon_fold_state_upstream_frame(tmp_path: Path) -> None:
    """The upstream example frame: ack, progress, then state_root and commit; state.get agrees."""
    repo = fold_node(tmp_path)
    with short_dir() as folder:
        daemon = start_daemon(repo, socket_dir=folder)
        try:
            with daemon.client() as client:
                frames = client.request_frames({"type": "fold_state", "id": "01C", "ns": "finance",
                                                "channel": "table", "spec": "folds/invoices.yaml"})
                assert frames[0] == {"ack": True, "id": "01C"}
                assert any("progress" in f for f in frames[1:-1])
                final = frames[-1]
                assert final["ok"] is True, final
                assert final["state_root"].startswith("blake3:") and len(final["commit"]) == 40
                assert final["value"]["INV-1"] == {"amount": 10, "paid": True, "by": "user:bob"}
                got = client.request({"type": "state.get", "id": "g", "ns": "finance", "channel": "totals"})
                assert got["ok"] and got["commit"] == final["commit"] and got["value"]["count"] == 5
                before = snapshot(repo)
                bad = client.request({"type": "fold_state", "id": "x", "ns": "finance",
                                      "spec": "../../../etc/passwd"})
                assert bad["ok"] is False and bad["error"]["code"] == "INVALID_FOLD_SPEC", bad
                bad_ns = client.request({"type": "fold_state", "id": "y", "ns": "../x"})
                assert bad_ns["error"]["code"] == "INVALID_NS"
                missing = client.request({"type": "state.get", "id": "z", "ns": "nothing"})
                assert missing["error"]["code"] == "NOT_FOUND"
                assert_unchanged(repo, before)
                client.hello()
        finally:
            daemon.stop()
    git(repo, "fsck", "--strict")
