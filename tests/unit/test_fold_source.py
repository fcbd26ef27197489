"""The fold's commit reader: the one-step layout match agrees with the general parser."""

from __future__ import annotations

import re

import pytest

from echo_fold import _source
from ledger_core import ObjectId, SigningKey, encode_ulid, format_timestamp_ms, journal_commit, sign_event
from ledger_core._envelope import Event
from ledger_core.errors import CorruptObject

OID = ObjectId("1" * 40)


def _commit(parent: str | None, payload: object = 1) -> bytes:
    key = SigningKey(b"\x05" * 32)
    ms = 1_700_000_000_123
    event = Event.from_value({"type": "invoice.created", "ulid": encode_ulid(ms, b"\x07" * 10),
                              "actor": "user:alice", "payload": payload,
                              "policy_root": "0" * 40, "ts": format_timestamp_ms(ms)})
    signed = sign_event(event, key)
    objects, _oid = journal_commit(signed, parent)  # type: ignore[arg-type]
    return next(o.data for o in objects if o.kind == "commit")


def _slow(data: bytes) -> tuple[object, object]:
    saved = _source._LAYOUT
    _source._LAYOUT = re.compile(b"(?!)")  # a pattern that never matches
    try:
        return _source.parse_header(OID, data, 3)
    finally:
        _source._LAYOUT = saved


@pytest.mark.parametrize("parent", [None, "2" * 40])
def test_fast_and_general_header_parsing_agree(parent: str | None) -> None:
    """Root and non-root journal commits give the same Header either way."""
    data = _commit(parent)
    assert _source._LAYOUT.match(data) is not None
    assert _source.parse_header(OID, data, 3) == _slow(data)
    header, got_parent = _source.parse_header(OID, data, 3)
    assert got_parent == parent and header.type == "invoice.created" and header.time == 1_700_000_000


def test_a_merge_commit_is_refused_by_both_paths() -> None:
    """Two parents do not fit the layout, and the general parser names the problem."""
    data = _commit("2" * 40).replace(b"\nauthor", b"\nparent " + b"3" * 40 + b"\nauthor", 1)
    assert _source._LAYOUT.match(data) is None
    with pytest.raises(CorruptObject, match="one parent"):
        _source.parse_header(OID, data, 0)
