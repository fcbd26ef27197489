"""Many writers on one repository: threads, processes, and a writer killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from gatosd.node import Node
from tests.integration.conftest import gatos, git

pytestmark = pytest.mark.integration

REF = "refs/gatos/journal/shared/user/alice"

WRITER = textwrap.dedent("""
    import sys, orjson
    from gatosd.node import Node
    node = Node.open(sys.argv[1])
    tag, count = sys.argv[2], int(sys.argv[3])
    for i in range(count):
        res = node.add_event("shared", type="w", payload={"w": tag, "i": i})
        sys.stdout.write(orjson.dumps(res.to_dict()).decode() + "\\n")
        sys.stdout.flush()
""")


def _journal(repo: Path) -> list[dict]:
    node = Node.open(str(repo))
    return [e.to_dict() for e in node.log("shared", "user:alice")]


def _assert_linear_and_valid(repo: Path, expected: int) -> None:
    assert int(git(repo, "rev-list", "--count", REF)) == expected
    assert git(repo, "rev-list", "--merges", REF).strip() == ""
    result = gatos(repo, "verify")
    assert result.returncode == 0, result.stdout
    git(repo, "fsck", "--strict", "--no-dangling")


def test_four_processes_append_to_one_journal(node: Path) -> None:
    """Four processes racing on one ref: every event present exactly once, history linear."""
    per = 40
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(node), str(w), str(per)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(4)]
    acked = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        acked += [json.loads(line) for line in out.splitlines()]
    assert len(acked) == 4 * per
    _assert_linear_and_valid(node, 4 * per)
    events = _journal(node)
    assert sorted((e["payload"]["w"], e["payload"]["i"]) for e in events) == sorted(
        (str(w), i) for w in range(4) for i in range(per))
    assert {a["commit"] for a in acked} == {e["commit"] for e in events}


def test_threads_with_their_own_nodes_never_fork_the_journal(node: Path) -> None:
    """Four threads, each with its own Node on the same repository, lose no event."""
    errors: list[BaseException] = []

    def work(tag: int) -> None:
        try:
            n = Node.open(str(node))
            for i in range(25):
                n.add_event("shared", type="t", payload={"w": tag, "i": i})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    _assert_linear_and_valid(node, 100)


def test_group_commit_batch_is_one_pack_and_one_ref_move(node: Path) -> None:
    """append_many writes a batch as one pack; git reads every commit in it."""
    n = Node.open(str(node))
    batch = [("shared", n.sign(n.build_event(type="g", payload={"i": i}))) for i in range(200)]
    packs_before = set((node / ".git" / "objects" / "pack").glob("*.pack"))
    results = n.append_many(batch)
    assert all(not isinstance(r, Exception) and not r.duplicate for r in results)
    packs = set((node / ".git" / "objects" / "pack").glob("*.pack")) - packs_before
    assert len(packs) == 1
    git(node, "verify-pack", str(next(iter(packs))))
    _assert_linear_and_valid(node, 200)
    again = n.append_many(batch)
    assert all(r.duplicate for r in again)  # type: ignore[union-attr]


def test_kill_9_loses_no_acknowledged_event(node: Path) -> None:
    """A writer killed with SIGKILL mid-stream: every event it acknowledged is in the journal."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(node), "k", "100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    acked = []
    assert proc.stdout is not None
    for line in proc.stdout:
        acked.append(json.loads(line))
        if len(acked) >= 60:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    lock = node / ".git" / (REF + ".lock")
    if lock.exists():  # killed inside the compare-and-swap: the next writer must say so
        result = gatos(node, "event", "add", "--ns", "shared", "--type", "w", "--payload", "{}")
        assert result.returncode == 2 and "LOCKED" in result.stderr
        lock.unlink()
    commits = {e["commit"] for e in _journal(node)}
    assert {a["commit"] for a in acked} <= commits
    count = int(git(node, "rev-list", "--count", REF))
    _assert_linear_and_valid(node, count)
    assert gatos(node, "event", "add", "--ns", "shared", "--type", "w", "--payload", "{}").returncode == 0
