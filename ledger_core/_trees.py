"""Trees and commits of plain files: build them as objects, read them back (pure).

The job plane (job, claim and result commits), the cache (index trees) and other
planes store documents as small trees of files; this is the one place that turns a
`{path: bytes}` mapping into Git objects and back.
"""

from __future__ import annotations

from typing import Any

from ledger_core._gitobj import (
    MODE_BLOB,
    MODE_TREE,
    GitObject,
    ObjectId,
    TreeEntry,
    encode_commit,
    encode_tree,
    format_trailers,
    signature_line,
)
from ledger_core._ports import ObjectStore


def build_tree(files: dict[str, bytes], out: list[GitObject]) -> ObjectId:
    """A tree (with subtrees for `a/b` paths) of `files`; new objects are appended to `out`."""
    direct: dict[str, bytes] = {}
    nested: dict[str, dict[str, bytes]] = {}
    for path, data in files.items():
        head, _, rest = path.partition("/")
        if rest:
            nested.setdefault(head, {})[rest] = data
        else:
            direct[path] = data
    entries = []
    for name, data in direct.items():
        blob = GitObject("blob", data)
        out.append(blob)
        entries.append(TreeEntry(name, MODE_BLOB, blob.oid))
    for name, sub in nested.items():
        entries.append(TreeEntry(name, MODE_TREE, build_tree(sub, out)))
    tree = GitObject("tree", encode_tree(entries))
    out.append(tree)
    return tree.oid


def read_files(objects: ObjectStore, tree: ObjectId, prefix: str = "") -> dict[str, bytes]:
    """Every file of a tree, by path."""
    files: dict[str, bytes] = {}
    for entry in objects.read_tree(tree):
        path = prefix + entry.name
        if entry.mode == MODE_TREE:
            files.update(read_files(objects, entry.oid, path + "/"))
        else:
            files[path] = objects.read_blob(entry.oid)
    return files


def make_commit(files: dict[str, bytes], subject: str, trailers: list[tuple[str, str]],
                parent: ObjectId | None, seconds: int, ident_name: str) -> tuple[list[GitObject], ObjectId]:
    """Objects of one commit holding `files`; the last object is the commit."""
    objects: list[GitObject] = []
    tree = build_tree(files, objects)
    ident = signature_line(ident_name, ident_name, seconds)
    message = f"{subject}\n\n{format_trailers(trailers)}"
    commit = GitObject("commit", encode_commit(tree, (parent,) if parent else (), ident, ident, message))
    objects.append(commit)
    return objects, commit.oid


def commit_files(objects: ObjectStore, oid: ObjectId) -> tuple[dict[str, str], dict[str, bytes], Any]:
    """(trailers, files, commit) of a commit."""
    commit = objects.read_commit(oid)
    return commit.trailers, read_files(objects, commit.tree), commit


__all__ = ["build_tree", "commit_files", "make_commit", "read_files"]
