"""Time travel: the state of a namespace as of any event, from the nearest checkpoint.

The total order of the current journal heads is computed from commit headers (no
event bytes); the target event is found in it by Event-CID or ULID. A checkpoint
of the same fold can serve as the starting point when the events it covers are
exactly the first events of that order (per journal, the same count) and it does
not go past the target; the newest such checkpoint wins, else the fold starts from
scratch. Nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from echo_fold._checkpoint import Checkpoint, Window, state_ref, state_root
from echo_fold._engine import BASE_SEARCH, Folder
from echo_fold._order import Header, merge
from echo_fold._source import EventReader
from echo_fold._spec import FoldSpec
from echo_fold.errors import FoldError
from ledger_core import ObjectId, parse_json
from ledger_core.errors import LedgerError, NotFound


@dataclass
class TravelResult:
    ns: str
    event: dict[str, Any]
    state: dict[str, Any]
    state_root: str
    events: int
    base: ObjectId | None
    replayed: int

    def to_dict(self, channel: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"ns": self.ns, "event": self.event, "state_root": self.state_root,
                               "events": self.events, "base": self.base, "replayed": self.replayed}
        if channel is None:
            out["state"] = self.state
        else:
            out["channel"] = channel
            out["value"] = self.state[channel]
        return out


def _target(order: list[Header], event: str) -> int:
    hits = [i for i, h in enumerate(order) if event in (h.cid, h.ulid, h.commit)]
    if not hits:
        raise NotFound(f"event {event} is not in this namespace's journals")
    if len(hits) > 1:
        raise FoldError(f"{event} names {len(hits)} events (a ULID reused by several actors); "
                        "give its Event-CID")
    return hits[0]


def _candidates(folder: Folder, spec: FoldSpec) -> list[Checkpoint]:
    out: list[Checkpoint] = []
    oid = folder.refs.get(state_ref(spec.ns))
    for _ in range(BASE_SEARCH * 4):
        if oid is None:
            break
        cp = folder.read_checkpoint(oid)
        if folder._compatible(cp, spec):
            out.append(cp)
        oid = cp.parent
    return out


def state_at(folder: Folder, spec: FoldSpec, event: str) -> TravelResult:
    """The state of `spec.ns` right after `event` (a CID, ULID or journal commit id).

    Raises:
        NotFound: no such event in the namespace. ProgramError: the program failed.
    """
    heads = folder.journals(spec.ns)
    refs = sorted(heads)
    with EventReader.open(folder.objects) as reader:
        return _state_at(folder, spec, event, heads, refs, reader)


def _state_at(folder: Folder, spec: FoldSpec, event: str, heads: dict[str, ObjectId], refs: list[str],
              reader: EventReader) -> TravelResult:
    chains = reader.walk_many([(heads[ref], None) for ref in refs])
    order = merge(chains)
    target = _target(order, event)
    index = [{h.commit: i for i, h in enumerate(chain)} for chain in chains]
    journal_of = {ref: j for j, ref in enumerate(refs)}

    start, base, window0 = 0, None, None
    for cp in _candidates(folder, spec):
        try:
            win = Window.from_value(parse_json(cp.tree["fold/window.json"]))
            counts = {journal_of[ref]: index[journal_of[ref]][oid] + 1 for ref, oid in win.heads.items()}
            stored = folder.stored_state(cp, spec.ns, spec.channels)
        except (KeyError, LedgerError):
            continue
        size = sum(counts.values())
        if size > target + 1 or state_root(stored) != cp.first("State-Root"):
            continue
        seen: dict[int, int] = {}
        for h in order[:size]:
            seen[h.journal] = seen.get(h.journal, 0) + 1
        if seen == counts:
            start, base, window0 = size, cp, win
            break
    segment = order[start:target + 1]
    upto = {h.journal: h.commit for h in order[:target + 1]}
    at_heads = {ref: upto[j] for j, ref in enumerate(refs) if j in upto}
    computed = folder._run(spec, at_heads, segment, base, window0, None, reader)
    hit = order[target]
    return TravelResult(spec.ns, {"cid": hit.cid, "ulid": hit.ulid, "commit": hit.commit,
                                  "type": hit.type, "position": target + 1},
                        computed.state, state_root(computed.state), computed.window.events,
                        base.commit if base else None, len(segment))
