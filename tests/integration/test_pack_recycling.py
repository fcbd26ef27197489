"""Recycling the files of merged small packs (`ledger_git._spares`): packs written into
recycled files are ordinary packs Git reads, and a file someone else still has open or
mapped, or that has another name, is never written under."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pygit2
import pytest

from ledger_core import GitObject
from ledger_git import GitObjectStore, PackMaintainer, SpareFiles, _pack
from ledger_git import _spares as spares_module
from tests.integration.conftest import git


def _blobs(batch: int) -> list[GitObject]:
    # Sizes vary from batch to batch, so a recycled pack is sometimes longer than the
    # new one (its tail is cut) and sometimes shorter.
    count = 1 + (batch * 7) % 5
    return [GitObject("blob", f"batch {batch} object {i}\n".encode() * (1 + (batch % 3) * 400))
            for i in range(count)]


def _pack_dir(repo: Path) -> Path:
    return repo / ".git" / "objects" / "pack"


def _trash(repo: Path) -> Path:
    return repo / ".git" / "gatos" / "pack-trash"


def _setup(repo: Path, merge_every: int = 4) -> tuple[GitObjectStore, SpareFiles, PackMaintainer]:
    pygit2.init_repository(str(repo))
    store = GitObjectStore(pygit2.Repository(str(repo)), pack_threshold=1)
    spares = SpareFiles(str(_pack_dir(repo)), trash=str(_trash(repo)))
    store.spares = spares
    # No `git repack` here: only the merges, which retire files.
    return store, spares, PackMaintainer(store, str(repo / ".git"), merge_every=merge_every,
                                         repack_every=10**9)


def _write(store: GitObjectStore, maintainer: PackMaintainer, batches: range,
           written: list[GitObject]) -> None:
    for batch in batches:
        objs = _blobs(batch)
        store.write_many(objs)
        written += objs
        maintainer.after_write()
        assert store.spares is not None
        assert store.spares.settle()  # a merge's files are reusable once their moves are synced


def _inodes(folder: Path, suffix: str = "") -> dict[int, str]:
    return {os.stat(folder / n).st_ino: n for n in os.listdir(folder) if n.endswith(suffix)}


def _one_pack(repo: Path, store: GitObjectStore, maintainer: PackMaintainer) -> tuple[Path, int, bytes]:
    """Write batch 0 as the folder's only pack: its path, inode and bytes."""
    store.write_many(_blobs(0))
    maintainer.after_write()
    (name,) = [n for n in os.listdir(_pack_dir(repo)) if n.endswith(".pack")]
    path = _pack_dir(repo) / name
    return path, os.stat(path).st_ino, path.read_bytes()


def _assert_git_reads(repo: Path, written: list[GitObject]) -> None:
    fresh = pygit2.Repository(str(repo))
    for obj in written:
        assert fresh.odb.read(obj.oid)[1] == obj.data
    git(repo, "fsck", "--strict")
    idx = [str(_pack_dir(repo) / p) for p in os.listdir(_pack_dir(repo)) if p.endswith(".idx")]
    git(repo, "verify-pack", *idx)
    assert "garbage: 0" in git(repo, "count-objects", "-v")


def test_merged_packs_files_are_written_again_as_new_packs(tmp_path: Path) -> None:
    store, spares, maintainer = _setup(tmp_path)
    written: list[GitObject] = []
    _write(store, maintainer, range(4), written)  # the fourth batch merges the first four
    assert maintainer.merges == 1
    retired = set(_inodes(_trash(tmp_path)))
    assert len(retired) == 8  # four packs and their indexes, none removed
    before = set(_inodes(_pack_dir(tmp_path)))
    _write(store, maintainer, range(4, 5), written)
    new = set(_inodes(_pack_dir(tmp_path))) - before
    assert len(new) == 2 and new <= retired  # the next pack and index: files of the merged ones
    _write(store, maintainer, range(5, 40), written)
    # Every later small pack went into a recycled file; only the merged packs are new.
    assert spares.recycled == 2 * 36 and spares.made == 0
    # The trash holds only what the last merges retired and nothing was reused from yet.
    assert len(os.listdir(_trash(tmp_path))) <= 2 * 4 * 2
    _assert_git_reads(tmp_path, written)
    maintainer.close()
    spares.close()
    assert os.listdir(_trash(tmp_path)) == []
    _assert_git_reads(tmp_path, written)


