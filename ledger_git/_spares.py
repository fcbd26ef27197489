"""Files for a writer's next packs: recycled from the packs it merged away, or made
ahead while it is idle.

Every batch the bus writer packs needs two files (the `.pack` and its `.idx`), and a
merge of small packs used to remove two files per batch again. On this project's
machines (a journal-less ext4 mounted with `discard`) those are the costliest system
calls the writer makes: creating a file costs 15 us in a quiet folder and 150-340 us
once many files were freed in the last minutes (the kernel skips their inodes while it
looks for a free one), and freeing a file's blocks costs about 100 us (measured with
`bench/bench_bus.py` and alone). So files are kept, not freed:

1. **Recycling.** The files of the small packs a merge replaced (`PackMaintainer`) are
   moved to a trash folder outside `objects/` (`retire`), where Git never looks. A
   trashed file is reused for a later pack or index only once the kernel has proved that
   nobody else has it open or mapped: a write lease (`F_SETLEASE`, Linux) is granted
   only to a file's one opener, and a mapping holds its file open even after its
   descriptor was closed (a libgit2 reader keeps the packs it read mapped). Under the
   lease the file is checked to have no other name (`git clone --local` hard-links
   packs), and the lease is held until the new pack is written and the file closed.
   So a reader that has the old pack open is never written under (the file is tried
   again later). Only a reader that found the old name a moment before the move can
   open the file afterwards: it waits for the lease (at most the kernel's
   `lease-break-time`, 45 s by default, far more than a write takes), then finds a
   pack whose checksum does not match the old index, which Git and libgit2 reject
   before they look elsewhere. The pack folder is synced after each merge's moves (on
   a thread, `_FolderSyncer`), and none of those files is reused before that, so a
   power loss cannot bring an old name back over new bytes. The blocks are kept: the
   new bytes overwrite them and only a longer tail is cut. A writer that may not
   write its read-only packs (not root) proves a file free through a read-only
   descriptor before it touches its mode, and gives the mode back once the new pack
   is written. Without leases (another OS, a filesystem without them) nothing is
   recycled and retired files are removed, as before.
2. **Made while idle** (`fill`): for when the trash has nothing free, as at the start.

New spare files are named `tmp_gatos_spare_<pid>_<n>` in the pack folder (Git reads
only `.idx` files there and their `.pack`); trashed ones live in the trash. Packs
written into either end up read-only (0444, as Git's). Only one writer per folder may
use them (the bus writer holds its flock); it removes those left by a writer that died.
A lease holder is signalled (SIGIO) when someone opens its file: the signal is set to
be ignored unless the process handles it already, and children inherit that.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import itertools
import os
import signal
import stat
import threading

from ledger_git._refs import _fsync_dir

_fsync_folder = _fsync_dir  # (a name of its own: tests make it fail or wait)

PREFIX = "tmp_gatos_spare_"
# A file for the next pack: its path, a writing descriptor, the size of its old bytes (0
# when new) and the mode to give it back once written (-1: leave it).
Spare = tuple[str, int, int, int]
TRASH_LIMIT = 512  # trashed files kept per kind; beyond this the first in line are removed
_BUSY = object()
_DENIED = object()
_F_SETLEASE: int | None = getattr(fcntl, "F_SETLEASE", None)  # Linux only
_NO_LEASES = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}


def _lease_breaks_are_harmless() -> bool:
    """Make sure a broken lease cannot end the process; False when it cannot be made so.

    When another process opens a file we hold a lease on, the kernel signals us (SIGIO,
    whose default action ends the process) and the opener waits until we close the file.
    We close it within microseconds anyway, so the signal is ignored, unless someone
    already handles it. Only the main thread may change a signal's disposition.
    """
    if _F_SETLEASE is None:
        return False
    try:
        if signal.getsignal(signal.SIGIO) == signal.SIG_DFL:
            signal.signal(signal.SIGIO, signal.SIG_IGN)
    except (AttributeError, ValueError, OSError):  # no SIGIO (Windows), not the main thread
        return False
    return True


class SpareFiles:
    """Files for the next packs, each with an open writing descriptor: up to `count`
    new empty ones, and the trashed files of merged packs.

    `trash`: a folder on the same filesystem as `directory`, outside `objects/`, where
    `retire` moves files to be recycled; None removes them instead.
    """

    def __init__(self, directory: str, count: int = 2, *, trash: str | None = None) -> None:
        self.directory = directory
        self.count = count
        self.trash = trash if trash is not None and _lease_breaks_are_harmless() else None
        self._ready: list[Spare] = []
        self._names = itertools.count()
        # Trashed files by kind, oldest first: an index is recycled as an index, a pack as a
        # pack, so that a file rarely has to shrink (freeing blocks costs as much as a creation).
        self._trashed: dict[str, collections.deque[str]] = {
            ".idx": collections.deque(), ".pack": collections.deque()}
        self._trash_made = False
        self._syncer: _FolderSyncer | None = None
        self._needs: dict[str, int] = {}  # trashed file -> the folder sync it waits for
        self.made = 0  # files made ahead so far
        self.taken = 0  # of which written as packs or indexes
        self.recycled = 0  # files reused from the trash
        self.refused = 0  # trashed files found still open by someone (left for later)

    def remove_leftovers(self) -> int:
        """Remove spare and trashed files left by earlier writers; how many.

        Only for the folder's one spare-file user (it holds the writer's lock), whose own
        files are not among them yet."""
        removed = 0
        for folder, prefix in ((self.directory, PREFIX), (self.trash, "")):
            if folder is None:
                continue
            with contextlib.suppress(FileNotFoundError):
                for name in os.listdir(folder):
                    if name.startswith(prefix):
                        with contextlib.suppress(OSError):  # (a folder someone made there)
                            os.unlink(os.path.join(folder, name))
                            removed += 1
        return removed

    def fill(self) -> int:
        """Make files until `count` are ready; how many were made.

        Best effort: a folder that cannot take a file now (no inodes left, a quota, no
        descriptors) ends the filling quietly; the next pack then creates its files
        itself and reports the error to its callers, as without spares.
        """
        made = 0
        while len(self._ready) < self.count:
            spare = self._create()
            if spare is None:
                break
            self._ready.append(spare)
            made += 1
        self.made += made
        return made

    def _create(self) -> Spare | None:
        for _ in range(3):
            path = os.path.join(self.directory, f"{PREFIX}{os.getpid()}_{next(self._names)}")
            try:
                return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444), 0, -1
            except FileNotFoundError:
                try:
                    os.makedirs(self.directory, exist_ok=True)
                except OSError:
                    return None
            except FileExistsError:
                continue
            except OSError:
                return None
        return None

    def take(self, kind: str = ".pack") -> Spare | None:
        """A file for a pack (`kind` ".pack") or an index (".idx"), or None: a trashed one
        of that kind recycled on the spot when one is free, else one made ahead."""
        spare = self._recycle(kind)
        if spare is None and self._ready:
            spare = self._ready.pop()
        if spare is not None:
            self.taken += 1
        return spare

    def retire(self, paths: list[str]) -> None:
        """Take files out of the pack folder, in order: into the trash, or removed.

        The pack folder is synced before any of them can be reused: otherwise, after a
        power loss, the folder could still name an old pack whose file holds new bytes,
        and Git, which does not hash what it reads, would serve them for the old ids.
        """
        moved: list[str] = []
        for path in paths:
            dest = self._to_trash(path) if self.trash is not None else None
            if dest is not None:
                if dest:
                    moved.append(dest)
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if moved:  # reusable once the folder is synced, which a thread does meanwhile
            if self._syncer is None:
                self._syncer = _FolderSyncer(self.directory)
            generation = self._syncer.request()
            for dest in moved:
                self._needs[dest] = generation
        for queue in self._trashed.values():
            while len(queue) > TRASH_LIMIT:
                self._drop(queue.popleft())

    def _to_trash(self, path: str) -> str | None:
        """Move `path` into the trash: its new path ("" when it was gone already), or None
        when the trash cannot take it (then nothing goes there any more: another
        filesystem, no room)."""
        assert self.trash is not None
        dest = os.path.join(self.trash, f"{os.getpid()}_{next(self._names)}{_kind(path)}")
        for _ in range(2):
            try:
                os.rename(path, dest)
            except FileNotFoundError:
                if not os.path.lexists(path):  # gone already (`git prune`, say)
                    return ""
                try:  # the trash folder is missing (first use, or removed under us)
                    os.makedirs(self.trash, exist_ok=True)
                except OSError:
                    break
                continue
            except OSError:
                break
            self._trashed[_kind(path)].append(dest)
            return dest
        self.trash = None
        return None

    def _recycle(self, kind: str) -> Spare | None:
        """The oldest trashed file of `kind` nobody else has open (its lease held), or None."""
        queue = self._trashed[kind]
        syncer = self._syncer
        if syncer is not None and syncer.failed:  # never known to be out of the folder
            self._give_up_trash()
            return None
        for _ in range(min(len(queue), 4)):
            path = queue.popleft()
            if syncer is not None and self._needs.get(path, 0) > syncer.done:
                queue.appendleft(path)  # its move is not on disk yet: none after it is
                return None
            claimed = self._claim(path)
            if claimed is _BUSY:  # someone has it open: tried again later
                queue.append(path)
                continue
            self._needs.pop(path, None)
            if claimed is not None:
                self.recycled += 1
                return path, *claimed
        return None

    def _empty_trash(self) -> None:
        for queue in self._trashed.values():
            while queue:
                self._drop(queue.popleft())
        self._needs.clear()

    def _give_up_trash(self) -> None:
        self._empty_trash()
        self.trash = None

    def settle(self, timeout: float = 30.0) -> bool:
        """Wait until the moves into the trash so far are on disk; False on timeout."""
        return self._syncer is None or self._syncer.wait(timeout)

    def _claim(self, path: str) -> tuple[int, int, int] | object | None:
        """Prove the file at `path` ours alone: a writing descriptor holding its lease, the
        old size and the mode to give back (-1: none); `_BUSY` when someone has it open;
        None when it was dropped.

        The lease is held until the new bytes are written and the descriptor closed
        (`ledger_git._pack._write_spare`): whoever opens the file meanwhile waits for
        that. The old blocks are kept (emptying the file would free them, about 100 us
        on a disk mounted with `discard`): the new bytes overwrite them and only a
        longer tail is cut. Opens never wait (O_NONBLOCK): a file under someone else's
        lease (Samba, NFS) counts as busy.
        """
        fd = self._open_leased(path, os.O_WRONLY)
        if fd is _DENIED:  # read-only (0444, as Git's packs) and we are not root
            return self._claim_read_only(path)
        if not isinstance(fd, int):
            return fd
        try:
            st = os.fstat(fd)
            if st.st_nlink == 1:  # another name shares the inode: never rewritten
                return fd, st.st_size, -1
        except OSError:
            pass
        os.close(fd)  # (releases the lease)
        self._drop(path)
        return None

    def _claim_read_only(self, path: str) -> tuple[int, int, int] | object | None:
        """`_claim` for a file we may not write: proved ours alone through a read-only
        descriptor before its mode is touched, made writable, opened for writing and
        proved ours again; its mode is given back once the new bytes are written."""
        fd = self._open_leased(path, os.O_RDONLY)
        if fd is _DENIED:
            self._drop(path)
            return None
        if not isinstance(fd, int):
            return fd
        try:
            st = os.fstat(fd)
            if st.st_nlink != 1:
                raise OSError(errno.EMLINK, "another name shares the inode")
            mode = stat.S_IMODE(st.st_mode)
            os.fchmod(fd, mode | stat.S_IWUSR)
        except OSError:
            os.close(fd)
            self._drop(path)
            return None
        os.close(fd)  # (releases the lease: a writing descriptor gets its own)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.chmod(path, mode)
            if isinstance(exc, BlockingIOError):
                return _BUSY
            self._drop(path)
            return None
        held = self._lease(fd)
        if held is not True:
            with contextlib.suppress(OSError):
                os.fchmod(fd, mode)
            os.close(fd)
            if held is None:
                self._drop(path)
            return held
        try:
            if os.fstat(fd).st_nlink == 1:
                return fd, st.st_size, mode
        except OSError:
            pass
        with contextlib.suppress(OSError):
            os.fchmod(fd, mode)
        os.close(fd)
        self._drop(path)
        return None

    def _open_leased(self, path: str, flags: int) -> int | object | None:
        """`path` opened with `flags` (never waiting) and its lease taken: the descriptor;
        `_DENIED` when we may not open it so; `_BUSY` when someone has it open; None when
        it was dropped."""
        try:
            fd = os.open(path, flags | os.O_NONBLOCK)
        except PermissionError:
            return _DENIED
        except BlockingIOError:  # someone else's lease on it (Samba, NFS)
            return _BUSY
        except OSError:
            self._drop(path)
            return None
        held = self._lease(fd)
        if held is True:
            return fd
        os.close(fd)
        if held is None:
            self._drop(path)
        return held

    def _lease(self, fd: int) -> object:
        """Take a write lease on `fd`: True; `_BUSY` when someone else has the file open;
        None when it cannot be had (and with no leases here at all, recycling ends)."""
        assert _F_SETLEASE is not None
        try:
            fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_WRLCK)
            return True
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                self.refused += 1
                return _BUSY
            if exc.errno in _NO_LEASES:  # nothing can ever be proved free here
                self.trash = None
            return None

    @staticmethod
    def _drop(path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def close(self) -> None:
        """Close and remove the files not used, and the trash."""
        while self._ready:
            path, fd, _, _ = self._ready.pop()
            os.close(fd)
            self._drop(path)
        self._empty_trash()
        if self._syncer is not None:
            self._syncer.close()
            self._syncer = None


def _kind(path: str) -> str:
    return ".idx" if path.endswith(".idx") else ".pack"


class _FolderSyncer:
    """Syncs a folder on a thread of its own, whenever asked; counts the syncs done.

    A folder fsync usually takes a fraction of a millisecond, but it waits for the disk,
    which is sometimes busy for a hundred milliseconds or more (other writes, a cache
    flush): a writer that synced on its own thread would hold up its callers that long.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.requested = 0
        self.done = 0  # every request up to this one is on disk
        self.failed = False
        self._stop = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="gatos-pack-folder-sync", daemon=True)
        self._thread.start()

    def request(self) -> int:
        """Ask for a sync; the number `done` must reach for it to be on disk."""
        with self._cond:
            self.requested += 1
            self._cond.notify_all()
            return self.requested

    def wait(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.done >= self.requested or self.failed, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stop or self.done < self.requested)
                if self._stop:
                    return
                target = self.requested
            try:
                _fsync_folder(self.folder)
            except OSError:
                with self._cond:
                    self.failed = True
                    self._cond.notify_all()
                return
            with self._cond:
                self.done = target
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join()
