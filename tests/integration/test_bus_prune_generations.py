"""Pruning on a real Git repository: the retained chain goes to the shard's next
generation ref and the old one is deleted, so no ref ever moves backwards (SPEC §4);
`git gc` then drops the pruned messages. Also `FileRefStore.delete`, packed or loose."""

from __future__ import annotations

import itertools
import subprocess
import time
from pathlib import Path

import pytest

from ledger_core import SigningKey, encode_ulid, sign_event
from ledger_core.errors import RefConflict
from ledger_git import open_repository
from mind_bus import BusLog, PublishRequest, TopicConfig, prune_topic, shard_ref
from tests.integration.conftest import git

KEY = SigningKey(b"\x07" * 32)


def _repo(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path / "r")], check=True)
    return tmp_path / "r"


def test_prune_moves_refs_only_forward_and_gc_drops_the_pruned(tmp_path: Path) -> None:
    path = _repo(tmp_path)
    repo = open_repository(str(path))
    config = TopicConfig(shards=1, segment_max_messages=3)
    log = BusLog(repo.objects, repo.refs, sign=lambda ev: sign_event(ev, KEY), clock=time.time,
                 sleep=time.sleep, config_for=lambda _t: config)
    old_ms = int(time.time() * 1000) - 3_600_000
    sent = [log.publish(PublishRequest("t", {"n": n}, encode_ulid(old_ms + n, n.to_bytes(10, "big")),
                                       "user:a")) for n in range(7)]
    pruned_commit = sent[0].commit
    seen: dict[str, list[str]] = {}  # every value each ref ever held, in order

    def look() -> None:
        for line in git(path, "for-each-ref", "--format=%(refname) %(objectname)").splitlines():
            name, oid = line.split()
            if seen.setdefault(name, [oid])[-1] != oid:
                seen[name].append(oid)

    look()
    summaries = prune_topic(repo.objects, repo.refs, "t", [0], ttl_seconds=60, clock=time.time)
    assert [s["pruned"] for s in summaries] == [6] and summaries[0]["ref"] == shard_ref("t", 0, 1)
    look()
    assert repo.refs.get(shard_ref("t", 0)) is None  # generation 0 deleted, never rewritten
    log.forget("t")
    assert log.publish(PublishRequest("t", {"n": 99}, encode_ulid(old_ms + 99, bytes(10)), "user:a")
                       ).position == 8
    look()
    assert [m.position for m in log.read("t", 0)] == [7, 8]
    for values in seen.values():  # each later value descends from the one before
        for older, newer in itertools.pairwise(values):
            git(path, "merge-base", "--is-ancestor", older, newer)
    git(path, "fsck", "--strict")
    git(path, "-c", "gc.reflogExpire=now", "-c", "gc.reflogExpireUnreachable=now", "gc", "--prune=now", "-q")
    assert git(path, "cat-file", "-t", pruned_commit, check=False).strip() != "commit"
    # gc packed the refs and removed empty object folders: writing and the next prune
    # (which deletes a packed generation) still work.
    log.publish_many([PublishRequest("t", {"n": n}, encode_ulid(old_ms + n, n.to_bytes(10, "big")),
                                     "user:a") for n in range(200, 206)])
    log.forget("t")
    summaries = prune_topic(repo.objects, repo.refs, "t", [0], ttl_seconds=60, clock=time.time)
    assert summaries and summaries[0]["ref"] == shard_ref("t", 0, 2)
    assert git(path, "for-each-ref", "--format=%(refname)", "refs/gatos/mbus/t/").split() == [
        shard_ref("t", 0, 2)]
    log.forget("t")
    assert [m.position for m in log.read("t", 0)][-1] == 14
    git(path, "fsck", "--strict")


def test_delete_checks_the_value_and_handles_packed_refs(tmp_path: Path) -> None:
    path = _repo(tmp_path)
    repo = open_repository(str(path))
    git(path, "commit", "-q", "--allow-empty", "-m", "x")
    head = git(path, "rev-parse", "HEAD").strip()
    for name in ("refs/x/a", "refs/x/b", "refs/x/c"):
        git(path, "update-ref", name, head)
    git(path, "tag", "-a", "-m", "t", "v1")  # a peeled line ('^') in packed-refs
    git(path, "pack-refs", "--all")
    with pytest.raises(RefConflict):
        repo.refs.delete("refs/x/a", "0" * 40)  # type: ignore[arg-type]
    repo.refs.delete("refs/x/a", head)  # type: ignore[arg-type]
    git(path, "update-ref", "refs/x/b", head)  # loose as well as packed
    repo.refs.delete("refs/x/b", head)  # type: ignore[arg-type]
    assert repo.refs.get("refs/x/a") is None and repo.refs.get("refs/x/b") is None  # type: ignore[arg-type]
    assert git(path, "for-each-ref", "--format=%(refname)").split() == [
        "refs/heads/" + git(path, "branch", "--show-current").strip(), "refs/tags/v1", "refs/x/c"]
    git(path, "fsck", "--strict")
    assert git(path, "rev-parse", "v1^{commit}").strip() == head
