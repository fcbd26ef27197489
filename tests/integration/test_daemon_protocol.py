"""Conformance of the real `gatosd` over a real socket: every method, every error code.

After each bad input the repository's refs and objects are exactly as before and the
daemon still answers `hello` on the same connection.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatosd._bus_methods import BusMethods
from gatosd._cache_methods import CacheMethods
from gatosd._doctor_methods import DoctorMethods
from gatosd._fold_methods import FoldMethods
from gatosd._framing import encode_frame
from gatosd._jobs_methods import JobMethods
from gatosd._ledger_methods import LedgerMethods
from gatosd._registry import Registry
from gatosd._sync_methods import SyncMethods
from ledger_core import ZERO_OID, Event, SigningKey, encode_ulid, format_timestamp_ms, sign_event
from tests.integration.daemon_support import (
    Daemon,
    JsonlClient,
    append_frame,
    assert_unchanged,
    journal_entries,
    make_node,
    short_dir,
    snapshot,
    start_daemon,
)

pytestmark = pytest.mark.integration

MAX_LINE = 256 * 1024
TOKEN = "s3cret-token-0123456789abcdef"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    base = tmp_path_factory.mktemp("proto")
    repo = make_node(base / "node", "user:a", "user:james")
    token_file = base / "token"
    token_file.write_text(TOKEN + "\n")
    with short_dir() as sockets:
        running = start_daemon(repo, "--max-line", str(MAX_LINE), "--listen", "127.0.0.1:0",
                               "--token-file", str(token_file), socket_dir=sockets)
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[JsonlClient]:
    with daemon.client() as c:
        yield c


def _key(repo: Path, name: str) -> SigningKey:
    with open(repo / ".git" / "gatos" / "keys" / "user" / f"{name}.key", encoding="utf-8") as f:
        return SigningKey(bytes.fromhex(json.load(f)["seed"]))


_counter = iter(range(1, 10**9))


def _client_event(payload: Any, actor: str = "user:james", **extra: Any) -> Event:
    ms = 1_760_000_000_000 + next(_counter)
    ulid = encode_ulid(ms, os.urandom(10))
    return Event.from_value({"type": "invoice.created", "ulid": ulid, "actor": actor,
                             "payload": payload, "policy_root": ZERO_OID,
                             "ts": format_timestamp_ms(ms), **extra})


def _client_signed_frame(repo: Path, request_id: str, payload: Any) -> tuple[dict[str, Any], Any]:
    signed = sign_event(_client_event(payload), _key(repo, "james"))
    frame = {"type": "append_event", "id": request_id, "ns": "finance", "actor": "james",
             "event": signed.event.to_value(), "sig": "ed25519:" + signed.signature.hex()}
    return frame, signed


# -- methods ---------------------------------------------------------------------------


def test_hello_lists_every_registered_method(client: JsonlClient) -> None:
    """`hello` names the server, its protocol and limits, and every method in the registry."""
    registry = Registry()
    LedgerMethods.register(LedgerMethods.__new__(LedgerMethods), registry)
    FoldMethods.register(FoldMethods.__new__(FoldMethods), registry)
    BusMethods.register(BusMethods.__new__(BusMethods), registry)
    JobMethods.register(JobMethods.__new__(JobMethods), registry)
    CacheMethods.register(CacheMethods.__new__(CacheMethods), registry)
    DoctorMethods.register(DoctorMethods.__new__(DoctorMethods), registry)
    SyncMethods.register(SyncMethods.__new__(SyncMethods), registry)
    reply = client.hello()
    assert reply["server"] == "gatosd" and reply["protocol"] == 1
    assert reply["methods"] == registry.names()
    assert reply["limits"]["max_line"] == MAX_LINE
    assert reply["node"]["actor"] == "user:a"
    for name in reply["methods"]:
        answer = client.request({"type": name, "id": f"probe-{name}"})
        assert answer.get("error", {}).get("code") != "UNKNOWN_TYPE", answer


def test_node_signed_append_matches_the_upstream_example(daemon: Daemon, client: JsonlClient) -> None:
    """The SPEC's exact append frame is signed by the node and lands on the actor's journal."""
    reply = client.request({"type": "append_event", "id": "01A", "ns": "finance", "actor": "james",
                            "event": {"type": "invoice.created", "payload": {"amount": 12}}})
    assert reply["ok"] is True and reply["id"] == "01A", reply
    assert reply["actor"] == "user:james" and reply["duplicate"] is False
    assert reply["ref"] == "refs/gatos/journal/finance/user/james"
    entries = journal_entries(daemon.repo, "finance", "user:james")
    assert entries[-1]["commit"] == reply["commit"]
    assert entries[-1]["event_cid"] == reply["event_cid"]
    assert entries[-1]["payload"] == {"amount": 12}
    head = client.request({"type": "journal.head", "id": "h", "ns": "finance", "actor": "james"})
    assert head["ok"] is True and head["head"] == reply["commit"]


def test_client_signed_append_keeps_the_clients_cid(daemon: Daemon, client: JsonlClient) -> None:
    """A client-signed envelope is stored as signed: the reply's event_cid is its CID."""
    frame, signed = _client_signed_frame(daemon.repo, "cs1", {"amount": 99})
    reply = client.request(frame)
    assert reply["ok"] is True, reply
    assert reply["event_cid"] == signed.cid and reply["ulid"] == signed.event.ulid
    again = client.request({**frame, "id": "cs2"})
    assert again["ok"] is True and again["duplicate"] is True
    assert again["commit"] == reply["commit"]
    cids = [e["event_cid"] for e in journal_entries(daemon.repo, "finance", "user:james")]
    assert cids.count(signed.cid) == 1


