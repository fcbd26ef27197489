"""Epoch anchors (SPEC §4 `refs/gatos/epoch/<ns>/<epoch-id>`): bytes and continuity rules.

An anchor is a commit that says "at this point the namespace's journals had these
heads, and its newest state checkpoint had this State-Root". Anchors of one namespace
form a chain (each anchor's one parent is the previous anchor) and their ids are
zero-padded sequence numbers, so `refs/gatos/epoch/<ns>/` lists them in order and the
namespace is always a folder, an id always a leaf.

```
tree      epoch.json   canonical JSON: {version, ns, epoch, previous, journals{ref: oid},
                                        state{commit, state_root} | null, created_at}
parent    the previous anchor (none for epoch 1)
author    gatos-epoch <epoch@gatos.invalid> <created_at> +0000   (committer identical)
message   epoch <ns> <id>

          Epoch-Ns, Epoch-Id, Epoch-Previous (absent for epoch 1),
          Journal-Head: <oid> <ref>   (one per journal),
          State-Root, State-Commit (when the namespace has a checkpoint),
          Signed-By: <actor>, Anchor-Sig: ed25519:<hex>  (over the epoch.json bytes)
```

The journal heads recorded by a *signed* anchor are the only commits whose parents a
verifier may find missing: compaction cuts the history there (see `gatosd/_epochs.py`).
Pure: values in, values out; reading goes through the `ObjectStore` port.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger_core._canonical_json import canonical_json, parse_json
from ledger_core._gitobj import GitObject, ObjectId, parse_trailer_lines, validate_oid
from ledger_core._keys import parse_signature, signature_text, verify
from ledger_core._names import JOURNAL_PREFIX, RefName, validate_actor, validate_namespace
from ledger_core._ports import KeyResolver, ObjectStore, RefStore
from ledger_core._trees import make_commit, read_files
from ledger_core.errors import BadSignature, CorruptObject, InvalidName, LedgerError

EPOCH_PREFIX = "refs/gatos/epoch/"
EPOCH_FILE = "epoch.json"
EPOCH_IDENT = "gatos-epoch"
ANCHOR_VERSION = 1
_ID_DIGITS = 8
_ID_RE = re.compile(r"^[0-9]{8}$")


def format_epoch_id(seq: int) -> str:
    """Epoch sequence number → its id (`00000001`): fixed width, so ids sort as numbers."""
    if not 1 <= seq < 10 ** _ID_DIGITS:
        raise InvalidName(f"epoch number {seq} is out of range")
    return f"{seq:0{_ID_DIGITS}d}"


def parse_epoch_id(text: str) -> int:
    if not _ID_RE.match(text) or int(text) == 0:
        raise InvalidName(f"{text!r} is not an epoch id (8 digits, from 00000001)")
    return int(text)


def epoch_ref(ns: str, seq: int) -> RefName:
    return RefName(f"{EPOCH_PREFIX}{validate_namespace(ns)}/{format_epoch_id(seq)}")


def parse_epoch_ref(ref: str) -> tuple[str, int]:
    """`refs/gatos/epoch/<ns>/<id>` → (ns, sequence number)."""
    if not ref.startswith(EPOCH_PREFIX) or ref.count("/") != 4:
        raise InvalidName(f"{ref} is not refs/gatos/epoch/<ns>/<epoch-id>")
    ns, _, ident = ref[len(EPOCH_PREFIX):].partition("/")
    return validate_namespace(ns), parse_epoch_id(ident)


@dataclass(frozen=True)
class Anchor:
    """The content of one epoch anchor (what `epoch.json` holds)."""

    ns: str
    epoch: int
    previous: ObjectId | None
    journals: Mapping[str, ObjectId]
    state: Mapping[str, str] | None = None  # {"commit": oid, "state_root": "blake3:…"}
    created_at: int = 0
    signed_by: str = ""
    sig: str = ""
    commit: ObjectId | None = field(default=None, compare=False)

    def body(self) -> bytes:
        """The signed bytes: canonical JSON of everything but the signature."""
        return canonical_json({
            "version": ANCHOR_VERSION, "ns": self.ns, "epoch": format_epoch_id(self.epoch),
            "previous": self.previous, "journals": dict(sorted(self.journals.items())),
            "state": dict(self.state) if self.state else None, "created_at": self.created_at,
        })

    def to_dict(self) -> dict[str, Any]:
        return {"ns": self.ns, "epoch": format_epoch_id(self.epoch), "ref": epoch_ref(self.ns, self.epoch),
                "commit": self.commit, "previous": self.previous, "journals": dict(self.journals),
                "state": dict(self.state) if self.state else None, "created_at": self.created_at,
                "signed_by": self.signed_by}


def anchor_objects(anchor: Anchor, sign: Callable[[bytes], bytes], signer: str
                   ) -> tuple[list[GitObject], ObjectId]:
    """The objects of the anchor commit (the last one is the commit), signed by `signer`."""
    body = anchor.body()
    trailers = [("Epoch-Ns", anchor.ns), ("Epoch-Id", format_epoch_id(anchor.epoch))]
    if anchor.previous:
        trailers.append(("Epoch-Previous", anchor.previous))
    trailers += [("Journal-Head", f"{oid} {ref}") for ref, oid in sorted(anchor.journals.items())]
    if anchor.state:
        trailers += [("State-Root", anchor.state["state_root"]), ("State-Commit", anchor.state["commit"])]
    trailers += [("Signed-By", validate_actor(signer)), ("Anchor-Sig", signature_text(sign(body)))]
    return make_commit({EPOCH_FILE: body}, f"epoch {anchor.ns} {format_epoch_id(anchor.epoch)}",
                       trailers, anchor.previous, anchor.created_at, EPOCH_IDENT)


def read_anchor(objects: ObjectStore, oid: ObjectId) -> Anchor:
    """Parse an anchor commit, checking that its file, trailers and parent agree.

    Raises:
        CorruptObject: the commit is not a well-formed anchor.
    """
    commit = objects.read_commit(oid)
    files = read_files(objects, commit.tree)
    if set(files) != {EPOCH_FILE}:
        raise CorruptObject(f"anchor {oid} holds {sorted(files)}, expected exactly {EPOCH_FILE}")
    try:
        value = parse_json(files[EPOCH_FILE], EPOCH_FILE)
        anchor = Anchor(ns=validate_namespace(value["ns"]), epoch=parse_epoch_id(value["epoch"]),
                        previous=validate_oid(value["previous"]) if value["previous"] else None,
                        journals={str(r): validate_oid(o) for r, o in value["journals"].items()},
                        state=value["state"], created_at=int(value["created_at"]))
    except (LedgerError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptObject(f"anchor {oid}: {EPOCH_FILE} is not a valid anchor ({exc})") from None
    if anchor.body() != files[EPOCH_FILE]:
        raise CorruptObject(f"anchor {oid}: {EPOCH_FILE} is not canonical")
    trailers = parse_trailer_lines(commit.message)
    heads = sorted(trailers.get("Journal-Head", []))
    if heads != sorted(f"{o} {r}" for r, o in anchor.journals.items()):
        raise CorruptObject(f"anchor {oid}: Journal-Head trailers differ from {EPOCH_FILE}")
    if tuple(commit.parents) != ((anchor.previous,) if anchor.previous else ()):
        raise CorruptObject(f"anchor {oid}: its parent is not the previous anchor it names")
    return Anchor(**{**anchor.__dict__, "signed_by": (trailers.get("Signed-By") or [""])[0],
                     "sig": (trailers.get("Anchor-Sig") or [""])[0], "commit": oid})


def check_anchor_signature(anchor: Anchor, keys: KeyResolver) -> None:
    """Raise `BadSignature` unless a trusted key of `signed_by` signed the anchor's body."""
    if not anchor.signed_by or not anchor.sig:
        raise BadSignature(f"anchor {anchor.commit} is not signed")
    raw = parse_signature(anchor.sig)
    for key in keys.keys_for(anchor.signed_by):
        try:
            verify(key, anchor.body(), raw)
            return
        except BadSignature:
            continue
    raise BadSignature(f"anchor {anchor.commit}: Anchor-Sig does not verify with any trusted key "
                       f"of {anchor.signed_by}")


