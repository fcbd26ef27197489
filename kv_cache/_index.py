"""The index itself (pure): roaring bitmaps from event attributes to positions, and its tree.

A position is an event's place in the namespace's total order (0, 1, …). For every
actor, type, time bucket and indexed payload value there is one bitmap of positions;
two arrays map positions back to commits and to seconds (for exact time bounds).

Stored as a tree of files, every byte a function of the events alone (bitmaps
run-optimized and serialized in the portable Roaring format, keys sorted), so
deleting the cache ref and rebuilding gives the identical tree:

    meta.json                   spec, count, covered journal heads, last key
    commits/<block>             20 bytes per position (binary commit ids), 65,536 positions a block
    seconds/<block>             8 bytes per position (little-endian int64), same blocks
    actor/<quoted actor>        bitmap
    type/<quoted type>          bitmap
    bucket/<bucket start s>     bitmap
    field/<field>/<value key>   bitmap (scalars; each scalar of a list)
"""

from __future__ import annotations

import array
import sys
from collections import defaultdict
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from pyroaring import BitMap

from kv_cache._headers import Columns
from kv_cache._spec import IndexSpec
from kv_cache.errors import CorruptIndex
from ledger_core import blake3_hex, canonical_json, parse_json

VERSION = 1
META = "meta.json"
BLOCK = 1 << 16  # positions per block: a query reads only the blocks of the events it returns
_MISSING = object()


def name_key(text: str) -> str:
    """A tree-entry name for an actor or type (percent-quoted, never containing `/`)."""
    return quote(text, safe="") or "%00"


def value_key(value: Any) -> str | None:
    """The tree-entry name of an indexed payload value (None: not indexable)."""
    if value is None or isinstance(value, (bool, int, str)):
        text = canonical_json(value).decode("utf-8")
        quoted = quote(text, safe="")
        return quoted if len(quoted) <= 96 else "h-" + blake3_hex(text.encode("utf-8"))
    return None


def field_values(payload: Any, path: str) -> list[Any]:
    """The scalars at a dotted path of a payload (each element when it is a list)."""
    value: Any = payload
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return []
        value = value[part]
    return list(value) if isinstance(value, list) else [value]


class Index:
    """An index in memory: build it, extend it, query it, turn it into files."""

    def __init__(self, spec: IndexSpec) -> None:
        self.spec = spec
        self.commits = bytearray()
        self.seconds = array.array("q")
        self.bitmaps: dict[str, BitMap] = {}
        self.heads: dict[str, str] = {}
        self.max_key = ""
        self._pending: dict[str, list[int]] = defaultdict(list)
        self._monotonic: bool | None = None

    @property
    def count(self) -> int:
        return len(self.seconds)

    def add(self, cols: Columns, payloads: Iterable[Any] | None = None) -> int:
        """Append events (columns in order) at the next positions; payloads align with them when given."""
        bucket = self.spec.bucket_seconds
        fields = self.spec.fields
        count = len(cols)
        start = self.count
        self._monotonic = None
        # Group positions by raw value first and name the bitmaps once per value: the per-event
        # loop stays a few appends (a million events are indexed in about a second).
        actors: dict[str, list[int]] = defaultdict(list)
        types: dict[str, list[int]] = defaultdict(list)
        buckets: dict[int, list[int]] = defaultdict(list)
        for position, actor, kind, secs in zip(range(start, start + count), cols.actors, cols.types,
                                              cols.seconds, strict=True):
            actors[actor].append(position)
            types[kind].append(position)
            buckets[secs - secs % bucket].append(position)
        if fields and payloads is not None:
            for position, payload in zip(range(start, start + count), payloads, strict=True):
                for name in fields:
                    for value in field_values(payload, name):
                        key = value_key(value)
                        if key is not None:
                            self._pending[f"field/{name}/{key}"].append(position)
        self.commits += bytes.fromhex("".join(cols.commits))
        self.seconds.extend(cols.seconds)
        if count:
            self.max_key = cols.keys[-1]
        for actor, positions in actors.items():
            self._pending["actor/" + name_key(actor)].extend(positions)
        for kind, positions in types.items():
            self._pending["type/" + name_key(kind)].extend(positions)
        for begin, positions in buckets.items():
            self._pending[f"bucket/{begin}"].extend(positions)
        self._flush()
        return count

    def _flush(self) -> None:
        for key, positions in self._pending.items():
            bitmap = self.bitmaps.get(key)
            if bitmap is None:
                self.bitmaps[key] = BitMap(positions)
            else:
                bitmap.update(positions)
        self._pending.clear()

    # -- files ---------------------------------------------------------------------------

    @property
    def monotonic(self) -> bool:
        """Whether event seconds never decrease along positions (true when `ts` follows the ULIDs,
        as for node-built events): time ranges are then one bisection, not a bucket scan."""
        if self._monotonic is None:
            seconds = self.seconds
            self._monotonic = all(seconds[i] <= seconds[i + 1] for i in range(len(seconds) - 1))
        return self._monotonic

    def meta(self) -> dict[str, Any]:
        return {"version": VERSION, "spec": self.spec.to_value(), "count": self.count, "heads": self.heads,
                "max_key": self.max_key, "monotonic": self.monotonic}

    def to_files(self) -> dict[str, bytes]:
        seconds = array.array("q", self.seconds)
        if sys.byteorder != "little":
            seconds.byteswap()
        raw = seconds.tobytes()
        files = {META: canonical_json(self.meta())}
        for block in range((self.count + BLOCK - 1) // BLOCK):
            files[f"commits/{block:05d}"] = bytes(self.commits[20 * BLOCK * block:20 * BLOCK * (block + 1)])
            files[f"seconds/{block:05d}"] = raw[8 * BLOCK * block:8 * BLOCK * (block + 1)]
        for key in sorted(self.bitmaps):
            bitmap = self.bitmaps[key]
            bitmap.run_optimize()
            files[key] = bitmap.serialize()
        return files

    @classmethod
    def from_files(cls, files: dict[str, bytes], spec: IndexSpec) -> Index:
        """Load a stored index (every bitmap); raises CorruptIndex when it does not hold together."""
        try:
            meta = parse_json(files[META], META)
            index = cls(spec)
            index.heads = dict(meta["heads"])
            index.max_key = meta["max_key"]
            index._monotonic = meta.get("monotonic")
            blocks = sorted(k for k in files if k.startswith("commits/"))
            index.commits = bytearray(b"".join(files[k] for k in blocks))
            index.seconds = array.array("q")
            index.seconds.frombytes(b"".join(files["seconds/" + k.split("/", 1)[1]] for k in blocks))
            if sys.byteorder != "little":
                index.seconds.byteswap()
            for key, data in files.items():
                if key.split("/", 1)[0] in ("actor", "type", "bucket", "field"):
                    index.bitmaps[key] = BitMap.deserialize(data)
        except (KeyError, ValueError, TypeError) as exc:
            raise CorruptIndex(f"index {spec.ref} does not load ({exc}); run `gatos cache rebuild {spec.ns}`"
                               ) from None
        if meta.get("version") != VERSION or meta.get("count") != index.count or \
                len(index.commits) != 20 * index.count:
            raise CorruptIndex(f"index {spec.ref} is inconsistent; run `gatos cache rebuild {spec.ns}`")
        return index

    def commit_at(self, position: int) -> str:
        return self.commits[20 * position:20 * position + 20].hex()


__all__ = ["BLOCK", "META", "VERSION", "Index", "field_values", "name_key", "value_key"]
