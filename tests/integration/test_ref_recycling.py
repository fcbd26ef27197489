"""Ref updates through recycled inodes (`FileRefStore.recycle_inodes`, the bus writer's refs).

Each test runs on a real repository and checks it with the `git` CLI: the values Git
reads, Git's own lock protocol against a held lock, and that no update allocates a new
inode once a ref has its spare.
"""

from __future__ import annotations

import os
from pathlib import Path

import pygit2
import pytest

from ledger_core import ObjectId, RefName
from ledger_core.contract import RefStoreContract, sample_objects
from ledger_core.errors import RefLocked
from ledger_git import FileRefStore, GitObjectStore

from .test_contract_git import _Repos, git, git_dir, new_repo

pytestmark = pytest.mark.integration

NAME = RefName("refs/gatos/mbus/t/-0")


def _recycling(gd: Path) -> FileRefStore:
    refs = FileRefStore(str(gd))
    refs.recycle_inodes(str(gd / "gatos" / "spares"))
    return refs


class TestRecyclingFileRefStore(_Repos, RefStoreContract):
    """The whole ref store contract holds with recycled inodes."""

    def make_refs(self) -> FileRefStore:
        return _recycling(git_dir(new_repo(self.tmp_path)))


def _commits(repo: pygit2.Repository, count: int) -> list[ObjectId]:
    """`count` real commits (a chain), so `git` can resolve and check every value."""
    from ledger_core import GitObject, encode_commit

    store = GitObjectStore(repo)
    blob, tree, first = sample_objects()
    store.write_many([blob, tree, first])
    out = [first.oid]
    ident = "user:alice <user:alice> 1 +0000"
    for i in range(count - 1):
        nxt = GitObject("commit", encode_commit(tree.oid, (out[-1],), ident, ident, f"{i}\n"))
        store.write(nxt)
        out.append(nxt.oid)
    return out


def test_updates_reuse_two_inodes_and_git_reads_every_value(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    gd = git_dir(repo)
    oids = _commits(repo, 40)
    refs = _recycling(gd)
    reader = FileRefStore(str(gd))  # another process's view: a plain store with its cache
    inodes: list[int] = []
    old = None
    for oid in oids:
        refs.compare_and_swap(NAME, old, oid)
        old = oid
        inodes.append(os.stat(gd / NAME).st_ino)
        assert reader.get(NAME) == oid  # never a stale cached value, even within a tick
    assert git(gd, "rev-parse", NAME).stdout.strip() == oids[-1]
    # The first update creates the ref, the second makes its spare: from then on the ref
    # alternates between the same two inodes.
    assert len(set(inodes[2:])) == 2
    assert not (gd / (NAME + ".lock")).exists()
    assert len(os.listdir(gd / "gatos" / "spares")) == 1
    assert git(gd, "rev-list", "--count", NAME).stdout.strip() == "40"
    assert git(gd, "fsck", "--strict", "--no-dangling").returncode == 0


def _ref_with_spare(tmp_path: Path) -> tuple[Path, FileRefStore, ObjectId, ObjectId, ObjectId]:
    """A recycling store whose ref NAME went a -> b (so it has its spare); and a third commit c."""
    repo = new_repo(tmp_path)
    gd = git_dir(repo)
    a, b, c = _commits(repo, 3)
    refs = _recycling(gd)
    refs.compare_and_swap(NAME, None, a)
    refs.compare_and_swap(NAME, a, b)
    return gd, refs, a, b, c


def test_a_held_lock_stops_git_and_release_changes_nothing(tmp_path: Path) -> None:
    gd, refs, _a, b, c = _ref_with_spare(tmp_path)
    held = refs.lock(NAME)
    assert held.old == b
    moved = git(gd, "update-ref", NAME, c, b, check=False)
    assert moved.returncode != 0 and ".lock" in moved.stderr
    with pytest.raises(RefLocked):
        refs.lock(NAME)
    held.release()
    assert git(gd, "rev-parse", NAME).stdout.strip() == b
    assert not (gd / (NAME + ".lock")).exists()
    refs.compare_and_swap(NAME, b, c)  # the spare survived the release
    assert git(gd, "rev-parse", NAME).stdout.strip() == c


def test_a_ref_moved_by_git_between_updates_is_seen(tmp_path: Path) -> None:
    gd, refs, a, b, c = _ref_with_spare(tmp_path)
    git(gd, "update-ref", NAME, c, b)
    with refs.lock(NAME) as held:
        assert held.old == c
        held.commit(a)
    assert git(gd, "rev-parse", NAME).stdout.strip() == a


def test_spares_left_by_a_crash_are_never_written(tmp_path: Path) -> None:
    """A crash between giving the ref's inode the spare name and the rename leaves a spare
    that *is* the live ref; a new owner empties the spare folder instead of writing it."""
    repo = new_repo(tmp_path)
    gd = git_dir(repo)
    a, b, c = _commits(repo, 3)
    first = _recycling(gd)
    first.compare_and_swap(NAME, None, a)
    spare = first._spare(NAME)
    os.link(gd / NAME, spare)  # the crashed writer's last state: spare == live ref
    witness = tmp_path / "witness"
    os.link(gd / NAME, witness)
    second = _recycling(gd)
    assert os.listdir(gd / "gatos" / "spares") == []
    second.compare_and_swap(NAME, a, b)
    # Written into a fresh spare, not into the inode that was the live ref; that inode
    # only becomes the spare once the ref has moved off it.
    assert witness.read_text().strip() == a
    assert git(gd, "rev-parse", NAME).stdout.strip() == b
    second.compare_and_swap(NAME, b, c)
    assert git(gd, "rev-parse", NAME).stdout.strip() == c


def test_without_hard_links_it_falls_back_to_lock_files(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    repo = new_repo(tmp_path)
    gd = git_dir(repo)
    a, b = _commits(repo, 2)
    refs = _recycling(gd)

    def no_links(*_args: object, **_kw: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    refs.compare_and_swap(NAME, None, a)
    refs.compare_and_swap(NAME, a, b)
    assert refs._spares is None
    assert git(gd, "rev-parse", NAME).stdout.strip() == b


@pytest.mark.parametrize("recycle", [True, False])
def test_leftover_locks_are_broken_only_when_old_and_covered(tmp_path: Path, recycle: bool) -> None:
    """`break_leftover_locks`: an old lock under the prefixes is removed and the update
    goes through; a fresh one, or one outside the prefixes, still fails `RefLocked`."""
    repo = new_repo(tmp_path)
    gd = git_dir(repo)
    a, b, c = _commits(repo, 3)
    refs = _recycling(gd) if recycle else FileRefStore(str(gd))
    refs.break_leftover_locks(("refs/gatos/mbus/",), 2.0)
    other = RefName("refs/gatos/journal/x")
    for name in (NAME, other):
        refs.compare_and_swap(name, None, a)
    lock, other_lock = gd / (NAME + ".lock"), gd / (other + ".lock")
    lock.write_text("")
    with pytest.raises(RefLocked):  # fresh: a live writer may hold it
        refs.compare_and_swap(NAME, a, b)
    old = os.stat(lock).st_mtime - 10
    os.utime(lock, (old, old))
    refs.compare_and_swap(NAME, a, b)
    assert not lock.exists()
    assert git(gd, "rev-parse", NAME).stdout.strip() == b
    other_lock.write_text("")
    os.utime(other_lock, (old, old))
    with pytest.raises(RefLocked):  # not a ref the owner said it alone writes
        refs.compare_and_swap(other, a, c)
    assert other_lock.exists()
    assert git(gd, "rev-parse", other).stdout.strip() == a
