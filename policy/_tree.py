"""Small helpers over the object port: walk a tree path, put a file at a path, commit.

Private to the policy plane; the same shape as the trust store's own file placement
so the policy plane and the ledger write the trust tree identically.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger_core import GitObject, ObjectId, ObjectStore, TreeEntry, encode_commit, encode_tree
from ledger_core._gitobj import MODE_BLOB, MODE_TREE, format_trailers, signature_line

__all__ = ["MODE_BLOB", "MODE_TREE", "commit_object", "entries_at", "read_file", "with_files"]


def entries_at(objects: ObjectStore, tree: ObjectId | None, path: Sequence[str]) -> list[TreeEntry]:
    """Entries of the tree at `path` below `tree` ([] when absent)."""
    if tree is None:
        return []
    for part in path:
        match = [e for e in objects.read_tree(tree) if e.name == part and e.mode == MODE_TREE]
        if not match:
            return []
        tree = match[0].oid
    return objects.read_tree(tree)


def read_file(objects: ObjectStore, tree: ObjectId | None, path: Sequence[str]) -> bytes | None:
    for entry in entries_at(objects, tree, path[:-1]):
        if entry.name == path[-1] and entry.mode == MODE_BLOB:
            return objects.read_blob(entry.oid)
    return None


def with_files(objects: ObjectStore, tree: ObjectId | None,
               files: dict[tuple[str, ...], bytes]) -> tuple[list[GitObject], ObjectId]:
    """New objects and root for `tree` with each path set to its bytes (others kept)."""
    entries = {e.name: e for e in (objects.read_tree(tree) if tree else [])}
    made: list[GitObject] = []
    children: dict[str, dict[tuple[str, ...], bytes]] = {}
    for path, data in files.items():
        if len(path) == 1:
            blob = GitObject("blob", data)
            made.append(blob)
            entries[path[0]] = TreeEntry(path[0], MODE_BLOB, blob.oid)
        else:
            children.setdefault(path[0], {})[path[1:]] = data
    for name, sub in children.items():
        old = entries.get(name)
        sub_made, sub_oid = with_files(objects, old.oid if old and old.mode == MODE_TREE else None, sub)
        made.extend(sub_made)
        entries[name] = TreeEntry(name, MODE_TREE, sub_oid)
    root = GitObject("tree", encode_tree(list(entries.values())))
    return [*made, root], root.oid


def commit_object(tree: ObjectId, parent: ObjectId | None, who: str, seconds: int, subject: str,
                  trailers: list[tuple[str, str]]) -> GitObject:
    """A commit with GATOS's fixed UTC identity line and a trailer paragraph."""
    ident = signature_line(who, who, seconds)
    message = f"{subject}\n\n{format_trailers(trailers)}"
    return GitObject("commit", encode_commit(tree, (parent,) if parent else (), ident, ident, message))