def continuity_problems(anchors: Sequence[Anchor], is_ancestor: Callable[[str, str], bool],
                        current: Mapping[str, ObjectId] | None = None) -> list[str]:
    """What breaks the chain of one namespace's anchors, given oldest first.

    Rules: ids run 1, 2, 3 … without gaps; each anchor's parent is the anchor before it;
    every journal recorded by an anchor is recorded again by the next one (or is current)
    at a head that descends from it; `current` (the journals' heads now) descends from the
    newest anchor's heads. `is_ancestor(a, b)` is true when `a` is `b` or an ancestor.
    """
    problems: list[str] = []
    previous: Anchor | None = None
    for anchor in anchors:
        label = f"epoch {anchor.ns}/{format_epoch_id(anchor.epoch)}"
        want = 1 if previous is None else previous.epoch + 1
        if anchor.epoch != want:
            problems.append(f"{label}: expected epoch {format_epoch_id(want)} here (ids must not skip)")
        want_parent = previous.commit if previous else None
        if anchor.previous != want_parent:
            problems.append(f"{label}: links to {anchor.previous or 'nothing'}, but the previous anchor "
                            f"is {want_parent or 'none'}")
        if previous is not None:
            problems += _descends(label, previous.journals, anchor.journals, is_ancestor)
        previous = anchor
    if previous is not None and current is not None:
        problems += _descends("journals now", previous.journals, current, is_ancestor)
    return problems


