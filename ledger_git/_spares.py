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
   again later), and one that opens the file meanwhile waits, then finds a pack whose
   checksum does not match the old index, which Git and libgit2 reject before they
   look elsewhere. The blocks are kept: the new bytes overwrite them and only a longer
   tail is cut. Without leases (another OS, a filesystem without them) nothing is
   recycled and retired files are removed, as before.
2. **Made while idle** (`fill`): for when the trash has nothing free, as at the start.

Spare files are named `tmp_gatos_spare_<pid>_<n>` in the pack folder (Git reads only
`.idx` files there and their `.pack`), or live in the trash; they are read-only (0444,
as Git's packs) and come with a writing descriptor. Only one writer per folder may use
them (the bus writer holds its flock); it removes those left by a writer that died.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import itertools
import os
import signal

PREFIX = "tmp_gatos_spare_"
Spare = tuple[str, int, int]  # path, writing descriptor, size of its old bytes (0 when new)
TRASH_LIMIT = 1024  # files kept for recycling; the oldest beyond this are removed
_BUSY = object()
_F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)  # Linux only


def _lease_breaks_are_harmless() -> bool:
    """Make sure a broken lease cannot end the process; False when it cannot be made so.

    When another process opens a file we hold a lease on, the kernel signals us (SIGIO,
    whose default action ends the process) and the opener waits until we close the file.
    We close it within microseconds anyway, so the signal is ignored, unless someone
    already handles it. Only the main thread may change a signal's disposition.
    """
    try:
        if signal.getsignal(signal.SIGIO) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGIO, signal.SIG_IGN)
    except (AttributeError, ValueError, OSError):  # no SIGIO (Windows), not the main thread
        return False
    return True


class SpareFiles:
    """Up to `count` empty files for the next packs, each with an open writing descriptor.

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
                        with contextlib.suppress(FileNotFoundError):
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
                return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444), 0
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
        """Take files out of the pack folder, in order: into the trash, or removed."""
        for path in paths:
            if self.trash is not None and self._to_trash(path):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        for queue in self._trashed.values():
            while len(queue) > TRASH_LIMIT // 2:
                self._drop(queue.popleft())

    def _to_trash(self, path: str) -> bool:
        """Move `path` into the trash; False when the trash cannot take it (then, from now
        on, nothing goes there: another filesystem, no room)."""
        assert self.trash is not None
        dest = os.path.join(self.trash, f"{os.getpid()}_{next(self._names)}")
        try:
            if not self._trash_made:
                os.makedirs(self.trash, exist_ok=True)
                self._trash_made = True
            os.rename(path, dest)
        except FileNotFoundError:  # gone already (`git prune`, say): nothing to move
            return True
        except OSError:
            self.trash = None
            return False
        self._trashed[".idx" if path.endswith(".idx") else ".pack"].append(dest)
        return True

    def _recycle(self, kind: str) -> Spare | None:
        """The oldest trashed file of `kind` nobody else has open, made unreadable, or None."""
        queue = self._trashed[kind]
        for _ in range(min(len(queue), 4)):
            path = queue.popleft()
            claimed = self._claim(path)
            if claimed is _BUSY:  # someone has it open: tried again later
                queue.append(path)
            elif claimed is not None:
                self.recycled += 1
                return path, *claimed
        return None

    def _claim(self, path: str) -> tuple[int, int] | object | None:
        """Prove the file at `path` ours alone: its writing descriptor, still holding the
        lease, and its old size; `_BUSY` when someone has it open; None when dropped.

        The lease is held until the new bytes are written and the descriptor closed
        (`ledger_git._pack._write_spare`): whoever opens the file meanwhile waits for
        that, then finds the new pack. The old blocks are kept (emptying the file would
        free them, about 100 us on a disk mounted with `discard`): the new bytes
        overwrite them and only a longer tail is cut.
        """
        chmodded = False
        try:
            fd = os.open(path, os.O_WRONLY)
        except PermissionError:  # 0444 and not root: made writable by its owner (us)
            try:
                os.chmod(path, 0o600)
                fd = os.open(path, os.O_WRONLY)
            except OSError:
                self._drop(path)
                return None
            chmodded = True
        except OSError:
            self._drop(path)
            return None
        try:
            fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_WRLCK)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                self.refused += 1
                return _BUSY
            self._drop(path)  # no leases here (EINVAL, ENOLCK...): nothing is ever proved free
            self.trash = None
            return None
        try:
            st = os.fstat(fd)
            if st.st_nlink == 1:  # another name shares the inode: never rewritten
                if chmodded:
                    os.fchmod(fd, 0o444)
                return fd, st.st_size
        except OSError:
            pass
        os.close(fd)  # (releases the lease)
        self._drop(path)
        return None

    @staticmethod
    def _drop(path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def close(self) -> None:
        """Close and remove the files not used, and the trash."""
        while self._ready:
            path, fd, _ = self._ready.pop()
            os.close(fd)
            self._drop(path)
        for queue in self._trashed.values():
            while queue:
                self._drop(queue.popleft())
