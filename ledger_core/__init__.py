"""The pure ledger core: envelopes, canonical bytes, ids, signatures, ports, journal rules.

No I/O lives here (no pygit2, os, sockets, asyncio or clocks); adapters implement the
ports and inject time and randomness.
"""

from __future__ import annotations

from ledger_core._canonical_json import canonical_json, parse_json, unique_pairs
from ledger_core._dagcbor import check_value, decode, encode
from ledger_core._envelope import (
    DEFAULT_MAX_EVENT_BYTES,
    ZERO_OID,
    Event,
    SignedEvent,
    format_timestamp_ms,
    sign_event,
    timestamp_seconds,
)
from ledger_core._gitobj import (
    Commit,
    GitObject,
    ObjectId,
    TreeEntry,
    encode_commit,
    encode_tree,
    object_id,
    parse_commit,
    parse_trailers,
    parse_tree,
)
from ledger_core._ids import (
    ContentId,
    EventCid,
    blake3_hex,
    content_id,
    event_cid,
    validate_content_id,
    validate_event_cid,
)
from ledger_core._journal import AppendResult, Gate, Journal, RetryPolicy, verify_signed
from ledger_core._journal_commit import EVENT_FILE, SIG_FILE, journal_commit
from ledger_core._keys import (
    SIG_ALGS,
    PublicKeyText,
    SignatureText,
    SigningKey,
    check_sig_alg,
    parse_public_key,
    parse_signature,
    verify,
)
from ledger_core._names import (
    JOURNAL_PREFIX,
    Actor,
    RefName,
    actor_path,
    journal_ref,
    normalize_actor,
    parse_journal_ref,
    validate_actor,
    validate_component,
    validate_event_type,
    validate_namespace,
    validate_ref_name,
)
from ledger_core._ports import KeyResolver, ObjectStore, RefLock, RefStore
from ledger_core._reading import JournalEntry, read_entry, read_range
from ledger_core._trust import TRUST_REF, TrustStore
from ledger_core._ulid import encode_ulid, ulid_ms, validate_ulid
from ledger_core._verify import Problem, VerifyReport, verify_all, verify_journal

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "EVENT_FILE",
    "JOURNAL_PREFIX",
    "SIG_ALGS",
    "SIG_FILE",
    "TRUST_REF",
    "ZERO_OID",
    "Actor",
    "AppendResult",
    "Commit",
    "ContentId",
    "Event",
    "EventCid",
    "Gate",
    "GitObject",
    "Journal",
    "JournalEntry",
    "KeyResolver",
    "ObjectId",
    "ObjectStore",
    "Problem",
    "PublicKeyText",
    "RefLock",
    "RefName",
    "RefStore",
    "RetryPolicy",
    "SignatureText",
    "SignedEvent",
    "SigningKey",
    "TreeEntry",
    "TrustStore",
    "VerifyReport",
    "actor_path",
    "blake3_hex",
    "canonical_json",
    "check_sig_alg",
    "check_value",
    "content_id",
    "decode",
    "encode",
    "encode_commit",
    "encode_tree",
    "encode_ulid",
    "event_cid",
    "format_timestamp_ms",
    "journal_commit",
    "journal_ref",
    "normalize_actor",
    "object_id",
    "parse_commit",
    "parse_journal_ref",
    "parse_json",
    "parse_public_key",
    "parse_signature",
    "parse_trailers",
    "parse_tree",
    "read_entry",
    "read_range",
    "sign_event",
    "timestamp_seconds",
    "ulid_ms",
    "unique_pairs",
    "validate_actor",
    "validate_component",
    "validate_content_id",
    "validate_event_cid",
    "validate_event_type",
    "validate_namespace",
    "validate_ref_name",
    "validate_ulid",
    "verify",
    "verify_all",
    "verify_journal",
    "verify_signed",
]
