"""`gatos doctor` on real repositories: a healthy node passes, and each fault put in on
purpose is named, with the command that fixes it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from gatosd.node import Node
from ledger_core import Anchor, ObjectId, anchor_objects, epoch_ref
from tests.integration.conftest import gatos, git

JOURNAL = "refs/gatos/journal/fin/user/alice"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node with events, two epochs, a blob and a job naming it as input (built once)."""
    repo = tmp_path_factory.mktemp("doctor") / "node"
    assert gatos(repo, "init", "--actor", "user:alice").returncode == 0
    for i in range(6):
        Node.open(str(repo)).add_event("fin", type="t", payload={"i": i})  # what `event add` runs
        if i in (2, 4):
            assert gatos(repo, "epoch", "new", "fin").returncode == 0
    data = repo.parent / "input.txt"
    data.write_bytes(b"input bytes for the job\n")
    pointer = json.loads(gatos(repo, "blob", "put", str(data)).stdout)
    job = gatos(repo, "jobs", "enqueue", "--ns", "build", "--command", '["/bin/echo"]', "--timeout", "30",
                "--input", json.dumps(pointer), "--no-daemon")
    assert job.returncode == 0, job.stderr
    return repo


@pytest.fixture
def node(template: Path, tmp_path: Path) -> Path:
    repo = tmp_path / "node"
    shutil.copytree(template, repo, symlinks=True)
    return repo


