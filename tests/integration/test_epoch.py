"""Epochs on real repositories: anchor, compact into a git bundle, verify from the
anchor, keep appending, restore; and a cut that no anchor recorded stays an error."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from gatosd.node import Node
from tests.integration.conftest import gatos, git

JOURNAL = "refs/gatos/journal/fin/user/alice"


def add(repo: Path, i: int) -> None:
    """Append in-process (the same `Node.add_event` the CLI runs; saves a process per event)."""
    Node.open(str(repo)).add_event("fin", type="t", payload={"i": i})


def verify(repo: Path) -> dict:
    result = gatos(repo, "verify", "--json", "--no-daemon")
    return {"code": result.returncode, **json.loads(result.stdout)}


def quick_verify(repo: Path) -> dict:
    """`gatos verify` in-process (`Node.verify`, what the CLI runs)."""
    report = Node.open(str(repo)).verify().to_dict()
    return {"code": 0 if report["ok"] else 1, **report}


def test_epoch_new_compact_verify_restore_round_trip(node: Path, tmp_path: Path) -> None:
    """History below the anchor goes to a bundle `git bundle verify` accepts and leaves the
    repository; verify passes from the anchor; appends work; restore makes it whole again."""
    for i in range(5):
        add(node, i)
    first = json.loads(gatos(node, "epoch", "new", "fin").stdout)
    assert first["ref"] == "refs/gatos/epoch/fin/00000001" and first["previous"] is None
    add(node, 5)
    second = json.loads(gatos(node, "epoch", "new", "fin").stdout)
    assert second["ref"] == "refs/gatos/epoch/fin/00000002" and second["previous"] == first["commit"]
    assert git(node, "rev-parse", "refs/gatos/epoch/fin/00000002^").strip() == first["commit"]
    boundary = second["journals"][JOURNAL]
    add(node, 6)

    bundle = tmp_path / "fin-2.bundle"
    out = gatos(node, "epoch", "compact", "fin", "--archive", str(bundle))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["boundaries"] == {JOURNAL: boundary} and result["archived_commits"] == 5
    assert result["objects_after"] < result["objects_before"]
    check = subprocess.run(["git", "-C", str(node), "bundle", "verify", str(bundle)],
                           capture_output=True, text=True)
    assert check.returncode == 0 and "complete history" in check.stdout + check.stderr
    assert (node / ".git" / "shallow").read_text().split() == [boundary]
    gone = subprocess.run(["git", "-C", str(node), "cat-file", "-e", first["journals"][JOURNAL]])
    assert gone.returncode != 0  # archived and pruned
    assert git(node, "rev-list", "--count", JOURNAL).strip() == "2"

    report = verify(node)
    assert report["code"] == 0 and report["events"] == 2 and report["compacted_journals"] == 1, report
    assert "error" not in git(node, "fsck", "--no-progress", check=False)
    add(node, 7)  # appends after compaction: the ULID index stops at the boundary
    assert len(Node.open(str(node)).log("fin")) == 3
    doctor = gatos(node, "doctor", "--json")
    assert doctor.returncode == 0, doctor.stdout
    assert json.loads(doctor.stdout)["facts"]["compacted"] is True

    restored = json.loads(gatos(node, "epoch", "restore", str(bundle)).stdout)
    assert restored["boundaries_removed"] == [boundary] and restored["boundaries_left"] == []
    assert not (node / ".git" / "shallow").exists()
    report = verify(node)
    assert report["code"] == 0 and report["events"] == 8 and "compacted_journals" not in report
    assert gatos(node, "doctor").returncode == 0


def test_a_cut_no_anchor_recorded_fails_verify(node: Path) -> None:
    """A journal whose history was dropped below a commit no signed anchor names is an error."""
    for i in range(3):
        add(node, i)
    cut = git(node, "rev-parse", f"{JOURNAL}~1").strip()
    (node / ".git" / "shallow").write_text(cut + "\n")
    git(node, "repack", "-a", "-d", "-q")
    git(node, "prune", "--expire=now")
    report = verify(node)
    assert report["code"] == 1
    assert "allowed only below an epoch anchor" in report["problems"][0]["reason"]


def test_compaction_twice_then_restore_in_any_order(node: Path, tmp_path: Path) -> None:
    """Two archives: each later one starts at the earlier boundary; restoring the newer one
    first leaves the older boundary, restoring both makes the journal whole."""
    for i in range(3):
        add(node, i)
    gatos(node, "epoch", "new", "fin")
    add(node, 3)
    assert gatos(node, "epoch", "compact", "fin", "--archive", str(tmp_path / "a.bundle")).returncode == 0
    gatos(node, "epoch", "new", "fin")
    add(node, 4)
    assert gatos(node, "epoch", "compact", "fin", "--archive", str(tmp_path / "b.bundle")).returncode == 0
    assert quick_verify(node)["code"] == 0
    newer = json.loads(gatos(node, "epoch", "restore", str(tmp_path / "b.bundle")).stdout)
    assert len(newer["boundaries_left"]) == 1
    assert quick_verify(node)["code"] == 0
    json.loads(gatos(node, "epoch", "restore", str(tmp_path / "a.bundle")).stdout)
    report = quick_verify(node)
    assert report["code"] == 0 and report["events"] == 5 and "compacted_journals" not in report


def test_epoch_new_needs_journals_and_compact_needs_an_epoch(node: Path) -> None:
    """Clear errors, nothing written."""
    out = gatos(node, "epoch", "new", "empty")
    assert out.returncode == 2 and "no journals" in out.stderr
    add(node, 0)
    out = gatos(node, "epoch", "compact", "fin")
    assert out.returncode == 2 and "gatos epoch new fin" in out.stderr
    assert git(node, "for-each-ref", "refs/gatos/epoch") == ""
