"""Errors of the cache plane: one root, one subclass per cause, each with its wire code."""

from __future__ import annotations

from ledger_core.errors import LedgerError


class CacheError(LedgerError):
    """Root of every error raised by `kv_cache`."""

    code = "CACHE_ERROR"


class InvalidIndexSpec(CacheError):
    """An index spec is malformed (unknown field, bad id, bad bucket)."""

    code = "INVALID_INDEX_SPEC"


class InvalidQuery(CacheError):
    """A query filter is malformed (bad time, `--where` without `=`, a field the index lacks)."""

    code = "INVALID_QUERY"


class CorruptIndex(CacheError):
    """A stored index does not parse or contradicts itself; rebuild it (`gatos cache rebuild`)."""

    code = "CORRUPT_INDEX"


__all__ = ["CacheError", "CorruptIndex", "InvalidIndexSpec", "InvalidQuery"]