def doctor(repo: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = gatos(repo, "doctor", "--json", *args)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def errors(report: dict[str, Any], check: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["check"] == check and f["severity"] == "error"]


def flip_bit(path: Path, offset: int | None = None) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if offset is None else offset
    data[at] ^= 0x04
    path.write_bytes(bytes(data))


def test_healthy_node_exits_0_with_every_check_run(node: Path) -> None:
    """A node made by the CLI is healthy: exit 0, every check ok, the text report says so."""
    code, report = doctor(node)
    assert code == 0 and report["healthy"] is True, report
    assert set(report["checks"]) == {"refs", "merges", "signatures", "epochs", "cache", "packs",
                                     "objects", "blobs", "forks"}
    assert all(not c["status"].startswith("failed") for c in report["checks"].values())
    assert report["facts"]["sampled_events"] >= 2
    text = gatos(node, "doctor")
    assert text.returncode == 0 and text.stdout.strip().endswith("healthy")


def test_flipped_bit_in_a_loose_object_is_named(node: Path) -> None:
    """fsck finds the damaged loose object; the report names it and how to replace it."""
    head = git(node, "rev-parse", JOURNAL).strip()
    flip_bit(node / ".git" / "objects" / head[:2] / head[2:])
    code, report = doctor(node, "--check", "objects")
    assert code == 1 and not report["healthy"]
    found = errors(report, "objects")
    assert any(head in f["what"] or f.get("object") == head for f in found), found
    assert any("git fetch" in f["fix"] for f in found)
    text = gatos(node, "doctor", "--check", "objects")
    assert text.returncode == 1 and "NOT HEALTHY" in text.stdout and "fix:" in text.stdout


def test_flipped_bit_in_a_blob_store_file_is_named(node: Path) -> None:
    """A blob whose bytes no longer hash to its name is named by its hash."""
    folder = node / "gatos" / "objects" / "blake3"
    (name,) = os.listdir(folder)
    flip_bit(folder / name)
    code, report = doctor(node, "--check", "blobs")
    assert code == 1
    (finding,) = errors(report, "blobs")
    assert finding["object"] == f"blake3:{name}" and "damaged" in finding["what"]
    assert "gatos blob put" in finding["fix"]


def test_missing_blob_named_by_a_job_is_named(node: Path) -> None:
    """A job input pointer whose blob is gone names the blob and the job ref."""
    folder = node / "gatos" / "objects" / "blake3"
    (name,) = os.listdir(folder)
    os.chmod(folder / name, 0o644)
    (folder / name).unlink()
    code, report = doctor(node, "--check", "blobs")
    assert code == 1
    (finding,) = errors(report, "blobs")
    assert finding["object"] == f"blake3:{name}" and "missing" in finding["what"]
    assert "refs/gatos/jobs/" in finding["what"] and name in finding["fix"]


def test_rewound_journal_is_named_and_its_fix_works(node: Path) -> None:
    """After a healthy run records the heads, moving a journal back is an error whose fix
    command restores it."""
    assert doctor(node)[0] == 0  # records the watermark
    head = git(node, "rev-parse", JOURNAL).strip()
    git(node, "update-ref", JOURNAL, f"{head}~1")  # the newest anchor is at ~1: only the watermark sees it
    code, report = doctor(node, "--check", "refs")
    assert code == 1
    (finding,) = errors(report, "refs")
    assert finding["ref"] == JOURNAL and "rewound" in finding["what"] and head in finding["what"]
    assert finding["fix"].startswith(f"git update-ref {JOURNAL} {head}")
    git(node, *finding["fix"].split()[1:])
    assert doctor(node, "--check", "refs")[0] == 0


def test_journal_behind_an_epoch_anchor_is_named(node: Path) -> None:
    """Without any watermark, a journal rewound below the newest anchor's head is named."""
    anchored = git(node, "rev-parse", JOURNAL + "~1").strip()
    git(node, "update-ref", JOURNAL, anchored + "~1")
    code, report = doctor(node, "--check", "refs", "--no-record")
    assert code == 1
    assert any("epoch anchor fin/00000002" in f["what"] for f in errors(report, "refs")), report


def test_merge_commit_in_a_journal_is_named(node: Path) -> None:
    """A merge on a journal is named by its id, with the update-ref that removes it."""
    head = git(node, "rev-parse", JOURNAL).strip()
    tree = git(node, "rev-parse", f"{head}^{{tree}}").strip()
    merge = git(node, "commit-tree", tree, "-p", head, "-p", f"{head}~2", "-m", "merge").strip()
    git(node, "update-ref", JOURNAL, merge, head)
    code, report = doctor(node, "--check", "merges,signatures")
    assert code == 1
    (finding,) = errors(report, "merges")
    assert finding["object"] == merge and finding["fix"] == f"git update-ref {JOURNAL} {head} {merge}"


def test_broken_epoch_link_is_named(node: Path) -> None:
    """An anchor whose parent is not the previous anchor breaks the chain and is named."""
    opened = Node.open(str(node))
    head2 = ObjectId(git(node, "rev-parse", "refs/gatos/epoch/fin/00000002").strip())
    forged = Anchor(ns="fin", epoch=2, previous=None, journals={JOURNAL: ObjectId(git(node, "rev-parse",
                    JOURNAL).strip())}, created_at=5)
    objects, oid = anchor_objects(forged, opened.signing_key("user:alice").sign, "user:alice")
    opened.repo.objects.write_many(objects)
    opened.repo.refs.compare_and_swap(epoch_ref("fin", 2), head2, oid)
    code, report = doctor(node, "--check", "epochs")
    assert code == 1
    found = errors(report, "epochs")
    assert any("fin/00000002: links to nothing" in f["what"] for f in found), found
    assert all("gatos epoch new fin" in f["fix"] for f in found)


def test_tampered_anchor_signature_is_named(node: Path) -> None:
    """An anchor signed by a key that is not trusted for its signer is named."""
    opened = Node.open(str(node))
    first = ObjectId(git(node, "rev-parse", "refs/gatos/epoch/fin/00000001").strip())
    head2 = ObjectId(git(node, "rev-parse", "refs/gatos/epoch/fin/00000002").strip())
    forged = Anchor(ns="fin", epoch=2, previous=first, journals={JOURNAL: ObjectId(git(node, "rev-parse",
                    JOURNAL).strip())}, created_at=5)
    from ledger_core import SigningKey
    objects, oid = anchor_objects(forged, SigningKey(bytes(32)).sign, "user:alice")
    opened.repo.objects.write_many(objects)
    opened.repo.refs.compare_and_swap(epoch_ref("fin", 2), head2, oid)
    code, report = doctor(node, "--check", "epochs")
    assert code == 1
    assert any("Anchor-Sig does not verify" in f["what"] for f in errors(report, "epochs"))


def test_stale_index_is_named_with_its_fix(node: Path) -> None:
    """An index built before an append is reported stale, with `gatos cache rebuild`; after it, healthy."""
    assert gatos(node, "cache", "rebuild", "fin").returncode == 0
    _, fresh = doctor(node, "--check", "cache")
    assert not [f for f in fresh["findings"] if f["check"] == "cache" and f["severity"] != "info"]
    Node.open(str(node)).add_event("fin", type="t", payload={"i": 99})
    code, report = doctor(node, "--check", "cache")
    stale = [f for f in report["findings"] if f["check"] == "cache" and f["severity"] != "info"]
    assert code != 0 and stale, report
    text = json.dumps(stale)
    assert "refs/gatos/cache/fin-default" in text and "gatos cache rebuild fin" in text
    fix = gatos(node, "cache", "rebuild", "fin")
    assert fix.returncode == 0
    assert doctor(node, "--check", "cache")[0] == 0