def test_whoever_opens_a_file_being_recycled_waits_and_harms_nobody(tmp_path: Path) -> None:
    """The lease is held from `take` until the new pack is written: an opener waits for
    it (and the signal the kernel sends the lease holder does not end the writer)."""
    store, spares, maintainer = _setup(tmp_path)
    written: list[GitObject] = []
    _write(store, maintainer, range(4), written)
    spare = spares.take(".pack")
    assert spare is not None
    path, _, old_size, _ = spare
    assert old_size > 0
    opener = subprocess.Popen([sys.executable, "-c", f"print(len(open({path!r}, 'rb').read()))"],
                              stdout=subprocess.PIPE, text=True)
    with pytest.raises(subprocess.TimeoutExpired):
        opener.wait(timeout=0.5)  # blocked on the lease
    new = b"PACK" + bytes(100)
    _pack._write_spare(spare, str(tmp_path / "written"), new, durable=False)
    out, _ = opener.communicate(timeout=30)
    assert int(out) == len(new) and (tmp_path / "written").read_bytes() == new
    assert not os.path.exists(path)
    _write(store, maintainer, range(4, 12), written)  # and this process is alive and well
    _assert_git_reads(tmp_path, written)


def test_a_pack_a_git_reader_has_open_is_never_written_under(tmp_path: Path) -> None:
    store, spares, maintainer = _setup(tmp_path)
    first = _blobs(0)
    _, held_inode, held_bytes = _one_pack(tmp_path, store, maintainer)
    reader = subprocess.Popen(["git", "-C", str(tmp_path), "cat-file", "--batch"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert reader.stdin is not None and reader.stdout is not None

    def read(obj: GitObject) -> bytes:
        assert reader.stdin is not None and reader.stdout is not None
        reader.stdin.write(obj.oid.encode() + b"\n")
        reader.stdin.flush()
        header = reader.stdout.readline().split()
        return reader.stdout.read(int(header[2]) + 1)[:-1]

    try:
        assert read(first[0]) == first[0].data  # git now has the small pack open
        written = list(first)
        _write(store, maintainer, range(1, 24), written)  # merged away: retired to the trash
        assert maintainer.merges >= 5 and spares.recycled > 0
        assert spares.refused > 0  # the held pack was tried, and refused
        held_name = _inodes(_trash(tmp_path))[held_inode]  # still there, never handed out
        assert (_trash(tmp_path) / held_name).read_bytes() == held_bytes
        assert read(first[-1]) == first[-1].data
    finally:
        reader.stdin.close()
        reader.wait(timeout=30)
    _write(store, maintainer, range(24, 40), written)  # the reader is gone: it can be reused
    assert held_name not in os.listdir(_trash(tmp_path))
    _assert_git_reads(tmp_path, written)


def test_a_pack_mapped_by_libgit2_is_never_written_under(tmp_path: Path) -> None:
    """libgit2 keeps the packs it read mapped (a daemon's reader does, for its life)."""
    store, spares, maintainer = _setup(tmp_path)
    first = _blobs(0)
    _, held_inode, held_bytes = _one_pack(tmp_path, store, maintainer)
    reader = pygit2.Repository(str(tmp_path))
    assert reader.odb.read(first[0].oid)[1] == first[0].data
    written = list(first)
    _write(store, maintainer, range(1, 30), written)
    assert (_trash(tmp_path) / _inodes(_trash(tmp_path))[held_inode]).read_bytes() == held_bytes
    assert spares.refused > 0
    for obj in first:  # the reader's mapping still holds the old bytes
        assert reader.odb.read(obj.oid)[1] == obj.data
    _assert_git_reads(tmp_path, written)


def test_a_pack_with_another_name_is_never_written_under(tmp_path: Path) -> None:
    """`git clone --local` hard-links packs: the clone's copy must stay as it was."""
    store, _, maintainer = _setup(tmp_path)
    path, _, kept = _one_pack(tmp_path, store, maintainer)
    elsewhere = tmp_path / "clone-of-the-pack"
    os.link(path, elsewhere)
    written: list[GitObject] = list(_blobs(0))
    _write(store, maintainer, range(1, 30), written)
    assert elsewhere.read_bytes() == kept
    assert os.stat(elsewhere).st_nlink == 1  # its trash name was removed, not reused
    _assert_git_reads(tmp_path, written)


def test_without_leases_retired_files_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A filesystem (or OS) that grants no lease never proves a file free: nothing is
    recycled, and what the merges retire is removed, as without a trash."""
    real = spares_module.fcntl.fcntl

    def no_leases(fd: int, cmd: int, arg: int = 0) -> object:
        if cmd == spares_module._F_SETLEASE:
            raise OSError(errno.EINVAL, "no leases here")
        return real(fd, cmd, arg)

    monkeypatch.setattr(spares_module.fcntl, "fcntl", no_leases)
    store, spares, maintainer = _setup(tmp_path)
    written: list[GitObject] = []
    _write(store, maintainer, range(20), written)
    assert spares.recycled == 0 and spares.trash is None
    assert os.listdir(_trash(tmp_path)) == []
    packs = [n for n in os.listdir(_pack_dir(tmp_path)) if n.endswith((".idx", ".pack"))]
    assert len(packs) == 2 * (maintainer.merges + len(store.small_packs))  # merged ones removed
    _assert_git_reads(tmp_path, written)


def test_a_trashed_file_removed_by_someone_else_is_skipped(tmp_path: Path) -> None:
    store, spares, maintainer = _setup(tmp_path)
    written: list[GitObject] = []
    _write(store, maintainer, range(4), written)
    for name in os.listdir(_trash(tmp_path)):
        os.unlink(_trash(tmp_path) / name)
    _write(store, maintainer, range(4, 12), written)  # the next merges' files are recycled
    assert spares.recycled > 0
    _assert_git_reads(tmp_path, written)


def test_leftovers_in_the_trash_are_removed_by_the_next_writer(tmp_path: Path) -> None:
    store, _, maintainer = _setup(tmp_path)
    _write(store, maintainer, range(4), [])
    assert len(os.listdir(_trash(tmp_path))) == 8  # a writer killed now leaves these
    after = SpareFiles(str(_pack_dir(tmp_path)), trash=str(_trash(tmp_path)))
    assert after.remove_leftovers() == 8
    assert os.listdir(_trash(tmp_path)) == []


def test_a_daemon_recycles_while_it_reads_and_loses_nothing(tmp_path: Path) -> None:
    """A daemon publishing one message per batch merges and recycles small packs while
    its own reader (libgit2) holds some of them mapped; every message reads back intact,
    in a new daemon and with git, and a clean stop leaves no trash."""
    from tests.integration.daemon_support import make_node, short_dir, start_daemon
    from tests.integration.test_bus_daemon import messages

    repo = make_node(tmp_path / "node")
    trash = repo / ".git" / "gatos" / "pack-trash"
    trash.mkdir(parents=True)
    (trash / "1_0").write_bytes(b"PACK left by a killed writer")
    with short_dir() as sock:
        for start in (0, 150):
            d = start_daemon(repo, socket_dir=sock)
            try:
                with d.client() as c, d.client() as sub:
                    if start:  # the reader maps what the first daemon wrote, then more is merged
                        sub.send({"type": "bus.subscribe", "id": "early", "topic": "t", "from": "earliest"})
                        assert [m["payload"] for m in messages(sub, start)] == list(range(start))
                    trashed: set[int] = set()
                    for i in range(start, start + 150):
                        got = c.request({"type": "bus.publish", "id": i, "topic": "t", "payload": i,
                                         "key": "k"})
                        assert got["ok"], got
                        if not trashed and os.listdir(trash):  # the first merge happened
                            trashed = set(_inodes(trash))
                    # Files that were in the trash then hold packs now: recycling happened.
                    assert trashed & set(_inodes(repo / ".git" / "objects" / "pack"))
                    if start:
                        assert [m["payload"] for m in messages(sub, 150)] == list(range(150, 300))
            finally:
                d.stop()
            assert os.listdir(trash) == []
        d = start_daemon(repo, socket_dir=sock)
        try:
            with d.client() as c:
                c.send({"type": "bus.subscribe", "id": "all", "topic": "t", "from": "earliest"})
                assert [m["payload"] for m in messages(c, 300)] == list(range(300))
        finally:
            d.stop()
    assert git(repo, "log", "--format=%s", "--all").split().count("gmb.message") == 300
    git(repo, "fsck", "--strict")


_NOT_ROOT_SCRIPT = r"""
import os, stat, sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
import tests.integration.test_pack_recycling as t
repo = Path(sys.argv[1])
store, spares, maintainer = t._setup(repo)
store.write_many(t._blobs(0))
maintainer.after_write()
(first,) = [n for n in os.listdir(t._pack_dir(repo)) if n.endswith(".pack")]
os.link(t._pack_dir(repo) / first, repo / "linked-copy")
try:
    os.open(str(t._pack_dir(repo) / first), os.O_WRONLY)
    raise SystemExit("this process can write a 0444 file: the test proves nothing")
except PermissionError:
    pass
written = list(t._blobs(0))
t._write(store, maintainer, range(1, 40), written)
assert spares.recycled >= 60, spares.recycled
modes = {n: stat.S_IMODE(os.stat(t._pack_dir(repo) / n).st_mode) for n in os.listdir(t._pack_dir(repo))}
assert set(modes.values()) == {0o444}, modes
assert stat.S_IMODE(os.stat(repo / "linked-copy").st_mode) == 0o444
print("ok", spares.recycled)
"""


def test_a_writer_that_may_not_write_read_only_files_recycles_them_and_keeps_their_mode(
        tmp_path: Path) -> None:
    """A daemon run as an ordinary user cannot open its 0444 packs for writing: a file is
    proved free through a read-only descriptor before its mode changes, and every pack
    (and a hard-linked copy of one) ends up 0444, as Git writes them. Run as root, the
    test drops the capability that lets root write anyway."""
    import shutil

    command = [sys.executable, "-c", _NOT_ROOT_SCRIPT, str(tmp_path / "repo"), str(Path.cwd())]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root without setpriv: cannot drop CAP_DAC_OVERRIDE")
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr + done.stdout
    _assert_git_reads(tmp_path / "repo", [])


def test_a_trash_folder_removed_under_the_writer_is_made_again(tmp_path: Path) -> None:
    import shutil

    store, spares, maintainer = _setup(tmp_path)
    written: list[GitObject] = []
    _write(store, maintainer, range(4), written)
    shutil.rmtree(_trash(tmp_path))
    _write(store, maintainer, range(4, 16), written)
    assert spares.trash is not None and maintainer.merges == 4
    packs = [n for n in os.listdir(_pack_dir(tmp_path)) if n.endswith(".idx")]
    assert len(packs) == maintainer.merges + len(store.small_packs)  # small ones left the folder
    _assert_git_reads(tmp_path, written)


def test_files_whose_move_out_was_not_synced_are_never_reused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the pack folder cannot be synced after a merge, a power loss could bring the
    old names back: those files are removed, not recycled."""
    def cannot_sync(folder: str) -> None:
        raise OSError(errno.EIO, "cannot sync")

    monkeypatch.setattr(spares_module, "_fsync_folder", cannot_sync)
    store, spares, maintainer = _setup(tmp_path)
    written: list[GitObject] = []
    _write(store, maintainer, range(12), written)
    assert spares.recycled == 0 and os.listdir(_trash(tmp_path)) == []
    _assert_git_reads(tmp_path, written)


def test_a_file_open_for_reading_and_writing_elsewhere_is_never_written_under(tmp_path: Path) -> None:
    store, spares, maintainer = _setup(tmp_path)
    path, inode, kept = _one_pack(tmp_path, store, maintainer)
    holder = subprocess.Popen([sys.executable, "-c", f"import os,sys; os.open({str(path)!r}, os.O_RDWR); "
                               "print('open', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "open\n"
    try:
        written = list(_blobs(0))
        _write(store, maintainer, range(1, 30), written)
        held = _inodes(_trash(tmp_path))[inode]
        assert (_trash(tmp_path) / held).read_bytes() == kept and spares.refused > 0
    finally:
        holder.communicate("", timeout=30)
    _assert_git_reads(tmp_path, written)


def test_a_file_is_reused_only_once_its_move_out_of_the_pack_folder_is_synced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder is synced on a thread (a slow disk never holds up a batch); until that
    sync is done, the files it covers are left alone and new files are made instead."""
    import threading

    release = threading.Event()
    real = spares_module._fsync_folder

    def slow_sync(folder: str) -> None:
        release.wait(30)
        real(folder)

    monkeypatch.setattr(spares_module, "_fsync_folder", slow_sync)
    store, spares, maintainer = _setup(tmp_path)
    written: list[GitObject] = []
    for batch in range(4):  # the fourth merges: its files wait for the slow sync
        store.write_many(_blobs(batch))
        written += _blobs(batch)
        maintainer.after_write()
    trashed = set(_inodes(_trash(tmp_path)))
    assert len(trashed) == 8 and not spares.settle(timeout=0.1)
    before = set(_inodes(_pack_dir(tmp_path)))
    store.write_many(_blobs(4))
    written += _blobs(4)
    new = set(_inodes(_pack_dir(tmp_path))) - before
    assert len(new) == 2 and not new & trashed and spares.recycled == 0
    release.set()
    assert spares.settle()
    before = set(_inodes(_pack_dir(tmp_path)))
    store.write_many(_blobs(5))
    written += _blobs(5)
    assert set(_inodes(_pack_dir(tmp_path))) - before <= trashed and spares.recycled == 2
    _assert_git_reads(tmp_path, written)
    spares.close()
