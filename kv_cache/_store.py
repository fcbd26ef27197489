"""Cache refs: build, bring up to date, load and check indexes over the ledger ports.

`refs/gatos/cache/<ns>-<index-id>` holds one commit (no history: a cache may be
rewritten, it is never authoritative) whose tree is the index (see `_index`). Its
`meta.json` records the journal heads it covers, which is how staleness is seen: an
index whose heads differ from the namespace's current heads is brought up to date on
the next query, incrementally when only new events were appended after everything it
holds, from scratch otherwise (a journal rewritten, or an older event arriving late).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kv_cache._headers import (
    Columns,
    Header,
    MergeKeys,
    ReadCommit,
    merge,
    merge_columns,
    port_reader,
    read_payload,
    walk_back,
    walk_columns,
)
from kv_cache._index import META, Index
from kv_cache._spec import CACHE_PREFIX, IndexSpec
from ledger_core import JOURNAL_PREFIX, ObjectId, ObjectStore, RefStore, parse_json
from ledger_core._trees import commit_files, make_commit, read_files
from ledger_core.errors import CorruptObject, LedgerError, RefConflict, RefLocked

IDENT = "gatos-cache"
Progress = Callable[[int, int], None]
# Whole journals (by head) → their columns, oldest first; lets the composition root walk
# journals in parallel processes for big full builds.
WalkMany = Callable[[list[ObjectId]], list[Columns]]


@dataclass(frozen=True)
class UpdateResult:
    ref: str
    commit: ObjectId | None
    mode: str          # fresh | incremental | full
    added: int
    count: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class CacheStore:
    def __init__(self, objects: ObjectStore, refs: RefStore, *, read_commit: ReadCommit | None = None,
                 walk_many: WalkMany | None = None) -> None:
        self.objects = objects
        self.refs = refs
        self.read_commit = read_commit or port_reader(objects)
        self.walk_many = walk_many or self._walk_serially
        self.merge_keys: MergeKeys | None = None  # a native merge, set by the composition root

    def _walk_serially(self, heads: list[ObjectId]) -> list[Columns]:
        return [walk_columns(self.read_commit, head) for head in heads]

    def heads(self, ns: str) -> dict[str, str]:
        return dict(self.refs.list(f"{JOURNAL_PREFIX}{ns}/"))

    def stored_meta(self, ref: str) -> dict[str, Any] | None:
        oid = self.refs.get(ref)
        if oid is None:
            return None
        commit = self.objects.read_commit(oid)
        for entry in self.objects.read_tree(commit.tree):
            if entry.name == META:
                value = parse_json(self.objects.read_blob(entry.oid), META)
                return value if isinstance(value, dict) else None
        return None

    def load(self, spec: IndexSpec) -> Index | None:
        oid = self.refs.get(spec.ref)
        if oid is None:
            return None
        _, files, _ = commit_files(self.objects, oid)
        return Index.from_files(files, spec)

    def _new_events(self, index: Index | None, heads: dict[str, str]) -> list[list[Header]] | None:
        """The journals' events after what `index` covers, or None when it must be rebuilt."""
        if index is None:
            return None
        if set(index.heads) - set(heads):
            return None  # a journal vanished
        tails = []
        for ref, head in sorted(heads.items()):
            stop = index.heads.get(ref)
            tail = walk_back(self.read_commit, head, stop)
            if stop is not None and ((not tail and head != stop) or (tail and tail[0].parent != stop)):
                return None  # not a descendant of what was indexed: rewritten
            tails.append(tail)
        first = min((t[0].key for t in tails if t), default=None)
        if first is not None and first <= index.max_key:
            return None  # an older event arrived late: positions would shift
        return tails

    def update(self, spec: IndexSpec, *, full: bool = False, progress: Progress | None = None) -> UpdateResult:
        """Bring the index up to date (or rebuild it with `full`) and store it."""
        heads = self.heads(spec.ns)
        old_oid = self.refs.get(spec.ref)
        index = None if full else self._load_quiet(spec)
        if index is not None and index.heads == heads:
            return UpdateResult(spec.ref, old_oid, "fresh", 0, index.count)
        tails = self._new_events(index, heads)
        if tails is None or index is None:
            mode = "full"
            index = Index(spec)
            journals = self.walk_many([head for _, head in sorted(heads.items())])
            ordered = merge_columns(journals, self.merge_keys)
        else:
            mode = "incremental"
            ordered = Columns.of(list(merge(tails)))
        total = len(ordered)
        payloads = None
        if spec.fields:
            payloads = []
            for i, tree in enumerate(ordered.trees):
                payloads.append(read_payload(self.objects, tree))
                if progress and i % 4096 == 0:
                    progress(i, total)
        added = index.add(ordered, payloads)
        index.heads = heads
        files = index.to_files()
        objects, oid = make_commit(files, f"cache {spec.ns}-{spec.index_id}",
                                   [("Cache-Ns", spec.ns), ("Cache-Index", spec.index_id),
                                    ("Events", str(index.count))], None, 0, IDENT)
        self.objects.write_many(objects)
        # Another process may store an index at the same time; either is a valid cache.
        with contextlib.suppress(RefConflict, RefLocked):
            self.refs.compare_and_swap(spec.ref, old_oid, oid)
        if progress:
            progress(total, total)
        return UpdateResult(spec.ref, oid, mode, added, index.count)

    def _load_quiet(self, spec: IndexSpec) -> Index | None:
        try:
            return self.load(spec)
        except (CorruptObject, LedgerError, KeyError, ValueError):  # a broken cache is rebuilt, never trusted
            return None

    def stale(self) -> list[dict[str, Any]]:
        """Every cache ref whose recorded heads differ from its namespace's journals (for doctor)."""
        out = []
        for ref in sorted(self.refs.list(CACHE_PREFIX)):
            try:
                meta = self.stored_meta(ref)
            except Exception as exc:
                out.append({"ref": ref, "problem": f"does not load: {exc}"})
                continue
            if meta is None:
                out.append({"ref": ref, "problem": "no meta.json"})
                continue
            if "state_commit" in meta:  # a KV view
                ns = meta.get("ns", "")
                current = self.refs.get(f"refs/gatos/state/{ns}")
                if current != meta["state_commit"]:
                    out.append({"ref": ref, "ns": ns, "problem": "state moved since the view was built"})
                continue
            ns = meta.get("spec", {}).get("ns", "")
            if meta.get("heads") != self.heads(ns):
                out.append({"ref": ref, "ns": ns, "index": meta.get("spec", {}).get("index_id"),
                            "problem": "journal heads moved since the index was built"})
        return out


def files_of(objects: ObjectStore, oid: ObjectId) -> dict[str, bytes]:
    return read_files(objects, objects.read_commit(oid).tree)


__all__ = ["IDENT", "CacheStore", "UpdateResult", "WalkMany", "files_of"]
