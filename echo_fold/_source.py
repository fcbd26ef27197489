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
from binascii import unhexlify
from itertools import repeat
from typing import Any

import blake3
import cbor2

from echo_fold._native import open_native
from echo_fold._order import Header
from echo_fold._packs import PackReader, open_reader
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


_new = tuple.__new__


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
            # tuple.__new__ skips the named tuple's Python-level constructor (a full fold
            # builds one Header per event).
            return (_new(Header, (oid, tree.decode(), ulid.decode(), cid.decode(), etype.decode("utf-8"),
                                  int(time), journal)),
                    parent.decode() if parent else None)  # type: ignore[return-value]
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


_MARKER = b" " + EVENT_FILE.encode() + b"\0"


def _blob_id(header: Header, tree: bytes) -> bytes:
    at = tree.find(_MARKER)
    if at < 0:
        raise CorruptObject(f"journal commit {header.commit} has no {EVENT_FILE}")
    start = at + len(_MARKER)
    return tree[start:start + 20]


def _event_blob(objects: ObjectStore, header: Header) -> bytes:
    return objects.read(ObjectId(_blob_id(header, objects.read(header.tree).data).hex())).data


# Event-CID check without building the CID text: the 58 letters after "b" are the
# base32 digits of (CID bytes << 2), so mapping RFC 4648 letters onto the digits
# `int(_, 32)` reads compares the number instead. Anything outside the alphabet maps
# to "!" (which `int` refuses), so only the exact text `event_cid` writes can match.
_CID_PREFIX = bytes([0x01, 0x71, 0x1E, 0x20])
_B32_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_B32_DIGITS = "0123456789abcdefghijklmnopqrstuv"
_B32_TO_INT = bytes(ord(_B32_DIGITS[_B32_ALPHABET.index(chr(c))]) if chr(c) in _B32_ALPHABET
                    else ord("!") for c in range(256))


def cid_matches(blob: bytes, cid: str) -> bool:
    """`event_cid(blob) == cid`, about three times faster."""
    if len(cid) != 59 or cid[0] != "b" or not cid.isascii():
        return False
    try:
        n = int(cid[1:].encode("ascii").translate(_B32_TO_INT), 32)
    except ValueError:
        return False
    return n == int.from_bytes(_CID_PREFIX + blake3.blake3(blob).digest(), "big") << 2


def check_blob(header: Header, blob: bytes) -> bytes:
    if not cid_matches(blob, header.cid):
        raise CorruptObject(f"event of commit {header.commit} does not hash to its Event-CID")
    return blob


def decode_event(header: Header, blob: bytes) -> dict[str, Any]:
    """The envelope in `blob` (already checked against the Event-CID) as a dict.

    Raises:
        CorruptObject: not CBOR, or the envelope's type/ULID disagree with the trailers.
    """
    try:
        envelope = cbor2.loads(blob)
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise CorruptObject(f"event of commit {header.commit} is not CBOR: {exc}") from None
    if (not isinstance(envelope, dict) or envelope.get("ulid") != header.ulid
            or envelope.get("type") != header.type):
        raise CorruptObject(f"event of commit {header.commit} disagrees with its trailers")
    return envelope


def read_event(objects: ObjectStore, header: Header) -> dict[str, Any]:
    """The envelope of one event as a dict, checked against its commit.

    Raises:
        CorruptObject: the bytes do not hash to the commit's Event-CID, or the
            envelope's type/ULID disagree with the trailers.
    """
    blob = _event_blob(objects, header)
    if event_cid(blob) != header.cid:
        raise CorruptObject(f"event of commit {header.commit} does not hash to its Event-CID")
    return decode_event(header, blob)