def test_journal_head_of_an_empty_journal_is_null(client: JsonlClient) -> None:
    """A journal that has no event answers head null, not an error."""
    reply = client.request({"type": "journal.head", "id": 7, "ns": "empty", "actor": "user:a"})
    assert reply == {"ok": True, "id": 7, "ns": "empty",
                     "ref": "refs/gatos/journal/empty/user/a", "head": None}


def test_journal_read_of_650_entries_streams_partial_frames_in_order(client: JsonlClient) -> None:
    """650 entries come as 256 + 256 partial frames, then the final frame with the rest, in order."""
    total = 650
    replies = {}
    for start in range(0, total, 200):  # pipelined, under the 256 in-flight limit
        window = range(start, min(total, start + 200))
        client.send_raw(b"".join(encode_frame(append_frame(f"r{i}", "reading", actor="user:a",
                                                           payload={"i": i})) for i in window))
        for _ in window:
            frame = client.recv()
            assert frame is not None and frame["ok"] is True, frame
            replies[frame["id"]] = frame
    assert len(replies) == total
    frames = client.request_frames({"type": "journal.read", "id": "read", "ns": "reading",
                                    "actor": "user:a"})
    ack, partial, final = frames[0], frames[1:-1], frames[-1]
    assert ack == {"ack": True, "id": "read"}
    frames = frames[1:]
    assert [len(f["entries"]) for f in partial] == [256, 256]
    assert all(f["partial"] is True and "ok" not in f for f in partial)
    assert final["ok"] is True and final["count"] == total and len(final["entries"]) == total - 512
    entries = [e for f in frames for e in f["entries"]]
    assert sorted(e["payload"]["i"] for e in entries) == list(range(total))
    assert [e["commit"] for e in entries] == [
        replies[f"r{e['payload']['i']}"]["commit"] for e in entries]
    ulids = [e["ulid"] for e in entries]
    assert ulids == sorted(ulids)
    # the ranges of the request select slices of that same order
    last = client.request({"type": "journal.read", "id": "last", "ns": "reading", "actor": "user:a",
                           "last": 3})
    assert [e["commit"] for e in last["entries"]] == [e["commit"] for e in entries[-3:]]
    after = client.request({"type": "journal.read", "id": "after", "ns": "reading",
                            "actor": "user:a", "after_ulid": ulids[100], "limit": 5})
    assert [e["ulid"] for e in after["entries"]] == ulids[101:106]


def test_verify_acks_then_reports_valid(client: JsonlClient) -> None:
    """`verify` is long work: an ack frame first, then the final frame with `valid`."""
    frames = client.request_frames({"type": "verify", "id": "v"})
    assert frames[0] == {"ack": True, "id": "v"}
    assert frames[-1]["ok"] is True and frames[-1]["valid"] is True
    assert frames[-1]["problems"] == []


