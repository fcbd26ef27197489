"""The journal commit of one event, byte for byte (SPEC §5).

tree    = event.cbor (canonical bytes, verbatim) + event.sig (raw 64 bytes)
message = "<type>\\n\\n" + trailers Event-CID, Event-Type, Actor, Ulid, Policy-Root,
          Sig-Alg, Sig
author  = committer = "<actor> <<actor>> <event time> +0000"

Everything comes from the event and the parent, so the same event on the same parent
is the same commit OID on every node; verification rebuilds the commit and compares.
"""

from __future__ import annotations

from ledger_core._envelope import SignedEvent
from ledger_core._gitobj import (
    MODE_BLOB,
    GitObject,
    ObjectId,
    TreeEntry,
    encode_commit,
    encode_tree,
    format_trailers,
    signature_line,
)

EVENT_FILE = "event.cbor"
SIG_FILE = "event.sig"


def event_trailers(signed: SignedEvent) -> list[tuple[str, str]]:
    ev = signed.event
    return [
        ("Event-CID", signed.cid),
        ("Event-Type", ev.type),
        ("Actor", ev.actor),
        ("Ulid", ev.ulid),
        ("Policy-Root", ev.policy_root),
        ("Sig-Alg", signed.sig_alg),
        ("Sig", signed.signature_text),
    ]


def journal_commit(signed: SignedEvent, parent: ObjectId | None) -> tuple[list[GitObject], ObjectId]:
    """The four objects of an event commit (blob, blob, tree, commit) and the commit id."""
    event_blob = GitObject("blob", signed.canonical)
    sig_blob = GitObject("blob", signed.signature)
    tree = GitObject("tree", encode_tree([
        TreeEntry(EVENT_FILE, MODE_BLOB, event_blob.oid),
        TreeEntry(SIG_FILE, MODE_BLOB, sig_blob.oid),
    ]))
    ident = signature_line(signed.event.actor, signed.event.actor, signed.event.commit_time)
    message = f"{signed.event.type}\n\n{format_trailers(event_trailers(signed))}"
    commit = GitObject("commit", encode_commit(
        tree.oid, (parent,) if parent else (), ident, ident, message))
    return [event_blob, sig_blob, tree, commit], commit.oid
