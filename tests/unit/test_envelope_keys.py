"""Envelope validation, names, sig_alg rules, ed25519 edge cases, Event-CID and canonical JSON."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger_core import (
    Event,
    PublicKeyText,
    SignedEvent,
    SigningKey,
    blake3_hex,
    canonical_json,
    check_sig_alg,
    content_id,
    encode,
    encode_ulid,
    event_cid,
    format_timestamp_ms,
    journal_ref,
    normalize_actor,
    parse_json,
    parse_public_key,
    parse_signature,
    sign_event,
    timestamp_seconds,
    ulid_ms,
    validate_actor,
    validate_component,
    validate_event_cid,
    validate_namespace,
    verify,
)
from ledger_core.errors import (
    BadSignature,
    EncodingError,
    InvalidEvent,
    InvalidName,
    InvalidNamespace,
    TooLarge,
    UnknownSigAlg,
)

ULID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
BASE: dict[str, Any] = {
    "type": "invoice.created",
    "ulid": ULID,
    "actor": "user:alice",
    "payload": {"amount": 1250, "currency": "EUR"},
    "policy_root": "0" * 40,
}
KEY = SigningKey(bytes(range(32)))
OTHER = SigningKey(bytes(range(1, 33)))
# The group order of ed25519.
L = 2**252 + 27742317777372353535851937790883648493


def event(**changes: Any) -> Event:
    return Event.from_value({**BASE, **changes})


# -- names ---------------------------------------------------------------------------

BAD_COMPONENTS = [
    "", "a" * 65, "../x", "..", "a..b", "a:b", "x.lock", ".hidden", "-dash", "a b", " a",
    "a\tb", "a\nb", "a\x00b", "a\x7fb", "a/b", "a/", "a.", "a@{1}", "a~1", "a^", "a?", "a*",
    "a[b", "a\\b", "é", "a\u200bb",
]


@pytest.mark.parametrize("bad", BAD_COMPONENTS)
def test_bad_component_is_invalid_name(bad: str) -> None:
    """Names that are not one safe ref component raise `InvalidName` (`INVALID_NAME`)."""
    with pytest.raises(InvalidName) as info:
        validate_component(bad, "consumer group")
    assert info.value.code == "INVALID_NAME"


@pytest.mark.parametrize("bad", BAD_COMPONENTS)
def test_bad_namespace_is_invalid_ns(bad: str) -> None:
    """A bad namespace raises `InvalidNamespace` (`INVALID_NS`)."""
    with pytest.raises(InvalidNamespace) as info:
        validate_namespace(bad)
    assert info.value.code == "INVALID_NS"


@pytest.mark.parametrize("bad", BAD_COMPONENTS)
def test_bad_actor_name(bad: str) -> None:
    """An actor whose name is not a safe component raises `InvalidName`."""
    with pytest.raises(InvalidName):
        validate_actor(f"user:{bad}")


@pytest.mark.parametrize("good", ["a", "A-Z_0.9", "a" * 64, "finance", "x.lock2", "a-"])
def test_good_components(good: str) -> None:
    """Letters, digits, '.', '_' and '-' up to 64 characters are accepted."""
    assert validate_component(good) == good
    assert validate_namespace(good) == good
    assert validate_actor(f"agent:{good}") == f"agent:{good}"


@pytest.mark.parametrize("bad", ["alice", "robot:alice", "User:alice", ":alice", "user:", 5,
                                 None, "user:a:b"])
def test_bad_actor_kind(bad: object) -> None:
    """Actors must be `user:`, `agent:` or `service:` plus a name."""
    with pytest.raises(InvalidName):
        validate_actor(bad)


def test_bare_name_is_a_user() -> None:
    """A bare client name reads as `user:<name>`; a bad bare name is still refused."""
    assert normalize_actor("james") == "user:james"
    assert normalize_actor("agent:bot") == "agent:bot"
    with pytest.raises(InvalidName):
        normalize_actor("../x")


def test_journal_ref_layout() -> None:
    """An actor becomes two ref components under its namespace."""
    assert journal_ref("finance", "user:alice") == "refs/gatos/journal/finance/user/alice"
    with pytest.raises(InvalidNamespace):
        journal_ref("a:b", "user:alice")


# -- envelope validation --------------------------------------------------------------


def test_valid_envelope() -> None:
    """A well-formed envelope validates and keeps its fields."""
    ev = event(caps=["journal:append"], ts="2026-01-02T03:04:05.123Z", sig_alg="ed25519")
    assert ev.caps == ("journal:append",)
    assert ev.commit_time == 1767323045
    assert event().commit_time == 0
    assert Event.from_value(ev.to_value()) == ev


@pytest.mark.parametrize("bad", ["user:../x", "user:a b", "user:x.lock", "user:", "bob",
                                 "user:" + "a" * 65, "user:.x", "user:-x", "user:a\x01"])
def test_envelope_bad_actor(bad: str) -> None:
    """A bad actor in the envelope raises `InvalidName`."""
    with pytest.raises(InvalidName):
        event(actor=bad)


@pytest.mark.parametrize("bad", ["", "a b", "a\nb", ".x", "a" * 129, 5])
def test_envelope_bad_type(bad: object) -> None:
    """A bad event type (it becomes the commit subject) is refused."""
    with pytest.raises((InvalidName, InvalidEvent)):
        event(type=bad)


@pytest.mark.parametrize("bad", ["", ULID.lower(), ULID[:-1], ULID + "A", "81ARZ3NDEKTSV4RRFFQ69G5FAV",
                                 "01ARZ3NDEKTSV4RRFFQ69G5FAI", "01ARZ3NDEKTSV4RRFFQ69G5FAU", 5])
def test_envelope_bad_ulid(bad: object) -> None:
    """A ULID that is not 26 uppercase Crockford characters raises `InvalidEvent`."""
    with pytest.raises(InvalidEvent):
        event(ulid=bad)


@pytest.mark.parametrize("bad", ["", "0" * 39, "0" * 41, "A" * 40, "g" * 40, "0" * 63, 0, None])
def test_envelope_bad_policy_root(bad: object) -> None:
    """policy_root must be a lowercase 40- or 64-hex object id."""
    with pytest.raises(InvalidEvent):
        event(policy_root=bad)


def test_envelope_policy_root_sha256() -> None:
    """A 64-hex (SHA-256) policy root is accepted."""
    assert event(policy_root="a" * 64).policy_root == "a" * 64


def test_envelope_unknown_field() -> None:
    """An unknown envelope field (including `sig`, which travels beside it) is refused."""
    with pytest.raises(InvalidEvent, match="unknown envelope field"):
        event(extra=1)
    with pytest.raises(InvalidEvent, match="sig"):
        event(sig="ed25519:00")


@pytest.mark.parametrize("field", ["type", "ulid", "actor", "payload", "policy_root"])
def test_envelope_missing_field(field: str) -> None:
    """Every required field must be present."""
    value = {k: v for k, v in BASE.items() if k != field}
    with pytest.raises(InvalidEvent, match=field):
        Event.from_value(value)


def test_envelope_not_a_map() -> None:
    """An envelope must be a map."""
    with pytest.raises(InvalidEvent):
        Event.from_value([1, 2])


def test_float_in_payload_names_path() -> None:
    """A float anywhere in the payload raises `EncodingError` naming its path."""
    with pytest.raises(EncodingError, match=r"payload\.lines\[1\]\.price"):
        event(payload={"lines": [{"price": 1}, {"price": 2.5}]})
    with pytest.raises(EncodingError, match="payload"):
        event(payload=float("nan"))


@pytest.mark.parametrize("bad", [["a b"], [""], ["x" * 257], ["é"]])
def test_envelope_bad_caps(bad: list[str]) -> None:
    """Capabilities are 1-256 printable ASCII characters."""
    with pytest.raises(InvalidEvent):
        event(caps=bad)


@pytest.mark.parametrize("bad", ["2026-01-02T03:04:05+01:00", "2026-01-02 03:04:05Z",
                                 "2026-02-30T03:04:05Z", "1969-12-31T23:59:59Z", "yesterday"])
def test_envelope_bad_ts(bad: str) -> None:
    """ts must be RFC 3339 UTC (`Z`), a real date, not before 1970."""
    with pytest.raises(InvalidEvent):
        event(ts=bad)


def test_events_are_frozen() -> None:
    """An envelope cannot be changed after validation."""
    ev = event()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type
        ev.actor = "user:mallory"  # type: ignore[misc]


def test_event_size_limit() -> None:
    """An envelope over the size limit raises `TooLarge`."""
    ev = event(payload={"blob": b"x" * 2000})
    with pytest.raises(TooLarge):
        ev.canonical_bytes(max_bytes=1000)
    with pytest.raises(TooLarge):
        sign_event(ev, KEY, max_bytes=1000)


# -- sig_alg --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["rsa", "ed448", "ED25519", "", "none"])
def test_unknown_sig_alg(bad: str) -> None:
    """An unknown `sig_alg` raises `UnknownSigAlg`, in the envelope and on its own."""
    with pytest.raises(UnknownSigAlg) as info:
        event(sig_alg=bad)
    assert info.value.code == "UNKNOWN_SIG_ALG"
    with pytest.raises(UnknownSigAlg):
        check_sig_alg(bad)


def test_sig_alg_absent_means_ed25519() -> None:
    """No `sig_alg` means ed25519; the commit trailer says so."""
    assert check_sig_alg(None) == "ed25519"
    assert sign_event(event(), KEY).sig_alg == "ed25519"


def test_sig_alg_contradicting_key() -> None:
    """A `sig_alg` that contradicts the key type raises `UnknownSigAlg`."""
    foreign = PublicKeyText("secp256k1:" + "00" * 33)
    with pytest.raises(UnknownSigAlg):
        check_sig_alg("ed25519", foreign)
    signed = sign_event(event(sig_alg="ed25519"), KEY)
    with pytest.raises(UnknownSigAlg):
        signed.verify(foreign)
    with pytest.raises(UnknownSigAlg):
        parse_public_key("rsa:" + "00" * 32)


@pytest.mark.parametrize("bad", ["ed25519:" + "00" * 31, "ed25519:" + "AB" * 32, "ed25519",
                                 "ed25519:" + "0" * 63, b"\x00" * 32, None])
def test_malformed_public_key(bad: object) -> None:
    """Keys must be `ed25519:<64 lowercase hex>`."""
    with pytest.raises(BadSignature):
        parse_public_key(bad)


def test_signature_text_round_trip() -> None:
    """A signature's text form parses back to its raw bytes."""
    signed = sign_event(event(), KEY)
    assert parse_signature(signed.signature_text) == signed.signature
    with pytest.raises(BadSignature):
        parse_signature("ed25519:" + "00" * 63)


