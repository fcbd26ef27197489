"""The total order of a namespace: journals merged by (ULID, Event-CID).

A namespace has one journal per actor. Its events are folded in one order that is a
function of the journal heads alone, never of which node fetched what first:

* each journal keeps its own order (a journal is a chain; an actor's events are
  never reordered among themselves);
* across journals, a k-way merge takes next the journal whose next event has the
  smallest key `ULID ‖ Event-CID` (ULIDs are 26 characters, so comparing the
  concatenation compares ULID first, then CID).

Incremental folds rely on one fact: if every journal's first new event has a key
greater than the largest key already folded (`max_key`), the merge of the longer
journals is the old sequence followed by the merge of the new tails. When that does
not hold (an older event arrived late), the engine folds from scratch.

Pure: no I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import NamedTuple

from ledger_core import ObjectId


class Header(NamedTuple):
    """What the order needs of one journal commit, read from the commit alone.

    A named tuple rather than a dataclass: a full fold makes one per event, and a
    tuple is built in a fifth of the time.
    """

    commit: ObjectId
    tree: ObjectId
    ulid: str
    cid: str
    type: str
    time: int
    journal: int

    @property
    def key(self) -> str:
        return self.ulid + self.cid


def merge(chains: Sequence[Sequence[Header]]) -> list[Header]:
    """The total order of several journals (each given oldest first)."""
    if len(chains) == 1:
        return list(chains[0])
    out: list[Header] = []
    heap = [(chain[0].key, j, 0) for j, chain in enumerate(chains) if chain]
    heapq.heapify(heap)
    while heap:
        _key, j, i = heap[0]
        chain = chains[j]
        out.append(chain[i])
        if i + 1 < len(chain):
            heapq.heapreplace(heap, (chain[i + 1].key, j, i + 1))
        else:
            heapq.heappop(heap)
    return out


def extends(max_key: str | None, tails: Sequence[Sequence[Header]]) -> bool:
    """Whether folding `tails` after a state whose largest folded key is `max_key`
    gives the same sequence as folding every journal from the start."""
    if max_key is None:
        return True
    return all(not tail or tail[0].key > max_key for tail in tails)


def max_key(current: str | None, headers: Sequence[Header]) -> str | None:
    keys = [h.key for h in headers]
    if current is not None:
        keys.append(current)
    return max(keys) if keys else None
