"""The port contract suites against the pygit2 adapters, plus interop with the `git` CLI."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pygit2
import pytest

from ledger_core import GitObject, ObjectId, RefName
from ledger_core.contract import ObjectStoreContract, RefStoreContract, sample_objects
from ledger_core.errors import RefConflict, RefLocked
from ledger_git import FileRefStore, GitObjectStore

pytestmark = pytest.mark.integration


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo)}
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=check, env=env)


def new_repo(tmp_path: Path) -> pygit2.Repository:
    index = len(list(tmp_path.glob("repo*")))
    return pygit2.init_repository(str(tmp_path / f"repo{index}"), bare=True)


def git_dir(repo: pygit2.Repository) -> Path:
    return Path(repo.path)


class _Repos:
    @pytest.fixture(autouse=True)
    def _tmp(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path


class TestGitObjectStoreLoose(_Repos, ObjectStoreContract):
    def make_store(self) -> GitObjectStore:
        return GitObjectStore(new_repo(self.tmp_path))


class TestGitObjectStorePacked(_Repos, ObjectStoreContract):
    def make_store(self) -> GitObjectStore:
        return GitObjectStore(new_repo(self.tmp_path), pack_threshold=1)


class TestFileRefStore(_Repos, RefStoreContract):
    def make_refs(self) -> FileRefStore:
        return FileRefStore(str(git_dir(new_repo(self.tmp_path))))


# -- interop with the git CLI -------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> pygit2.Repository:
    return new_repo(tmp_path)


def _pack_files(repo: pygit2.Repository) -> list[str]:
    return sorted(p.name for p in (git_dir(repo) / "objects" / "pack").glob("pack-*"))


def _loose_count(repo: pygit2.Repository) -> int:
    objects = git_dir(repo) / "objects"
    return sum(1 for d in objects.iterdir() if len(d.name) == 2 for _ in d.iterdir())


@pytest.mark.parametrize("threshold", [64, 1])
def test_git_cat_file_reads_our_objects(repo: pygit2.Repository, threshold: int) -> None:
    """`git cat-file` reads blobs, trees and commits we wrote, loose and packed."""
    store = GitObjectStore(repo, pack_threshold=threshold)
    blob, tree, commit = sample_objects()
    store.write_many([blob, tree, commit])
    if threshold == 1:
        assert len(_pack_files(repo)) == 2 and _loose_count(repo) == 0
    else:
        assert _pack_files(repo) == [] and _loose_count(repo) == 3
    gd = git_dir(repo)
    assert git(gd, "cat-file", "-p", blob.oid).stdout.encode() == blob.data
    assert git(gd, "cat-file", "-t", tree.oid).stdout.strip() == "tree"
    assert "hello.txt" in git(gd, "cat-file", "-p", tree.oid).stdout
    assert git(gd, "cat-file", "commit", commit.oid).stdout.encode() == commit.data
    for obj in (blob, tree, commit):
        proc = subprocess.run(["git", "-C", str(gd), "hash-object", "-t", obj.kind, "--stdin"],
                              input=obj.data, capture_output=True, check=True)
        assert proc.stdout.decode().strip() == obj.oid
    FileRefStore(str(gd)).compare_and_swap(RefName("refs/heads/main"), None, commit.oid)
    assert git(gd, "fsck", "--strict", "--no-dangling").returncode == 0
    if threshold == 1:
        assert git(gd, "verify-pack", "-v", *[
            str(gd / "objects" / "pack" / p) for p in _pack_files(repo) if p.endswith(".idx")
        ]).returncode == 0


def test_pack_of_many_objects_is_valid(repo: pygit2.Repository) -> None:
    """A batch above the threshold becomes one pack that `git verify-pack` accepts."""
    store = GitObjectStore(repo)
    blobs = [GitObject("blob", f"event {i}\n".encode() * (i + 1)) for i in range(200)]
    store.write_many(blobs)
    packs = _pack_files(repo)
    assert len(packs) == 2
    idx = git_dir(repo) / "objects" / "pack" / next(p for p in packs if p.endswith(".idx"))
    out = git(git_dir(repo), "verify-pack", "-v", str(idx)).stdout
    assert "non delta: 200 objects" in out
    fresh = GitObjectStore(pygit2.Repository(repo.path))
    for blob in blobs:
        assert fresh.read_blob(blob.oid) == blob.data


def test_objects_written_by_git_are_read(repo: pygit2.Repository) -> None:
    """An object written by `git hash-object -w` is read back by the store."""
    gd = git_dir(repo)
    proc = subprocess.run(["git", "-C", str(gd), "hash-object", "-w", "--stdin"],
                          input=b"from git\n", capture_output=True, check=True)
    oid = ObjectId(proc.stdout.decode().strip())
    store = GitObjectStore(repo)
    assert store.contains(oid)
    assert store.read(oid) == GitObject("blob", b"from git\n")


def test_git_rev_parse_sees_cas_refs(repo: pygit2.Repository) -> None:
    """`git rev-parse` and `git for-each-ref` see refs we created and moved by CAS."""
    gd = git_dir(repo)
    store = GitObjectStore(repo)
    blob, tree, commit = sample_objects()
    store.write_many([blob, tree, commit])
    ident = "user:alice <user:alice> 1 +0000"
    from ledger_core import encode_commit

    second = GitObject("commit", encode_commit(tree.oid, (commit.oid,), ident, ident, "two\n"))
    store.write(second)
    refs = FileRefStore(str(gd))
    name = RefName("refs/gatos/journal/ns/user/alice")
    refs.compare_and_swap(name, None, commit.oid)
    assert git(gd, "rev-parse", name).stdout.strip() == commit.oid
    refs.compare_and_swap(name, commit.oid, second.oid)
    assert git(gd, "rev-parse", name).stdout.strip() == second.oid
    assert git(gd, "for-each-ref", "--format=%(refname)", "refs/gatos/").stdout.split() == [name]
    assert git(gd, "rev-list", "--count", name).stdout.strip() == "2"
    assert git(gd, "fsck", "--strict", "--no-dangling").returncode == 0


def test_ref_written_by_git_is_read(repo: pygit2.Repository) -> None:
    """A ref that `git update-ref` wrote is read and can be moved by CAS."""
    gd = git_dir(repo)
    store = GitObjectStore(repo)
    blob, tree, commit = sample_objects()
    store.write_many([blob, tree, commit])
    git(gd, "update-ref", "refs/gatos/from-git", commit.oid)
    refs = FileRefStore(str(gd))
    assert refs.get(RefName("refs/gatos/from-git")) == commit.oid
    assert refs.list("refs/gatos/") == {"refs/gatos/from-git": commit.oid}
    with pytest.raises(RefConflict):
        refs.compare_and_swap(RefName("refs/gatos/from-git"), None, ObjectId("1" * 40))


def test_packed_ref_is_read_and_cas(repo: pygit2.Repository) -> None:
    """After `git pack-refs --all` a ref is read from packed-refs and moved by CAS."""
    gd = git_dir(repo)
    store = GitObjectStore(repo)
    blob, tree, commit = sample_objects()
    store.write_many([blob, tree, commit])
    ident = "user:alice <user:alice> 1 +0000"
    from ledger_core import encode_commit

    second = GitObject("commit", encode_commit(tree.oid, (commit.oid,), ident, ident, "two\n"))
    store.write(second)
    refs = FileRefStore(str(gd))
    name = RefName("refs/gatos/packed/x")
    refs.compare_and_swap(name, None, commit.oid)
    git(gd, "pack-refs", "--all")
    assert not (gd / name).exists()
    assert name in (gd / "packed-refs").read_text()
    fresh = FileRefStore(str(gd))
    assert fresh.get(name) == commit.oid
    assert fresh.list("refs/gatos/") == {name: commit.oid}
    with pytest.raises(RefConflict) as info:
        fresh.compare_and_swap(name, second.oid, second.oid)
    assert info.value.actual == commit.oid
    fresh.compare_and_swap(name, commit.oid, second.oid)
    assert fresh.get(name) == second.oid
    assert git(gd, "rev-parse", name).stdout.strip() == second.oid
    assert fresh.list("refs/gatos/") == {name: second.oid}
    assert git(gd, "fsck", "--strict", "--no-dangling").returncode == 0


def test_packed_ref_in_the_way(repo: pygit2.Repository) -> None:
    """A packed ref `a` is in the way of creating `a/b`, and a packed `c/d` of creating `c`."""
    from ledger_core.errors import RefInTheWay

    gd = git_dir(repo)
    refs = FileRefStore(str(gd))
    refs.compare_and_swap(RefName("refs/gatos/a"), None, ObjectId("1" * 40))
    refs.compare_and_swap(RefName("refs/gatos/c/d"), None, ObjectId("2" * 40))
    (gd / "packed-refs").write_text(
        f"# pack-refs with: peeled fully-peeled sorted \n{'1' * 40} refs/gatos/a\n"
        f"{'2' * 40} refs/gatos/c/d\n")
    (gd / "refs/gatos/a").unlink()
    (gd / "refs/gatos/c/d").unlink()
    (gd / "refs/gatos/c").rmdir()
    with pytest.raises(RefInTheWay):
        refs.compare_and_swap(RefName("refs/gatos/a/b"), None, ObjectId("3" * 40))
    with pytest.raises(RefInTheWay):
        refs.compare_and_swap(RefName("refs/gatos/c"), None, ObjectId("3" * 40))
    assert refs.list("refs/") == {"refs/gatos/a": "1" * 40, "refs/gatos/c/d": "2" * 40}


def test_stale_lock_gives_ref_locked(repo: pygit2.Repository) -> None:
    """A leftover `<ref>.lock` gives `RefLocked` naming the lock; ref and lock stay as they were."""
    gd = git_dir(repo)
    refs = FileRefStore(str(gd))
    name = RefName("refs/gatos/journal/ns/user/alice")
    refs.compare_and_swap(name, None, ObjectId("1" * 40))
    lock = gd / (name + ".lock")
    lock.write_text("")
    with pytest.raises(RefLocked) as info:
        refs.compare_and_swap(name, ObjectId("1" * 40), ObjectId("2" * 40))
    assert str(lock) in info.value.reason
    assert info.value.code == "LOCKED"
    assert refs.get(name) == "1" * 40
    assert lock.exists()
    assert refs.list("refs/gatos/") == {name: "1" * 40}
    lock.unlink()
    refs.compare_and_swap(name, ObjectId("1" * 40), ObjectId("2" * 40))
    assert refs.get(name) == "2" * 40


def test_stale_lock_on_create(repo: pygit2.Repository) -> None:
    """A leftover lock of a ref that does not exist yet blocks its creation with `RefLocked`."""
    gd = git_dir(repo)
    refs = FileRefStore(str(gd))
    (gd / "refs/gatos").mkdir(parents=True)
    (gd / "refs/gatos/new.lock").write_text("")
    with pytest.raises(RefLocked):
        refs.compare_and_swap(RefName("refs/gatos/new"), None, ObjectId("1" * 40))
    assert refs.get(RefName("refs/gatos/new")) is None


def test_git_honours_our_lock(repo: pygit2.Repository) -> None:
    """While a `.lock` exists, `git update-ref` also refuses: we share Git's lock protocol."""
    gd = git_dir(repo)
    store = GitObjectStore(repo)
    blob, tree, commit = sample_objects()
    store.write_many([blob, tree, commit])
    refs = FileRefStore(str(gd))
    name = RefName("refs/gatos/shared")
    refs.compare_and_swap(name, None, commit.oid)
    (gd / (name + ".lock")).write_text("")
    proc = git(gd, "update-ref", name, tree.oid, commit.oid, check=False)
    assert proc.returncode != 0
    assert refs.get(name) == commit.oid


def test_invalid_names_touch_no_files(repo: pygit2.Repository) -> None:
    """A rejected ref name creates no file or folder anywhere in the repository."""
    from ledger_core.contract import INVALID_REF_NAMES
    from ledger_core.errors import InvalidName

    gd = git_dir(repo)
    before = sorted(str(p) for p in gd.rglob("*"))
    refs = FileRefStore(str(gd))
    for name in INVALID_REF_NAMES:
        with pytest.raises(InvalidName):
            refs.compare_and_swap(RefName(name), None, ObjectId("1" * 40))
    assert sorted(str(p) for p in gd.rglob("*")) == before
    assert not (gd.parent / "x").exists()


def test_list_with_short_prefix_stays_in_refs(repo: pygit2.Repository) -> None:
    """`list` with an empty or `refs` prefix lists refs only, never other files of the repo."""
    gd = git_dir(repo)
    refs = FileRefStore(str(gd))
    refs.compare_and_swap(RefName("refs/gatos/x"), None, ObjectId("1" * 40))
    assert refs.list("") == {"refs/gatos/x": "1" * 40}
    assert refs.list("refs") == {"refs/gatos/x": "1" * 40}
