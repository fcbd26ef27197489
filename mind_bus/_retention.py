"""Retention: prune old segments of a shard, leaving a verifiable summary commit.

A shard's messages are grouped in segments (rotated by count or size, see `BusLog`).
Pruning removes whole sealed segments whose newest message is older than the TTL:

* a summary commit (subject `gmb.summary`, no parent) takes their place. Its tree holds
  `summary.json`: how many messages were pruned, their first and last position, the
  last ULID and commit, and the Merkle root (BLAKE3, pairs of 32-byte hashes, an odd
  last node carried up) of the `event.cbor` bytes of every pruned message in order, plus
  the summary it replaces (so several prunes chain their roots);
* the retained messages are re-parented onto it: same trees, same messages and times,
  so their positions, ULIDs and signatures are unchanged (only commit ids change).

No ref is ever moved backwards or sideways (SPEC §4: refs only move forward): the new
chain goes to the shard's next *generation* ref, `-<shard>.<g+1>` (`-<shard>` is
generation 0), created from nothing, and then the old generation ref is deleted
(`retire_generations`). Readers take each shard's newest generation, so a prune stopped
between the two steps leaves a valid shard; the next prune deletes the leftover. A
mirror fetching the refs sees refs that fast-forward, appear or disappear, never a
forced update. Consumers and acks name positions and ULIDs, never commit ids, so they
are unaffected. Anyone who kept the pruned messages can check them against the Merkle
root; the retained chain verifies as before. Pruned objects become unreachable once the
old generation is deleted, and `git gc` removes them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from ledger_core import (
    EVENT_FILE,
    Commit,
    GitObject,
    ObjectId,
    ObjectStore,
    RefStore,
    TreeEntry,
    blake3_hex,
    canonical_json,
    encode_commit,
    encode_tree,
    parse_json,
    ulid_ms,
)
from ledger_core._gitobj import MODE_BLOB, format_trailers
from ledger_core.errors import LedgerError, RefConflict
from mind_bus._message import is_summary
from mind_bus._names import current_shards, parse_shard_generation, shard_prefix, shard_ref, writer_lock_ref

SUMMARY_FILE = "summary.json"
SUMMARY_TYPE = "gmb.summary"


def merkle_root(leaves: list[bytes]) -> str:
    """BLAKE3 Merkle root of the leaves' BLAKE3 hashes (an odd last node is carried up)."""
    if not leaves:
        return blake3_hex(b"")
    level = [bytes.fromhex(blake3_hex(leaf)) for leaf in leaves]
    while len(level) > 1:
        nxt = [bytes.fromhex(blake3_hex(level[i] + level[i + 1])) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()


def _commit_seconds(commit: Commit) -> int:
    return int(commit.committer.rsplit(" ", 2)[-2])


def read_summary(objects: ObjectStore, commit: Commit) -> dict[str, Any]:
    tree = {e.name: e.oid for e in objects.read_tree(commit.tree)}
    value = parse_json(objects.read_blob(tree[SUMMARY_FILE]), "summary")
    assert isinstance(value, dict)
    return value


def event_bytes(objects: ObjectStore, commit: Commit) -> bytes:
    tree = {e.name: e.oid for e in objects.read_tree(commit.tree)}
    return objects.read_blob(tree[EVENT_FILE])


def prune_shard(objects: ObjectStore, refs: RefStore, topic: str, shard: int, *, ttl_seconds: int,
                now: float) -> dict[str, Any] | None:
    """Prune the sealed segments of one shard older than the TTL; the summary, or None.

    Raises:
        RefConflict: the shard moved while it was being pruned (nothing changed; retry).
    """
    current = current_shards(refs.list(shard_prefix(topic))).get(shard)
    if current is None:
        return None
    ref, head = current
    generation = parse_shard_generation(ref)[2]
    chain: list[tuple[ObjectId, Commit]] = []
    previous: dict[str, Any] | None = None
    oid = head
    while oid is not None:
        commit = objects.read_commit(oid)
        if is_summary(commit):
            previous = read_summary(objects, commit)
            break
        chain.append((oid, commit))
        oid = commit.parents[0] if commit.parents else None
    if not chain:
        return None
    chain.reverse()
    head_segment = int(chain[-1][1].trailers["Segment"])
    cutoff_ms = int(now * 1000) - ttl_seconds * 1000
    last_of: dict[int, int] = {}
    for i, (_, commit) in enumerate(chain):
        last_of[int(commit.trailers["Segment"])] = i
    cut = 0
    for segment in sorted(last_of):
        if segment >= head_segment:
            break
        last = chain[last_of[segment]][1]
        if ulid_ms(last.trailers["Ulid"]) >= cutoff_ms:
            break
        cut = last_of[segment] + 1
    if cut == 0:
        return None
    pruned, kept = chain[:cut], chain[cut:]
    last_oid, last_commit = pruned[-1]
    t = last_commit.trailers
    summary = {
        "topic": topic, "shard": shard, "pruned": len(pruned),
        "pruned_total": len(pruned) + (previous["pruned_total"] if previous else 0),
        "first_position": int(pruned[0][1].trailers["Position"]),
        "last_position": int(t["Position"]), "last_ulid": t["Ulid"], "last_commit": last_oid,
        "last_segment": int(t["Segment"]),
        "merkle_root": merkle_root([event_bytes(objects, c) for _, c in pruned]),
        "previous": previous,
    }
    blob = GitObject("blob", canonical_json(summary))
    tree = GitObject("tree", encode_tree([TreeEntry(SUMMARY_FILE, MODE_BLOB, blob.oid)]))
    ident = f"gatos-mbus <gatos-mbus> {_commit_seconds(last_commit)} +0000"
    message = f"{SUMMARY_TYPE}\n\n" + format_trailers([
        ("Topic", topic), ("Shard", str(shard)), ("Segment", t["Segment"]),
        ("Last-Position", t["Position"]), ("Pruned", str(summary["pruned_total"])),
        ("Merkle-Root", summary["merkle_root"])])
    summary_commit = GitObject("commit", encode_commit(tree.oid, (), ident, ident, message))
    new_objects = [blob, tree, summary_commit]
    parent = summary_commit.oid
    for _, commit in kept:
        rewritten = GitObject("commit", encode_commit(commit.tree, (parent,), commit.author,
                                                      commit.committer, commit.message))
        new_objects.append(rewritten)
        parent = rewritten.oid
    objects.write_many(new_objects)
    new_ref = shard_ref(topic, shard, generation + 1)
    with refs.lock(new_ref) as held:
        if held.old is not None:
            raise RefConflict(new_ref, None, held.old)
        if refs.get(ref) != head:
            raise RefConflict(ref, head, refs.get(ref))
        held.commit(parent)
    retire_generations(refs, topic, shard)
    return {**summary, "summary_commit": summary_commit.oid, "head": parent, "ref": new_ref}


def retire_generations(refs: RefStore, topic: str, shard: int) -> list[str]:
    """Delete a shard's refs older than its newest generation; the refs deleted.

    Needs a ref store that can delete (`delete(name, expected)`, as `ledger_git`'s
    has); with one that cannot, old generations stay, harmless but keeping their
    history reachable. A ref that moved or is locked is left for the next prune.
    """
    delete = getattr(refs, "delete", None)
    listed = refs.list(shard_prefix(topic))
    newest = current_shards(listed).get(shard)
    if delete is None or newest is None:
        return []
    gone = []
    for ref, oid in listed.items():
        if ref != newest[0] and parse_shard_generation(ref)[1] == shard:
            try:
                delete(ref, oid)
                gone.append(ref)
            except LedgerError:
                continue
    return gone


def prune_topic(objects: ObjectStore, refs: RefStore, topic: str, shards: list[int], *,
                ttl_seconds: int, clock: Callable[[], float],
                exclusive: AbstractContextManager[object] | None = None) -> list[dict[str, Any]]:
    """`prune_shard` for every shard; the summaries written.

    `exclusive`: the topic's writer exclusion (`BusLog.exclusive`); by default the
    topic's writer ref lock, so no bus writer publishes meanwhile.
    """
    out = []
    with exclusive if exclusive is not None else refs.lock(writer_lock_ref(topic)):
        for shard in shards:
            summary = prune_shard(objects, refs, topic, shard, ttl_seconds=ttl_seconds, now=clock())
            if summary is not None:
                out.append(summary)
    return out


__all__ = ["SUMMARY_FILE", "merkle_root", "prune_shard", "prune_topic", "read_summary", "retire_generations"]
