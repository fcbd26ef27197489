"""Grant and revocation documents: build, sign, and check one document on its own.

A grant says: `issuer` gives `subject` the capabilities `caps`, for this node
(`aud`), from `iat` until `exp` (no `exp`: until revoked). Its id is the `blake3:`
content id of the canonical JSON without `grant_id`; the issuer signs the canonical
JSON of the whole document (with a domain prefix, so a grant signature can never be
replayed as an event or a revocation signature). The signature lives beside the
document (`<hex>.sig`), as an event's does, so the document stays plain data.

A revocation is the published v1 shape (`grant_id`, `revocation_id`, `reason`,
`revoked_by`; `gatos-schemas/v1/governance/revocation.schema.json`), signed the
same way by `revoked_by`.

Whether a grant *counts* (issuer trust, no escalation, expiry, revocation) depends
on the whole trust view and the time: see `TrustView.holds`.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ledger_core import (
    PublicKeyText,
    SigningKey,
    canonical_json,
    content_id,
    parse_signature,
    validate_actor,
    validate_content_id,
    verify,
)
from ledger_core.errors import LedgerError
from policy._caps import validate_pattern
from policy.errors import InvalidGrant

GRANT_DOMAIN = b"gatos.grant.v1\n"
REVOCATION_DOMAIN = b"gatos.revocation.v1\n"
_TS_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_GRANT_KEYS = {"type", "version", "grant_id", "issuer", "subject", "caps", "aud", "iat", "exp"}


def parse_time(text: object, what: str = "time") -> int:
    """RFC 3339 UTC (`YYYY-MM-DDTHH:MM:SSZ`) → seconds since the epoch."""
    if not isinstance(text, str) or not _TS_RE.fullmatch(text):
        raise InvalidGrant(f"{what} {text!r} is not RFC 3339 UTC like 2030-01-01T00:00:00Z")
    try:
        return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        raise InvalidGrant(f"{what} {text!r} is not a valid date") from None


def format_time(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@dataclass(frozen=True)
class Grant:
    """A grant document checked for shape, id, audience-independent fields and signature."""

    grant_id: str
    issuer: str
    subject: str
    caps: tuple[str, ...]
    aud: str
    iat: int
    exp: int | None
    doc: dict[str, Any]

    def live_at(self, now: int) -> bool:
        return self.iat <= now and (self.exp is None or now < self.exp)


def _grant_body(issuer: str, subject: str, caps: list[str], aud: str, iat: int,
                exp: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "gatos.grant", "version": 1, "issuer": validate_actor(issuer),
        "subject": validate_actor(subject), "caps": sorted({validate_pattern(c) for c in caps}),
        "aud": aud, "iat": format_time(iat)}
    if not body["caps"]:
        raise InvalidGrant("a grant needs at least one capability")
    if exp is not None:
        if exp <= iat:
            raise InvalidGrant("a grant must expire after it was issued")
        body["exp"] = format_time(exp)
    return body


def make_grant(key: SigningKey, *, issuer: str, subject: str, caps: list[str], aud: str,
               iat: int, exp: int | None) -> tuple[dict[str, Any], str]:
    """A signed grant: (document, `ed25519:<hex>` signature)."""
    body = _grant_body(issuer, subject, caps, aud, iat, exp)
    doc = {**body, "grant_id": content_id(canonical_json(body))}
    sig = key.sign(GRANT_DOMAIN + canonical_json(doc))
    return doc, f"ed25519:{sig.hex()}"


def _signed_by_any(keys: Sequence[PublicKeyText], message: bytes, raw: bytes) -> bool:
    """Whether one of `keys` (an actor may hold several) signed `message`."""
    for key in keys:
        try:
            verify(key, message, raw)
            return True
        except LedgerError:
            continue
    return False


def check_grant(doc: Any, sig: str, keys: tuple[PublicKeyText, ...] | list[PublicKeyText]) -> Grant:
    """Shape, id and signature of one grant (by one of the issuer's trusted keys).

    Raises:
        InvalidGrant: malformed, wrong id, or no trusted key of the issuer signed it.
    """
    if not isinstance(doc, dict) or set(doc) - _GRANT_KEYS or doc.get("type") != "gatos.grant" \
            or doc.get("version") != 1:
        raise InvalidGrant("not a gatos.grant v1 document")
    try:
        iat = parse_time(doc.get("iat"), "iat")
        exp = parse_time(doc["exp"], "exp") if "exp" in doc else None
        caps = doc.get("caps")
        if not isinstance(caps, list) or not isinstance(doc.get("aud"), str):
            raise InvalidGrant("caps must be a list and aud a string")
        body = _grant_body(doc.get("issuer"), doc.get("subject"), caps, doc["aud"], iat, exp)
        if body != {k: v for k, v in doc.items() if k != "grant_id"}:
            raise InvalidGrant("grant fields are not in canonical form")
        grant_id = validate_content_id(doc.get("grant_id"))
        if grant_id != content_id(canonical_json(body)):
            raise InvalidGrant(f"grant_id {grant_id} is not the content id of the grant")
        if not keys:
            raise InvalidGrant(f"issuer {body['issuer']} has no trusted key")
        if not _signed_by_any(keys, GRANT_DOMAIN + canonical_json(doc), parse_signature(sig)):
            raise InvalidGrant(f"signature does not verify under a trusted key of {body['issuer']}")
    except InvalidGrant:
        raise
    except LedgerError as exc:
        raise InvalidGrant(exc.reason) from exc
    return Grant(grant_id, body["issuer"], body["subject"], tuple(body["caps"]), body["aud"],
                 iat, exp, doc)


@dataclass(frozen=True)
class Revocation:
    revocation_id: str
    grant_id: str
    revoked_by: str
    reason: str | None


def _revocation_body(grant_id: str, revoked_by: str, reason: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"grant_id": validate_content_id(grant_id),
                            "revoked_by": validate_actor(revoked_by)}
    if reason is not None:
        if not 1 <= len(reason) <= 256 or "\n" in reason:
            raise InvalidGrant("a revocation reason is one line of 1 to 256 characters")
        body["reason"] = reason
    return body


def make_revocation(key: SigningKey, *, grant_id: str, revoked_by: str, reason: str | None
                    ) -> tuple[dict[str, Any], str]:
    """A signed revocation (schema v1 shape): (document, signature)."""
    body = _revocation_body(grant_id, revoked_by, reason)
    doc = {**body, "revocation_id": content_id(REVOCATION_DOMAIN + canonical_json(body))}
    sig = key.sign(REVOCATION_DOMAIN + canonical_json(doc))
    return doc, f"ed25519:{sig.hex()}"


def check_revocation(doc: Any, sig: str, keys: tuple[PublicKeyText, ...] | list[PublicKeyText]
                     ) -> Revocation:
    """Shape, id and signature (by a trusted key of `revoked_by`) of one revocation."""
    if not isinstance(doc, dict) or set(doc) - {"grant_id", "revocation_id", "reason", "revoked_by"}:
        raise InvalidGrant("not a v1 revocation document")
    try:
        body = _revocation_body(doc.get("grant_id"), doc.get("revoked_by"), doc.get("reason"))
        if doc.get("revocation_id") != content_id(REVOCATION_DOMAIN + canonical_json(body)):
            raise InvalidGrant("revocation_id is not the content id of the revocation")
        if not _signed_by_any(keys, REVOCATION_DOMAIN + canonical_json(doc), parse_signature(sig)):
            raise InvalidGrant(f"revocation not signed by a trusted key of {body['revoked_by']}")
    except InvalidGrant:
        raise
    except LedgerError as exc:
        raise InvalidGrant(exc.reason) from exc
    return Revocation(doc["revocation_id"], body["grant_id"], body["revoked_by"], body.get("reason"))


__all__ = ["Grant", "Revocation", "check_grant", "check_revocation", "format_time",
           "make_grant", "make_revocation", "parse_time"]
