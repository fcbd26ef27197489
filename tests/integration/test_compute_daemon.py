"""The daemon's jobs.* methods over a real socket, with a real worker process."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import BIN, git, snapshot
from tests.integration.daemon_support import Daemon, JsonlClient, make_node, short_dir, start_daemon

pytestmark = pytest.mark.integration


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    repo = make_node(tmp_path / "node", "user:a", "agent:plain")
    with short_dir() as sockets:
        d = start_daemon(repo, socket_dir=sockets)
        try:
            yield d
        finally:
            d.stop()


def run_worker(repo: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.Popen([str(BIN / "gatos"), "--repo", str(repo), "worker", "--exit-when-idle", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_enqueue_wait_status_result(daemon: Daemon) -> None:
    """jobs.enqueue, then jobs.wait streams states and ends with the verified result."""
    client = daemon.client(timeout=60)
    reply = client.request({"type": "jobs.enqueue", "id": "e1", "ns": "work",
                            "manifest": {"command": ["/bin/echo"], "args": ["from", "daemon"], "timeout": 30}})
    assert reply["ok"] is True and reply["duplicate"] is False, reply
    job_id = reply["job_id"]
    again = client.request({"type": "jobs.enqueue", "id": "e2", "ns": "work", "command": ["/bin/echo"],
                            "args": ["from", "daemon"], "timeout": 30})
    assert again["job_id"] == job_id and again["duplicate"] is True
    client.send({"type": "jobs.wait", "id": "w1", "job_id": job_id})
    assert client.recv()["ack"] is True
    first = client.recv()
    assert first["state"] == "pending", first
    proc = run_worker(daemon.repo)
    frames = client.frames_until("w1", timeout=60)
    proc.communicate(timeout=60)
    final = frames[-1]
    assert final["ok"] is True and final["outputs"]["stdout"] == "from daemon\n" and final["verified"] is True
    status = client.request({"type": "jobs.status", "id": "s1", "job_id": job_id})
    assert status["state"] == "succeeded" and [h["state"] for h in status["history"]][:1] == ["pending"]
    result = client.request({"type": "jobs.result", "id": "r1", "job_id": job_id})
    assert result["poe"]["job_id"] == job_id
    announced = git(daemon.repo, "for-each-ref", "--format=%(refname)", "refs/gatos/mbus/gatos.jobs.pending/")
    assert announced.strip(), "creating a job did not publish on gatos.jobs.pending"


def test_claim_is_exclusive_between_clients_and_cancel(daemon: Daemon) -> None:
    """Two clients claim the same job: one wins; cancel then ends it for everyone."""
    a, b = daemon.client(), daemon.client()
    job_id = a.request({"type": "jobs.enqueue", "id": "e", "ns": "work",
                        "manifest": {"command": ["true"], "timeout": 5}})["job_id"]
    first = a.request({"type": "jobs.claim", "id": "c1", "job_id": job_id, "lease_ms": 60_000})
    second = b.request({"type": "jobs.claim", "id": "c2", "job_id": job_id, "lease_ms": 60_000})
    assert first["claimed"] is True and second["claimed"] is False
    cancelled = b.request({"type": "jobs.cancel", "id": "x", "job_id": job_id, "reason": "test"})
    assert cancelled["state"] == "aborted"
    again = a.request({"type": "jobs.cancel", "id": "y", "job_id": job_id})
    assert again["ok"] is False and again["error"]["code"] == "JOB_FINISHED"
    status = a.request({"type": "jobs.status", "id": "s", "job_id": job_id})
    assert status["state"] == "aborted"


def test_denied_and_bad_requests_change_nothing(daemon: Daemon) -> None:
    """POLICY_DENY for an actor without jobs caps, INVALID_JOB for a bad manifest; refs unchanged."""
    client: JsonlClient = daemon.client()
    before = snapshot(daemon.repo)
    bad = client.request({"type": "jobs.enqueue", "id": "b", "ns": "work",
                          "manifest": {"command": ["true"], "timeout": 5, "runtime": "x"}})
    assert bad["ok"] is False and bad["error"]["code"] == "INVALID_JOB" and "runtime" in bad["error"]["reason"]
    missing = client.request({"type": "jobs.status", "id": "m", "job_id": "blake3:" + "0" * 64})
    assert missing["error"]["code"] == "JOB_NOT_FOUND"
    assert snapshot(daemon.repo) == before
    denied = client.request({"type": "jobs.enqueue", "id": "d", "ns": "work", "actor": "agent:plain",
                             "manifest": {"command": ["true"], "timeout": 5}})
    assert denied["ok"] is False and denied["error"]["code"] == "POLICY_DENY"
    assert "jobs:work:enqueue" in denied["error"]["reason"] and denied["error"]["rule"]
    after = snapshot(daemon.repo)
    assert "refs/gatos/jobs/" not in after[0]
