"""Policy and trust changes made by other processes apply to a running gate's next write.

The gate skips re-reading the refs while their files are unchanged (`policy_refs_stamp`)
and memoizes allowed appends; these tests change policy with the real CLI (another
process) and then append through the same long-lived `Node` or daemon.
"""

from __future__ import annotations

import json
from pathlib import Path

from gatosd.node import Node
from ledger_core import AppendResult
from policy import PolicyDenied
from tests.integration.conftest import gatos, git
from tests.integration.daemon_support import short_dir, start_daemon

AUDIT = "refs/gatos/audit/policy"


def _append(node: Node, actor: str, ns: str = "demo") -> object:
    event = node.sign(node.build_event(type="t", payload={}, actor=actor))
    result = node.append_many([(ns, event)])[0]
    return result


def test_cli_changes_apply_to_the_next_append(tmp_path: Path) -> None:
    """grant, revoke and policy apply by other processes; each seen by the next append."""
    repo = tmp_path / "node"
    node, _ = Node.init(str(repo), "user:a", discover=False)
    node.new_key("user:bob")
    assert isinstance(_append(node, "user:bob"), PolicyDenied)
    out = gatos(repo, "grant", "--to", "user:bob", "--caps", "demo:append")
    assert out.returncode == 0, out.stderr
    grant_id = json.loads(out.stdout)["grant_id"]
    for _ in range(3):  # allowed, then from the memo
        assert isinstance(_append(node, "user:bob"), AppendResult)
    assert gatos(repo, "revoke", grant_id, "--reason", "gone").returncode == 0
    denied = _append(node, "user:bob")
    assert isinstance(denied, PolicyDenied) and "was revoked" in denied.reason
    assert "Reason: missing cap: demo:append" in git(repo, "log", "-1", "--format=%B", AUDIT)

    assert isinstance(_append(node, "user:a"), AppendResult)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "10.rules").write_text('deny ns=demo reason="closed"\nrequire caps=$cap\n')
    assert gatos(repo, "policy", "apply", str(rules)).returncode == 0
    denied = _append(node, "user:a")
    assert isinstance(denied, PolicyDenied) and denied.reason == "closed"
    assert isinstance(_append(node, "user:a", "other"), AppendResult)


def test_packed_refs_are_still_followed(tmp_path: Path) -> None:
    """After `git pack-refs --all` (no loose ref files) changes are still seen."""
    repo = tmp_path / "node"
    node, _ = Node.init(str(repo), "user:a", discover=False)
    node.new_key("user:bob")
    out = gatos(repo, "grant", "--to", "user:bob", "--caps", "demo:append")
    grant_id = json.loads(out.stdout)["grant_id"]
    assert isinstance(_append(node, "user:bob"), AppendResult)
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "gatos" / "trust").exists()
    assert isinstance(_append(node, "user:bob"), AppendResult)
    assert gatos(repo, "revoke", grant_id, "--reason", "gone").returncode == 0
    assert isinstance(_append(node, "user:bob"), PolicyDenied)


def test_daemon_writer_sees_a_revocation_on_its_next_batch(tmp_path: Path) -> None:
    """A revocation by `gatos revoke` beside a running daemon denies the next append."""
    repo = tmp_path / "node"
    node, _ = Node.init(str(repo), "user:a", discover=False)
    node.new_key("user:bob")
    out = gatos(repo, "grant", "--to", "user:bob", "--caps", "demo:append")
    grant_id = json.loads(out.stdout)["grant_id"]

    def frame(i: int) -> dict[str, object]:
        return {"type": "append_event", "id": f"0{i}", "ns": "demo", "actor": "user:bob",
                "event": {"type": "t", "payload": {"i": i}}}
    with short_dir() as folder:
        daemon = start_daemon(repo, socket_dir=folder)
        try:
            with daemon.client() as client:
                for i in range(3):
                    assert client.request(frame(i))["ok"] is True
                assert gatos(repo, "revoke", grant_id, "--reason", "gone").returncode == 0
                reply = client.request(frame(9))
                assert reply["ok"] is False and reply["error"]["code"] == "POLICY_DENY", reply
                assert "was revoked" in reply["error"]["reason"]
        finally:
            assert daemon.terminate() == 0


def test_event_signed_under_a_replaced_bundle_is_denied(tmp_path: Path) -> None:
    """Built before `gatos policy apply`, appended after: denied (gatos:policy-root), audited;
    built again under the active bundle it is appended, naming it in its Policy-Root trailer."""
    repo = tmp_path / "node"
    node, _ = Node.init(str(repo), "user:a", discover=False)
    stale = node.sign(node.build_event(type="t", payload={}, actor="user:a"))
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "10.rules").write_text("require caps=$cap\n")
    assert gatos(repo, "policy", "apply", str(rules)).returncode == 0
    denied = node.append_many([("demo", stale)])[0]
    assert isinstance(denied, PolicyDenied) and denied.rule == "gatos:policy-root"
    assert "Policy-Rule: gatos:policy-root" in git(repo, "log", "-1", "--format=%B", AUDIT)
    result = node.append_many([("demo", node.sign(node.build_event(type="t", payload={}, actor="user:a")))])[0]
    assert isinstance(result, AppendResult)
    active = git(repo, "rev-parse", "refs/gatos/policies/active").strip()
    assert f"Policy-Root: {active}" in git(repo, "log", "-1", "--format=%B", "refs/gatos/journal/demo/user/a")
    replay = json.loads(gatos(repo, "audit", "replay").stdout)
    assert replay["ok"] is True
