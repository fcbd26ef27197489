"""Canonical JSON (SPEC §3): UTF-8, sorted keys, no whitespace, integers only.

Used for everything hashed as JSON: job manifests, PoE/PoC envelopes, state trees,
trust documents. Floats are refused for the same reason as in CBOR: their text form
is not portable across languages.
"""

from __future__ import annotations

import json
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


def unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook` for `json.loads` that refuses duplicate keys (`EncodingError`)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise EncodingError(f"duplicate key {key!r} in a JSON object")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise EncodingError(f"{name} is not a number GATOS accepts (no NaN or Infinity)")


def parse_json(text: str | bytes, what: str = "JSON") -> Any:
    """Parse JSON strictly enough for signed data.

    Floats, NaN, Infinity, duplicate object keys, integers beyond 64 bits and invalid
    UTF-8 are refused. (The stdlib parser is used for its hooks: orjson silently keeps
    the last of duplicate keys.)

    Raises:
        EncodingError: malformed JSON or a value outside the canonical data model.
    """
    try:
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8")
        value = json.loads(text, object_pairs_hook=unique_pairs, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise EncodingError(f"{what} is not valid UTF-8: {exc.reason} at byte {exc.start}") from None
    except RecursionError:
        raise EncodingError(f"{what} is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and ints over Python's digit limit
        raise EncodingError(f"{what} is not valid JSON: {exc}") from None
    check_value(value, what)
    return value
