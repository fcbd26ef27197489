"""The pygit2 object store: loose objects for small writes, one pack for a batch."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pygit2
from pygit2.enums import ObjectType

from ledger_core import GitObject, ObjectId, ObjectStore
from ledger_core.errors import CorruptObject, NotFound
from ledger_git._pack import write_pack
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

    def write_many(self, objects: Sequence[GitObject]) -> None:
        with map_git_errors("writing objects"):
            if len(objects) >= self.pack_threshold:
                write_pack(self.objects_dir, objects, durable=self.durable)
                return
            odb = self.repo.odb
            for obj in objects:
                odb.write(_TO_GIT[obj.kind], obj.data)

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
