"""What the index needs of one journal commit, read from the commit's own bytes.

The trailers carry the event's type, actor, ULID and Event-CID, and the author time is
the event's `ts` in seconds (SPEC §5), so headers-only indexes never open the event blob.
Payload fields (named in a spec) need the event itself (`event.cbor` in the tree).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from ledger_core import EVENT_FILE, ObjectId, ObjectStore, decode, parse_commit
from ledger_core.errors import CorruptObject, NotFound

ReadCommit = Callable[[ObjectId], bytes]


class Header(NamedTuple):
    commit: ObjectId
    tree: ObjectId
    parent: ObjectId | None
    ulid: str
    cid: str
    type: str
    actor: str
    seconds: int

    @property
    def key(self) -> str:
        """The namespace order key (the fold's): ULID, then Event-CID."""
        return self.ulid + self.cid


# The layout every journal commit has (SPEC §5, written by ledger_core.journal_commit):
# tree, at most one parent, author with the event time, then the trailers in a fixed
# order. One match reads all of it; anything else takes the general parser below.
_FAST = re.compile(
    rb"tree ([0-9a-f]{40})\n(?:parent ([0-9a-f]{40})\n)?author [^\n]* (\d+) \+0000\n"
    rb".*?\n\nEvent-CID: ([^\n]+)\nEvent-Type: ([^\n]+)\nActor: ([^\n]+)\nUlid: ([^\n]+)\n", re.S)


def parse_header(oid: ObjectId, data: bytes) -> Header:
    """The header of one journal commit.

    Raises:
        CorruptObject: not a journal commit (a trailer missing, more than one parent).
    """
    fast = _FAST.match(data)
    if fast is not None:
        tree, parent, seconds, cid, kind, actor, ulid = fast.groups()
        return Header(oid, tree.decode(), parent.decode() if parent else None, ulid.decode(), cid.decode(),
                      kind.decode("utf-8"), actor.decode("utf-8"), int(seconds))
    commit = parse_commit(data)
    if len(commit.parents) > 1:
        raise CorruptObject(f"journal commit {oid} is a merge")
    trailers = commit.trailers
    try:
        seconds = int(commit.author.rsplit(" ", 2)[-2])
        return Header(oid, commit.tree, commit.parents[0] if commit.parents else None, trailers["Ulid"],
                      trailers["Event-CID"], trailers["Event-Type"], trailers["Actor"], seconds)
    except (KeyError, ValueError, IndexError) as exc:
        raise CorruptObject(f"journal commit {oid} lacks {exc}") from None


def walk_back(read: ReadCommit, head: ObjectId | None, stop: ObjectId | None) -> list[Header]:
    """Headers from `head` back to (not including) `stop`, oldest first."""
    out: list[Header] = []
    oid = head
    while oid is not None and oid != stop:
        try:
            data = read(oid)
        except NotFound:
            if not out or stop is not None:
                raise
            break  # the oldest retained commit of a compacted journal (see gatos epoch compact)
        header = parse_header(oid, data)
        out.append(header)
        oid = header.parent
    out.reverse()
    return out


class Columns(NamedTuple):
    """A run of events as parallel lists (cheaper than a tuple per event for whole journals)."""

    commits: list[str]
    trees: list[str]
    keys: list[str]          # ULID + Event-CID, the order key
    types: list[str]
    actors: list[str]
    seconds: list[int]

    @classmethod
    def empty(cls) -> Columns:
        return cls([], [], [], [], [], [])

    @classmethod
    def of(cls, headers: Sequence[Header]) -> Columns:
        return cls([h.commit for h in headers], [h.tree for h in headers], [h.ulid + h.cid for h in headers],
                   [h.type for h in headers], [h.actor for h in headers], [h.seconds for h in headers])

    def __len__(self) -> int:  # type: ignore[override]
        return len(self.commits)


def walk_columns(read: ReadCommit, head: ObjectId | None) -> Columns:
    """A whole journal (to its first commit, or the oldest one retained), oldest first."""
    out = Columns.empty()
    commits, trees, keys, types, actors, seconds = out
    oid = head
    match = _FAST.match
    while oid is not None:
        try:
            data = read(oid)
        except NotFound:
            if not commits:
                raise
            break  # the oldest retained commit of a compacted journal
        fast = match(data)
        if fast is not None:
            tree, parent, secs, cid, kind, actor, ulid = fast.groups()
            commits.append(oid)
            trees.append(tree.decode())
            keys.append(ulid.decode() + cid.decode())
            types.append(kind.decode("utf-8"))
            actors.append(actor.decode("utf-8"))
            seconds.append(int(secs))
            oid = parent.decode() if parent else None
        else:
            header = parse_header(oid, data)
            commits.append(oid)
            trees.append(header.tree)
            keys.append(header.key)
            types.append(header.type)
            actors.append(header.actor)
            seconds.append(header.seconds)
            oid = header.parent
    for column in out:
        column.reverse()
    return out


def walk_columns_native(native: object, read: ReadCommit, heads: Sequence[ObjectId]) -> list[Columns]:
    """`walk_columns` of several whole journals through a native pack walker.

    `native.walk` (see `gatos_native.Packs.walk`) reads journals in parallel threads and
    stops a journal at the first commit it cannot read exactly as `walk_columns` would
    (not in a pack, a delta, another layout); the rest of that journal is walked here.
    """
    walked = native.walk([(head, None) for head in heads], "author-utc", keys=True)  # type: ignore[attr-defined]
    out = []
    for commits, trees, keys, _cids, types, actors, seconds, end in walked:
        cols = Columns(commits, trees, keys, types, actors, seconds)
        if end is not None:
            try:
                older = walk_columns(read, end)
            except NotFound:
                if not commits:
                    raise
                older = Columns.empty()  # the oldest retained commit of a compacted journal
            if len(older):
                cols = Columns(*[a + b for a, b in zip(older, cols, strict=True)])
        out.append(cols)
    return out


MergeKeys = Callable[[list[list[str]]], bytes]


def merge_columns(journals: Sequence[Columns], merge_keys: MergeKeys | None = None) -> Columns:
    """The namespace order over whole journals (see `merge`), as columns.

    `merge_keys` (the native `gatos_native.merge_keys`) may compute the merge: for each
    position, the index of the journal it comes from (at most 255 journals).
    """
    live = [j for j in journals if len(j)]
    if not live:
        return Columns.empty()
    if len(live) == 1:
        return live[0]
    if merge_keys is not None and len(live) < 256:
        picks = merge_keys([cols.keys for cols in live])
        fields = []
        for field in range(6):
            nexts = [iter(cols[field]).__next__ for cols in live]
            fields.append([nexts[j]() for j in picks])
        return Columns(*fields)
    def keyed(j: int, keys: list[str]) -> Iterator[tuple[str, int, int]]:
        return ((key, j, i) for i, key in enumerate(keys))

    picks = [(j, i) for _, j, i in heapq.merge(*[keyed(j, cols.keys) for j, cols in enumerate(live)])]
    return Columns(*[[live[j][field][i] for j, i in picks] for field in range(6)])


def merge(journals: Sequence[Sequence[Header]]) -> Iterator[Header]:
    """The namespace's total order: a k-way merge taking the journal whose next event has the
    smallest key (each journal keeps its own order) — the same order the fold uses."""
    return heapq.merge(*journals, key=lambda h: h.ulid + h.cid)


def port_reader(objects: ObjectStore) -> ReadCommit:
    """Commit bytes through the `ObjectStore` port (the general, slower path)."""
    def read(oid: ObjectId) -> bytes:
        return objects.read(oid).data
    return read


def read_payload(objects: ObjectStore, tree: ObjectId) -> object:
    """The payload of one event, from its commit's tree (for payload-field indexes)."""
    for entry in objects.read_tree(tree):
        if entry.name == EVENT_FILE:
            return decode(objects.read_blob(entry.oid)).get("payload")
    raise CorruptObject(f"journal tree {tree} has no {EVENT_FILE}")


__all__ = ["Columns", "Header", "ReadCommit", "merge", "merge_columns", "parse_header", "port_reader",
           "read_payload", "walk_back", "walk_columns", "walk_columns_native"]
