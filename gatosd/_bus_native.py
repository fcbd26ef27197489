"""The bus's native parts: the writer's message builder (`gatos_native.messages` behind
`mind_bus.MessageBuilder`) and the daemon's envelope encoder (`gatos_native.envelope`
behind `mind_bus.EnvelopeEncoder`).

For every message of a batch the writer signs the envelope (ed25519), hashes the four
objects of its commit and encodes them as pack entries; in Python that is about 45 us
of the writer's ~150 us per message on this project's machines, natively about 28 (the
signature is most of it). The native builder gives the same commit ids and pack
entries as `mind_bus.build_messages` (tests/integration/test_native_bus.py); it
answers None for a batch with an object big enough to be deflated, and Python builds
that batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ledger_core import EVENT_FILE, SIG_FILE, GitObject, ObjectId, PackedObjects, SigningKey
from ledger_core._gitobj import MODE_BLOB
from ledger_git._native import native_module
from mind_bus import MESSAGE_TYPE, EnvelopeEncoder, MessageSpec

_PREFIX = (f"{MODE_BLOB} {EVENT_FILE}\0".encode(), f"{MODE_BLOB} {SIG_FILE}\0".encode(), MESSAGE_TYPE)


class NativeMessageBuilder:
    """`mind_bus.MessageBuilder` done by `gatos_native.messages`."""

    def __init__(self, module: Any, key_for: Callable[[str], SigningKey], store_below: int) -> None:
        self._messages = module.messages
        self._key_for = key_for
        self.store_below = store_below

    def seed(self, actor: str) -> bytes:
        return self._key_for(actor).seed

    def build(self, specs: list[MessageSpec]) -> tuple[list[ObjectId], Sequence[GitObject]] | None:
        built = self._messages(specs, _PREFIX, self.store_below)
        if built is None:
            return None
        oids, entries = built
        return oids, PackedObjects(entries)


def native_builder(key_for: Callable[[str], SigningKey], store_below: int) -> NativeMessageBuilder | None:
    """The native builder when `gatos_native` is built (and not turned off); else None."""
    module = native_module()
    return None if module is None else NativeMessageBuilder(module, key_for, store_below)


def native_envelope() -> EnvelopeEncoder | None:
    """`gatos_native.envelope` when built (and not turned off); else None.

    It does on the daemon's loop what `mind_bus.presign` does in Python for every
    publish (the payload's canonical CBOR, the body hash, the envelope and its
    Event-CID): about 3 us instead of 12 measured, with the same bytes
    (tests/integration/test_native_bus.py).
    """
    module = native_module()
    return None if module is None else module.envelope  # type: ignore[no-any-return]
