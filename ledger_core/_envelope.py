"""The event envelope (SPEC §5) and a signed event.

`Event` is the unsigned envelope: the exact value whose canonical DAG-CBOR bytes are
signed and hashed into the Event-CID. `SignedEvent` carries those bytes, the CID and
the raw signature together so that nothing is encoded or hashed twice on the hot path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, field_validator

from ledger_core._dagcbor import check_value, decode, encode_checked
from ledger_core._ids import EventCid, event_cid
from ledger_core._keys import (
    PublicKeyText,
    SignatureText,
    SigningKey,
    check_sig_alg,
    parse_signature,
    signature_text,
    verify,
)
from ledger_core._names import validate_actor, validate_event_type
from ledger_core._ulid import validate_ulid
from ledger_core.errors import BadSignature, InvalidEvent, TooLarge

ZERO_OID = "0" * 40
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
_OID_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_TS_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")
_CAP_RE = re.compile(r"[!-~]{1,256}")
_FIELDS = ("type", "ulid", "actor", "caps", "payload", "policy_root", "sig_alg", "ts")


class Event(BaseModel):
    """An unsigned event envelope. Optional fields that are `None` are not encoded."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    type: str
    ulid: str
    actor: str
    payload: Any
    policy_root: str
    caps: tuple[str, ...] | None = None
    sig_alg: str | None = None
    ts: str | None = None

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        return validate_event_type(v)

    @field_validator("ulid")
    @classmethod
    def _ulid(cls, v: str) -> str:
        return validate_ulid(v)

    @field_validator("actor")
    @classmethod
    def _actor(cls, v: str) -> str:
        return validate_actor(v)

    @field_validator("payload")
    @classmethod
    def _payload(cls, v: Any) -> Any:
        check_value(v, "payload")
        return v

    @field_validator("policy_root")
    @classmethod
    def _policy_root(cls, v: str) -> str:
        if not _OID_RE.fullmatch(v):
            raise InvalidEvent(f"policy_root {v!r} is not a lowercase hex Git object id")
        return v

    @field_validator("caps")
    @classmethod
    def _caps(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for cap in v or ():
            if not _CAP_RE.fullmatch(cap):
                raise InvalidEvent(f"capability {cap!r} must be 1-256 printable ASCII characters")
        return v

    @field_validator("sig_alg")
    @classmethod
    def _sig_alg(cls, v: str | None) -> str | None:
        if v is not None:
            check_sig_alg(v)
        return v

    @field_validator("ts")
    @classmethod
    def _ts(cls, v: str | None) -> str | None:
        if v is not None:
            timestamp_seconds(v)
        return v

    @classmethod
    def from_value(cls, value: object) -> Event:
        """Build an envelope from a decoded map, turning validation errors into `InvalidEvent`."""
        if not isinstance(value, dict):
            raise InvalidEvent(f"an event envelope is a map, not {type(value).__name__}")
        unknown = sorted(set(value) - set(_FIELDS))
        if unknown:
            raise InvalidEvent(f"unknown envelope field(s): {', '.join(map(str, unknown))}")
        data = dict(value)
        if isinstance(data.get("caps"), list):
            data["caps"] = tuple(data["caps"])
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "envelope"
            raise InvalidEvent(f"{where}: {first['msg']}") from None

    def to_value(self) -> dict[str, Any]:
        """The map that is encoded: required fields plus the optional ones that are set."""
        value: dict[str, Any] = {
            "type": self.type,
            "ulid": self.ulid,
            "actor": self.actor,
            "payload": self.payload,
            "policy_root": self.policy_root,
        }
        if self.caps is not None:
            value["caps"] = list(self.caps)
        if self.sig_alg is not None:
            value["sig_alg"] = self.sig_alg
        if self.ts is not None:
            value["ts"] = self.ts
        return value

    def canonical_bytes(self, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> bytes:
        """Canonical DAG-CBOR of the unsigned envelope, refusing oversized events."""
        # Every field was checked when the model was built (the payload by
        # `check_value`), so the data-model walk is not repeated here.
        data = encode_checked(self.to_value())
        if len(data) > max_bytes:
            raise TooLarge(f"event is {len(data)} bytes encoded; the limit is {max_bytes}")
        return data

    @property
    def commit_time(self) -> int:
        """Seconds since the epoch for the journal commit: from `ts`, or 0 when absent."""
        return 0 if self.ts is None else timestamp_seconds(self.ts)


def timestamp_seconds(ts: str) -> int:
    """Whole seconds since 1970 of an RFC 3339 UTC timestamp (`...Z`)."""
    if not _TS_RE.fullmatch(ts):
        raise InvalidEvent(f"ts {ts!r} is not RFC 3339 UTC like 2026-01-02T03:04:05Z")
    year, month, day = int(ts[0:4]), int(ts[5:7]), int(ts[8:10])
    hour, minute, second = int(ts[11:13]), int(ts[14:16]), int(ts[17:19])
    if not (1 <= month <= 12 and 1 <= day <= _days_in_month(year, month)
            and hour < 24 and minute < 60 and second < 60):
        raise InvalidEvent(f"ts {ts!r} is not a valid date and time")
    if year < 1970:
        raise InvalidEvent(f"ts {ts!r} is before 1970")
    return _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _days_from_civil(year: int, month: int, day: int) -> int:
    # Howard Hinnant's days_from_civil: days since 1970-01-01 in the proleptic Gregorian calendar.
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


_last_second: list[tuple[int, str]] = [(-1, "")]


def format_timestamp_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. for a `ts` derived from a ULID."""
    second = ms // 1000
    cached, prefix = _last_second[0]  # events come in bursts within one second
    if cached != second:
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _last_second[0] = (second, prefix)
    return f"{prefix}.{ms % 1000:03d}Z"


@dataclass(frozen=True)
class SignedEvent:
    """An envelope, its canonical bytes, its Event-CID and its raw signature."""

    event: Event
    canonical: bytes
    cid: EventCid
    signature: bytes

    @property
    def signature_text(self) -> SignatureText:
        return signature_text(self.signature)

    @property
    def sig_alg(self) -> str:
        return check_sig_alg(self.event.sig_alg)

    def verify(self, public_key: PublicKeyText) -> None:
        """Raise `BadSignature`/`UnknownSigAlg` unless `public_key` signed these bytes."""
        check_sig_alg(self.event.sig_alg, public_key)
        verify(public_key, self.canonical, self.signature)

    @classmethod
    def create(cls, event: Event, signature: bytes | str,
               max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> SignedEvent:
        """Pair an envelope with a signature made elsewhere (client-signed events)."""
        raw = signature if isinstance(signature, bytes) else parse_signature(signature)
        if len(raw) != 64:
            raise BadSignature(f"an ed25519 signature is 64 bytes, not {len(raw)}")
        data = event.canonical_bytes(max_bytes)
        return cls(event, data, event_cid(data), raw)

    @classmethod
    def from_bytes(cls, canonical: bytes, signature: bytes) -> SignedEvent:
        """Decode stored `event.cbor` bytes strictly and pair them with `event.sig`."""
        event = Event.from_value(decode(canonical))
        return cls(event, bytes(canonical), event_cid(canonical), bytes(signature))


def sign_event(event: Event, key: SigningKey,
               max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> SignedEvent:
    """Sign the canonical bytes of `event` with `key` (node-signed events)."""
    check_sig_alg(event.sig_alg, key.public_key)
    data = event.canonical_bytes(max_bytes)
    return SignedEvent(event, data, event_cid(data), key.sign(data))

