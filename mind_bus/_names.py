"""Topic and group names, and the refs they become (SPEC §2, §4).

A topic is one or more components joined by `/` (a component may itself hold dots,
so `gatos.jobs.pending` and `echo/jobs` are both topics). Git refs cannot be both a
file and a folder, and topic `a` with a shard ref `.../a/0` would stand exactly where
topic `a/0` needs a folder. So every *leaf* the bus writes starts with `-`, a
character no component may start with:

    refs/gatos/mbus/<topic>/-<shard>          message commits of one shard
    refs/gatos/mbus-ack/<topic>/-<group>      acks/offsets of one consumer group

Topic `a` owns `refs/gatos/mbus/a/-0`; topic `a/0` owns `refs/gatos/mbus/a/0/-0`. A
leaf (`-…`) can never be a folder of another topic and a topic folder can never be a
leaf, whatever the topics are.
"""

from __future__ import annotations

from ledger_core import ObjectId, RefName, validate_component
from ledger_core.errors import InvalidName
from mind_bus.errors import InvalidTopic

MBUS_PREFIX = "refs/gatos/mbus/"
ACK_PREFIX = "refs/gatos/mbus-ack/"
DLQ_PREFIX = "dlq/"
MAX_TOPIC = 200
MAX_SHARDS = 256


_valid_topics: set[str] = set()  # topics that passed: a publish checks its topic twice


def validate_topic(topic: object) -> str:
    """Return `topic` when every `/`-separated component is a safe ref component."""
    if type(topic) is str and topic in _valid_topics:
        return topic
    if not isinstance(topic, str) or not topic:
        raise InvalidTopic(f"invalid topic {topic!r}: must be a non-empty string")
    if len(topic) > MAX_TOPIC:
        raise InvalidTopic(f"invalid topic {topic[:40]!r}…: {len(topic)} characters, the limit is {MAX_TOPIC}")
    for part in topic.split("/"):
        try:
            validate_component(part, "topic component")
        except InvalidName as exc:
            raise InvalidTopic(f"invalid topic {topic!r}: {exc.reason}") from None
    if type(topic) is str:
        if len(_valid_topics) >= 4096:
            _valid_topics.clear()
        _valid_topics.add(topic)
    return topic


def validate_group(group: object) -> str:
    """A consumer group is one component (SPEC §2)."""
    try:
        return validate_component(group, "consumer group")
    except InvalidName as exc:
        raise InvalidTopic(exc.reason) from None


def shard_ref(topic: str, shard: int, generation: int = 0) -> RefName:
    """The ref of one shard of a topic: `-<shard>`, or `-<shard>.<generation>` after pruning."""
    if not 0 <= shard < MAX_SHARDS:
        raise InvalidTopic(f"shard {shard} is outside 0..{MAX_SHARDS - 1}")
    leaf = f"-{shard}" if generation == 0 else f"-{shard}.{generation}"
    return RefName(f"{MBUS_PREFIX}{validate_topic(topic)}/{leaf}")


def writer_lock_ref(topic: str) -> RefName:
    """The ref whose lock file (`<topic>/-writer.lock`) serializes a topic's bus writers.

    It is only ever locked, never written: no ref of that name exists, so listings of
    the topic's shards never see it.
    """
    return RefName(f"{MBUS_PREFIX}{validate_topic(topic)}/-writer")


def shard_prefix(topic: str) -> str:
    """Every shard ref of `topic` (and of no other topic) starts with this."""
    return f"{MBUS_PREFIX}{validate_topic(topic)}/-"


def parse_shard_generation(ref: str) -> tuple[str, int, int]:
    """Inverse of `shard_ref`: (topic, shard, generation)."""
    if not ref.startswith(MBUS_PREFIX) or "/-" not in ref:
        raise InvalidTopic(f"{ref!r} is not a shard ref")
    topic, _, leaf = ref[len(MBUS_PREFIX):].rpartition("/-")
    shard, dot, generation = leaf.partition(".")
    if not shard.isdigit() or (dot and not generation.isdigit()):
        raise InvalidTopic(f"{ref!r} is not a shard ref")
    return validate_topic(topic), int(shard), int(generation or 0)


def parse_shard_ref(ref: str) -> tuple[str, int]:
    """Inverse of `shard_ref`: (topic, shard)."""
    topic, shard, _ = parse_shard_generation(ref)
    return topic, shard


def current_shards(listed: dict[RefName, ObjectId]) -> dict[int, tuple[RefName, ObjectId]]:
    """Of a listing of a topic's shard refs, each shard's newest generation (ref, head).

    Pruning starts a shard's next generation ref and then deletes the old one; if it
    was stopped in between, both exist and the newer one is the shard.
    """
    best: dict[int, tuple[int, RefName, ObjectId]] = {}
    for ref, oid in listed.items():
        _, shard, generation = parse_shard_generation(ref)
        if shard not in best or generation > best[shard][0]:
            best[shard] = (generation, ref, oid)
    return {shard: (ref, oid) for shard, (_, ref, oid) in best.items()}


def ack_ref(topic: str, group: str) -> RefName:
    """The ref holding a consumer group's acks and offsets on a topic."""
    return RefName(f"{ACK_PREFIX}{validate_topic(topic)}/-{validate_group(group)}")


def dlq_topic(topic: str) -> str:
    """Where messages that exhausted `max_deliver` go: `dlq/<topic>`."""
    return validate_topic(DLQ_PREFIX + validate_topic(topic))


__all__ = ["ACK_PREFIX", "DLQ_PREFIX", "MAX_SHARDS", "MBUS_PREFIX", "ack_ref", "current_shards",
           "dlq_topic", "parse_shard_generation", "parse_shard_ref", "shard_prefix", "shard_ref",
           "validate_group", "validate_topic", "writer_lock_ref"]
