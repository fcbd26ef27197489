"""Canonical DAG-CBOR: deterministic encode, strict decode (SPEC §3).

Encoding and decoding are delegated to `cbor2` (C accelerated); what this module
adds is the data model and the strictness:

* the value model is JSON-like without floats: None, bool, int in [-2^64, 2^64-1],
  str, bytes, list and str-keyed dict. Floats, NaN, tags, sets, undefined and
  anything else are rejected with the path of the offending value;
* `decode` accepts only bytes that are exactly what `encode` would produce for the
  value they hold. Re-encoding and comparing is the whole canonicality check: it
  catches non-shortest integers, unsorted or duplicate map keys, indefinite lengths,
  tags and trailing bytes in one place, so no separate rule can be forgotten.
"""

from __future__ import annotations

import io
from typing import Any

import cbor2

from ledger_core.errors import EncodingError

MAX_DEPTH = 64
_INT_MIN = -(2**64)
_INT_MAX = 2**64 - 1

CanonicalValue = Any  # None | bool | int | str | bytes | list[...] | dict[str, ...]


def check_value(value: object, path: str = "$", depth: int = 0) -> None:
    """Raise `EncodingError` naming the first value outside the canonical data model."""
    if depth > MAX_DEPTH:
        raise EncodingError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, bytes)):
        return
    if isinstance(value, str):
        _check_text(value, path)
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise EncodingError(f"{path}: integer {value} is outside the 64-bit range of DAG-CBOR")
        return
    if isinstance(value, float):
        raise EncodingError(
            f"{path}: floats are not allowed in signed data ({value!r}); "
            "use integers or Q32.32 fixed point"
        )
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_value(item, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise EncodingError(f"{path}: map key {key!r} is not a string")
            _check_text(key, path)
            check_value(item, f"{path}.{key}", depth + 1)
        return
    raise EncodingError(f"{path}: {type(value).__name__} values cannot be encoded")


def _check_text(value: str, path: str) -> None:
    # A lone surrogate is a valid Python str but not Unicode text: it has no UTF-8 form.
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise EncodingError(f"{path}: text holds a lone surrogate, which is not Unicode") from None


def _encode_unchecked(value: CanonicalValue) -> bytes:
    return cbor2.dumps(value, canonical=True)


def encode_checked(value: CanonicalValue) -> bytes:
    """Encode a value whose every part already passed `check_value` (no second walk)."""
    return cbor2.dumps(value, canonical=True)


def encode(value: CanonicalValue) -> bytes:
    """Encode `value` as canonical DAG-CBOR.

    Raises:
        EncodingError: the value (or something inside it) is outside the data model.
    """
    check_value(value)
    return _encode_unchecked(value)


def decode(data: bytes) -> CanonicalValue:
    """Decode canonical DAG-CBOR strictly.

    Raises:
        EncodingError: truncated, malformed or non-canonical bytes, trailing bytes,
            duplicate keys, floats, tags or values outside the data model.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EncodingError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise EncodingError("empty input is not a CBOR value")
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(stream, str_errors="strict").decode()
    except (cbor2.CBORDecodeError, ValueError, OverflowError, RecursionError) as exc:
        raise EncodingError(f"malformed CBOR: {exc}") from exc
    if stream.tell() != len(data):
        raise EncodingError(f"{len(data) - stream.tell()} trailing bytes after the CBOR value")
    check_value(value)
    again = _encode_unchecked(value)
    if again != data:
        at = next(
            (i for i, (a, b) in enumerate(zip(again, data, strict=False)) if a != b),
            min(len(again), len(data)),
        )
        raise EncodingError(
            f"non-canonical DAG-CBOR (differs from the canonical encoding at byte {at}): "
            "integers must use the shortest form, lengths must be definite, map keys "
            "sorted and unique, no tags"
        )
    return value