# -- signatures -----------------------------------------------------------------------


def test_good_signature() -> None:
    """A node-signed event verifies under the signer's key, and a client-signed one too."""
    signed = sign_event(event(), KEY)
    signed.verify(KEY.public_key)
    client = SignedEvent.create(event(), KEY.sign(event().canonical_bytes()))
    client.verify(KEY.public_key)
    assert client == signed
    again = SignedEvent.create(event(), signed.signature_text)
    assert again.signature == signed.signature


def test_signing_key_is_deterministic_and_hidden() -> None:
    """A seed gives a fixed public key; `repr` never shows the seed."""
    assert KEY.public_key == (
        "ed25519:03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8")
    assert bytes(range(32)).hex() not in repr(KEY)
    with pytest.raises(BadSignature):
        SigningKey(b"short")


def test_tampered_bytes() -> None:
    """Changing any signed byte breaks the signature."""
    signed = sign_event(event(), KEY)
    for i in range(0, len(signed.canonical), 7):
        data = bytearray(signed.canonical)
        data[i] ^= 0x01
        with pytest.raises(BadSignature):
            verify(KEY.public_key, bytes(data), signed.signature)


def test_tampered_signature() -> None:
    """Changing any signature byte breaks it; a wrong length is refused."""
    signed = sign_event(event(), KEY)
    for i in (0, 31, 32, 63):
        sig = bytearray(signed.signature)
        sig[i] ^= 0x40
        with pytest.raises(BadSignature):
            verify(KEY.public_key, signed.canonical, bytes(sig))
    with pytest.raises(BadSignature):
        verify(KEY.public_key, signed.canonical, signed.signature[:63])
    with pytest.raises(BadSignature):
        SignedEvent.create(event(), signed.signature[:63])


