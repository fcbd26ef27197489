"""Pack upkeep when every batch is a pack: merging small packs, geometric repack, readers unharmed."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pygit2

from ledger_core import GitObject
from ledger_git import GitObjectStore, PackMaintainer
from tests.integration.conftest import git


def _blobs(batch: int, size: int = 3) -> list[GitObject]:
    return [GitObject("blob", f"batch {batch} object {i}\n".encode()) for i in range(size)]


def _packs(repo: Path) -> list[str]:
    return sorted(p for p in os.listdir(repo / ".git" / "objects" / "pack") if p.endswith(".idx"))


def _store(repo: Path) -> GitObjectStore:
    return GitObjectStore(pygit2.Repository(str(repo)), pack_threshold=1)


def _write(store: GitObjectStore, maintainer: PackMaintainer, batches: range, written: list[GitObject],
           *, busy: bool = False) -> None:
    """Each batch as a pack, with the upkeep call a writer makes after it."""
    for batch in batches:
        objs = _blobs(batch)
        store.write_many(objs)
        written += objs
        maintainer.after_write(busy=busy)


def _assert_readable(repo: Path, written: list[GitObject]) -> None:
    """A fresh libgit2 handle reads every object written."""
    fresh = pygit2.Repository(str(repo))
    for obj in written:
        assert fresh.odb.read(obj.oid)[1] == obj.data


def test_small_packs_are_merged_and_every_object_stays_readable(tmp_path: Path) -> None:
    """Every `merge_every` small packs become one; git and a fresh libgit2 read every object."""
    pygit2.init_repository(str(tmp_path))
    store = _store(tmp_path)
    maintainer = PackMaintainer(store, str(tmp_path / ".git"), merge_every=4, repack_every=10_000)
    written: list[GitObject] = []
    _write(store, maintainer, range(12), written)
    assert maintainer.merges == 3
    assert len(_packs(tmp_path)) == 3
    _assert_readable(tmp_path, written)
    listed = git(tmp_path, "cat-file", "--batch-all-objects", "--batch-check=%(objectname)").split()
    assert sorted(listed) == sorted({o.oid for o in written})
    git(tmp_path, "fsck", "--strict")
    git(tmp_path, "verify-pack", *[str(tmp_path / ".git/objects/pack" / p) for p in _packs(tmp_path)])


def test_busy_upkeep_waits_for_an_idle_call_but_not_forever(tmp_path: Path) -> None:
    """`after_write(busy=True)` leaves a due merge to the next idle call, unless twice
    `merge_every` small packs piled up; nothing written is ever unreadable meanwhile."""
    pygit2.init_repository(str(tmp_path))
    store = _store(tmp_path)
    maintainer = PackMaintainer(store, str(tmp_path / ".git"), merge_every=4, repack_every=10_000)
    written: list[GitObject] = []
    _write(store, maintainer, range(7), written, busy=True)
    assert maintainer.merges == 0 and len(_packs(tmp_path)) == 7  # due since the 4th, deferred
    maintainer.after_write()  # idle: merges now
    assert maintainer.merges == 1 and len(_packs(tmp_path)) == 1
    _write(store, maintainer, range(7, 15), written, busy=True)
    assert maintainer.merges == 2  # 8 = 2 x merge_every small packs: merged though busy
    assert len(_packs(tmp_path)) == 2
    _assert_readable(tmp_path, written)
    git(tmp_path, "fsck", "--strict")


def test_a_writer_that_is_never_idle_still_bounds_its_pack_count(tmp_path: Path) -> None:
    """Batches too big to be merged, always busy: `git repack` still starts once twice
    `repack_every` packs piled up, so the pack count stays bounded."""
    pygit2.init_repository(str(tmp_path))
    store = _store(tmp_path)
    maintainer = PackMaintainer(store, str(tmp_path / ".git"), merge_every=4, repack_every=5)
    store.remember_small = 0  # every pack "big": nothing to merge
    written: list[GitObject] = []
    _write(store, maintainer, range(30), written, busy=True)
    assert maintainer.repacks >= 1
    maintainer.close()
    assert len(_packs(tmp_path)) < 30
    _assert_readable(tmp_path, written)
    git(tmp_path, "fsck", "--strict")


def test_the_same_pack_written_twice_is_written_once(tmp_path: Path) -> None:
    """A pack already there with its index is not written again (same bytes, same name)."""
    from ledger_git._pack import pack_entries, write_pack_entries

    pygit2.init_repository(str(tmp_path))
    objects_dir = str(tmp_path / ".git" / "objects")
    entries = pack_entries(_blobs(0))
    name = write_pack_entries(objects_dir, entries)
    pack = tmp_path / ".git" / "objects" / "pack" / f"pack-{name}.pack"
    before = (pack.stat().st_ino, (pack.with_suffix(".idx")).stat().st_ino)
    assert write_pack_entries(objects_dir, entries) == name
    assert (pack.stat().st_ino, (pack.with_suffix(".idx")).stat().st_ino) == before
    pack.with_suffix(".idx").unlink()  # a pack left without its index (a crash): written again
    assert write_pack_entries(objects_dir, entries) == name
    assert pack.with_suffix(".idx").exists() and pack.stat().st_ino != before[0]
    git(tmp_path, "verify-pack", str(pack.with_suffix(".idx")))


def test_geometric_repack_bounds_the_pack_count(tmp_path: Path) -> None:
    """With merging off, git repack --geometric keeps the pack count far below the batch count."""
    pygit2.init_repository(str(tmp_path))
    store = _store(tmp_path)
    maintainer = PackMaintainer(store, str(tmp_path / ".git"), merge_every=1, repack_every=8)
    written: list[GitObject] = []
    _write(store, maintainer, range(60), written)
    maintainer.close()
    assert maintainer.repacks >= 1 and maintainer.failures == 0
    assert len(_packs(tmp_path)) < 20
    _assert_readable(tmp_path, written)
    git(tmp_path, "fsck", "--strict")


def test_a_reader_never_misses_an_object_while_packs_are_merged_and_repacked(tmp_path: Path) -> None:
    """A libgit2 reader with its own handle keeps finding old objects while packs come and go."""
    pygit2.init_repository(str(tmp_path))
    store = _store(tmp_path)
    first = _blobs(-1)
    store.write_many(first)
    maintainer = PackMaintainer(store, str(tmp_path / ".git"), merge_every=3, repack_every=4)
    done = threading.Event()
    errors: list[str] = []
    written: list[GitObject] = list(first)
    lock = threading.Lock()

    def read_forever() -> None:
        reader = pygit2.Repository(str(tmp_path))
        while not done.is_set():
            with lock:
                sample = list(written)
            for obj in sample:
                try:
                    if reader.odb.read(obj.oid)[1] != obj.data:
                        errors.append(f"{obj.oid}: wrong bytes")
                except Exception as exc:
                    errors.append(f"{obj.oid}: {exc!r}")

    thread = threading.Thread(target=read_forever)
    thread.start()
    try:
        for batch in range(80):
            objs = _blobs(batch)
            store.write_many(objs)
            with lock:
                written.extend(objs)
            maintainer.after_write()
        maintainer.close()
    finally:
        done.set()
        thread.join(30)
    assert errors == []
    assert maintainer.merges >= 1 and maintainer.repacks >= 1
    git(tmp_path, "fsck", "--strict")


def test_without_git_merging_still_happens_and_nothing_fails(tmp_path: Path) -> None:
    """No git executable: the repack is skipped (logged once), merges go on, objects stay."""
    pygit2.init_repository(str(tmp_path))
    store = _store(tmp_path)
    maintainer = PackMaintainer(store, str(tmp_path / ".git"), merge_every=2, repack_every=1,
                                git=str(tmp_path / "no-such-git"))
    for batch in range(6):
        store.write_many(_blobs(batch))
        maintainer.after_write()
    maintainer.close()
    assert maintainer.repacks == 0 and maintainer.merges >= 2
    git(tmp_path, "fsck", "--strict")