def _descends(label: str, older: Mapping[str, ObjectId], newer: Mapping[str, ObjectId],
              is_ancestor: Callable[[str, str], bool]) -> list[str]:
    out = []
    for ref, oid in sorted(older.items()):
        if ref not in newer:
            out.append(f"{label}: journal {ref} (recorded at {oid}) is gone")
        elif not is_ancestor(oid, newer[ref]):
            out.append(f"{label}: {ref} at {newer[ref]} does not descend from the recorded {oid}")
    return out


def anchors_by_ns(objects: ObjectStore, refs: RefStore) -> dict[str, list[Anchor | LedgerError]]:
    """Every anchor ref read and grouped by namespace, oldest first (bad ones as errors)."""
    out: dict[str, list[tuple[int, Anchor | LedgerError]]] = {}
    for ref, oid in refs.list(EPOCH_PREFIX).items():
        try:
            ns, seq = parse_epoch_ref(ref)
        except LedgerError as exc:
            out.setdefault("", []).append((0, exc))
            continue
        try:
            anchor: Anchor | LedgerError = read_anchor(objects, oid)
            if isinstance(anchor, Anchor) and (anchor.ns, anchor.epoch) != (ns, seq):
                anchor = CorruptObject(f"{ref} holds the anchor of {anchor.ns}/{format_epoch_id(anchor.epoch)}")
        except LedgerError as exc:
            anchor = exc
        out.setdefault(ns, []).append((seq, anchor))
    return {ns: [a for _, a in sorted(items, key=lambda item: item[0])] for ns, items in out.items()}


def anchored_boundaries(objects: ObjectStore, refs: RefStore, keys: KeyResolver
                        ) -> dict[str, frozenset[ObjectId]]:
    """journal ref → heads recorded by well-formed anchors whose signature verifies.

    These are the commits a verifier may accept as the oldest retained commit of a
    compacted journal; anything unsigned, unparseable or under another ref counts for nothing.
    """
    found: dict[str, set[ObjectId]] = {}
    for items in anchors_by_ns(objects, refs).values():
        for anchor in items:
            if not isinstance(anchor, Anchor):
                continue
            try:
                check_anchor_signature(anchor, keys)
            except LedgerError:
                continue
            prefix = f"{JOURNAL_PREFIX}{anchor.ns}/"
            for ref, oid in anchor.journals.items():
                if ref.startswith(prefix):
                    found.setdefault(ref, set()).add(oid)
    return {ref: frozenset(oids) for ref, oids in found.items()}


__all__ = ["ANCHOR_VERSION", "EPOCH_FILE", "EPOCH_PREFIX", "Anchor", "anchor_objects", "anchored_boundaries",
           "anchors_by_ns", "check_anchor_signature", "continuity_problems", "epoch_ref", "format_epoch_id",
           "parse_epoch_id", "parse_epoch_ref", "read_anchor"]
