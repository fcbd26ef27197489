"""Empty files made ahead, while a writer has nothing to do, for its next pack.

Every batch the bus writer packs creates two files (the `.pack` and its `.idx`), and
creating a file is the costliest system call it makes: on a journal-less ext4 the
kernel skips every inode freed in the last minute while it looks for a free one, so a
creation costs 15 us in a quiet folder and 150-270 us once merged packs were freed
(measured during `bench/bench_bus.py` sets). A writer that makes the files while it
is idle (nothing waiting for it) and writes its next pack into them takes that cost
off the path of its callers; when it is never idle it creates as before.

Spare files are named `tmp_gatos_spare_<pid>_<n>` in the pack folder (Git reads only
`.idx` files there and their `.pack`) and are opened read-only from the start (0444,
as Git's packs) with the writing descriptor kept. Only one writer per folder may use
them (the bus writer holds its flock); it removes those left by a writer that died.
"""

from __future__ import annotations

import contextlib
import itertools
import os

PREFIX = "tmp_gatos_spare_"


class SpareFiles:
    """Up to `count` empty files in `directory`, each with an open writing descriptor."""

    def __init__(self, directory: str, count: int = 2) -> None:
        self.directory = directory
        self.count = count
        self._ready: list[tuple[str, int]] = []
        self._names = itertools.count()
        self.made = 0  # files made ahead so far
        self.taken = 0  # of which written as packs or indexes

    def remove_leftovers(self) -> int:
        """Remove spare files left in the folder by earlier writers; how many.

        Only for the folder's one spare-file user (it holds the writer's lock), whose own
        files are not among them yet."""
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.directory):
                if name.startswith(PREFIX):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(self.directory, name))
                        removed += 1
        return removed

    def fill(self) -> int:
        """Make files until `count` are ready; how many were made.

        Best effort: a folder that cannot take a file now (no inodes left, a quota, no
        descriptors) ends the filling quietly; the next pack then creates its files
        itself and reports the error to its callers, as without spares.
        """
        made = 0
        tries = 0
        while len(self._ready) < self.count and tries < 2 * self.count + 2:
            tries += 1
            path = os.path.join(self.directory, f"{PREFIX}{os.getpid()}_{next(self._names)}")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
            except FileNotFoundError:
                try:
                    os.makedirs(self.directory, exist_ok=True)
                except OSError:
                    break
                continue
            except FileExistsError:
                continue
            except OSError:
                break
            self._ready.append((path, fd))
            made += 1
        self.made += made
        return made

    def take(self) -> tuple[str, int] | None:
        """A ready file (its path and writing descriptor), or None when none is."""
        if not self._ready:
            return None
        self.taken += 1
        return self._ready.pop()

    def close(self) -> None:
        """Close and remove the files not used."""
        while self._ready:
            path, fd = self._ready.pop()
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