def test_status_reports_the_daemon(daemon: Daemon, client: JsonlClient) -> None:
    """`status` names the pid, the repository and live counters."""
    reply = client.request({"type": "status", "id": "s"})
    assert reply["ok"] is True and reply["pid"] == daemon.pid
    assert reply["connections"] >= 1 and reply["stopping"] is False
    assert os.path.realpath(reply["repo"]) == os.path.realpath(daemon.repo)


def test_ping_is_answered_with_pong(client: JsonlClient) -> None:
    """`{"kind":"ping"}` from the client gets `{"kind":"pong"}`."""
    client.send({"kind": "ping"})
    assert client.recv() == {"kind": "pong"}


# -- error codes ------------------------------------------------------------------------


BAD_INPUTS: list[tuple[str, bytes, str]] = [
    ("not-json", b"hello there", "BAD_FRAME"),
    ("array", b"[1,2,3]", "BAD_FRAME"),
    ("nan", b'{"type":"hello","id":"x","n":NaN}', "BAD_FRAME"),
    ("dup-keys", b'{"type":"hello","id":"x","id":"y"}', "BAD_FRAME"),
    ("bad-utf8", b'{"type":"hello","id":"\xff\xfe"}', "BAD_FRAME"),
    ("lone-surrogate", b'{"type":"hello","id":"\\udc00"}', "BAD_FRAME"),
    ("deep", b"[" * 100_000 + b"]" * 100_000, "BAD_FRAME"),
    ("huge-number", b'{"type":"hello","n":' + b"7" * 5000 + b"}", "BAD_FRAME"),
    ("no-type", b'{"id":"x"}', "BAD_FRAME"),
    ("bad-id", b'{"type":"hello","id":{"a":1}}', "BAD_FRAME"),
    ("unknown-type", b'{"type":"fold_everything","id":"x"}', "UNKNOWN_TYPE"),
    ("invalid-ns", json.dumps(append_frame("x", "../etc")).encode(), "INVALID_NS"),
    ("ns-not-string", json.dumps(append_frame("x", 5)).encode(), "INVALID_NS"),  # type: ignore[arg-type]
    ("invalid-actor", json.dumps(append_frame("x", actor="user:bad name")).encode(), "INVALID_NAME"),
    ("invalid-type", json.dumps(append_frame("x", event_type="Bad Type!")).encode(), "INVALID_NAME"),
    ("invalid-ulid", json.dumps({**append_frame("x"), "event": {
        "type": "t", "payload": {}, "ulid": "not-a-ulid"}}).encode(), "INVALID_EVENT"),
    ("caps-not-list", json.dumps({**append_frame("x"), "event": {
        "type": "t", "payload": {}, "caps": 5}}).encode(), "INVALID_EVENT"),
    ("caps-string", json.dumps({**append_frame("x"), "event": {
        "type": "t", "payload": {}, "caps": "admin"}}).encode(), "INVALID_EVENT"),
    ("no-payload", json.dumps({**append_frame("x"), "event": {"type": "t"}}).encode(), "BAD_FRAME"),
    ("event-not-object", json.dumps({**append_frame("x"), "event": [1]}).encode(), "BAD_FRAME"),
    ("float-payload", json.dumps(append_frame("x", payload={"amount": 1.5})).encode(), "BAD_ENCODING"),
    ("no-private-key", json.dumps(append_frame("x", actor="user:nobody")).encode(), "NOT_FOUND"),
    ("read-bad-after", b'{"type":"journal.read","id":"x","ns":"finance","actor":"user:a",'
                       b'"after":"zz"}', "NOT_FOUND"),
    ("read-bad-limit", b'{"type":"journal.read","id":"x","ns":"finance","actor":"user:a",'
                       b'"limit":-1}', "BAD_FRAME"),
    ("head-bad-actor", b'{"type":"journal.head","id":"x","ns":"finance","actor":7}', "INVALID_NAME"),
]


@pytest.mark.parametrize(("data", "code"), [(d, c) for _, d, c in BAD_INPUTS],
                         ids=[name for name, _, _ in BAD_INPUTS])
def test_bad_input_gets_its_error_code_and_changes_nothing(
        daemon: Daemon, client: JsonlClient, data: bytes, code: str) -> None:
    """Each bad frame is answered with its code, the repo is untouched, the connection lives."""
    before = snapshot(daemon.repo)
    client.send_raw(data + b"\n")
    reply = client.recv()
    assert reply is not None and reply["ok"] is False, reply
    assert reply["error"]["code"] == code, reply
    assert reply["error"]["reason"]
    assert_unchanged(daemon.repo, before)
    client.hello()


