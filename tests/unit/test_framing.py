"""The sans-I/O JSONL framing: line splitting, limits and strict parsing, without a socket."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatosd._framing import LineError, LineFramer, encode_frame, parse_frame
from gatosd.errors import ProtocolError


def _codes(items: list[Any]) -> list[str]:
    return [i.error.code if isinstance(i, LineError) else "frame" for i in items]


def _feed_all(framer: LineFramer, chunks: list[bytes]) -> list[Any]:
    out: list[Any] = []
    for chunk in chunks:
        out += framer.feed(chunk)
    return out


def _normal(items: list[Any]) -> list[Any]:
    """Frames as values and errors as (code, id), so two runs can be compared."""
    return [(i.error.code, i.id) if isinstance(i, LineError) else i for i in items]


# -- splitting ----------------------------------------------------------------------


def test_a_line_split_across_feeds_is_one_frame() -> None:
    """Bytes of one line arriving in many feeds give one frame, only when the newline comes."""
    framer = LineFramer()
    assert framer.feed(b'{"type":') == []
    assert framer.feed(b'"hello",') == []
    assert framer.pending == len(b'{"type":"hello",')
    assert framer.feed(b'"id":"1"}\n') == [{"type": "hello", "id": "1"}]
    assert framer.pending == 0


def test_many_lines_in_one_feed_come_out_in_order() -> None:
    """Several lines in one chunk give their frames in order, keeping the incomplete tail."""
    framer = LineFramer()
    out = framer.feed(b'{"id":1}\n{"id":2}\n{"id":')
    assert out == [{"id": 1}, {"id": 2}]
    assert framer.feed(b"3}\n") == [{"id": 3}]


def test_crlf_line_endings_are_accepted() -> None:
    """A CR before the newline is part of the line ending, not of the JSON."""
    framer = LineFramer()
    assert framer.feed(b'{"id":"a"}\r\n{"id":"b"}\r\n') == [{"id": "a"}, {"id": "b"}]


def test_blank_lines_are_skipped() -> None:
    """Empty and whitespace-only lines produce nothing (no reply either)."""
    framer = LineFramer()
    assert framer.feed(b'\n\r\n   \n\t\n{"id":1}\n\n') == [{"id": 1}]


# -- the line limit -------------------------------------------------------------------


def test_over_long_line_with_newline_gives_one_too_large_and_the_next_line_parses() -> None:
    """A line over the limit in one chunk: one TOO_LARGE, and the following line is served."""
    framer = LineFramer(max_line=64)
    out = framer.feed(b"x" * 200 + b'\n{"id":"next"}\n')
    assert _codes(out) == ["TOO_LARGE", "frame"]
    assert out[1] == {"id": "next"}


def test_over_long_line_without_newline_is_reported_once_and_dropped() -> None:
    """An endless line: exactly one TOO_LARGE while it streams in, memory stays bounded."""
    framer = LineFramer(max_line=100)
    out: list[Any] = []
    for _ in range(50):
        out += framer.feed(b"y" * 37)
        assert framer.pending <= 100
    assert _codes(out) == ["TOO_LARGE"]
    out = framer.feed(b'yyy\n{"id":2}\n')
    assert out == [{"id": 2}]
    assert framer.pending == 0


def test_over_long_line_completed_by_its_newline_later() -> None:
    """A partial line under the limit that its final chunk pushes over: one TOO_LARGE."""
    framer = LineFramer(max_line=50)
    assert framer.feed(b"z" * 40) == []
    out = framer.feed(b"z" * 20 + b'\n{"id":3}\n')
    assert _codes(out) == ["TOO_LARGE", "frame"]


def test_line_of_exactly_the_limit_is_accepted() -> None:
    """The limit is inclusive: a frame of exactly `max_line` bytes parses."""
    frame = b'{"id":"' + b"a" * 40 + b'"}'
    framer = LineFramer(max_line=len(frame))
    assert framer.feed(frame + b"\n") == [{"id": "a" * 40}]


# -- strict parsing ---------------------------------------------------------------------


@pytest.mark.parametrize("line", [
    b'{"a":1,"a":2}',
    b'{"a" :1, "a" :2}',
    b'{"x":{"b":1,"b":2}}',
    b'{"x":[{"k":"v","k":"w"}]}',
], ids=["top", "spaced", "nested", "in-array"])
def test_duplicate_keys_are_bad_frames(line: bytes) -> None:
    """Duplicate keys at any depth are refused, never resolved last-wins."""
    with pytest.raises(ProtocolError) as info:
        parse_frame(line)
    assert info.value.code == "BAD_FRAME"


@pytest.mark.parametrize("line", [
    b'{"a":NaN}', b'{"a":Infinity}', b'{"a":-Infinity}', b'{"a":1e400}',
    b'{"a":"\xff"}', b'{"a":"\xc3"}', b'{"a":"\\ud800"}', b'{"a":"\\udfff x"}',
    b"[" * 100_000 + b"]" * 100_000, b'{"a":' + b"[" * 100_000,
    b'{"a":' + b"9" * 5000 + b"}", b"1" * 5000,
    b"[1,2]", b'"text"', b"42", b"null", b"true",
    b"{", b'{"a":1}x', b"\x00", b"{'a':1}",
], ids=lambda b: repr(b[:16]))
def test_hostile_lines_are_bad_frames(line: bytes) -> None:
    """NaN/Infinity, bad UTF-8, lone surrogates, deep nesting, huge numbers, non-objects: BAD_FRAME."""
    with pytest.raises(ProtocolError) as info:
        parse_frame(line)
    assert info.value.code == "BAD_FRAME"


def test_hostile_lines_through_the_framer_are_line_errors() -> None:
    """Through the framer each hostile line is one LineError and the stream goes on."""
    framer = LineFramer()
    data = b"\n".join([b"[" * 100_000, b'{"a":NaN}', b'{"a":"\\ud800"}', b'{"id":"ok"}']) + b"\n"
    out = framer.feed(data)
    assert _codes(out) == ["BAD_FRAME", "BAD_FRAME", "BAD_FRAME", "frame"]


def test_the_id_of_a_bad_frame_is_echoed_when_readable() -> None:
    """A frame refused for duplicate keys still carries its `id` into the error."""
    out = LineFramer().feed(b'{"id":"r7","x":1,"x":2}\n')
    assert isinstance(out[0], LineError)
    assert out[0].id == "r7"


def test_encode_frame_is_one_line() -> None:
    """Replies are compact JSON ending in exactly one newline, and parse back."""
    data = encode_frame({"ok": True, "id": "1", "text": "a\nb"})
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert parse_frame(data) == {"ok": True, "id": "1", "text": "a\nb"}


# -- properties --------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)

_lines = st.one_of(
    st.binary(max_size=120),
    st.dictionaries(st.text(max_size=8), _json, max_size=5).map(lambda d: encode_frame(d)[:-1]),
    _json.map(lambda v: encode_frame({"v": v})[:-1]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_lines, max_size=12), st.lists(st.integers(1, 64), min_size=1, max_size=30),
       st.integers(8, 300))
def test_any_bytes_in_any_chunking_match_a_whole_buffer_feed(
        lines: list[bytes], cuts: list[int], max_line: int) -> None:
    """Whatever the bytes and however they are chunked, feed never raises and gives what one
    whole-buffer feed gives; pending never exceeds max_line."""
    data = b"\n".join(lines) + b"\n"
    whole = _normal(LineFramer(max_line).feed(data))
    framer = LineFramer(max_line)
    chunks, start, i = [], 0, 0
    while start < len(data):
        size = cuts[i % len(cuts)]
        chunks.append(data[start:start + size])
        start += size
        i += 1
    out: list[Any] = []
    for chunk in chunks:
        out += framer.feed(chunk)
        assert framer.pending <= max_line
    assert _normal(out) == whole
    assert framer.pending == 0


@pytest.mark.parametrize("line", [
    b'{"id":"\\udc00","x":NaN}', b'{"id":"\\ud800","a":1,"a":2}',
    b'{"id":123456789012345678901234567890,"a":1,"a":2}', b'{"id":NaN,"a":1,"a":2}',
], ids=["surrogate", "surrogate-dup", "bigint", "nan"])
def test_an_id_that_cannot_be_echoed_is_dropped(line: bytes) -> None:
    """A bad frame's id is echoed only when the reply can encode it; otherwise `id` is null."""
    out = LineFramer().feed(line + b"\n")
    assert isinstance(out[0], LineError) and out[0].id is None
    encode_frame({"ok": False, "id": out[0].id, "error": out[0].error.to_wire()})


