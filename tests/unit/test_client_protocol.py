"""The client's sans-I/O protocol core and its error table, without sockets."""

from __future__ import annotations

import orjson
import pytest

from gatosd._client_errors import (
    CODE_TO_ERROR,
    BadReply,
    ConnectionClosed,
    GatosError,
    InvalidName,
    InvalidNamespace,
    PolicyDenied,
    error_from_wire,
)
from gatosd._client_protocol import ClientProtocol
from gatosd.errors import WIRE_CODES


def line(frame: dict[str, object]) -> bytes:
    return orjson.dumps(frame) + b"\n"


def test_every_wire_code_has_its_own_class() -> None:
    """Each code of the closed set maps to a GatosError subclass carrying that code."""
    for code in WIRE_CODES:
        cls = CODE_TO_ERROR[code]
        assert issubclass(cls, GatosError) and cls is not GatosError and cls.code == code


def test_error_frames_become_typed_errors_with_rule_and_unknown_codes_the_root() -> None:
    """code/reason/rule are kept; an unknown code is the root class with that code."""
    denied = error_from_wire({"code": "POLICY_DENY", "reason": "no", "rule": "r1"}, "c1")
    assert isinstance(denied, PolicyDenied) and (denied.reason, denied.rule) == ("no", "r1")
    assert denied.request_id == "c1" and denied.to_wire()["rule"] == "r1"
    future = error_from_wire({"code": "SOMETHING_NEW", "reason": "x"})
    assert type(future) is GatosError and future.code == "SOMETHING_NEW"
    assert isinstance(error_from_wire("junk"), BadReply)
    assert issubclass(InvalidNamespace, InvalidName)


def test_replies_are_routed_by_id_in_any_order_across_split_reads() -> None:
    """Two requests in flight; replies interleaved and cut mid-line reach their owner."""
    proto = ClientProtocol()
    a, _ = proto.start("hello", {})
    b, data = proto.start("journal.read", {"ns": "n"})
    assert orjson.loads(data) == {"type": "journal.read", "id": b, "ns": "n"}
    stream = (line({"partial": True, "id": b, "entries": [1]}) + line({"ok": True, "id": a, "v": 1})
              + line({"ok": True, "id": b, "entries": [2]}))
    for i in range(0, len(stream), 7):
        proto.feed(stream[i:i + 7])
    assert proto.next_frame(a) == {"ok": True, "v": 1}
    assert proto.next_frame(b) == {"partial": True, "entries": [1]}
    assert proto.next_frame(b) == {"ok": True, "entries": [2]}
    assert proto.in_flight == 0


def test_pings_are_answered_pongs_counted_and_token_sent_once() -> None:
    """A daemon ping queues a pong; our pings are matched by pong count; token on frame one."""
    proto = ClientProtocol(token="t" * 20)
    _, first = proto.start("hello", {})
    _, second = proto.start("hello", {})
    assert orjson.loads(first)["token"] == "t" * 20 and "token" not in orjson.loads(second)
    proto.feed(line({"kind": "ping"}) + line({"kind": "pong"}))
    assert proto.data_to_send() == b'{"kind":"pong"}\n' and proto.data_to_send() == b""
    assert proto.pongs_received == 1


def test_error_frame_raises_and_anonymous_error_goes_to_the_only_request() -> None:
    """ok:false raises its class; an id-less error is given to the single request in flight."""
    proto = ClientProtocol()
    rid, _ = proto.start("append_event", {})
    proto.feed(line({"ok": False, "id": None, "error": {"code": "TOO_LARGE", "reason": "big"}}))
    with pytest.raises(GatosError) as caught:
        proto.next_frame(rid)
    assert caught.value.code == "TOO_LARGE"


def test_end_of_stream_fails_waiting_requests_and_new_ones() -> None:
    """After EOF a waiting request raises ConnectionClosed, and so does starting another."""
    proto = ClientProtocol()
    rid, _ = proto.start("verify", {})
    proto.feed(line({"ack": True, "id": rid}))
    proto.feed(b"")
    assert proto.next_frame(rid) == {"ack": True}
    with pytest.raises(ConnectionClosed):
        proto.next_frame(rid)
    with pytest.raises(ConnectionClosed):
        proto.start("hello", {})


def test_garbage_from_the_daemon_closes_with_bad_reply() -> None:
    """A line that is not JSON ends the connection with BadReply, never a crash."""
    proto = ClientProtocol()
    rid, _ = proto.start("hello", {})
    proto.feed(b"\xff not json\n")
    with pytest.raises(BadReply):
        proto.next_frame(rid)