def test_tampered_signature_is_bad_signature(daemon: Daemon, client: JsonlClient) -> None:
    """A client signature with one flipped bit is refused as BAD_SIGNATURE; nothing is written."""
    frame, signed = _client_signed_frame(daemon.repo, "t1", {"amount": 1})
    raw = bytearray(signed.signature)
    raw[5] ^= 0x01
    before = snapshot(daemon.repo)
    reply = client.request({**frame, "sig": "ed25519:" + raw.hex()})
    assert reply["ok"] is False and reply["error"]["code"] == "BAD_SIGNATURE", reply
    assert_unchanged(daemon.repo, before)
    client.hello()


@pytest.mark.parametrize("where", ["sig", "sig_alg"])
def test_unknown_signature_algorithm(daemon: Daemon, client: JsonlClient, where: str) -> None:
    """An algorithm other than ed25519, in the signature or the envelope: UNKNOWN_SIG_ALG."""
    frame, signed = _client_signed_frame(daemon.repo, "alg", {"amount": 2})
    if where == "sig":
        frame["sig"] = "rsa:" + signed.signature.hex()
    else:
        frame["event"] = {**frame["event"], "sig_alg": "rsa-pss"}
    before = snapshot(daemon.repo)
    reply = client.request(frame)
    assert reply["ok"] is False and reply["error"]["code"] == "UNKNOWN_SIG_ALG", reply
    assert_unchanged(daemon.repo, before)
    client.hello()


def test_client_actor_that_differs_from_the_envelope_is_refused(daemon: Daemon,
                                                                client: JsonlClient) -> None:
    """A frame `actor` naming someone else than the signed envelope is a BAD_FRAME."""
    frame, _ = _client_signed_frame(daemon.repo, "who", {"amount": 3})
    before = snapshot(daemon.repo)
    reply = client.request({**frame, "actor": "user:a"})
    assert reply["error"]["code"] == "BAD_FRAME", reply
    assert_unchanged(daemon.repo, before)


def test_reused_ulid_with_other_content_is_refused(daemon: Daemon, client: JsonlClient) -> None:
    """The same ULID with a different payload is ULID_REUSED; the same content replays."""
    ulid = encode_ulid(1_760_000_000_000, b"\x01" * 10)
    first = client.request({**append_frame("u1", "reuse", actor="user:a", payload={"v": 1}),
                            "event": {"type": "t.x", "payload": {"v": 1}, "ulid": ulid}})
    assert first["ok"] is True, first
    before = snapshot(daemon.repo)
    same = client.request({**append_frame("u2", "reuse", actor="user:a"),
                           "event": {"type": "t.x", "payload": {"v": 1}, "ulid": ulid}})
    assert same["ok"] is True and same["duplicate"] is True and same["commit"] == first["commit"]
    other = client.request({**append_frame("u3", "reuse", actor="user:a"),
                            "event": {"type": "t.x", "payload": {"v": 2}, "ulid": ulid}})
    assert other["ok"] is False and other["error"]["code"] == "ULID_REUSED", other
    assert_unchanged(daemon.repo, before)
    client.hello()


def test_a_stale_ref_lock_is_reported_never_overwritten(daemon: Daemon, client: JsonlClient) -> None:
    """A `<ref>.lock` left by a crashed writer: the append gets LOCKED and nothing changes;
    once the lock is gone the append goes through."""
    ref_dir = daemon.repo / ".git" / "refs" / "gatos" / "journal" / "locked" / "user"
    ref_dir.mkdir(parents=True)
    lock = ref_dir / "a.lock"
    lock.write_text("")
    os.utime(lock, (time.time() - 3600, time.time() - 3600))
    before = snapshot(daemon.repo)
    reply = client.request(append_frame("l1", "locked", actor="user:a"))
    assert reply["ok"] is False and reply["error"]["code"] == "LOCKED", reply
    assert str(lock) in reply["error"]["reason"]
    assert_unchanged(daemon.repo, before)
    assert lock.exists()
    lock.unlink()
    assert client.request(append_frame("l2", "locked", actor="user:a"))["ok"] is True


