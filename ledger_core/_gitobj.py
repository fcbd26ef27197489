"""Git objects as plain values: blob, tree and commit bytes, their ids, and parsing.

Building the objects in the core (instead of asking pygit2 to) means the in-memory
adapter and the Git adapter store byte-identical objects with identical ids, and a
journal commit is defined in exactly one place. Only SHA-1 repositories are handled.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal, NewType

from ledger_core.errors import CorruptObject

ObjectId = NewType("ObjectId", str)
ObjectKind = Literal["blob", "tree", "commit"]

MODE_BLOB = "100644"
MODE_TREE = "40000"
_OID_RE = re.compile(r"[0-9a-f]{40}")
_TRAILER_RE = re.compile(r"([A-Za-z][A-Za-z0-9-]*): (.*)")


def validate_oid(value: object) -> ObjectId:
    if not isinstance(value, str) or not _OID_RE.fullmatch(value):
        raise CorruptObject(f"{value!r} is not a 40-hex Git object id")
    return ObjectId(value)


@dataclass(frozen=True, slots=True)
class GitObject:
    """One loose Git object: its kind and its exact content bytes."""

    kind: ObjectKind
    data: bytes

    @property
    def oid(self) -> ObjectId:
        return object_id(self.kind, self.data)


def object_id(kind: str, data: bytes) -> ObjectId:
    """The SHA-1 Git object id of `data` stored as `kind`."""
    header = f"{kind} {len(data)}\0".encode()
    return ObjectId(hashlib.sha1(header + data, usedforsecurity=False).hexdigest())


@dataclass(frozen=True, slots=True)
class TreeEntry:
    name: str
    mode: str
    oid: ObjectId


def _tree_sort_key(entry: TreeEntry) -> bytes:
    # Git sorts tree entries as if directory names ended in '/'.
    name = entry.name.encode()
    return name + b"/" if entry.mode == MODE_TREE else name


def encode_tree(entries: list[TreeEntry]) -> bytes:
    """Tree bytes in Git's canonical entry order."""
    out = bytearray()
    for entry in sorted(entries, key=_tree_sort_key):
        if not entry.name or "/" in entry.name or entry.name in (".", "..", ".git"):
            raise CorruptObject(f"tree entry name {entry.name!r} is not allowed")
        out += f"{entry.mode} {entry.name}\0".encode() + bytes.fromhex(entry.oid)
    return bytes(out)


def parse_tree(data: bytes) -> list[TreeEntry]:
    """Entries of a tree object, in stored order."""
    entries: list[TreeEntry] = []
    pos = 0
    try:
        while pos < len(data):
            space = data.index(b" ", pos)
            nul = data.index(b"\0", space)
            mode = data[pos:space].decode("ascii")
            name = data[space + 1:nul].decode("utf-8")
            raw = data[nul + 1:nul + 21]
            if len(raw) != 20:
                raise ValueError("truncated object id")
            entries.append(TreeEntry(name, mode, ObjectId(raw.hex())))
            pos = nul + 21
    except ValueError as exc:
        raise CorruptObject(f"malformed tree object: {exc}") from None
    return entries


@dataclass(frozen=True, slots=True)
class Commit:
    """The parts of a commit object that GATOS reads."""

    tree: ObjectId
    parents: tuple[ObjectId, ...]
    author: str
    committer: str
    message: str

    @property
    def subject(self) -> str:
        return self.message.split("\n", 1)[0]

    @property
    def trailers(self) -> dict[str, str]:
        return parse_trailers(self.message)


def signature_line(name: str, email: str, seconds: int) -> str:
    """`Name <email> <seconds> +0000`: GATOS commits are always UTC."""
    for part in (name, email):
        if any(ch in part for ch in "<>\n"):
            raise CorruptObject(f"identity {part!r} may not contain '<', '>' or newlines")
    return f"{name} <{email}> {seconds} +0000"


def encode_commit(tree: ObjectId, parents: tuple[ObjectId, ...] | list[ObjectId],
                  author: str, committer: str, message: str) -> bytes:
    """Commit bytes exactly as `git commit-tree` would write them (no gpgsig, no encoding)."""
    lines = [f"tree {tree}"]
    lines += [f"parent {p}" for p in parents]
    lines += [f"author {author}", f"committer {committer}", "", message]
    return "\n".join(lines).encode("utf-8")


def parse_commit(data: bytes) -> Commit:
    """Parse a commit object; raise `CorruptObject` when it is not one."""
    try:
        text = data.decode("utf-8")
        header, _, message = text.partition("\n\n")
        tree = None
        parents: list[ObjectId] = []
        author = committer = ""
        for line in header.split("\n"):
            key, _, value = line.partition(" ")
            if key == "tree":
                tree = validate_oid(value)
            elif key == "parent":
                parents.append(validate_oid(value))
            elif key == "author":
                author = value
            elif key == "committer":
                committer = value
        if tree is None:
            raise ValueError("no tree line")
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptObject(f"malformed commit object: {exc}") from None
    return Commit(tree, tuple(parents), author, committer, message)


def format_trailers(trailers: list[tuple[str, str]]) -> str:
    for key, value in trailers:
        if "\n" in value or not _TRAILER_RE.fullmatch(f"{key}: {value}"):
            raise CorruptObject(f"trailer {key!r} has a value that cannot be written")
    return "".join(f"{key}: {value}\n" for key, value in trailers)


def parse_trailer_lines(message: str) -> dict[str, list[str]]:
    """Every trailer of the last paragraph, keeping repeated keys (`Ledger-Head`, `Journal-Head`) in order."""
    paragraph = message.rstrip("\n").rsplit("\n\n", 1)[-1]
    out: dict[str, list[str]] = {}
    for line in paragraph.split("\n"):
        match = _TRAILER_RE.fullmatch(line)
        if match:
            out.setdefault(match.group(1), []).append(match.group(2))
    return out


def parse_trailers(message: str) -> dict[str, str]:
    """Trailers of the last paragraph of a commit message (first value wins)."""
    paragraph = message.rstrip("\n").rsplit("\n\n", 1)[-1]
    found: dict[str, str] = {}
    for line in paragraph.split("\n"):
        match = _TRAILER_RE.fullmatch(line)
        if match and match.group(1) not in found:
            found[match.group(1)] = match.group(2)
    return found
