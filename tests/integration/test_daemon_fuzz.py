"""Fuzzing the real `gatosd`: whatever lines arrive on one connection, each non-empty line
gets exactly one reply and the daemon stays up."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatosd._framing import encode_frame, parse_frame
from gatosd.errors import ProtocolError
from tests.integration.daemon_support import (
    Daemon,
    JsonlClient,
    append_frame,
    make_node,
    short_dir,
    start_daemon,
    verify_ok,
)

pytestmark = pytest.mark.integration

MAX_LINE = 512 * 1024
METHODS = ["hello", "append_event", "journal.head", "journal.read", "verify", "status", "nope"]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    repo = make_node(tmp_path_factory.mktemp("fuzz") / "node")
    with short_dir() as sockets:
        running = start_daemon(repo, "--max-line", str(MAX_LINE), socket_dir=sockets)
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture(scope="module")
def conn(daemon: Daemon) -> Iterator[JsonlClient]:
    with daemon.client(timeout=60) as c:
        yield c


_scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.text(max_size=12)
            | st.floats(allow_nan=False, allow_infinity=False))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=25)

_valid_frames = st.builds(
    lambda method, rid, ns, actor, body, extra: {"type": method, "id": rid, "ns": ns, "actor": actor,
                                                 "event": body, **extra},
    st.sampled_from(METHODS),
    st.one_of(st.text(max_size=8), st.integers(-5, 10**6), st.none(), _json),
    st.one_of(st.sampled_from(["fuzz", "finance", "", "../x", "a/b"]), _json),
    st.one_of(st.sampled_from(["user:a", "a", "user:nobody", "user:", "x:y"]), _json),
    st.one_of(st.fixed_dictionaries({"type": st.sampled_from(["fuzz.t", "Bad!", ""]),
                                     "payload": _json}), _json),
    st.dictionaries(st.sampled_from(["limit", "last", "after", "after_ulid", "until", "sig", "kind"]),
                    _json, max_size=3),
)


def _mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, value in edits:
        if not buf:
            buf.append(value)
            continue
        at = pos % len(buf)
        if kind == 0:
            buf[at] = value
        elif kind == 1:
            buf.insert(at, value)
        else:
            del buf[at]
    return bytes(buf)


_nested = st.builds(
    lambda depth, kind: (b'{"a":' * depth + b"1" + b"}" * depth) if kind else
    (b"[" * depth + b"]" * depth), st.integers(1, 120_000), st.booleans())

_lines = st.one_of(
    _json.map(lambda v: orjson.dumps(v)),
    st.binary(max_size=200),
    _nested,
    _valid_frames.map(lambda f: orjson.dumps(f)),
    st.builds(_mutate, _valid_frames.map(lambda f: orjson.dumps(f)),
              st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10**6), st.integers(0, 255)),
                       min_size=1, max_size=4)),
    st.builds(_mutate, st.just(encode_frame(append_frame("m", "fuzz", actor="user:a"))[:-1]),
              st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10**6), st.integers(0, 255)),
                       min_size=1, max_size=3)),
)


def _expected_replies(data: bytes) -> int:
    """Final replies the daemon owes for `data`: one per non-blank line, except pong lines."""
    count = 0
    for line in data.split(b"\n"):
        line = line.rstrip(b"\r")
        if not line.strip():
            continue
        try:
            frame: Any = parse_frame(line)
        except ProtocolError:
            count += 1
            continue
        if frame.get("kind") != "pong":
            count += 1
    return count


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(st.lists(_lines, min_size=1, max_size=12))
def test_every_line_gets_one_reply_and_the_daemon_stays_up(daemon: Daemon, conn: JsonlClient,
                                                           lines: list[bytes]) -> None:
    """Random JSON, random bytes, deep nesting and mutated frames on one connection: exactly one
    reply per non-empty line (never INTERNAL), and the daemon answers hello afterwards."""
    data = b"\n".join(lines) + b"\n"
    expected = _expected_replies(data)
    # Requests run concurrently, so replies may come in any order: wait for the expected
    # count and a first hello, then a second hello (sent once all is answered) flushes out
    # any reply that should not exist.
    first, second = f"sentinel-{uuid.uuid4()}", f"sentinel-{uuid.uuid4()}"
    conn.send_raw(data + encode_frame({"type": "hello", "id": first}))
    replies: list[dict[str, Any]] = []
    seen_first = False
    sent_second = False
    while True:
        frame = conn.recv(60)
        assert frame is not None, f"daemon closed the connection; stderr: {daemon.stderr()[-2000:]}"
        if frame.get("id") == first and "ok" in frame:
            seen_first = True
        elif frame.get("id") == second and "ok" in frame:
            break
        elif "ok" in frame or frame.get("kind") == "pong":
            replies.append(frame)
        if seen_first and len(replies) >= expected and not sent_second:
            conn.send({"type": "hello", "id": second})
            sent_second = True
    assert len(replies) == expected, (expected, replies)
    codes = {r["error"]["code"] for r in replies if r.get("ok") is False}
    assert "INTERNAL" not in codes, [r for r in replies if r.get("ok") is False]
    assert daemon.alive()


def test_after_fuzzing_the_repository_verifies(daemon: Daemon) -> None:
    """Whatever the fuzzer got written is a valid journal."""
    with daemon.client() as c:
        c.hello()
    verify_ok(daemon.repo)
