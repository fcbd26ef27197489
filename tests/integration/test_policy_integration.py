"""The gate on real repositories: the CLI, the daemon subprocess, and plain `git` on the audit."""

from __future__ import annotations

import json
from pathlib import Path

from gatosd.node import Node
from tests.integration.conftest import gatos, git, snapshot
from tests.integration.daemon_support import short_dir, start_daemon

AUDIT = "refs/gatos/audit/policy"


def _without_audit(snap: tuple[str, frozenset[str]]) -> str:
    return "\n".join(line for line in snap[0].splitlines() if not line.startswith(AUDIT))


def _audit_objects(repo: Path, since: str | None) -> set[str]:
    span = f"{since}..{AUDIT}" if since else AUDIT
    out = set()
    for commit in git(repo, "rev-list", span).split():
        tree = git(repo, "rev-parse", f"{commit}^{{tree}}").strip()
        out |= {commit, tree}
        out |= {line.split()[2] for line in git(repo, "ls-tree", tree).splitlines()}
    return out


def test_cli_deny_is_json_on_stderr_and_audited(node: Path) -> None:
    """A denied append: the error frame on stderr, exit 2, nothing but an audit commit written."""
    assert gatos(node, "key", "new", "--actor", "user:bob").returncode == 0
    before = snapshot(node)
    result = gatos(node, "event", "add", "--ns", "demo", "--type", "t", "--payload", "{}",
                   "--actor", "user:bob", "--no-daemon")
    assert result.returncode == 2
    frame = json.loads(result.stderr)
    assert frame["ok"] is False and "id" in frame
    assert frame["error"] == {"code": "POLICY_DENY", "rule": "00-default.rules:7",
                              "reason": "missing cap: demo:append"}
    after = snapshot(node)
    assert _without_audit(after) == _without_audit(before)
    assert after[1] - before[1] == _audit_objects(node, None)
    body = git(node, "log", "-1", "--format=%B", AUDIT)
    for trailer in ("Policy-Rule: 00-default.rules:7", "Decision: deny", "Actor: user:bob",
                    "Target: demo", "Reason: missing cap: demo:append"):
        assert trailer in body
    active = git(node, "rev-parse", "refs/gatos/policies/active").strip()
    assert f"Policy-Root: {active}" in body
    record = json.loads(git(node, "cat-file", "-p", f"{AUDIT}:decision.json"))
    assert record["request"]["actor"] == "user:bob" and record["decision"]["allowed"] is False
    git(node, "fsck", "--strict")
    replay = json.loads(gatos(node, "audit", "replay").stdout)
    assert replay == {"ok": True, "checked": 1, "differ": []}


def test_grant_then_revoke_through_the_cli(node: Path) -> None:
    """grant prints the id, lets the subject append; revoke takes it back (denied and audited)."""
    assert gatos(node, "key", "new", "--actor", "user:bob").returncode == 0
    out = gatos(node, "grant", "--to", "user:bob", "--caps", "demo:append", "--exp", "2099-01-01T00:00:00Z")
    assert out.returncode == 0, out.stderr
    grant_id = json.loads(out.stdout)["grant_id"]
    assert grant_id.startswith("blake3:")
    hexid = grant_id.split(":")[1]
    git(node, "cat-file", "-e", f"refs/gatos/trust:gatos/trust/grants/{hexid}.json")
    add = ("event", "add", "--ns", "demo", "--type", "t", "--payload", "{}", "--actor", "user:bob",
           "--no-daemon")
    assert gatos(node, *add).returncode == 0
    assert gatos(node, "revoke", grant_id, "--reason", "test").returncode == 0
    denied = gatos(node, *add)
    assert denied.returncode == 2 and "was revoked" in json.loads(denied.stderr)["error"]["reason"]
    # bob cannot grant himself more (he holds no trust:grant)
    escal = gatos(node, "grant", "--to", "user:bob", "--caps", "*", "--as", "user:bob")
    assert escal.returncode == 2 and json.loads(escal.stderr)["error"]["code"] == "POLICY_DENY"
    log = [json.loads(x) for x in gatos(node, "audit", "log", "--json").stdout.splitlines()]
    assert [r["request"]["action"] for r in log[:2]] == ["trust.grant", "append"]
    git(node, "fsck", "--strict")


