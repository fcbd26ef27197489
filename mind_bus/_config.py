"""Per-topic configuration (`gatos/mbus-config/<topic>.json`) and shard choice.

The shard of a keyed message is a hash of its key, so every message of one key lands
in one shard and keeps its order; keyless messages go round-robin. Resharding is a
new `shard_map_version` with another `shards` count: each message commit records the
map version it was placed with (`Shard-Map` trailer), so a reader knows which map put
a key where; order per key is kept within one map version.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ledger_core import blake3_hex, parse_json
from ledger_core.errors import LedgerError
from mind_bus._names import MAX_SHARDS
from mind_bus.errors import InvalidBusConfig

CONFIG_DIR = "gatos/mbus-config"


@dataclass(frozen=True)
class TopicConfig:
    """How one topic is stored; every field has a small default."""

    shards: int = 4
    shard_map_version: int = 1
    segment_max_messages: int = 10_000
    segment_max_bytes: int = 64 * 1024 * 1024
    ttl_seconds: int | None = None
    dedupe_window_seconds: int = 120
    commit_quorum: int = 0
    commit_groups: tuple[str, ...] = ()
    commit_ns: str = "mbus"

    @classmethod
    def from_value(cls, value: Any) -> TopicConfig:
        if not isinstance(value, dict):
            raise InvalidBusConfig("a topic configuration is a JSON object")
        known = {f.name for f in fields(cls)}
        extra = set(value) - known
        if extra:
            raise InvalidBusConfig(f"unknown topic configuration field(s): {', '.join(sorted(extra))}")
        out: dict[str, Any] = {}
        for name, item in value.items():
            if name == "commit_groups":
                if not isinstance(item, list) or not all(isinstance(g, str) for g in item):
                    raise InvalidBusConfig("`commit_groups` is a list of group names")
                out[name] = tuple(item)
            elif name == "commit_ns":
                if not isinstance(item, str):
                    raise InvalidBusConfig("`commit_ns` is a namespace")
                out[name] = item
            elif name == "ttl_seconds" and item is None:
                out[name] = None
            elif not isinstance(item, int) or isinstance(item, bool) or item < 0:
                raise InvalidBusConfig(f"`{name}` must be a non-negative integer")
            else:
                out[name] = item
        config = cls(**out)
        if not 1 <= config.shards <= MAX_SHARDS:
            raise InvalidBusConfig(f"`shards` must be 1..{MAX_SHARDS}")
        if config.segment_max_messages < 1 or config.segment_max_bytes < 1:
            raise InvalidBusConfig("segments hold at least one message and one byte")
        return config

    @classmethod
    def parse(cls, data: bytes) -> TopicConfig:
        try:
            return cls.from_value(parse_json(data, "topic configuration"))
        except InvalidBusConfig:
            raise
        except LedgerError as exc:
            raise InvalidBusConfig(exc.reason) from None


def config_path(topic: str) -> str:
    """Working-tree path of a topic's configuration, relative to the node's root."""
    return f"{CONFIG_DIR}/{topic}.json"


def shard_for_key(key: str, shards: int) -> int:
    """The shard of a keyed message: BLAKE3 of the key, modulo the shard count."""
    return int(blake3_hex(key.encode("utf-8"))[:16], 16) % shards


__all__ = ["CONFIG_DIR", "TopicConfig", "config_path", "shard_for_key"]
