"""Workers as real processes: racing for jobs, dying mid-job, and the CLI around them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from compute import Manifest, fold_lifecycle
from gatosd._jobs_wiring import job_store, lifecycle_events, local_service
from gatosd.node import Node
from tests.integration.conftest import BIN, gatos, git

pytestmark = pytest.mark.integration


def worker(repo: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.Popen([str(BIN / "gatos"), "--repo", str(repo), "worker", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def enqueue_many(repo: Path, count: int) -> list[str]:
    node = Node.open(str(repo))
    service = local_service(node, node.default_actor)
    manifests = [Manifest.from_value({"command": ["/bin/echo"], "args": [f"job-{i}"], "timeout": 30})
                 for i in range(count)]
    return [service.enqueue(m, "work", node.default_actor)["job_id"] for m in manifests]


def test_eight_workers_in_four_processes_run_200_jobs_exactly_once(node: Path) -> None:
    """Every job has one claim, one run and one result, whoever won it."""
    job_ids = enqueue_many(node, 200)
    procs = [worker(node, "--concurrency", "2", "--exit-when-idle") for _ in range(4)]
    counts = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        counts.append(json.loads(out.splitlines()[-1])["jobs_run"])
    assert sum(counts) == 200
    n = Node.open(str(node))
    store = job_store(n)
    events = lifecycle_events(n, "work")
    kinds = Counter((e[0], e[1]["job_id"]) for e in events)
    for job_id in job_ids:
        found = store.result(job_id)
        assert found is not None and found[1]["Job-Status"] == "succeeded"
        assert kinds[("job.claimed", job_id)] == 1 and kinds[("job.running", job_id)] == 1
        assert kinds[("job.succeeded", job_id)] == 1
        assert store.current_claim(job_id).attempt == 1  # type: ignore[union-attr]
    assert sum(1 for c in counts if c > 0) >= 2, f"one process did everything: {counts}"
    assert gatos(node, "verify").returncode == 0
    git(node, "fsck", "--no-dangling")


def test_worker_killed_mid_job_the_job_completes_once_after_the_lease(node: Path) -> None:
    """kill -9 of the worker: its job dies with it, and another worker finishes it after the lease."""
    out = gatos(node, "jobs", "enqueue", "--ns", "work", "--command", '["sh","-c"]',
                "--args", '["sleep 2; echo finished"]', "--timeout", "60")
    job_id = json.loads(out.stdout)["job_id"]
    first = worker(node, "--lease-ms", "1500")
    n = Node.open(str(node))
    store = job_store(n)
    deadline = time.monotonic() + 20
    while store.current_claim(job_id) is None or not any(
            e[0] == "job.running" for e in lifecycle_events(n, "work")):
        assert time.monotonic() < deadline, "the first worker never started the job"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    deadline = time.monotonic() + 1  # well before the job's own 2 s end
    while subprocess.run(["pgrep", "-f", "sleep 2; echo finished"], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the job outlived its worker"
        time.sleep(0.05)
    assert store.result(job_id) is None
    second = worker(node, "--lease-ms", "1500", "--max-jobs", "1")
    _, err2 = second.communicate(timeout=60)
    assert second.returncode == 0, err2
    found = store.result(job_id)
    assert found is not None and found[1]["Job-Status"] == "succeeded"
    assert store.current_claim(job_id).attempt == 2  # type: ignore[union-attr]
    status = fold_lifecycle(job_id, lifecycle_events(Node.open(str(node)), "work"))
    assert status["state"] == "succeeded" and status["attempts"] == 2
    result = json.loads(gatos(node, "jobs", "result", job_id).stdout)
    assert result["outputs"]["stdout"] == "finished\n" and result["verified"] is True


def test_cli_enqueue_status_result_cancel_reproduce(node: Path, tmp_path: Path) -> None:
    """The CLI round trip, a failing job with retries, a cancel, and reproduce reporting drift."""
    job_yaml = tmp_path / "job.yaml"
    job_yaml.write_text("command: [sh, -c]\nargs: ['cat inputs/* > out/copy.txt; echo ok']\ntimeout: 30\n"
                        "inputs: []\n")
    data = tmp_path / "data.txt"
    data.write_text("input bytes\n")
    pointer = json.loads(gatos(node, "blob", "put", str(data)).stdout)
    manifest = job_yaml.read_text().replace("inputs: []", f"inputs: [{json.dumps(pointer)}]")
    job_yaml.write_text(manifest)
    enqueued = gatos(node, "jobs", "enqueue", "--ns", "work", "--file", str(job_yaml))
    job_id = json.loads(enqueued.stdout)["job_id"]
    again = json.loads(gatos(node, "jobs", "enqueue", "--ns", "work", "--file", str(job_yaml)).stdout)
    assert again["duplicate"] is True and again["job_id"] == job_id
    assert json.loads(gatos(node, "jobs", "status", job_id).stdout)["state"] == "pending"
    flaky = json.loads(gatos(node, "jobs", "enqueue", "--ns", "work", "--command", '["sh","-c"]',
                             "--args", '["exit 7"]', "--timeout", "10").stdout)["job_id"]
    w = worker(node, "--exit-when-idle", "--max-attempts", "3", "--backoff-ms", "10")
    w.communicate(timeout=60)
    result = json.loads(gatos(node, "jobs", "result", job_id).stdout)
    assert result["outputs"]["out/copy.txt"] == "input bytes\n" and result["status"] == "succeeded"
    failed = json.loads(gatos(node, "jobs", "status", flaky).stdout)
    assert failed["state"] == "failed" and failed["runs"] == 3 and failed["exit_code"] == 7
    assert json.loads(gatos(node, "reproduce", job_id).stdout)["identical"] is True
    # cancel: a pending job is aborted, and a cancel after the end is refused
    victim = json.loads(gatos(node, "jobs", "enqueue", "--ns", "work", "--command", '["true"]',
                              "--timeout", "5").stdout)["job_id"]
    assert json.loads(gatos(node, "jobs", "cancel", victim, "--reason", "no").stdout)["state"] == "aborted"
    refused = gatos(node, "jobs", "cancel", victim)
    assert refused.returncode != 0 and "JOB_FINISHED" in refused.stderr
    assert json.loads(gatos(node, "jobs", "status", victim).stdout)["state"] == "aborted"
    assert json.loads(gatos(node, "worker", "--exit-when-idle").stdout)["jobs_run"] == 0


def test_reproduce_reports_drift(node: Path) -> None:
    """A job whose output differs on a re-run is reported with the first differing output."""
    out = gatos(node, "jobs", "enqueue", "--ns", "work", "--command", '["sh","-c"]',
                "--args", '["head -c 8 /dev/urandom | od -An -tx1"]', "--timeout", "10")
    job_id = json.loads(out.stdout)["job_id"]
    worker(node, "--exit-when-idle").communicate(timeout=60)
    report = gatos(node, "reproduce", job_id)
    assert report.returncode == 1
    assert json.loads(report.stdout)["drift"]["name"] == "stdout"


def test_bad_manifest_and_denied_enqueue_change_nothing(node: Path) -> None:
    """A manifest with an unknown field and an actor without jobs caps are refused; refs unchanged."""
    from tests.integration.conftest import snapshot

    bad = gatos(node, "jobs", "enqueue", "--ns", "work", "--command", '["true"]', "--timeout", "-1")
    assert bad.returncode != 0 and "INVALID_JOB" in bad.stderr
    assert gatos(node, "key", "new", "--actor", "agent:nobody").returncode == 0
    before = snapshot(node)
    denied = gatos(node, "jobs", "enqueue", "--ns", "work", "--command", '["true"]', "--timeout", "5",
                   "--actor", "agent:nobody")
    assert denied.returncode != 0
    error = json.loads(denied.stderr)["error"]
    assert error["code"] == "POLICY_DENY" and "jobs:work:enqueue" in error["reason"]
    refs_after = snapshot(node)[0]
    assert "refs/gatos/jobs/" not in refs_after
    assert [line for line in refs_after.splitlines() if "audit" not in line] == \
        [line for line in before[0].splitlines() if "audit" not in line]


def test_webassembly_job_end_to_end(node: Path, tmp_path: Path) -> None:
    """A module from the blob store runs under the wasm runner, with a verified, reproducible result."""
    from tests.unit.test_compute_wasm import HELLO, LOOP

    module = tmp_path / "hello.wasm"
    module.write_bytes(HELLO)
    pointer = json.loads(gatos(node, "blob", "put", str(module)).stdout)
    job_id = json.loads(gatos(node, "jobs", "enqueue", "--ns", "work", "--command",
                              json.dumps(["wasm", pointer["hash"]]), "--timeout", "10").stdout)["job_id"]
    looping = tmp_path / "loop.wasm"
    looping.write_bytes(LOOP)
    loop_hash = json.loads(gatos(node, "blob", "put", str(looping)).stdout)["hash"]
    loop_id = json.loads(gatos(node, "jobs", "enqueue", "--ns", "work", "--command",
                               json.dumps(["wasm", loop_hash]), "--timeout", "10").stdout)["job_id"]
    out = worker(node, "--exit-when-idle", "--runtime", "wasm").communicate(timeout=60)[0]
    assert json.loads(out.splitlines()[-1])["jobs_run"] == 2
    result = json.loads(gatos(node, "jobs", "result", job_id).stdout)
    assert result["outputs"]["stdout"] == "hello\n" and result["poe"]["runner"]["program"] == pointer["hash"]
    assert result["poe"]["runner"]["platform"].startswith("wasm32")
    assert json.loads(gatos(node, "reproduce", job_id).stdout)["identical"] is True
    endless = json.loads(gatos(node, "jobs", "result", loop_id).stdout)
    assert endless["status"] == "failed" and endless["exit"]["reason"] == "fuel"