def test_wrong_key() -> None:
    """A signature by another key does not verify."""
    signed = sign_event(event(), OTHER)
    with pytest.raises(BadSignature):
        signed.verify(KEY.public_key)


def test_signature_of_another_event() -> None:
    """A valid signature of one event does not verify for another."""
    sig = sign_event(event(), KEY).signature
    other = SignedEvent.create(event(payload={"amount": 1}), sig)
    with pytest.raises(BadSignature):
        other.verify(KEY.public_key)


def test_non_canonical_s_is_rejected() -> None:
    """A signature whose S is replaced by S + L (same value mod L) is rejected."""
    signed = sign_event(event(), KEY)
    r, s = signed.signature[:32], int.from_bytes(signed.signature[32:], "little")
    assert s < L
    malleated = r + (s + L).to_bytes(32, "little")
    with pytest.raises(BadSignature):
        verify(KEY.public_key, signed.canonical, malleated)


IDENTITY = "01" + "00" * 31
SMALL_ORDER_KEYS = [
    IDENTITY,                                                              # order 1
    "00" * 32,                                                             # order 4
    "ec" + "ff" * 30 + "7f",                                               # order 2
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",    # order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",    # order 8
    "0100000000000000000000000000000000000000000000000000000000000080",    # identity, -0
]


