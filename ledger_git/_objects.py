"""The pygit2 object store: loose objects for small writes, one pack for a batch."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence

import pygit2
from pygit2.enums import ObjectType

from ledger_core import GitObject, ObjectId, ObjectStore, PackedObjects
from ledger_core.errors import CorruptObject, NotFound
from ledger_git._deflate import STORE_BELOW, compress
from ledger_git._pack import PackEntry, pack_entries, write_pack_entries
from ledger_git._spares import SpareFiles
from ledger_git.errors import map_git_errors

_TO_GIT = {"blob": ObjectType.BLOB, "tree": ObjectType.TREE, "commit": ObjectType.COMMIT}
_FROM_GIT = {int(v): k for k, v in _TO_GIT.items()}

# Below this many objects a batch is written loose: a pack per event would leave
# thousands of tiny packs, which slows every later lookup until `git gc`.
PACK_THRESHOLD = 64


class GitObjectStore(ObjectStore):
    def __init__(self, repo: pygit2.Repository, *, durable: bool = False,
                 pack_threshold: int = PACK_THRESHOLD) -> None:
        self.repo = repo
        self.durable = durable
        self.pack_threshold = pack_threshold
        self.objects_dir = os.path.join(repo.path, "objects")
        self._folders: set[str] = set()
        self.packs_written = 0
        # Objects shorter than this are written as stored (uncompressed) zlib streams
        # (see `_deflate`): 0 compresses everything. Event commits, trees and blobs are a
        # few hundred bytes, mostly hashes and signatures: deflated they shrink by about a
        # quarter, but writing them costs ~20x more and every later read (a full fold
        # inflates each journal commit) ~10x more.
        self.store_below = STORE_BELOW
        # Set by a `PackMaintainer`: packs of at most this many objects are remembered
        # (name and entries) in `small_packs` so it can merge them without reading back.
        self.remember_small: int = 0
        self.small_packs: list[tuple[str, list[PackEntry]]] = []
        # Files made ahead for the next packs (`SpareFiles`), set by a writer that fills
        # them while it is idle; None: every pack creates its files.
        self.spares: SpareFiles | None = None

    def remove_files(self, paths: list[str]) -> None:
        """Remove files of the object folder, in order (a merge's small packs): through
        `spares` (which recycles them) when it has them."""
        if self.spares is not None:
            self.spares.retire(paths)
            return
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def write_many(self, objects: Sequence[GitObject]) -> None:
        with map_git_errors("writing objects"):
            if len(objects) >= self.pack_threshold:
                if isinstance(objects, PackedObjects):  # encoded ahead by their builder
                    entries: list[PackEntry] = objects.entries  # type: ignore[assignment]
                else:
                    entries = pack_entries(objects, store_below=self.store_below)
                name = write_pack_entries(self.objects_dir, entries, durable=self.durable, spares=self.spares)
                self.packs_written += 1
                if len(entries) <= self.remember_small:
                    self.small_packs.append((name, entries))
                return
            for obj in objects:
                self._write_loose(obj)

    def _write_loose(self, obj: GitObject) -> None:
        """Write one loose object the way Git does: compress to a temp file, rename into place.

        Done here rather than through libgit2's `Odb.write`, which rescans the pack
        folder and re-reads configuration on every object (about half the cost of a
        single append when measured).
        """
        oid = obj.oid
        folder = os.path.join(self.objects_dir, oid[:2])
        path = os.path.join(folder, oid[2:])
        if folder not in self._folders:
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)
        body = compress(f"{obj.kind} {len(obj.data)}\0".encode() + obj.data, self.store_below)
        tmp = f"{folder}/tmp_obj_{os.getpid()}_{threading.get_ident()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444)
        except FileNotFoundError:  # `git gc --prune` removed the (then empty) folder
            os.makedirs(folder, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444)
        try:
            os.write(fd, body)
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def read(self, oid: ObjectId) -> GitObject:
        try:
            kind, data = self.repo.odb.read(oid)
        except KeyError:
            raise NotFound(f"object {oid} not found") from None
        except (ValueError, pygit2.GitError) as exc:
            raise CorruptObject(f"object {oid} cannot be read: {exc}") from exc
        try:
            return GitObject(_FROM_GIT[int(kind)], bytes(data))  # type: ignore[arg-type]
        except KeyError:
            raise CorruptObject(f"object {oid} has unexpected type {kind}") from None

    def contains(self, oid: ObjectId) -> bool:
        return oid in self.repo.odb
