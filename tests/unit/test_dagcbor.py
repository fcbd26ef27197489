"""Canonical DAG-CBOR: round trips, determinism and strict rejection (SPEC §3, TESTING §5)."""

from __future__ import annotations

import math
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger_core import check_value, decode, encode
from ledger_core._dagcbor import MAX_DEPTH
from ledger_core.errors import EncodingError

INT_MIN = -(2**64)
INT_MAX = 2**64 - 1

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=INT_MIN, max_value=INT_MAX)
    | st.sampled_from([0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, INT_MAX,
                       -1, -24, -25, -256, -257, -(2**32), INT_MIN])
    | st.text()
    | st.binary()
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=8), children, max_size=6),
    max_leaves=30,
)


def _shuffled(value: Any, data: st.DataObject) -> Any:
    """The same value with every dict rebuilt in a random insertion order."""
    if isinstance(value, dict):
        keys = data.draw(st.permutations(list(value)))
        return {k: _shuffled(value[k], data) for k in keys}
    if isinstance(value, list):
        return [_shuffled(v, data) for v in value]
    return value


# -- round trips --------------------------------------------------------------------


@given(values)
def test_round_trip(value: Any) -> None:
    """decode(encode(v)) == v for every value of the data model."""
    assert decode(encode(value)) == value


@given(values, st.data())
def test_encoding_ignores_insertion_order(value: Any, data: st.DataObject) -> None:
    """The encoding depends on the value only, never on dict insertion order."""
    assert encode(_shuffled(value, data)) == encode(value)


@given(values)
def test_encoding_is_a_fixed_point(value: Any) -> None:
    """Re-encoding decoded bytes gives the same bytes."""
    data = encode(value)
    assert encode(decode(data)) == data


@given(st.text())
def test_unicode_strings_round_trip(text: str) -> None:
    """Any Unicode string (including astral and combining characters) round-trips."""
    assert decode(encode({"s": text, text: 1})) == {"s": text, text: 1}


def test_known_encodings() -> None:
    """A few values have the exact bytes of the DAG-CBOR spec."""
    assert encode(0) == b"\x00"
    assert encode(23) == b"\x17"
    assert encode(24) == b"\x18\x18"
    assert encode(-1) == b"\x20"
    assert encode(INT_MAX) == b"\x1b" + b"\xff" * 8
    assert encode(INT_MIN) == b"\x3b" + b"\xff" * 8
    assert encode(None) == b"\xf6"
    assert encode(True) == b"\xf5"
    assert encode("a") == b"\x61a"
    assert encode(b"a") == b"\x41a"
    assert encode([]) == b"\x80"
    assert encode({"b": 1, "a": 2, "aa": 3}) == b"\xa3\x61a\x02\x61b\x01\x62aa\x03"


def test_map_keys_sorted_length_first() -> None:
    """Map keys are sorted by their encoded bytes: shorter keys first, then bytewise."""
    data = encode({"zz": 0, "b": 0, "a": 0, "aaa": 0})
    assert list(decode(data)) == ["a", "b", "zz", "aaa"]


def test_tuples_encode_as_lists() -> None:
    """A tuple encodes like the list with the same items."""
    assert encode((1, "x")) == encode([1, "x"])


# -- encode rejects values outside the model ----------------------------------------


@pytest.mark.parametrize("bad", [1.0, 0.5, math.nan, math.inf, -math.inf, -0.0])
def test_encode_rejects_floats(bad: float) -> None:
    """Floats, NaN and infinities cannot be encoded."""
    with pytest.raises(EncodingError, match="floats are not allowed"):
        encode({"x": [bad]})


@pytest.mark.parametrize("bad", [INT_MAX + 1, INT_MIN - 1, 2**100, -(2**100)])
def test_encode_rejects_big_ints(bad: int) -> None:
    """Integers outside [-2^64, 2^64-1] cannot be encoded."""
    with pytest.raises(EncodingError, match="64-bit"):
        encode(bad)


