"""Durable acks and offsets: commits on `refs/gatos/mbus-ack/<topic>/-<group>`.

Each commit's tree holds `offsets.json` (canonical JSON: per shard the floor and the
acked positions above it), so the newest commit alone says where the group stands;
the chain of commits is the group's ack history (`git log` shows when it moved).
Acks are batched: many acks of many groups become one pack and one ref move per group.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ledger_core import GitObject, ObjectId, ObjectStore, RefStore, TreeEntry, canonical_json, parse_json
from ledger_core._gitobj import MODE_BLOB, encode_commit, encode_tree, format_trailers, signature_line
from ledger_core.errors import LedgerError
from mind_bus._names import ack_ref

OFFSETS_FILE = "offsets.json"
ACK_IDENT = "gatos-mbus"


def ack_commit(topic: str, group: str, offsets: dict[str, Any], parent: ObjectId | None,
               seconds: int) -> tuple[list[GitObject], ObjectId]:
    blob = GitObject("blob", canonical_json({"group": group, "topic": topic, **offsets}))
    tree = GitObject("tree", encode_tree([TreeEntry(OFFSETS_FILE, MODE_BLOB, blob.oid)]))
    floors = ",".join(f"{s}={v['floor']}" for s, v in offsets.get("shards", {}).items()) or "-"
    ident = signature_line(ACK_IDENT, ACK_IDENT, seconds)
    message = "gmb.ack\n\n" + format_trailers([("Topic", topic), ("Group", group), ("Floors", floors)])
    commit = GitObject("commit", encode_commit(tree.oid, (parent,) if parent else (), ident, ident, message))
    return [blob, tree, commit], commit.oid


class AckLog:
    """Reads and writes the ack refs of consumer groups."""

    def __init__(self, objects: ObjectStore, refs: RefStore, *, clock: Callable[[], float]) -> None:
        self.objects = objects
        self.refs = refs
        self._clock = clock

    def load(self, topic: str, group: str) -> dict[str, Any] | None:
        """The group's stored offsets, or None when it never acked anything."""
        oid = self.refs.get(ack_ref(topic, group))
        if oid is None:
            return None
        tree = {e.name: e.oid for e in self.objects.read_tree(self.objects.read_commit(oid).tree)}
        value = parse_json(self.objects.read_blob(tree[OFFSETS_FILE]), "offsets")
        assert isinstance(value, dict)
        return value

    def write_many(self, items: Sequence[tuple[str, str, dict[str, Any]]]
                   ) -> list[ObjectId | LedgerError]:
        """Store the offsets of several groups: one object write, one ref move per group."""
        seconds = int(self._clock())
        results: list[ObjectId | LedgerError] = []
        locks = []
        objects: list[GitObject] = []
        try:
            for topic, group, offsets in items:
                try:
                    lock = self.refs.lock(ack_ref(topic, group))
                except LedgerError as exc:
                    results.append(exc)
                    locks.append(None)
                    continue
                new, oid = ack_commit(topic, group, offsets, lock.old, seconds)
                objects.extend(new)
                locks.append(lock)
                results.append(oid)
            if objects:
                self.objects.write_many(objects)
            for i, lock in enumerate(locks):
                if lock is not None:
                    try:
                        lock.commit(results[i])  # type: ignore[arg-type]
                    except LedgerError as exc:
                        results[i] = exc
        except LedgerError as exc:
            results = [r if isinstance(r, LedgerError) else exc for r in results]
        finally:
            for lock in locks:
                if lock is not None:
                    lock.release()
        return results


__all__ = ["OFFSETS_FILE", "AckLog", "ack_commit"]
