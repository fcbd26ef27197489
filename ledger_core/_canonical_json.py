"""Canonical JSON (SPEC §3): UTF-8, sorted keys, no whitespace, integers only.

Used for everything hashed as JSON: job manifests, PoE/PoC envelopes, state trees,
trust documents. Floats are refused for the same reason as in CBOR: their text form
is not portable across languages.
"""

from __future__ import annotations

from typing import Any

import orjson

from ledger_core._dagcbor import check_value
from ledger_core.errors import EncodingError


def _check_json(value: Any, path: str = "$") -> None:
    if isinstance(value, bytes):
        raise EncodingError(f"{path}: bytes have no canonical JSON form")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_json(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]")


def canonical_json(value: Any) -> bytes:
    """Return the canonical JSON bytes of `value`.

    Raises:
        EncodingError: floats, bytes, non-string keys or integers beyond 64 bits.
    """
    check_value(value)
    _check_json(value)
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise EncodingError(f"cannot encode as canonical JSON: {exc}") from exc


def parse_json(text: str | bytes, what: str = "JSON") -> Any:
    """Parse JSON strictly enough for signed data: floats, NaN and Infinity are refused.

    Raises:
        EncodingError: malformed JSON or a value outside the canonical data model.
    """
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise EncodingError(f"{what} is not valid JSON: {exc}") from exc
    check_value(value, what)
    return value
