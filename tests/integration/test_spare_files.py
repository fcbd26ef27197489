"""Pack and index files made ahead (`ledger_git._spares.SpareFiles`): packs written into
them are ordinary packs Git reads, and nothing is left behind or lost when a spare goes
missing, runs out, or was left by a writer that died."""

from __future__ import annotations

import os
from pathlib import Path

import pygit2

from ledger_core import GitObject
from ledger_git import GitObjectStore
from ledger_git._spares import PREFIX, SpareFiles
from tests.integration.conftest import git
from tests.integration.test_pack_recycling import _assert_git_reads


def _blobs(batch: int) -> list[GitObject]:
    return [GitObject("blob", f"batch {batch} object {i}\n".encode()) for i in range(3)]


def _pack_dir(repo: Path) -> Path:
    return repo / ".git" / "objects" / "pack"


def _spare_names(repo: Path) -> list[str]:
    return sorted(n for n in os.listdir(_pack_dir(repo)) if n.startswith(PREFIX))


def _store(repo: Path) -> tuple[GitObjectStore, SpareFiles]:
    pygit2.init_repository(str(repo))
    store = GitObjectStore(pygit2.Repository(str(repo)), pack_threshold=1)
    spares = SpareFiles(str(_pack_dir(repo)))
    store.spares = spares
    return store, spares


def test_packs_are_written_into_the_files_made_ahead(tmp_path: Path) -> None:
    store, spares = _store(tmp_path)
    assert spares.fill() == 2 and len(_spare_names(tmp_path)) == 2
    inodes = {os.stat(_pack_dir(tmp_path) / n).st_ino for n in _spare_names(tmp_path)}
    store.write_many(_blobs(0))
    packs = [p for p in os.listdir(_pack_dir(tmp_path)) if p.endswith((".pack", ".idx"))]
    assert {os.stat(_pack_dir(tmp_path) / p).st_ino for p in packs} == inodes  # no new file
    assert _spare_names(tmp_path) == [] and spares.taken == 2
    for name in packs:
        assert (_pack_dir(tmp_path) / name).stat().st_mode & 0o777 == 0o444
    store.write_many(_blobs(1))  # none ready: files created as before
    _assert_git_reads(tmp_path, _blobs(0) + _blobs(1))


def test_a_spare_removed_under_the_writer_is_replaced_by_a_new_file(tmp_path: Path) -> None:
    """`git prune` may remove `tmp_` files: the pack is then written the usual way."""
    store, spares = _store(tmp_path)
    spares.fill()
    for name in _spare_names(tmp_path):
        os.unlink(_pack_dir(tmp_path) / name)
    store.write_many(_blobs(0))
    fresh = pygit2.Repository(str(tmp_path))
    for obj in _blobs(0):
        assert fresh.odb.read(obj.oid)[1] == obj.data
    git(tmp_path, "fsck", "--strict")


def test_leftovers_are_removed_and_unused_spares_are_removed_on_close(tmp_path: Path) -> None:
    store, spares = _store(tmp_path)
    leftover = _pack_dir(tmp_path) / f"{PREFIX}99999_0"
    leftover.write_bytes(b"")
    other = _pack_dir(tmp_path) / "tmp_pack_of_someone_else"
    other.write_bytes(b"")
    assert spares.remove_leftovers() == 1
    assert not leftover.exists() and other.exists()
    spares.fill()
    store.write_many(_blobs(0))
    spares.fill()
    assert len(_spare_names(tmp_path)) == 2
    spares.close()
    assert _spare_names(tmp_path) == []
    git(tmp_path, "fsck", "--strict")


def test_the_bus_writer_leaves_no_spare_behind(tmp_path: Path) -> None:
    """A daemon's publishes go through packs written into spares; a clean stop removes
    the unused ones, and a repository with spares left by a killed writer is cleaned by
    the next writer."""
    from tests.integration.daemon_support import make_node, short_dir, start_daemon

    repo = make_node(tmp_path / "node")
    (repo / ".git" / "objects" / "pack").mkdir(parents=True, exist_ok=True)
    (repo / ".git" / "objects" / "pack" / f"{PREFIX}1_0").write_bytes(b"")  # a dead writer's
    with short_dir() as sock:
        d = start_daemon(repo, socket_dir=sock)
        try:
            with d.client() as c:
                for i in range(20):
                    got = c.request({"type": "bus.publish", "id": i, "topic": "t", "payload": i})
                    assert got["ok"], got
        finally:
            d.stop()
    assert _spare_names(repo) == []
    assert git(repo, "log", "--format=%s", "--all").split().count("gmb.message") == 20
    git(repo, "fsck", "--strict")


def test_filling_where_no_file_can_be_made_is_quiet(tmp_path: Path) -> None:
    """A folder that cannot take a file: no spare, no error; packs report their own."""
    blocked = tmp_path / "a-file"
    blocked.write_bytes(b"")
    spares = SpareFiles(str(blocked / "pack"))  # its parent is a file: nothing can be made
    assert spares.fill() == 0
    assert spares.take() is None
    spares.close()
