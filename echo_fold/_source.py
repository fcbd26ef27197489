"""Reading journals for a fold, through the `ObjectStore` port.

A fold reads every commit of its window once, and event bytes only for the events
it will deliver. The journal commit format is fixed by the ledger (SPEC §5), so the
few header lines and trailers needed for ordering are read by position instead of
through the general parsers: a fold of a million events spends its time in Lua, not
in regexes. Every event handed to the program has had its bytes checked against
the commit's `Event-CID`.
"""

from __future__ import annotations

import re
from typing import Any

import cbor2

from echo_fold._order import Header
from echo_fold.errors import FoldError
from ledger_core import EVENT_FILE, ObjectId, ObjectStore, event_cid
from ledger_core.errors import CorruptObject, NotFound

_TRAILERS = (b"Event-CID", b"Event-Type", b"Ulid")
# The exact layout the ledger writes (SPEC §5), matched in one step. A commit in any
# other (still valid) layout takes the general path below, so this only saves time.
_LAYOUT = re.compile(
    rb"tree ([0-9a-f]{40})\n(?:parent ([0-9a-f]{40})\n)?author [^\n]*\n"
    rb"committer [^\n]* (\d+) [+-]\d{4}\n\n[^\n]*\n\n"
    rb"Event-CID: ([^\n]+)\nEvent-Type: ([^\n]+)\nActor: [^\n]*\nUlid: ([^\n]+)\n")


class NotAncestor(FoldError):
    """A checkpoint's journal head is not on the journal any more."""

    code = "NOT_FOUND"


def _commit_data(objects: ObjectStore, oid: ObjectId) -> bytes:
    obj = objects.read(oid)
    if obj.kind != "commit":
        raise CorruptObject(f"object {oid} is a {obj.kind}, expected a commit")
    return obj.data


def parse_header(oid: ObjectId, data: bytes, journal: int) -> tuple[Header, ObjectId | None]:
    """The `Header` of a journal commit and its parent."""
    m = _LAYOUT.match(data)
    if m is not None:  # one parent at most: a second `parent` line does not match
        try:
            tree, parent, time, cid, etype, ulid = m.groups()
            return (Header(oid, ObjectId(tree.decode()), ulid.decode(), cid.decode(), etype.decode("utf-8"),
                           int(time), journal),
                    ObjectId(parent.decode()) if parent else None)
        except UnicodeDecodeError:
            pass  # the general path reports it
    try:
        head, _, message = data.partition(b"\n\n")
        lines = head.split(b"\n")
        if not lines[0].startswith(b"tree "):
            raise ValueError("no tree line")
        tree = ObjectId(lines[0][5:].decode("ascii"))
        parent: ObjectId | None = None
        time = 0
        for line in lines[1:]:
            if line.startswith(b"parent "):
                if parent is not None:
                    raise ValueError("a journal commit has one parent")
                parent = ObjectId(line[7:].decode("ascii"))
            elif line.startswith(b"committer "):
                time = int(line.rsplit(b" ", 2)[-2])
        found: dict[bytes, str] = {}
        for line in message.rstrip(b"\n").rsplit(b"\n\n", 1)[-1].split(b"\n"):
            name, sep, value = line.partition(b": ")
            if sep and name in _TRAILERS and name not in found:
                found[name] = value.decode("utf-8")
        cid, etype, ulid = (found[name] for name in _TRAILERS)
    except (ValueError, KeyError, UnicodeDecodeError, IndexError) as exc:
        raise CorruptObject(f"journal commit {oid} cannot be read: {exc}") from None
    return Header(oid, tree, ulid, cid, etype, time, journal), parent


def walk(objects: ObjectStore, head: ObjectId | None, stop: ObjectId | None, journal: int
         ) -> list[Header]:
    """Headers from `stop` (exclusive) to `head`, oldest first.

    Raises:
        NotAncestor: `stop` is given and is not on the chain ending at `head`.
    """
    out: list[Header] = []
    oid = head
    while oid is not None and oid != stop:
        header, oid = parse_header(oid, _commit_data(objects, oid), journal)
        out.append(header)
    if stop is not None and oid != stop:
        raise NotAncestor(f"commit {stop} is not an ancestor of {head}")
    out.reverse()
    return out


def _event_blob(objects: ObjectStore, header: Header) -> bytes:
    tree = objects.read(header.tree).data
    marker = b" " + EVENT_FILE.encode() + b"\0"
    at = tree.find(marker)
    if at < 0:
        raise CorruptObject(f"journal commit {header.commit} has no {EVENT_FILE}")
    start = at + len(marker)
    return objects.read(ObjectId(tree[start:start + 20].hex())).data


def read_event(objects: ObjectStore, header: Header) -> dict[str, Any]:
    """The envelope of one event as a dict, checked against its commit.

    Raises:
        CorruptObject: the bytes do not hash to the commit's Event-CID, or the
            envelope's type/ULID disagree with the trailers.
    """
    blob = _event_blob(objects, header)
    if event_cid(blob) != header.cid:
        raise CorruptObject(f"event of commit {header.commit} does not hash to its Event-CID")
    try:
        envelope = cbor2.loads(blob)
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise CorruptObject(f"event of commit {header.commit} is not CBOR: {exc}") from None
    if (not isinstance(envelope, dict) or envelope.get("ulid") != header.ulid
            or envelope.get("type") != header.type):
        raise CorruptObject(f"event of commit {header.commit} disagrees with its trailers")
    return envelope


def journal_heads(objects: ObjectStore, heads: dict[str, ObjectId]) -> None:
    """Check every head exists (a clear NOT_FOUND before any work)."""
    for ref, oid in heads.items():
        if not objects.contains(oid):
            raise NotFound(f"journal {ref} head {oid} is not in this repository")