@pytest.mark.parametrize("key", SMALL_ORDER_KEYS)
def test_small_order_public_key(key: str) -> None:
    """Small-order public keys are refused even with a signature that a lax verifier accepts."""
    # With A = identity, R = identity and S = 0, [S]B = R + [k]A holds for every message.
    lax_sig = bytes.fromhex(IDENTITY) + bytes(32)
    for message in (b"", b"any message", event().canonical_bytes()):
        with pytest.raises(BadSignature):
            verify(PublicKeyText(f"ed25519:{key}"), message, lax_sig)


def test_small_order_r_is_rejected() -> None:
    """A signature whose R is a small-order point is rejected under a real key."""
    sig = bytes.fromhex(IDENTITY) + bytes(32)
    with pytest.raises(BadSignature):
        verify(KEY.public_key, b"message", sig)


def test_signature_over_non_canonical_bytes() -> None:
    """Non-canonical event bytes are refused before any signature check, even if signed."""
    canonical = event().canonical_bytes()
    assert b"\x19\x04\xe2" in canonical
    loose = canonical.replace(b"\x19\x04\xe2", b"\x1a\x00\x00\x04\xe2")
    with pytest.raises(EncodingError):
        SignedEvent.from_bytes(loose, KEY.sign(loose))


def test_from_bytes_round_trip() -> None:
    """Stored event bytes and signature rebuild the same signed event."""
    signed = sign_event(event(ts="2026-01-02T03:04:05Z"), KEY)
    again = SignedEvent.from_bytes(signed.canonical, signed.signature)
    assert again == signed
    again.verify(KEY.public_key)


# -- Event-CID ------------------------------------------------------------------------

PINNED_BYTES = (
    b"\xa5"
    b"\x64type" b"\x6finvoice.created"
    b"\x64ulid" b"\x78\x1a" + ULID.encode() +
    b"\x65actor" b"\x6auser:alice"
    b"\x67payload" b"\xa2" b"\x66amount" b"\x19\x04\xe2" b"\x68currency" b"\x63EUR"
    b"\x6bpolicy_root" b"\x78\x28" + b"0" * 40
)
PINNED_CID = "bafyr4idfw6jmzp5y7slyr3xrm6yvxpzolgopf3wdkpzje3pj4dbw2kmokm"


