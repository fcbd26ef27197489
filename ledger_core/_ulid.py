"""ULIDs: 26 characters of Crockford base32, 48-bit millisecond time + 80 random bits.

The core only validates and encodes; the clock and the randomness come from an
adapter (see `gatosd`), so nothing here reads the time.
"""

from __future__ import annotations

import re

from ledger_core.errors import InvalidEvent

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ULID_RE = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
# 128 bits and two zero bits above them are 13 groups of 10 bits, each two letters:
# a ULID is 13 table lookups instead of 26 shifts (one per node-signed event).
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = range(120, -1, -10)


def validate_ulid(value: object) -> str:
    """Return `value` if it is a canonical (uppercase) ULID, else raise `InvalidEvent`."""
    if not isinstance(value, str) or not _ULID_RE.fullmatch(value):
        raise InvalidEvent(f"invalid ulid {value!r}: expected 26 uppercase Crockford base32 characters")
    return value


def encode_ulid(ms: int, randomness: bytes) -> str:
    """Build a ULID from a millisecond timestamp and 10 random bytes."""
    if not 0 <= ms < 2**48 or len(randomness) != 10:
        raise InvalidEvent("a ULID needs 0 <= ms < 2^48 and 10 bytes of randomness")
    number = (ms << 80) | int.from_bytes(randomness, "big")
    pairs = _PAIRS
    return "".join([pairs[(number >> s) & 0x3FF] for s in _SHIFTS])


# Crockford's letters to the base-32 digits `int(text, 32)` reads (0-9, A-V): the
# timestamp is one C call instead of ten steps of a Python loop.
_TO_INT32 = str.maketrans(_ALPHABET, "0123456789ABCDEFGHIJKLMNOPQRSTUV")


def ulid_ms(value: str) -> int:
    """The millisecond timestamp inside a ULID."""
    return int(validate_ulid(value)[:10].translate(_TO_INT32), 32)
