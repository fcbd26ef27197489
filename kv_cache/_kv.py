"""The KV view: one state key read without reading the whole state.

A checkpoint stores a namespace's state as one canonical-JSON file; a state of a million
keys is megabytes to read for one value. The view (`refs/gatos/cache/<ns>-kv`) splits the
main channel's object into one file per key, fanned out by the first byte of the key's
BLAKE3 (`kv/<2 hex>/<quoted key>`), so a lookup reads three small trees and one blob. It
is rebuilt whenever `refs/gatos/state/<ns>` has moved (its `meta.json` names the
checkpoint it was built from).
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import quote

from kv_cache._index import META
from kv_cache._spec import CACHE_PREFIX
from ledger_core import ObjectId, ObjectStore, RefStore, blake3_hex, canonical_json, parse_json
from ledger_core._trees import make_commit
from ledger_core.errors import RefConflict, RefLocked

KV_ID = "kv"
IDENT = "gatos-cache"
_MISSING: Any = object()


def kv_ref(ns: str) -> str:
    return f"{CACHE_PREFIX}{ns}-{KV_ID}"


def key_path(key: str) -> tuple[str, str]:
    name = quote(key, safe="") or "%00"
    return blake3_hex(key.encode("utf-8"))[:2], name


def _entry(objects: ObjectStore, tree: ObjectId, name: str) -> ObjectId | None:
    for entry in objects.read_tree(tree):
        if entry.name == name:
            return entry.oid
    return None


class KVView:
    def __init__(self, objects: ObjectStore, refs: RefStore) -> None:
        self.objects = objects
        self.refs = refs

    def _state(self, ns: str) -> tuple[ObjectId | None, dict[str, Any] | None]:
        oid = self.refs.get(f"refs/gatos/state/{ns}")
        if oid is None:
            return None, None
        commit = self.objects.read_commit(oid)
        state_dir = _entry(self.objects, commit.tree, "state")
        blob = _entry(self.objects, state_dir, f"{ns}.json") if state_dir else None
        value = parse_json(self.objects.read_blob(blob), "state") if blob else None
        return oid, value if isinstance(value, dict) else None

    def build(self, ns: str) -> ObjectId | None:
        """(Re)build the view from the newest checkpoint; None when the state is not an object."""
        state_commit, state = self._state(ns)
        if state_commit is None or state is None:
            return None
        files = {META: canonical_json({"ns": ns, "state_commit": state_commit, "keys": len(state)})}
        for key, value in state.items():
            fan, name = key_path(key)
            files[f"kv/{fan}/{name}"] = canonical_json(value)
        objects, oid = make_commit(files, f"kv view {ns}", [("Cache-Ns", ns), ("State-Commit", state_commit)],
                                   None, 0, IDENT)
        self.objects.write_many(objects)
        old = self.refs.get(kv_ref(ns))
        with contextlib.suppress(RefConflict, RefLocked):
            self.refs.compare_and_swap(kv_ref(ns), old, oid)
        return oid

    def _fresh(self, ns: str) -> ObjectId | None:
        view = self.refs.get(kv_ref(ns))
        state = self.refs.get(f"refs/gatos/state/{ns}")
        if view is not None and state is not None:
            meta = _entry(self.objects, self.objects.read_commit(view).tree, META)
            if meta and parse_json(self.objects.read_blob(meta), META).get("state_commit") == state:
                return view
        return self.build(ns) if state is not None else None

    def get(self, ns: str, key: str) -> tuple[bool, Any, ObjectId | None]:
        """(found, value, state commit) for one key of the main channel."""
        view = self._fresh(ns)
        if view is None:
            return False, None, None
        root = self.objects.read_commit(view).tree
        fan, name = key_path(key)
        kv = _entry(self.objects, root, "kv")
        sub = _entry(self.objects, kv, fan) if kv else None
        blob = _entry(self.objects, sub, name) if sub else None
        meta = parse_json(self.objects.read_blob(_entry(self.objects, root, META)), META)  # type: ignore[arg-type]
        if blob is None:
            return False, None, meta["state_commit"]
        return True, parse_json(self.objects.read_blob(blob), "value"), meta["state_commit"]


__all__ = ["KV_ID", "KVView", "key_path", "kv_ref"]
