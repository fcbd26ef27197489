"""Trusted public keys, committed to Git under `gatos/trust/` on `refs/gatos/trust`.

Layout of the trust commit's tree: `gatos/trust/actors/<kind>/<name>.json`, each a
canonical JSON document `{"actor": "user:alice", "keys": ["ed25519:<hex>", …]}`.
One file per actor keeps concurrent key additions on different nodes mergeable and
lets `git log -- gatos/trust/actors/user/alice.json` show an actor's key history.
The trust ref lives under `refs/gatos/` so it replicates with everything else.
Private keys never come here.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from ledger_core._canonical_json import canonical_json
from ledger_core._gitobj import (
    MODE_BLOB,
    MODE_TREE,
    GitObject,
    ObjectId,
    TreeEntry,
    encode_commit,
    encode_tree,
    signature_line,
)
from ledger_core._keys import PublicKeyText, parse_public_key
from ledger_core._names import RefName, actor_path, validate_actor
from ledger_core._ports import ObjectStore, RefStore
from ledger_core.errors import Conflict, CorruptObject, RefConflict

TRUST_REF = RefName("refs/gatos/trust")
ACTORS_DIR = ("gatos", "trust", "actors")


class TrustStore:
    """Reads and extends the set of trusted keys. Implements `KeyResolver`."""

    def __init__(self, objects: ObjectStore, refs: RefStore) -> None:
        self.objects = objects
        self.refs = refs
        self._cache_head: ObjectId | None = None
        self._cache: dict[str, tuple[PublicKeyText, ...]] = {}

    def _current(self) -> dict[str, tuple[PublicKeyText, ...]]:
        head = self.refs.get(TRUST_REF)
        if head != self._cache_head:
            self._cache = self._load(head)
            self._cache_head = head
        return self._cache

    def all_keys(self) -> dict[str, tuple[PublicKeyText, ...]]:
        """Every actor's trusted keys, as of the current trust ref."""
        return dict(self._current())

    def keys_for(self, actor: str) -> Sequence[PublicKeyText]:
        return self._current().get(actor, ())

    def _load(self, head: ObjectId | None) -> dict[str, tuple[PublicKeyText, ...]]:
        if head is None:
            return {}
        tree = self._subtree(self.objects.read_commit(head).tree, ACTORS_DIR)
        found: dict[str, tuple[PublicKeyText, ...]] = {}
        if tree is None:
            return found
        for kind_entry in self.objects.read_tree(tree):
            if kind_entry.mode != MODE_TREE:
                continue
            for entry in self.objects.read_tree(kind_entry.oid):
                doc = orjson.loads(self.objects.read_blob(entry.oid))
                actor = validate_actor(doc.get("actor"))
                if f"{actor_path(actor)}.json" != f"{kind_entry.name}/{entry.name}":
                    raise CorruptObject(f"trust file {kind_entry.name}/{entry.name} names {actor}")
                keys = tuple(PublicKeyText(k) for k in doc.get("keys", []))
                for key in keys:
                    parse_public_key(key)
                found[actor] = keys
        return found

    def _subtree(self, tree: ObjectId, path: Sequence[str]) -> ObjectId | None:
        for part in path:
            match = [e for e in self.objects.read_tree(tree) if e.name == part]
            if not match or match[0].mode != MODE_TREE:
                return None
            tree = match[0].oid
        return tree

    def add_key(self, actor: str, key: PublicKeyText, *, by: str, seconds: int,
                tries: int = 20) -> bool:
        """Trust `key` for `actor`; commit it on the trust ref. False if already trusted.

        Args:
            by: the actor recorded as author of the trust commit.
            seconds: the commit time (the caller's clock).
        """
        actor = validate_actor(actor)
        parse_public_key(key)
        for _ in range(tries):
            head = self.refs.get(TRUST_REF)
            current = self._load(head)
            keys = current.get(actor, ())
            if key in keys:
                return False
            doc = {"actor": actor, "keys": [*keys, key]}
            blob = GitObject("blob", canonical_json(doc) + b"\n")
            root = self.objects.read_commit(head).tree if head else None
            kind, name = actor_path(actor).split("/")
            new_objects, new_root = self._with_file(root, (*ACTORS_DIR, kind, f"{name}.json"), blob)
            ident = signature_line(by, by, seconds)
            commit = GitObject("commit", encode_commit(
                new_root, (head,) if head else (), ident, ident,
                f"trust: add key for {actor}\n\nActor: {actor}\nKey: {key}\n"))
            self.objects.write_many([*new_objects, commit])
            try:
                self.refs.compare_and_swap(TRUST_REF, head, commit.oid)
            except RefConflict:
                continue
            return True
        raise Conflict(f"{TRUST_REF} kept moving; key for {actor} not added")

    def _with_file(self, tree: ObjectId | None, path: Sequence[str], blob: GitObject
                   ) -> tuple[list[GitObject], ObjectId]:
        """New trees from the root down to `path`, with `blob` placed there."""
        entries = {e.name: e for e in (self.objects.read_tree(tree) if tree else [])}
        name = path[0]
        if len(path) == 1:
            entries[name] = TreeEntry(name, MODE_BLOB, blob.oid)
            made = [blob]
        else:
            child = entries.get(name)
            made, child_oid = self._with_file(
                child.oid if child and child.mode == MODE_TREE else None, path[1:], blob)
            entries[name] = TreeEntry(name, MODE_TREE, child_oid)
        new_tree = GitObject("tree", encode_tree(list(entries.values())))
        return [*made, new_tree], new_tree.oid