def _base32_lower(data: bytes) -> str:
    """RFC 4648 base32, lowercase, unpadded, written out bit by bit."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    bits = "".join(f"{byte:08b}" for byte in data)
    bits += "0" * (-len(bits) % 5)
    return "".join(alphabet[int(bits[i:i + 5], 2)] for i in range(0, len(bits), 5))


def test_canonical_bytes_pinned() -> None:
    """The envelope encodes to hand-built DAG-CBOR: keys length-first, shortest ints."""
    assert event().canonical_bytes() == PINNED_BYTES


def test_event_cid_pinned_and_recomputed() -> None:
    """The Event-CID is 'b' + base32(01 71 1e 20 + BLAKE3-256(bytes)), pinned for one event."""
    digest = blake3.blake3(PINNED_BYTES).digest()
    by_hand = "b" + _base32_lower(bytes([0x01, 0x71, 0x1E, 0x20]) + digest)
    assert by_hand == PINNED_CID
    assert event_cid(PINNED_BYTES) == PINNED_CID
    assert sign_event(event(), KEY).cid == PINNED_CID
    assert sign_event(event(), OTHER).cid == PINNED_CID


def test_event_cid_shape() -> None:
    """An Event-CID is 59 lowercase base32 characters starting with 'b' and validates."""
    cid = event_cid(b"anything")
    assert cid.startswith("bafyr4i") and len(cid) == 59
    assert set(cid[1:]) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert validate_event_cid(cid) == cid


def test_event_cid_excludes_signature_and_changes_with_content() -> None:
    """The CID ignores the signature and changes with any envelope field."""
    cids = {sign_event(event(**change), KEY).cid for change in (
        {}, {"ulid": "01ARZ3NDEKTSV4RRFFQ69G5FAW"}, {"payload": {}}, {"ts": "2026-01-01T00:00:00Z"},
        {"actor": "user:bob"}, {"type": "x"}, {"policy_root": "1" * 40}, {"caps": []})}
    assert len(cids) == 8


@pytest.mark.parametrize("bad", ["", "B" + PINNED_CID[1:], PINNED_CID[:-1], PINNED_CID + "a",
                                 "b" + "a" * 58, PINNED_CID.upper(), 5])
def test_invalid_event_cid(bad: object) -> None:
    """Malformed CIDs or CIDs with another prefix are refused."""
    with pytest.raises(EncodingError):
        validate_event_cid(bad)


# -- canonical JSON and BLAKE3 --------------------------------------------------------


def test_job_id_example() -> None:
    """The SPEC §3 job manifest canonicalizes exactly as given."""
    manifest = parse_json(
        '{"command":["/usr/bin/env","bash","-lc"],"args":["echo","hello"],"timeout":30,'
        '"env":{"GREETING":"hello"}}')
    assert canonical_json(manifest) == (
        b'{"args":["echo","hello"],"command":["/usr/bin/env","bash","-lc"],'
        b'"env":{"GREETING":"hello"},"timeout":30}')
    assert content_id(canonical_json(manifest)) == (
        "blake3:" + blake3.blake3(canonical_json(manifest)).hexdigest())


def test_blake3_reference_values() -> None:
    """BLAKE3 of "" and "hello" match the SPEC §3 reference values."""
    assert blake3_hex(b"") == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    assert blake3_hex(b"hello") == (
        "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f")
    assert content_id(b"") == "blake3:" + blake3_hex(b"")


def test_canonical_json_shape() -> None:
    """Canonical JSON sorts keys at every level, has no whitespace and keeps UTF-8 as is."""
    assert canonical_json({"b": [{"z": 1, "a": None}], "a": "é", "c": True}) == (
        '{"a":"é","b":[{"a":null,"z":1}],"c":true}'.encode())
    assert canonical_json({"b": 1, "a": 2}) == canonical_json({"a": 2, "b": 1})


@pytest.mark.parametrize("bad", [1.5, {"x": float("nan")}, {"x": b"raw"}, {1: "a"}, 2**64])
def test_canonical_json_rejects(bad: object) -> None:
    """Floats, bytes, non-string keys and integers beyond 64 bits have no canonical JSON."""
    with pytest.raises(EncodingError):
        canonical_json(bad)


@pytest.mark.parametrize("bad", ['{"a": 1.5}', "NaN", "Infinity", "-Infinity", '{"a":', "1e3",
                                 b'"\xff"', "[" * 100_000 + "]" * 100_000, "9" * 5000])
def test_parse_json_rejects(bad: str | bytes) -> None:
    """Floats, NaN, Infinity, malformed or hostile JSON raise `EncodingError`."""
    with pytest.raises(EncodingError):
        parse_json(bad)


def test_cbor_and_json_agree_on_the_model() -> None:
    """A value accepted by canonical JSON is accepted by DAG-CBOR too."""
    value = {"a": [1, -2, "x", None, True], "b": {"c": 2**63}}
    assert canonical_json(value)
    assert encode(value)


@given(st.binary(max_size=300))
def test_event_cid_base32_matches_the_standard_library(data: bytes) -> None:
    """The pairwise base32 of Event-CIDs equals RFC 4648 base32 (lowercase, unpadded)."""
    raw = bytes([0x01, 0x71, 0x1E, 0x20]) + blake3.blake3(data).digest()
    assert event_cid(data) == "b" + base64.b32encode(raw).decode().rstrip("=").lower()


@given(st.integers(0, 2**48 - 1), st.binary(min_size=10, max_size=10))
def test_ulid_encoding_is_crockford_base32_of_time_and_randomness(ms: int, rand: bytes) -> None:
    """encode_ulid = 26 Crockford letters of (ms << 80 | randomness); ulid_ms reads ms back."""
    number = (ms << 80) | int.from_bytes(rand, "big")
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    expected = "".join(alphabet[(number >> (5 * i)) & 31] for i in range(25, -1, -1))
    assert encode_ulid(ms, rand) == expected
    assert ulid_ms(expected) == ms


@given(st.integers(0, 2**41))
def test_timestamps_from_milliseconds_match_datetime(ms: int) -> None:
    """format_timestamp_ms (with its per-second cache) agrees with datetime, ms included."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    assert format_timestamp_ms(ms) == moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"
    assert timestamp_seconds(format_timestamp_ms(ms)) == ms // 1000