@pytest.mark.parametrize("bad", [{1: "a"}, {b"k": 1}, {None: 1}, {(1,): 2}])
def test_encode_rejects_non_string_keys(bad: dict[Any, Any]) -> None:
    """Map keys must be strings."""
    with pytest.raises(EncodingError, match="not a string"):
        encode(bad)


@pytest.mark.parametrize("bad", [{1, 2}, frozenset(), object(), 1j, bytearray(b"x")])
def test_encode_rejects_other_types(bad: object) -> None:
    """Sets, arbitrary objects and other types are refused."""
    with pytest.raises(EncodingError):
        encode(bad)


def test_error_names_the_path() -> None:
    """The error names the path of the first bad value."""
    with pytest.raises(EncodingError, match=r"\$\.a\[1\]\.b"):
        encode({"a": [0, {"b": 1.5}]})


def test_max_depth() -> None:
    """Nesting up to MAX_DEPTH is fine; one level more is refused by encode and decode."""
    ok: Any = 0
    for _ in range(MAX_DEPTH):
        ok = [ok]
    assert decode(encode(ok)) == ok
    too_deep = [ok]
    with pytest.raises(EncodingError, match="deeper"):
        encode(too_deep)
    with pytest.raises(EncodingError, match="deeper"):
        decode(b"\x81" * (MAX_DEPTH + 1) + b"\x00")
    with pytest.raises(EncodingError):
        decode(b"\x81" * 100_000 + b"\x00")


def test_check_value_accepts_model() -> None:
    """`check_value` accepts every kind of value of the model."""
    check_value({"a": [None, True, 1, -1, "s", b"b", {"c": []}]})


# -- decode rejects non-canonical and malformed bytes ---------------------------------


def _tag(number: int, payload: Any) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(number, payload))


REJECTED: dict[str, bytes] = {
    "non-shortest uint8": bytes([0x18, 0x01]),
    "non-shortest uint16": bytes([0x19, 0x00, 0x01]),
    "non-shortest uint32": bytes([0x1A, 0, 0, 0, 1]),
    "non-shortest uint64": bytes([0x1B, 0, 0, 0, 0, 0, 0, 0, 1]),
    "non-shortest negative": bytes([0x38, 0x00]),
    "non-shortest string length": bytes([0x78, 0x01, 0x61]),
    "non-shortest array length": bytes([0x98, 0x00]),
    "float16": bytes([0xF9, 0x3C, 0x00]),
    "float32": bytes([0xFA, 0x3F, 0x80, 0, 0]),
    "float64": cbor2.dumps(1.5),
    "NaN": bytes([0xF9, 0x7E, 0x00]),
    "Infinity": bytes([0xF9, 0x7C, 0x00]),
    "float as integer value": bytes([0xFB]) + cbor2.dumps(1.0)[1:],
    "undefined": bytes([0xF7]),
    "simple value": bytes([0xF0]),
    "break alone": bytes([0xFF]),
    "unsorted map keys": bytes([0xA2, 0x61, 0x62, 0x01, 0x61, 0x61, 0x02]),
    "longer key first": bytes([0xA2, 0x62, 0x61, 0x61, 0x01, 0x61, 0x62, 0x02]),
    "duplicate map keys": bytes([0xA2, 0x61, 0x61, 0x01, 0x61, 0x61, 0x02]),
    "integer map key": bytes([0xA1, 0x01, 0x01]),
    "bytes map key": bytes([0xA1, 0x41, 0x61, 0x01]),
    "array map key": bytes([0xA1, 0x81, 0x01, 0x01]),
    "indefinite array": bytes([0x9F, 0x01, 0xFF]),
    "indefinite map": bytes([0xBF, 0x61, 0x61, 0x01, 0xFF]),
    "indefinite text": bytes([0x7F, 0x61, 0x61, 0xFF]),
    "indefinite bytes": bytes([0x5F, 0x41, 0x61, 0xFF]),
    "tag 0 datetime": _tag(0, "2013-03-21T20:04:00Z"),
    "tag 1 epoch": _tag(1, 1363896240),
    "tag 2 bignum small": bytes([0xC2, 0x41, 0x01]),
    "tag 2 bignum large": bytes([0xC2, 0x49, 0x01]) + bytes(8),
    "tag 3 negative bignum": bytes([0xC3, 0x41, 0x01]),
    "tag 42 CID": _tag(42, b"\x00\x01\x71"),
    "tag 258 set": _tag(258, [1]),
    "tag 55799 self-describe": _tag(55799, 1),
    "tag 28 shareable": _tag(28, []),
    "tag 29 shared ref": _tag(29, 0),
    "tag 35 regex": _tag(35, "a+"),
    "trailing bytes": bytes([0x01, 0x01]),
    "trailing garbage after map": encode({"a": 1}) + b"\x00",
    "truncated text": bytes([0x62, 0x61]),
    "truncated uint": bytes([0x19, 0x01]),
    "truncated array": bytes([0x82, 0x01]),
    "truncated map": bytes([0xA1, 0x61, 0x61]),
    "huge declared array": bytes([0x9B]) + b"\xff" * 8,
    "huge declared bytes": bytes([0x5B, 0x7F]) + b"\xff" * 7,
    "invalid UTF-8": bytes([0x61, 0xFF]),
    "overlong UTF-8": bytes([0x62, 0xC0, 0xAF]),
    "lone surrogate": bytes([0x63, 0xED, 0xA0, 0x80]),
    "empty input": b"",
}


