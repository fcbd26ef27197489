"""Helpers for fold tests: a ledger on the in-memory adapter with deterministic events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from echo_fold import Folder, FoldSpec, parse_spec
from ledger_core import (
    Event,
    Journal,
    PublicKeyText,
    SignedEvent,
    SigningKey,
    encode_ulid,
    sign_event,
)
from ledger_core.memory import MemoryObjectStore, MemoryRefStore

KEYS = {
    "user:alice": SigningKey(bytes([1]) * 32),
    "user:bob": SigningKey(bytes([2]) * 32),
    "user:carol": SigningKey(bytes([3]) * 32),
}


class Keys:
    def keys_for(self, actor: str) -> Sequence[PublicKeyText]:
        return [KEYS[actor].public_key] if actor in KEYS else []


def ulid(ms: int, n: int = 0) -> str:
    return encode_ulid(1_700_000_000_000 + ms, n.to_bytes(10, "big"))


def event(ms: int, payload: Any, *, actor: str = "user:alice", type: str = "invoice.created",
          n: int = 0) -> SignedEvent:
    seconds = (1_700_000_000_000 + ms) // 1000
    ts = f"2023-11-14T22:{(seconds // 60) % 60:02d}:{seconds % 60:02d}Z"
    ev = Event.from_value({"type": type, "ulid": ulid(ms, n), "actor": actor, "payload": payload,
                           "policy_root": "0" * 40, "ts": ts})
    return sign_event(ev, KEYS[actor])


class Ledger:
    """Objects, refs, a journal and a folder over them (all in memory)."""

    def __init__(self) -> None:
        self.objects = MemoryObjectStore()
        self.refs = MemoryRefStore()
        self.journal = Journal(self.objects, self.refs, Keys(), sleep=lambda _s: None,
                               random=lambda: 0.5)
        self.folder = Folder(self.objects, self.refs)

    def add(self, ns: str, *events: SignedEvent) -> None:
        for result in self.journal.append_many([(ns, e) for e in events]):
            assert not isinstance(result, Exception), result

    def snapshot(self) -> tuple[dict[str, str], int]:
        return dict(self.refs.list("")), len(self.objects._objects)


def spec(program: bytes | str, *, ns: str = "finance", channels: Sequence[str] = ("main",),
         events: Sequence[str] | None = None, extra: str = "") -> FoldSpec:
    body = program.encode() if isinstance(program, str) else program
    text = (f"fold_id: test\nversion: 1\nns: {ns}\nprogram: p.lua\n"
            f"channels: [{', '.join(channels)}]\n")
    if events is not None:
        text += f"events: [{', '.join(events)}]\n"
    return parse_spec(text + extra, read_program=lambda _n: body)


INVOICES = """
function init() return {table = {}, totals = {count = 0, cents = 0}} end
function step(s, ev)
  local p = ev.payload
  if ev.type == "invoice.created" then
    s.table[p.id] = {amount = p.amount, paid = false, by = ev.actor}
    s.totals.count = s.totals.count + 1
    s.totals.cents = s.totals.cents + p.amount
  elseif ev.type == "invoice.paid" and s.table[p.id] then
    s.table[p.id].paid = true
  end
end
"""