class EventReader:
    """Journal commits and event bytes for one fold, from pack files when possible.

    With a `PackReader` (a Git-backed store), objects are read from the mapped packs
    and anything the packs cannot answer goes through the port; without one, every
    read goes through the port. Either way the headers and bytes are the same, and
    every blob returned has been checked against its commit's Event-CID.
    """

    PACKS_AFTER = 4096
    """Commits read through the port before the packs are used: mapping the packs and
    indexing them costs about 0.2 µs per object in the repository, which only a fold
    over many events pays back (an incremental fold of a few events never does)."""

    def __init__(self, objects: ObjectStore, packs: PackReader | None = None, native: Any = None) -> None:
        self.objects = objects
        self.packs = packs
        self.native = native  # a `gatos_native.Packs`, when the module is built
        self.walked = 0

    @classmethod
    def open(cls, objects: ObjectStore) -> EventReader:
        packs = open_reader(objects)
        return cls(objects, packs, open_native(objects) if packs is not None else None)

    def close(self) -> None:
        if self.packs is not None:
            self.packs.close()

    def __enter__(self) -> EventReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def walk(self, head: ObjectId | None, stop: ObjectId | None, journal: int) -> list[Header]:
        """As `walk`, reading commits from the packs first."""
        return self.walk_many([(head, stop)], first=journal)[0]

    def walk_many(self, jobs: list[tuple[ObjectId | None, ObjectId | None]], first: int = 0
                  ) -> list[list[Header]]:
        """`walk` of several journals (`(head, stop)`, numbered from `first` in list order).

        The first `PACKS_AFTER` commits of the fold are read through the port, the rest
        from the packs. (Walking journals in threads was measured and dropped: on the
        2-CPU bench machine two threads took 22-30 s for 1 M commits against 19-20 s
        for one; the GIL is held for most of a commit's parse.)
        """
        if self.packs is None:
            return [walk(self.objects, head, stop, first + j) for j, (head, stop) in enumerate(jobs)]
        if self.native is not None:
            return self._walk_native(jobs, first)
        parts: list[list[Header]] = []
        ends: list[ObjectId | None] = []
        left: list[int] = []
        for j, (head, stop) in enumerate(jobs):
            out: list[Header] = []
            oid = head
            while oid is not None and oid != stop and self.walked < self.PACKS_AFTER:
                header, oid = parse_header(oid, _commit_data(self.objects, oid), first + j)
                out.append(header)
                self.walked += 1
            parts.append(out)
            ends.append(oid)
            if oid is not None and oid != stop:
                left.append(j)

        for j in left:
            more, end = self._walk_packs(ends[j], jobs[j][1], first + j)
            parts[j] += more
            ends[j] = end
            self.walked += len(more)
        for (head, stop), out, end in zip(jobs, parts, ends, strict=True):
            if stop is not None and end != stop:
                raise NotAncestor(f"commit {stop} is not an ancestor of {head}")
            out.reverse()
        return parts

    def _walk_native(self, jobs: list[tuple[ObjectId | None, ObjectId | None]], first: int
                     ) -> list[list[Header]]:
        """`walk_many` through the native module (journals in parallel threads); where it
        stops early, the rest of that journal is read here, from the packs or the port."""
        todo = [j for j, (head, stop) in enumerate(jobs) if head is not None and head != stop]
        walked = self.native.walk([(jobs[j][0], jobs[j][1]) for j in todo], "committer")
        parts: list[list[Header]] = [[] for _ in jobs]
        new = tuple.__new__
        for j, (commits, trees, ulids, cids, types, _actors, times, end) in zip(todo, walked, strict=True):
            head, stop = jobs[j]
            headers = list(map(new, repeat(Header), zip(commits, trees, ulids, cids, types, times,
                                                          repeat(first + j))))
            if end is not None and end != stop:
                older, end = self._walk_packs(end, stop, first + j)
                older.reverse()
                headers = older + headers
            if stop is not None and end != stop:
                raise NotAncestor(f"commit {stop} is not an ancestor of {head}")
            parts[j] = headers
            self.walked += len(headers)
        for head, stop in jobs:
            if head is None and stop is not None:
                raise NotAncestor(f"commit {stop} is not an ancestor of {head}")
        return parts

    def _walk_packs(self, oid: ObjectId | None, stop: ObjectId | None, journal: int
                    ) -> tuple[list[Header], ObjectId | None]:
        packs = self.packs
        assert packs is not None
        out: list[Header] = []
        append = out.append
        commit = packs.commit
        while oid is not None and oid != stop:
            try:
                data = commit(unhexlify(oid))
            except ValueError:  # not hex (a malformed parent line): the port reports it
                data = None
            if data is None:
                data = _commit_data(self.objects, oid)
            header, oid = parse_header(oid, data, journal)
            append(header)
        return out, oid

    def blob(self, header: Header) -> bytes:
        """The event bytes of a journal commit, checked against its Event-CID."""
        packs = self.packs
        if packs is None or (self.walked < self.PACKS_AFTER and self.native is None):
            return check_blob(header, _event_blob(self.objects, header))
        try:
            tree = packs.tree(unhexlify(header.tree))
        except ValueError:  # not hex: the port reports it
            tree = None
        if tree is None:
            tree = self.objects.read(header.tree).data
        key = _blob_id(header, tree)
        blob = packs.blob(key)
        if blob is None:
            blob = self.objects.read(ObjectId(key.hex())).data
        return check_blob(header, blob)


def journal_heads(objects: ObjectStore, heads: dict[str, ObjectId]) -> None:
    """Check every head exists (a clear NOT_FOUND before any work)."""
    for ref, oid in heads.items():
        if not objects.contains(oid):
            raise NotFound(f"journal {ref} head {oid} is not in this repository")