@pytest.mark.parametrize("data", list(REJECTED.values()), ids=list(REJECTED))
def test_decode_rejects(data: bytes) -> None:
    """Non-canonical, malformed or out-of-model bytes raise `EncodingError`."""
    with pytest.raises(EncodingError) as info:
        decode(data)
    assert info.value.code == "BAD_ENCODING"


def test_decode_rejects_non_bytes() -> None:
    """`decode` takes bytes only."""
    with pytest.raises(EncodingError):
        decode("a")  # type: ignore[arg-type]


def test_decode_accepts_bytes_like() -> None:
    """bytearray and memoryview inputs decode like bytes."""
    data = encode({"a": [1, b"x"]})
    assert decode(bytearray(data)) == decode(memoryview(data)) == {"a": [1, b"x"]}


def test_decode_extreme_ints() -> None:
    """The 64-bit extremes decode; one past them (as a bignum tag) is rejected."""
    assert decode(b"\x1b" + b"\xff" * 8) == INT_MAX
    assert decode(b"\x3b" + b"\xff" * 8) == INT_MIN
    with pytest.raises(EncodingError):
        decode(bytes([0xC3, 0x49, 0x01]) + bytes(8))


# -- mutation: either canonical or EncodingError -------------------------------------


@settings(max_examples=500)
@given(values, st.data())
def test_mutations_are_canonical_or_rejected(value: Any, data: st.DataObject) -> None:
    """A mutated encoding decodes to a value that re-encodes to exactly those bytes, or raises
    `EncodingError` (never any other exception)."""
    encoded = bytearray(encode(value))
    kind = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
    pos = data.draw(st.integers(0, len(encoded) - 1))
    if kind == "flip":
        encoded[pos] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "set":
        encoded[pos] = data.draw(st.integers(0, 255))
    elif kind == "insert":
        encoded.insert(pos, data.draw(st.integers(0, 255)))
    elif kind == "delete":
        del encoded[pos]
    else:
        del encoded[pos:]
    mutated = bytes(encoded)
    try:
        decoded = decode(mutated)
    except EncodingError:
        return
    assert encode(decoded) == mutated


@settings(max_examples=500)
@given(st.binary(min_size=1, max_size=24))
def test_random_bytes_are_canonical_or_rejected(raw: bytes) -> None:
    """Arbitrary bytes either decode canonically or raise `EncodingError`."""
    try:
        decoded = decode(raw)
    except EncodingError:
        return
    assert encode(decoded) == raw
