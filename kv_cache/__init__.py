"""Cache plane: rebuildable roaring-bitmap indexes and the KV view; never authoritative.

Indexes live on `refs/gatos/cache/<ns>-<index-id>` and record the journal heads they
cover, so a stale one is seen and brought up to date on the next query. Imports
`ledger_core` only; the daemon and the CLI inject the fast commit reader.
See docs/cache.md.
"""

from __future__ import annotations

from typing import Any

from kv_cache._headers import Header, merge, parse_header, port_reader, walk_back
from kv_cache._index import Index, field_values, value_key
from kv_cache._kv import KV_ID, KVView, kv_ref
from kv_cache._query import Query, match, parse_time, parse_where
from kv_cache._spec import CACHE_PREFIX, DEFAULT_ID, SPEC_DIR, IndexSpec, load_specs
from kv_cache._store import CacheStore, UpdateResult
from kv_cache.errors import CacheError, CorruptIndex, InvalidIndexSpec, InvalidQuery


def stale_indexes(node: Any) -> list[dict[str, Any]]:
    """Cache refs of a node (anything with `repo.objects` and `repo.refs`) that are stale."""
    return CacheStore(node.repo.objects, node.repo.refs).stale()

__all__ = [
    "CACHE_PREFIX",
    "DEFAULT_ID",
    "KV_ID",
    "SPEC_DIR",
    "CacheError",
    "CacheStore",
    "CorruptIndex",
    "Header",
    "Index",
    "IndexSpec",
    "InvalidIndexSpec",
    "InvalidQuery",
    "KVView",
    "Query",
    "UpdateResult",
    "field_values",
    "kv_ref",
    "load_specs",
    "match",
    "merge",
    "parse_header",
    "parse_time",
    "parse_where",
    "stale_indexes",
    "port_reader",
    "value_key",
    "walk_back",
]
