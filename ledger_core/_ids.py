"""Content identifiers (SPEC §3): Event-CID and `blake3:` content ids."""

from __future__ import annotations

import base64
import re
from typing import NewType

import blake3

from ledger_core.errors import EncodingError

EventCid = NewType("EventCid", str)
ContentId = NewType("ContentId", str)

# CIDv1 = <version 1><codec dag-cbor 0x71><multihash: code blake3 0x1e, length 32, digest>.
# All four prefix numbers are < 0x80, so each is its own one-byte unsigned varint.
_CID_PREFIX = bytes([0x01, 0x71, 0x1E, 0x20])
_CID_RE = re.compile(r"b[a-z2-7]{58}")
# Base32 by pairs of letters: a 36-byte CID is 288 bits, two zero bits more make 29
# groups of 10 bits, each one of 1,024 two-letter strings. Twice as fast as
# `base64.b32encode` (a pure-Python loop), and every event is encoded at least once.
_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_B32_PAIRS = [a + b for a in _B32 for b in _B32]
_SHIFTS = range(280, -1, -10)
_CONTENT_ID_RE = re.compile(r"blake3:[0-9a-f]{64}")


def blake3_hex(data: bytes) -> str:
    """Lowercase hex BLAKE3-256 of `data`."""
    return blake3.blake3(data).hexdigest()


def content_id(data: bytes) -> ContentId:
    """`blake3:<hex>` of canonical bytes (job ids, proposal ids, state roots)."""
    return ContentId(f"blake3:{blake3_hex(data)}")


def event_cid(canonical_bytes: bytes) -> EventCid:
    """CIDv1 (dag-cbor, BLAKE3-256 multihash) in base32 lowercase, of the unsigned envelope."""
    n = int.from_bytes(_CID_PREFIX + blake3.blake3(canonical_bytes).digest(), "big") << 2
    pairs = _B32_PAIRS
    return EventCid("b" + "".join([pairs[(n >> s) & 0x3FF] for s in _SHIFTS]))


def validate_event_cid(value: object) -> EventCid:
    """Check the textual shape of an Event-CID (prefix and length)."""
    if not isinstance(value, str) or not _CID_RE.fullmatch(value):
        raise EncodingError(f"{value!r} is not a base32 CIDv1 (dag-cbor, blake3)")
    padded = value[1:].upper() + "=" * (-len(value[1:]) % 8)
    if not base64.b32decode(padded).startswith(_CID_PREFIX):
        raise EncodingError(f"{value!r} is not a dag-cbor/blake3 CIDv1")
    return EventCid(value)


def validate_content_id(value: object) -> ContentId:
    """Check `blake3:<64 lowercase hex>`."""
    if not isinstance(value, str) or not _CONTENT_ID_RE.fullmatch(value):
        raise EncodingError(f"{value!r} is not blake3:<64 lowercase hex>")
    return ContentId(value)