def test_too_large_line_with_newline(daemon: Daemon, client: JsonlClient) -> None:
    """A line over --max-line ending in a newline: one TOO_LARGE, then the connection serves on."""
    before = snapshot(daemon.repo)
    big = json.dumps(append_frame("big", payload={"blob": "x" * (MAX_LINE + 10)})).encode()
    client.send_raw(big + b"\n")
    reply = client.recv()
    assert reply is not None and reply["error"]["code"] == "TOO_LARGE", reply
    assert_unchanged(daemon.repo, before)
    client.hello()


def test_too_large_line_without_newline(daemon: Daemon, client: JsonlClient) -> None:
    """A line that runs past --max-line before any newline gets TOO_LARGE at once; once its
    newline comes the next frame is served."""
    before = snapshot(daemon.repo)
    client.send_raw(b'{"type":"hello","id":"' + b"y" * (MAX_LINE * 3))
    reply = client.recv(10)
    assert reply is not None and reply["error"]["code"] == "TOO_LARGE", reply
    client.send_raw(b"y" * 1000 + b'"}\n')
    client.hello()
    assert_unchanged(daemon.repo, before)


def test_line_error_replies_come_one_per_line_in_a_burst(client: JsonlClient) -> None:
    """Many bad lines in one write: exactly one reply per non-empty line, in order."""
    lines = [b"[]", b"{", b"", b'{"type":"nope","id":1}', b"  ", b'{"type":"hello","id":2}']
    client.send_raw(b"\n".join(lines) + b"\n")
    codes = []
    for _ in range(4):
        frame = client.recv()
        assert frame is not None
        codes.append(frame.get("error", {}).get("code", "ok"))
    assert sorted(codes) == sorted(["BAD_FRAME", "BAD_FRAME", "UNKNOWN_TYPE", "ok"])
    client.hello()


# -- TCP and its token -------------------------------------------------------------------


def test_tcp_with_the_right_token_works(daemon: Daemon) -> None:
    """Over TCP the first frame carries the token; then the connection is served normally."""
    with daemon.tcp_client() as c:
        reply = c.request({"type": "hello", "id": "t", "token": TOKEN})
        assert reply["ok"] is True
        assert c.request({"type": "status", "id": "s"})["ok"] is True


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789", TOKEN[:-1], "ünïcødé-token-0123",
                                   12345], ids=["missing", "wrong", "prefix", "non-ascii", "number"])
def test_tcp_without_the_right_token_is_unauthorized_and_closed(daemon: Daemon, token: Any) -> None:
    """A missing or wrong token: UNAUTHORIZED, the connection closes, nothing changes."""
    before = snapshot(daemon.repo)
    with daemon.tcp_client() as c:
        frame = append_frame("sneak", actor="user:a")
        if token is not None:
            frame["token"] = token
        c.send(frame)
        reply = c.recv()
        assert reply is not None and reply["error"]["code"] == "UNAUTHORIZED", reply
        assert c.wait_closed() == []
    assert_unchanged(daemon.repo, before)
    with daemon.client() as c:
        c.hello()


def test_unix_socket_is_private(daemon: Daemon) -> None:
    """The unix socket is mode 0600."""
    assert os.stat(daemon.socket).st_mode & 0o777 == 0o600
    probe = socket.socket(socket.AF_UNIX)
    probe.connect(daemon.socket)
    probe.close()


def test_tcp_ping_before_the_token_closes_the_connection(daemon: Daemon) -> None:
    """An anonymous TCP client cannot hold a connection slot by pinging."""
    with daemon.tcp_client() as c:
        c.send({"kind": "ping"})
        reply = c.recv()
        assert reply is not None and reply["error"]["code"] == "UNAUTHORIZED", reply
        assert c.wait_closed() == []


def test_node_signed_actor_mismatch_is_a_bad_frame(daemon: Daemon, client: JsonlClient) -> None:
    """`actor` and `event.actor` naming different actors is refused, nothing is written."""
    before = snapshot(daemon.repo)
    frame = append_frame("mm", actor="user:a")
    frame["event"]["actor"] = "user:james"
    reply = client.request(frame)
    assert reply["ok"] is False and reply["error"]["code"] == "BAD_FRAME", reply
    assert_unchanged(daemon.repo, before)


def test_boolean_id_is_a_bad_frame(client: JsonlClient) -> None:
    """`"id": true` is not an integer id."""
    client.send({"type": "hello", "id": True})
    reply = client.recv()
    assert reply is not None and reply["error"]["code"] == "BAD_FRAME", reply