def test_policy_apply_show_test(node: Path, tmp_path: Path) -> None:
    """apply moves active (fast-forward) and <bundle-id>; test prints a decision table."""
    rules = tmp_path / "p"
    rules.mkdir()
    (rules / "10-main.rules").write_text("audit all\ndeny ns=secret reason=\"closed\"\nrequire caps=$cap\n")
    old = git(node, "rev-parse", "refs/gatos/policies/active").strip()
    out = json.loads(gatos(node, "policy", "apply", str(rules)).stdout)
    assert out["changed"] and out["previous"] == old
    assert git(node, "rev-parse", f"refs/gatos/policies/{out['bundle_id']}").strip() == out["commit"]
    assert git(node, "rev-parse", f"{out['commit']}^").strip() == old
    trailers = git(node, "log", "-1", "--format=%B", out["commit"])
    assert f"Policy-Root: blake3:{out['bundle_id']}" in trailers and "Policy-Code-Root: sha256:" in trailers
    shown = json.loads(gatos(node, "policy", "show", "--json").stdout)
    assert shown["bundle_id"] == out["bundle_id"] and shown["audit"] == "all"
    reqs = tmp_path / "reqs.jsonl"
    reqs.write_text('{"actor":"user:alice","action":"append","target":"secret","expect":"deny"}\n'
                    '{"actor":"user:alice","action":"append","target":"demo","expect":"allow"}\n')
    table = gatos(node, "policy", "test", str(reqs))
    assert table.returncode == 0, table.stdout
    assert "10-main.rules:2" in table.stdout and "closed" in table.stdout
    # audit all: the allowed append is recorded too
    assert gatos(node, "event", "add", "--ns", "demo", "--type", "t", "--payload", "{}").returncode == 0
    assert "Decision: allow" in git(node, "log", "-1", "--format=%B", AUDIT)
    # applying the active bundle again changes nothing
    same = gatos(node, "policy", "apply", str(rules))
    assert json.loads(same.stdout)["changed"] is False


def test_daemon_answers_the_exact_policy_deny_frame(tmp_path: Path) -> None:
    """The daemon's writer gates, audits, and answers the POLICY_DENY frame with the rule."""
    repo = tmp_path / "node"
    node, _ = Node.init(str(repo), "user:a", discover=False)
    node.new_key("user:james")
    with short_dir() as folder:
        daemon = start_daemon(repo, socket_dir=folder)
        try:
            before = snapshot(repo)
            with daemon.client() as client:
                reply = client.request({"type": "append_event", "id": "01A", "ns": "finance", "actor": "james",
                                        "event": {"type": "invoice.created", "payload": {"id": 1}}})
                assert reply == {"ok": False, "id": "01A", "error": {
                    "code": "POLICY_DENY", "rule": "00-default.rules:7",
                    "reason": "missing cap: finance:append"}}
                after = snapshot(repo)
                assert _without_audit(after) == _without_audit(before)
                assert after[1] - before[1] == _audit_objects(repo, None)
                ok = client.request({"type": "append_event", "id": "01B", "ns": "finance", "actor": "user:a",
                                     "event": {"type": "invoice.created", "payload": {"id": 2}}})
                assert ok["ok"] is True
                # granted while the daemon runs: the writer sees the new trust ref on its next batch
                assert gatos(repo, "grant", "--to", "user:james", "--caps", "finance:append").returncode == 0
                again = client.request({"type": "append_event", "id": "01C", "ns": "finance", "actor": "james",
                                        "event": {"type": "invoice.created", "payload": {"id": 3}}})
                assert again["ok"] is True, again
        finally:
            assert daemon.terminate() == 0
    assert "Actor: user:james" in git(repo, "log", "--format=%B", AUDIT)
    git(repo, "fsck", "--strict")
