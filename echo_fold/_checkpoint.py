"""State checkpoints (SPEC §6): the commit on `refs/gatos/state/<ns>`, byte for byte.

tree
    state/<ns>.json               the main channel, canonical JSON
    state/<ns>/<channel>.json     one file per extra channel
    fold/spec.json                the spec as run (canonical JSON, with fold_root)
    fold/program.lua              the program bytes (sha256 = Fold-Root)
    fold/window.json              journal heads, base checkpoint, counts, max key
message
    "fold <ns>: <fold_id>@<version>, <n> events", then the trailers State-Root,
    Ledger-Head (one per journal: "<oid> <ref>", or the zero OID for none),
    Policy-Root, Policy-Code-Root, Fold-Id, Fold-Root, Fold-Engine, Fold-Version,
    Inputs-Root, Fold-Events
author = committer = "gatos-fold <fold@gatos.invalid> <time of the last folded event> +0000"

Everything comes from the inputs, so the same fold over the same journals gives the
same commit OID on every node. The checkpoint carries its own program and spec, so
`gatos fold verify` can replay it years later without the working tree.

Pure: builds and parses values; the engine does the I/O through the ports.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from echo_fold._spec import FoldSpec
from echo_fold.errors import FoldError
from ledger_core import (
    ZERO_OID,
    GitObject,
    ObjectId,
    RefName,
    TreeEntry,
    canonical_json,
    content_id,
    encode_commit,
    encode_tree,
    validate_namespace,
)

STATE_PREFIX = "refs/gatos/state/"
ENGINE = "echo@0.1.0+elc@lua-5.4+num=q32.32+rng=pcg32@1"
REQUIRED_TRAILERS = ("State-Root", "Ledger-Head", "Policy-Root", "Policy-Code-Root", "Fold-Id",
                     "Fold-Root", "Fold-Engine", "Fold-Version")
_MODE_BLOB, _MODE_TREE = "100644", "40000"
_IDENT = "gatos-fold <fold@gatos.invalid>"
_TRAILER_LINE = re.compile(r"([A-Za-z][A-Za-z0-9-]*): (.*)")


def state_ref(ns: str) -> RefName:
    return RefName(STATE_PREFIX + validate_namespace(ns))


def state_root(state: dict[str, Any]) -> str:
    """`blake3:<hex>` of the canonical JSON of `{channel: value, …}`."""
    return content_id(canonical_json(state))


def policy_code_root(policy_root: str, policy_tree: bytes | None) -> str:
    """`sha256:` of the active policy bundle's tree object (of nothing before any bundle).

    The policy plane will define the code root of a bundle; until it exists the tree
    bytes of the bundle commit are the closest content hash of its code.
    """
    data = b"" if policy_root == ZERO_OID or policy_tree is None else policy_tree
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Window:
    """What a checkpoint covers: the journal heads it folded up to and how it got there."""

    heads: dict[str, ObjectId]
    base: ObjectId | None
    events: int
    max_key: str | None
    inputs_root: str
    time: int

    def to_value(self) -> dict[str, Any]:
        return {"heads": dict(sorted(self.heads.items())), "base": self.base, "events": self.events,
                "max_key": self.max_key, "inputs_root": self.inputs_root, "time": self.time}

    @classmethod
    def from_value(cls, value: Any) -> Window:
        try:
            heads = value["heads"]
            if not isinstance(heads, dict) or not all(isinstance(v, str) for v in heads.values()):
                raise TypeError("heads")
            return cls({str(k): ObjectId(v) for k, v in heads.items()}, value["base"],
                       int(value["events"]), value["max_key"], str(value["inputs_root"]),
                       int(value["time"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise FoldError(f"fold/window.json is malformed: {exc}") from None


@dataclass(frozen=True)
class Checkpoint:
    """A parsed checkpoint commit."""

    commit: ObjectId
    parent: ObjectId | None
    trailers: dict[str, list[str]]
    tree: dict[str, bytes]

    def first(self, name: str) -> str | None:
        values = self.trailers.get(name)
        return values[0] if values else None


def build_checkpoint(ns: str, spec: FoldSpec, state: dict[str, Any], window: Window,
                     policy_root: str, code_root: str, parent: ObjectId | None,
                     ) -> tuple[list[GitObject], ObjectId, str]:
    """The objects of one checkpoint, its commit id and its State-Root."""
    root = state_root(state)
    objects: list[GitObject] = []

    def blob(data: bytes) -> ObjectId:
        obj = GitObject("blob", data)
        objects.append(obj)
        return obj.oid

    def tree(entries: list[TreeEntry]) -> ObjectId:
        obj = GitObject("tree", encode_tree(entries))
        objects.append(obj)
        return obj.oid

    state_entries = [TreeEntry(f"{ns}.json", _MODE_BLOB, blob(canonical_json(state[spec.main_channel])))]
    extras = [TreeEntry(f"{ch}.json", _MODE_BLOB, blob(canonical_json(state[ch])))
              for ch in spec.channels[1:]]
    if extras:
        state_entries.append(TreeEntry(ns, _MODE_TREE, tree(extras)))
    fold_entries = [
        TreeEntry("spec.json", _MODE_BLOB, blob(spec.canonical())),
        TreeEntry("program.lua", _MODE_BLOB, blob(spec.program)),
        TreeEntry("window.json", _MODE_BLOB, blob(canonical_json(window.to_value()))),
    ]
    top = tree([TreeEntry("state", _MODE_TREE, tree(state_entries)),
                TreeEntry("fold", _MODE_TREE, tree(fold_entries))])
    heads = [f"{oid} {ref}" for ref, oid in sorted(window.heads.items())] or [ZERO_OID]
    trailers = [("State-Root", root)] + [("Ledger-Head", h) for h in heads] + [
        ("Policy-Root", policy_root), ("Policy-Code-Root", code_root),
        ("Fold-Id", spec.fold_id), ("Fold-Root", spec.fold_root), ("Fold-Engine", ENGINE),
        ("Fold-Version", str(spec.version)), ("Inputs-Root", window.inputs_root),
        ("Fold-Events", str(window.events)),
    ]
    for key, value in trailers:
        if "\n" in value or not _TRAILER_LINE.fullmatch(f"{key}: {value}"):
            raise FoldError(f"trailer {key} cannot hold {value!r}")
    message = (f"fold {ns}: {spec.fold_id}@{spec.version}, {window.events} events\n\n"
               + "".join(f"{k}: {v}\n" for k, v in trailers))
    ident = f"{_IDENT} {window.time} +0000"
    commit = GitObject("commit", encode_commit(top, (parent,) if parent else (), ident, ident, message))
    objects.append(commit)
    return objects, commit.oid, root


def ledger_heads(values: list[str]) -> dict[str, ObjectId]:
    """`Ledger-Head` lines back to `{ref: oid}` (the zero OID alone means no journal)."""
    heads: dict[str, ObjectId] = {}
    for value in values:
        if value == ZERO_OID:
            continue
        oid, _, ref = value.partition(" ")
        if not ref or len(oid) != 40:
            raise FoldError(f"Ledger-Head {value!r} is not '<oid> <ref>'")
        heads[ref] = ObjectId(oid)
    return heads
