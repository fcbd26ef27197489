"""Message plane: the commit-backed bus (SPEC §4, issue 6).

Topics are shard refs of message commits (`refs/gatos/mbus/<topic>/-<shard>`),
published in group commits with ULID dedupe; consumer groups track delivery, acks,
redelivery and dead letters in a pure state machine whose durable part lives on
`refs/gatos/mbus-ack/<topic>/-<group>`; retention prunes old segments behind a
summary commit with a Merkle root. Only `ledger_core` is imported: the daemon injects
the gate, the clock and the signer.
"""

from __future__ import annotations

from mind_bus._acks import OFFSETS_FILE, AckLog, ack_commit
from mind_bus._config import CONFIG_DIR, TopicConfig, config_path, shard_for_key
from mind_bus._groups import GroupState, Pending, Take
from mind_bus._message import (
    MESSAGE_TYPE,
    EnvelopeEncoder,
    MessageSpec,
    Place,
    Presigned,
    StoredMessage,
    body_hash,
    build_messages,
    check_message,
    message_commit,
    message_event,
    presign,
    read_message,
)
from mind_bus._names import (
    ACK_PREFIX,
    DLQ_PREFIX,
    MBUS_PREFIX,
    ack_ref,
    current_shards,
    dlq_topic,
    parse_shard_generation,
    parse_shard_ref,
    shard_prefix,
    shard_ref,
    validate_group,
    validate_topic,
    writer_lock_ref,
)
from mind_bus._positions import parse_from, start_positions
from mind_bus._retention import (
    SUMMARY_FILE,
    merkle_root,
    prune_shard,
    prune_topic,
    read_summary,
    retire_generations,
)
from mind_bus._store import (
    BusGate,
    BusLog,
    Exclusive,
    MessageBuilder,
    PlannedBatch,
    PublishRequest,
    PublishResult,
    Signer,
)
from mind_bus.errors import (
    BusError,
    InvalidBusConfig,
    InvalidMessage,
    InvalidPosition,
    InvalidTopic,
    NotPending,
    UlidConflict,
    UnknownGroup,
)

__all__ = [
    "ACK_PREFIX",
    "CONFIG_DIR",
    "DLQ_PREFIX",
    "MBUS_PREFIX",
    "MESSAGE_TYPE",
    "EnvelopeEncoder",
    "OFFSETS_FILE",
    "SUMMARY_FILE",
    "AckLog",
    "BusError",
    "BusGate",
    "BusLog",
    "Exclusive",
    "GroupState",
    "InvalidBusConfig",
    "InvalidMessage",
    "InvalidPosition",
    "InvalidTopic",
    "MessageBuilder",
    "MessageSpec",
    "NotPending",
    "Pending",
    "PlannedBatch",
    "Place",
    "Presigned",
    "PublishRequest",
    "PublishResult",
    "Signer",
    "StoredMessage",
    "Take",
    "TopicConfig",
    "UlidConflict",
    "UnknownGroup",
    "ack_commit",
    "ack_ref",
    "current_shards",
    "body_hash",
    "build_messages",
    "check_message",
    "config_path",
    "dlq_topic",
    "merkle_root",
    "message_commit",
    "message_event",
    "parse_from",
    "presign",
    "parse_shard_generation",
    "parse_shard_ref",
    "prune_shard",
    "prune_topic",
    "read_message",
    "read_summary",
    "retire_generations",
    "shard_for_key",
    "shard_prefix",
    "shard_ref",
    "start_positions",
    "validate_group",
    "validate_topic",
    "writer_lock_ref",
]
