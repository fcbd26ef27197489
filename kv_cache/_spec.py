"""Index specs: which event attributes an index keeps, per namespace.

`gatos/indexes/<index-id>.yaml` (in the node's working tree):

    ns: finance            # required
    fields: [customer, status, "line.sku"]   # payload fields (dotted paths), optional
    bucket: day            # time bucket: hour or day (default day)

Every namespace also has the built-in index `default` (actor, type, day; no payload
fields), so `gatos query` works before anyone writes a spec. The ref of an index is
`refs/gatos/cache/<ns>-<index-id>`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import yaml

from kv_cache.errors import InvalidIndexSpec
from ledger_core import canonical_json, validate_component, validate_namespace
from ledger_core.errors import LedgerError

CACHE_PREFIX = "refs/gatos/cache/"
SPEC_DIR = os.path.join("gatos", "indexes")
DEFAULT_ID = "default"
BUCKETS = {"hour": 3600, "day": 86400}
_FIELD = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


@dataclass(frozen=True)
class IndexSpec:
    ns: str
    index_id: str = DEFAULT_ID
    fields: tuple[str, ...] = ()
    bucket: str = "day"

    @classmethod
    def from_value(cls, value: Any, index_id: str) -> IndexSpec:
        if not isinstance(value, dict):
            raise InvalidIndexSpec(f"index {index_id}: the spec must be a mapping")
        extra = set(value) - {"ns", "fields", "bucket"}
        if extra:
            raise InvalidIndexSpec(f"index {index_id}: unknown key(s) {', '.join(sorted(map(str, extra)))}")
        try:
            ns = validate_namespace(value.get("ns"))
            validate_component(index_id, "index id")
        except LedgerError as exc:
            raise InvalidIndexSpec(f"index {index_id}: {exc.reason}") from None
        fields = value.get("fields", [])
        if not isinstance(fields, list) or not all(isinstance(f, str) and _FIELD.match(f) for f in fields):
            raise InvalidIndexSpec(f"index {index_id}: `fields` must be a list of dotted payload paths")
        bucket = value.get("bucket", "day")
        if bucket not in BUCKETS:
            raise InvalidIndexSpec(f"index {index_id}: `bucket` must be hour or day, not {bucket!r}")
        return cls(ns, index_id, tuple(sorted(set(fields))), bucket)

    @property
    def ref(self) -> str:
        return f"{CACHE_PREFIX}{self.ns}-{self.index_id}"

    @property
    def bucket_seconds(self) -> int:
        return BUCKETS[self.bucket]

    def to_value(self) -> dict[str, Any]:
        return {"ns": self.ns, "index_id": self.index_id, "fields": list(self.fields), "bucket": self.bucket}

    def canonical(self) -> bytes:
        return canonical_json(self.to_value())


def load_specs(root: str | None, ns: str) -> dict[str, IndexSpec]:
    """The namespace's indexes: `default` plus every spec file naming `ns`."""
    specs = {DEFAULT_ID: IndexSpec(validate_namespace(ns))}
    folder = os.path.join(root, SPEC_DIR) if root else None
    if folder and os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            if not name.endswith((".yaml", ".yml")):
                continue
            index_id = name.rsplit(".", 1)[0]
            with open(os.path.join(folder, name), encoding="utf-8") as handle:
                try:
                    value = yaml.safe_load(handle)
                except yaml.YAMLError as exc:
                    raise InvalidIndexSpec(f"{name} does not parse: {exc}") from None
            spec = IndexSpec.from_value(value, index_id)
            if spec.ns == ns:
                specs[index_id] = spec
    return specs


__all__ = ["BUCKETS", "CACHE_PREFIX", "DEFAULT_ID", "SPEC_DIR", "IndexSpec", "load_specs"]
