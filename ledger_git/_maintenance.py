"""Keeping the pack count bounded when every batch is written as a pack of its own.

On a disk where creating a file costs a third of a millisecond (measured on this
project's machines), a batch of four events written loose is sixteen files; as one
pack it is two. So a latency-minded writer packs every batch, and must then keep the
number of packs small, because every object lookup walks the pack list.

Two levels do that:

1. **Merging small packs in-process.** The store remembers the entries of the small
   packs it just wrote; every `merge_every` of them are written again as one pack
   (entries are self-contained, so their bytes are copied, not recompressed), and
   only then are the small ones taken out of the pack folder, index first: removed,
   or moved to the store's spares to be recycled (`ledger_git._spares`). A crash in
   between leaves objects in two packs, which is harmless.
2. **`git repack --geometric=2 -d`** in a background subprocess once `repack_every`
   packs have piled up: Git rolls the packs into a geometric progression of sizes,
   writing the new pack before deleting the old ones and never touching refs.

Git and libgit2 rescan the pack folder when an object they expected is gone, so a
concurrent reader never fails; the two levels never run at the same time, so Git never
finds a pack it chose deleted under it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess

from ledger_git._objects import GitObjectStore
from ledger_git._pack import PackEntry, write_pack_entries

log = logging.getLogger("gatos.maintenance")

DEFAULT_MERGE_EVERY = 32
DEFAULT_REPACK_EVERY = 50  # git's own gc.autoPackLimit
SMALL_PACK_OBJECTS = 128  # 32 events: bigger packs are few enough to leave to git repack


class PackMaintainer:
    """Merges a store's small packs and starts background geometric repacks."""

    def __init__(self, store: GitObjectStore, git_dir: str, *,
                 merge_every: int = DEFAULT_MERGE_EVERY,
                 repack_every: int = DEFAULT_REPACK_EVERY, git: str = "git") -> None:
        self.store = store
        self.git_dir = git_dir
        self.merge_every = merge_every
        self.repack_every = repack_every
        self.git = git
        store.remember_small = SMALL_PACK_OBJECTS if merge_every > 1 else 0
        self.pending = 0  # packs that exist now and did not exist at the last repack
        self.merges = 0
        self.repacks = 0
        self.failures = 0
        self._seen = store.packs_written
        self._proc: subprocess.Popen[bytes] | None = None
        self._disabled = False

    @property
    def repacking(self) -> bool:
        self._reap()
        return self._proc is not None

    def after_write(self, *, busy: bool = False) -> None:
        """Call after each batch the store wrote: merge or repack when it is time.

        `busy`: more work is waiting, so upkeep that is due waits for a call that is not
        busy, unless twice `merge_every` small packs or twice `repack_every` new packs
        piled up meanwhile: a writer that is never idle still merges and repacks (its
        pack count stays bounded), and one that is idle now and then merges (about a
        millisecond) or starts `git repack` (a fork) off its callers' path.
        """
        self.pending += self.store.packs_written - self._seen
        self._seen = self.store.packs_written
        small = len(self.store.small_packs)
        if busy and small < 2 * self.merge_every and self.pending < 2 * self.repack_every:
            if self._proc is not None:
                self._reap()  # (a finished repack is not left a zombie meanwhile)
            return
        if self.repacking:
            return
        if small >= self.merge_every:
            self._merge()
        elif self.pending >= self.repack_every and not self._disabled:
            self._start_repack()

    def _merge(self) -> None:
        small = self.store.small_packs
        self.store.small_packs = []
        entries: dict[bytes, PackEntry] = {}
        for _name, pack_entries in small:
            for entry in pack_entries:
                entries.setdefault(entry[0], entry)  # (raw id, crc, bytes): native entries are tuples
        write_pack_entries(self.store.objects_dir, list(entries.values()), durable=self.store.durable)
        pack_dir = os.path.join(self.store.objects_dir, "pack")
        # The index first: packs are found by their index.
        self.store.remove_files([os.path.join(pack_dir, f"pack-{name}{ext}")
                                 for name, _ in small for ext in (".idx", ".pack")])
        self.pending += 1 - len(small)
        self.merges += 1

    def _start_repack(self) -> None:
        cmd = [self.git, "--git-dir", self.git_dir, "repack", "--geometric=2", "-d", "-q"]
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE)
        except OSError as exc:  # no git on PATH: packs pile up until `git gc`; say so once
            self._disabled = True
            log.warning("cannot run git repack (%s): packs will accumulate until `git gc`", exc)
            return
        # At the lowest CPU priority (on a busy node the repack waits, appends do not),
        # set from here: `preexec_fn` is not safe once the process has threads.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, self._proc.pid, 19)
        self.pending = 0
        self.repacks += 1

    def _reap(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is None:
            return
        self._proc = None
        if proc.returncode != 0:
            self.failures += 1
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            log.warning("git repack exited %s: %s", proc.returncode, err)
        if proc.stderr:
            proc.stderr.close()

    def close(self, timeout: float = 60.0) -> None:
        """Leave few packs behind: wait for a running repack, merge what is left, and run
        one more repack if enough packs piled up while the last one ran."""
        self._wait(timeout)
        if len(self.store.small_packs) > 1:
            self._merge()
        if self.pending >= self.repack_every and not self._disabled:
            self._start_repack()
            self._wait(timeout)

    def _wait(self, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self._reap()