def test_in_line_tracks_a_started_line_even_while_dropping_it() -> None:
    """`in_line` is true from the first byte of a line to its newline, also for a dropped one."""
    framer = LineFramer(max_line=8)
    assert not framer.in_line
    framer.feed(b'{"a"')
    assert framer.in_line
    framer.feed(b"x" * 20)
    assert framer.in_line and framer.pending == 0
    framer.feed(b"\n")
    assert not framer.in_line


_keys = st.sampled_from(["a", "b", "id", "type", 'q"u:o', "x:y"])
_values = st.recursive(
    st.none() | st.integers(-5, 5) | st.sampled_from(["", ":", '":', 'a":b', "t:0Z"]),
    lambda inner: st.lists(inner, max_size=3) | st.lists(st.tuples(_keys, inner), max_size=3).map(
        lambda pairs: ("obj", pairs)),
    max_leaves=8)


def _render(value: object, blanks: str) -> str:
    if isinstance(value, tuple):
        inner = f",{blanks}".join(f"{json.dumps(k)}{blanks}:{blanks}{_render(v, blanks)}" for k, v in value[1])
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ",".join(_render(v, blanks) for v in value) + "]"
    return json.dumps(value)


@given(st.lists(st.tuples(_keys, _values), max_size=4), st.sampled_from(["", " ", "\n\t "]))
def test_a_duplicate_key_anywhere_is_always_refused(pairs: list[tuple[str, object]], blanks: str) -> None:
    """Whatever the blanks and string contents, a text with a repeated key in any object is a
    BAD_FRAME, and one without is accepted (the fast pre-check never lets a duplicate by)."""
    text = _render(("obj", pairs), blanks).encode()

    def has_dup(node: object) -> bool:
        if isinstance(node, tuple):
            keys = [k for k, _ in node[1]]
            return len(keys) != len(set(keys)) or any(has_dup(v) for _, v in node[1])
        if isinstance(node, list):
            return any(has_dup(v) for v in node)
        return False

    if has_dup(("obj", pairs)):
        with pytest.raises(ProtocolError):
            parse_frame(text)
    else:
        assert parse_frame(text) == json.loads(text)
