"""One message as a Git commit, byte for byte.

A message is a signed envelope (`ledger_core.Event`, type `gmb.message`) whose payload
is `{"topic", "key", "headers", "body"}`; its commit is

    tree    = event.cbor (canonical bytes) + event.sig (raw ed25519 signature)
    message = "gmb.message\\n\\n" + trailers Topic, Shard, Position, Segment,
              Segment-Start, Segment-Bytes, Shard-Map, Ulid, Actor, Event-CID, Body-Hash, Sig
    parents = the previous message of the shard (none for the first, or a summary commit
              after pruning)
    time    = the envelope's `ts`, itself taken from the ULID

so the same message at the same place of the same shard is the same commit on every
node. The signed bytes hold what the publisher said (topic, key, headers, body, ULID);
the place (shard, position, segment) is the bus's and lives in the trailers only.
`Body-Hash` is BLAKE3 of the canonical `{"body","headers","key"}`: the duplicate check
compares it, never the signature or the time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ledger_core import (
    EVENT_FILE,
    SIG_FILE,
    Commit,
    Event,
    GitObject,
    ObjectId,
    ObjectStore,
    SignedEvent,
    TreeEntry,
    blake3_hex,
    encode,
    encode_commit,
    encode_tree,
    format_timestamp_ms,
    ulid_ms,
)
from ledger_core._dagcbor import check_value, encode_checked
from ledger_core._gitobj import MODE_BLOB, format_trailers, signature_line
from ledger_core._ids import event_cid
from ledger_core._keys import SigningKey, signature_text
from ledger_core.errors import EncodingError, InvalidEvent, LedgerError, TooLarge
from mind_bus.errors import InvalidMessage

MESSAGE_TYPE = "gmb.message"
MAX_HEADERS = 64


def check_message(payload: Any, key: str | None, headers: dict[str, str] | None) -> bytes:
    """Validate what a publisher sends; return the canonical `{"body","headers","key"}` bytes.

    Raises:
        InvalidMessage: a float, a non-string key or header, too many headers.
    """
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 256):
        raise InvalidMessage("`key` must be a string of 1..256 characters")
    if headers is not None and (not isinstance(headers, dict) or len(headers) > MAX_HEADERS or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items())):
        raise InvalidMessage(f"`headers` must map strings to strings (at most {MAX_HEADERS})")
    try:
        return encode({"body": payload, "headers": headers or {}, "key": key})
    except EncodingError as exc:
        raise InvalidMessage(f"the payload is not a canonical value: {exc.reason}") from None


def body_hash(canonical_body: bytes) -> str:
    return blake3_hex(canonical_body)


def message_event(topic: str, payload: Any, *, key: str | None, headers: dict[str, str] | None,
                  ulid: str, publisher: str, policy_root: str, checked: bool = False,
                  ms: int | None = None) -> Event:
    """The envelope the publisher signs; `ts` comes from the ULID (deterministic commits).

    `checked`: every part was validated already (topic, ULID, actor and policy root by
    their validators, `payload`/`key`/`headers` by `check_message`), so the envelope is
    built without validating it a second time (the bus writer's hot path; `ms` is then
    the ULID's milliseconds, already parsed). The bytes are the same either way.
    """
    if checked:
        return Event.model_construct(
            type=MESSAGE_TYPE, ulid=ulid, actor=publisher,
            payload={"topic": topic, "key": key, "headers": headers or {}, "body": payload},
            policy_root=policy_root, ts=format_timestamp_ms(ulid_ms(ulid) if ms is None else ms))
    try:
        return Event.from_value({
            "type": MESSAGE_TYPE, "ulid": ulid, "actor": publisher,
            "payload": {"topic": topic, "key": key, "headers": headers or {}, "body": payload},
            "policy_root": policy_root, "ts": format_timestamp_ms(ulid_ms(ulid)),
        })
    except InvalidEvent as exc:
        raise InvalidMessage(exc.reason) from None
    except LedgerError as exc:
        raise InvalidMessage(exc.reason) from None


@dataclass(frozen=True)
class Place:
    """Where a message sits: shard, position (from 1), segment, shard-map version.

    `segment_start` and `segment_bytes` (the segment's first position and its bytes so
    far, this message included) let the writer decide rotation from the head alone.
    """

    topic: str
    shard: int
    position: int
    segment: int
    shard_map: int
    segment_start: int
    segment_bytes: int


class KnownObject(GitObject):
    """A `GitObject` whose id was computed once (`GitObject.oid` hashes on every access)."""

    __slots__ = ("_oid",)

    def __init__(self, kind: Any, data: bytes, oid: ObjectId) -> None:
        super().__init__(kind, data)
        object.__setattr__(self, "_oid", oid)

    @property
    def oid(self) -> ObjectId:
        return self._oid  # type: ignore[no-any-return]


_EVENT_ENTRY = f"{MODE_BLOB} {EVENT_FILE}\0".encode()
_SIG_ENTRY = f"{MODE_BLOB} {SIG_FILE}\0".encode()
assert EVENT_FILE.encode() < SIG_FILE.encode()  # Git's tree order: event.cbor, then event.sig
_idents: dict[str, str] = {}


def _hashed(kind: bytes, data: bytes) -> bytes:
    return hashlib.sha1(b"%s %d\0%s" % (kind, len(data), data), usedforsecurity=False).digest()


@dataclass(frozen=True)
class Presigned:
    """A message envelope checked and encoded (and signed, unless `signature` is empty)
    ahead of the bus writer, by the daemon, off the writer's path.

    `digest` is the `Body-Hash`; `policy_root` the root the envelope names: the writer
    uses the envelope only if that is still its own policy root, else it signs again.
    An empty `signature` means "sign these bytes": the signature is a function of the
    key and `canonical` alone, so which process computes it changes nothing stored.
    """

    digest: str
    canonical: bytes
    signature: bytes
    cid: str
    policy_root: str


def _text(value: str) -> bytes:
    """Canonical CBOR of a text string (major type 3, shortest length)."""
    data = value.encode()
    n = len(data)
    if n < 24:
        return bytes((0x60 + n,)) + data
    if n < 0x100:
        return bytes((0x78, n)) + data
    if n < 0x10000:
        return b"\x79" + n.to_bytes(2, "big") + data
    return b"\x7a" + n.to_bytes(4, "big") + data


# The map keys of the body (`Body-Hash`) and of the envelope, each in canonical order
# (shorter first, then bytewise), as their canonical CBOR.
_K_KEY, _K_BODY, _K_HEADERS, _K_TOPIC = _text("key"), _text("body"), _text("headers"), _text("topic")
_ENV_HEAD = b"\xa6" + _text("ts")
_ENV_TYPE = _text("type") + _text(MESSAGE_TYPE) + _text("ulid")
_ENV_ACTOR, _ENV_PAYLOAD, _ENV_POLICY = _text("actor"), _text("payload"), _text("policy_root")
_EMPTY_MAP, _NULL = b"\xa0", b"\xf6"


def _checked_cbor(value: Any, what: str) -> bytes:
    try:
        check_value(value)
    except EncodingError as exc:
        raise InvalidMessage(f"the {what} is not a canonical value: {exc.reason}") from None
    return encode_checked(value)


EnvelopeEncoder = Callable[[str, Any, "str | None", "dict[str, str] | None", str, str, str, str, str],
                          "tuple[str, bytes, str] | None"]
"""`(message_type, payload, key, headers, topic, ulid, publisher, policy_root, ts)` to
`(digest, canonical, cid)` as `presign` computes them, or None to leave the message to
Python (`gatos_native.envelope`: the same bytes for the plain data model, None for
anything else, so every error is still Python's). `key` and `headers` come checked."""


def presign(key_for: Callable[[str], SigningKey], max_bytes: int, topic: str, payload: Any, *,
            key: str | None, headers: dict[str, str] | None, ulid: str, publisher: str,
            policy_root: str, ms: int | None = None, sign: bool = True,
            envelope: EnvelopeEncoder | None = None) -> Presigned:
    """Check a message and sign its envelope, as the writer would (`key_for(actor)`: the
    node-held key; `max_bytes`: the node's event size limit; `ms`: the ULID's
    milliseconds when the caller has them; `sign=False`: leave the signature to the
    writer, see `Presigned`; `envelope`: a native encoder of the same bytes, see
    `EnvelopeEncoder`).

    The payload is checked and encoded once; the canonical bytes of the body map
    (`Body-Hash`) and of the envelope are put together around it, field by field in
    canonical key order, without building an `Event` or encoding anything twice: the
    same bytes as `sign_event(message_event(...))` (`test_presign_matches_sign_event`,
    and a property test over payloads, keys and headers). `topic`, `ulid`, `publisher`
    and `policy_root` must be valid already.

    Raises:
        InvalidMessage: what `check_message` refuses.
        TooLarge: the envelope is over `max_bytes`.
    """
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 256):
        raise InvalidMessage("`key` must be a string of 1..256 characters")
    if headers:
        if not isinstance(headers, dict) or len(headers) > MAX_HEADERS or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise InvalidMessage(f"`headers` must map strings to strings (at most {MAX_HEADERS})")
        enc_headers = _checked_cbor(headers, "headers")
    elif headers is None or isinstance(headers, dict):
        enc_headers = _EMPTY_MAP
    else:
        raise InvalidMessage(f"`headers` must map strings to strings (at most {MAX_HEADERS})")
    ts = format_timestamp_ms(ulid_ms(ulid) if ms is None else ms)
    if envelope is not None:
        got = envelope(MESSAGE_TYPE, payload, key, headers or None, topic, ulid, publisher, policy_root, ts)
        if got is not None:
            digest, canonical, cid = got
            if len(canonical) > max_bytes:
                raise TooLarge(f"event is {len(canonical)} bytes encoded; the limit is {max_bytes}")
            signature = key_for(publisher).sign(canonical) if sign else b""
            return Presigned(digest, canonical, signature, cid, policy_root)
    enc_body = _checked_cbor(payload, "payload")
    if key is None:
        enc_key = _NULL
    else:
        try:
            enc_key = _text(key)
        except UnicodeEncodeError:
            raise InvalidMessage("the key is not a canonical value: it holds a lone surrogate") from None
    key_body = _K_KEY + enc_key + _K_BODY + enc_body
    digest = blake3_hex(b"\xa3" + key_body + _K_HEADERS + enc_headers)
    canonical = b"".join((
        _ENV_HEAD, _text(ts), _ENV_TYPE, _text(ulid), _ENV_ACTOR, _text(publisher), _ENV_PAYLOAD,
        b"\xa4", key_body, _K_TOPIC, _text(topic), _K_HEADERS, enc_headers,
        _ENV_POLICY, _text(policy_root)))
    if len(canonical) > max_bytes:
        raise TooLarge(f"event is {len(canonical)} bytes encoded; the limit is {max_bytes}")
    signature = key_for(publisher).sign(canonical) if sign else b""
    return Presigned(digest, canonical, signature, event_cid(canonical), policy_root)


def message_commit(signed: SignedEvent, place: Place, parent: ObjectId | None,
                   digest: str, seconds: int | None = None) -> tuple[list[GitObject], ObjectId]:
    """The four objects of a message commit and the commit id (`seconds`: the commit
    time when the caller knows it, i.e. the ULID's milliseconds // 1000)."""
    ev = signed.event
    return message_commit_parts(signed.canonical, signed.signature, signed.cid, ev.actor, ev.ulid,
                                ev.commit_time if seconds is None else seconds, place, parent, digest)


def message_commit_parts(canonical: bytes, signature: bytes, cid: str, actor: str, ulid: str,
                         seconds: int, place: Place, parent: ObjectId | None,
                         digest: str) -> tuple[list[GitObject], ObjectId]:
    """`message_commit` from the envelope's parts.

    Built directly as bytes, each object hashed once; `encode_tree`, `encode_commit`
    and `format_trailers` give the same bytes (`test_message_commit_matches_generic_encoders`).
    Every value written was validated on its way in (topic, actor, ULID) or is made
    here (numbers, hex, the CID).
    """
    event_raw = _hashed(b"blob", canonical)
    sig_raw = _hashed(b"blob", signature)
    tree_data = _EVENT_ENTRY + event_raw + _SIG_ENTRY + sig_raw
    tree_oid = ObjectId(_hashed(b"tree", tree_data).hex())
    name = _idents.get(actor) or _ident(actor)
    if "\n" in place.topic or "\n" in ulid:
        raise InvalidMessage("a trailer value cannot hold a newline")
    ident = f"{name} {seconds} +0000"
    parent_line = f"parent {parent}\n" if parent else ""
    text = (f"tree {tree_oid}\n{parent_line}author {ident}\ncommitter {ident}\n\n{MESSAGE_TYPE}\n\n"
            f"Topic: {place.topic}\nShard: {place.shard}\nPosition: {place.position}\n"
            f"Segment: {place.segment}\nSegment-Start: {place.segment_start}\n"
            f"Segment-Bytes: {place.segment_bytes}\nShard-Map: {place.shard_map}\n"
            f"Ulid: {ulid}\nActor: {actor}\nEvent-CID: {cid}\nBody-Hash: {digest}\n"
            f"Sig: {signature_text(signature)}\n")
    commit_data = text.encode()
    commit_oid = ObjectId(_hashed(b"commit", commit_data).hex())
    return [KnownObject("blob", canonical, ObjectId(event_raw.hex())),
            KnownObject("blob", signature, ObjectId(sig_raw.hex())),
            KnownObject("tree", tree_data, tree_oid),
            KnownObject("commit", commit_data, commit_oid)], commit_oid


MessageSpec = tuple[bytes, bytes, bytes | None, str, str, str, int, str, int, int, int, int, int, int,
                    ObjectId | None, int, str]
"""One message commit to build: `(canonical, signature, seed, cid, actor, ulid, seconds,
topic, shard, position, segment, segment_start, segment_bytes, shard_map, parent,
chain, digest)`. An empty `signature` is made with the 32-byte ed25519 `seed`; the
parent is the commit of spec `chain` of the same batch when `chain >= 0`, else
`parent`. `topic`, `actor` and `ulid` are valid (`message_commit_parts` checks the
rest the same way whichever builder runs)."""


def build_messages(specs: list[MessageSpec]) -> tuple[list[ObjectId], list[GitObject]]:
    """The commits of a batch of specs and their objects, in order (the reference
    builder; `gatos_native.messages` gives the same ids and pack entries)."""
    oids: list[ObjectId] = []
    objects: list[GitObject] = []
    for (canonical, signature, seed, cid, actor, ulid, seconds, topic, shard, position, segment,
         start, used, shard_map, parent, chain, digest) in specs:
        if not signature:
            signature = SigningKey(seed or b"").sign(canonical)
        place = Place(topic, shard, position, segment, shard_map, start, used)
        new, oid = message_commit_parts(canonical, signature, cid, actor, ulid, seconds, place,
                                        oids[chain] if chain >= 0 else parent, digest)
        objects.extend(new)
        oids.append(oid)
    return oids, objects


def _ident(actor: str) -> str:
    """`actor <actor>` for a commit's author line, checked (refuses '<', '>' and newlines)
    and cached in `_idents`."""
    signature_line(actor, actor, 0)
    name = _idents[actor] = f"{actor} <{actor}>"
    if len(_idents) > 4096:
        _idents.clear()
    return name


def check_commit_fields(actor: str, topic: str, ulid: str) -> None:
    """What `message_commit_parts` refuses of the names it writes, checked ahead (for a
    builder that does not check them itself)."""
    if actor not in _idents:
        _ident(actor)  # (checked once: the native builder never fills the cache itself)
    if "\n" in topic or "\n" in ulid:
        raise InvalidMessage("a trailer value cannot hold a newline")


def message_commit_generic(signed: SignedEvent, place: Place, parent: ObjectId | None,
                           digest: str) -> tuple[list[GitObject], ObjectId]:
    """`message_commit` through the generic encoders (the reference the tests compare with)."""
    event_blob = GitObject("blob", signed.canonical)
    sig_blob = GitObject("blob", signed.signature)
    tree = GitObject("tree", encode_tree([TreeEntry(EVENT_FILE, MODE_BLOB, event_blob.oid),
                                          TreeEntry(SIG_FILE, MODE_BLOB, sig_blob.oid)]))
    ev = signed.event
    ident = signature_line(ev.actor, ev.actor, ev.commit_time)
    trailers = format_trailers([
        ("Topic", place.topic), ("Shard", str(place.shard)), ("Position", str(place.position)),
        ("Segment", str(place.segment)), ("Segment-Start", str(place.segment_start)),
        ("Segment-Bytes", str(place.segment_bytes)), ("Shard-Map", str(place.shard_map)),
        ("Ulid", ev.ulid), ("Actor", ev.actor), ("Event-CID", signed.cid),
        ("Body-Hash", digest), ("Sig", signed.signature_text),
    ])
    commit = GitObject("commit", encode_commit(tree.oid, (parent,) if parent else (), ident, ident,
                                               f"{MESSAGE_TYPE}\n\n{trailers}"))
    return [event_blob, sig_blob, tree, commit], commit.oid


@dataclass(frozen=True)
class StoredMessage:
    """A message read back from its commit."""

    commit: ObjectId
    topic: str
    shard: int
    position: int
    segment: int
    ulid: str
    actor: str
    key: str | None
    headers: dict[str, str]
    payload: Any
    size: int
    body_hash: str

    def frame(self) -> dict[str, Any]:
        return {"topic": self.topic, "shard": self.shard, "position": self.position,
                "ulid": self.ulid, "key": self.key, "headers": self.headers,
                "publisher": self.actor, "commit": self.commit, "payload": self.payload}


def is_summary(commit: Commit) -> bool:
    return commit.subject == "gmb.summary"


def read_message(objects: ObjectStore, oid: ObjectId, commit: Commit | None = None) -> StoredMessage:
    """Decode a message commit (trailers for the place, `event.cbor` for the content)."""
    commit = commit or objects.read_commit(oid)
    trailers = commit.trailers
    blobs = {e.name: e.oid for e in objects.read_tree(commit.tree)}
    data = objects.read_blob(blobs[EVENT_FILE])
    signed = SignedEvent.from_bytes(data, objects.read_blob(blobs[SIG_FILE]))
    body = signed.event.payload
    return StoredMessage(oid, trailers["Topic"], int(trailers["Shard"]), int(trailers["Position"]),
                         int(trailers["Segment"]), trailers["Ulid"], trailers["Actor"], body["key"],
                         dict(body["headers"]), body["body"], len(data), trailers["Body-Hash"])


__all__ = ["MESSAGE_TYPE", "EnvelopeEncoder", "KnownObject", "MessageSpec", "Place", "Presigned",
           "StoredMessage", "body_hash",
           "build_messages", "check_commit_fields", "check_message", "is_summary", "message_commit",
           "message_commit_generic", "message_commit_parts", "message_event", "presign", "read_message"]
