"""Fold specs: `gatos/folds/<name>.yaml` names what a fold reads and how it runs.

```yaml
fold_id: invoices          # [A-Za-z0-9._-], 1-64
version: 1                 # positive integer; bump it when the meaning changes
ns: finance                # the namespace whose journals are folded
events: [invoice.created, invoice.paid]   # optional; omitted = every type
program: invoices.lua      # Lua 5.4 file, relative to this spec's folder
channels: [table, totals]  # optional; the first is the main channel (default [main])
limits: {fuel: 10000000, memory_mb: 512}  # optional: per-event instructions, runtime MiB
```

Unknown keys, duplicate keys, floats and wrong types are errors, so a typo never
silently changes a fold. A namespace with no spec gets `default_spec(ns)`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from echo_fold._default_fold import DEFAULT_FOLD_ID, DEFAULT_PROGRAM, DEFAULT_VERSION
from echo_fold._sandbox import DEFAULT_FUEL, DEFAULT_MEMORY
from echo_fold.errors import SpecError
from ledger_core import canonical_json, validate_component, validate_event_type, validate_namespace
from ledger_core.errors import LedgerError

_KEYS = {"fold_id", "version", "ns", "events", "program", "channels", "limits"}
_LIMIT_KEYS = {"fuel", "memory_mb"}
MAX_PROGRAM_BYTES = 1024 * 1024


@dataclass(frozen=True)
class FoldSpec:
    """A parsed, validated fold spec with its program bytes loaded."""

    fold_id: str
    version: int
    ns: str
    program: bytes
    program_name: str
    events: tuple[str, ...] | None = None
    channels: tuple[str, ...] = ("main",)
    fuel: int = DEFAULT_FUEL
    memory: int = DEFAULT_MEMORY
    source: str | None = field(default=None, compare=False)

    @property
    def fold_root(self) -> str:
        """`sha256:<hex>` of the program bytes (SPEC §6)."""
        return "sha256:" + hashlib.sha256(self.program).hexdigest()

    @property
    def fold_root_bytes(self) -> bytes:
        return hashlib.sha256(self.program).digest()

    @property
    def main_channel(self) -> str:
        return self.channels[0]

    def to_value(self) -> dict[str, Any]:
        """The spec as stored in a checkpoint (`fold/spec.json`): everything a replay needs."""
        value: dict[str, Any] = {
            "fold_id": self.fold_id, "version": self.version, "ns": self.ns,
            "program": self.program_name, "fold_root": self.fold_root,
            "channels": list(self.channels),
            "limits": {"fuel": self.fuel, "memory_mb": self.memory // (1024 * 1024)},
        }
        if self.events is not None:
            value["events"] = list(self.events)
        return value

    def canonical(self) -> bytes:
        return canonical_json(self.to_value())

    def accepts(self, event_type: str) -> bool:
        return self.events is None or event_type in self._event_set

    @property
    def _event_set(self) -> frozenset[str]:
        return frozenset(self.events or ())


class _StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses duplicate mapping keys."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise SpecError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _int(value: Any, what: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SpecError(f"{what} must be an integer from {low} to {high}, not {value!r}")
    return value


def _names(value: Any, what: str, check: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise SpecError(f"{what} must be a non-empty list")
    try:
        names = tuple(check(v) for v in value)
    except LedgerError as exc:
        raise SpecError(f"{what}: {exc.reason}") from None
    if len(set(names)) != len(names):
        raise SpecError(f"{what} lists a name twice")
    return names


def parse_spec(text: bytes | str, *, read_program: Any, source: str | None = None) -> FoldSpec:
    """Parse spec YAML; `read_program(name)` returns the program bytes it names.

    Raises:
        SpecError: malformed YAML, unknown/duplicate/missing keys, bad names or limits,
            a program that cannot be read.
    """
    where = source or "fold spec"
    try:
        doc = yaml.load(text, Loader=_StrictLoader)
    except SpecError as exc:
        raise SpecError(f"{where}: {exc.reason}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise SpecError(f"{where}: a fold spec is a mapping")
    unknown = set(doc) - _KEYS
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {sorted(map(str, unknown))}; "
                        f"allowed: {sorted(_KEYS)}")
    missing = {"fold_id", "version", "ns", "program"} - set(doc)
    if missing:
        raise SpecError(f"{where}: missing key(s) {sorted(missing)}")
    try:
        fold_id = validate_component(doc["fold_id"], "fold_id")
        ns = validate_namespace(doc["ns"])
    except LedgerError as exc:
        raise SpecError(f"{where}: {exc.reason}") from None
    version = _int(doc["version"], f"{where}: version", 1, 2**31 - 1)
    events = _names(doc["events"], f"{where}: events", validate_event_type) if "events" in doc else None
    channels = (_names(doc["channels"], f"{where}: channels", lambda v: validate_component(v, "channel"))
                if "channels" in doc else ("main",))
    limits = doc.get("limits") or {}
    if not isinstance(limits, dict) or set(limits) - _LIMIT_KEYS:
        raise SpecError(f"{where}: limits may only hold {sorted(_LIMIT_KEYS)}")
    fuel = _int(limits.get("fuel", DEFAULT_FUEL), f"{where}: limits.fuel", 1000, 10**12)
    memory_mb = _int(limits.get("memory_mb", DEFAULT_MEMORY // (1024 * 1024)),
                     f"{where}: limits.memory_mb", 8, 64 * 1024)
    program_name = doc["program"]
    if not isinstance(program_name, str) or not program_name:
        raise SpecError(f"{where}: program must be a file name")
    program = read_program(program_name)
    if len(program) > MAX_PROGRAM_BYTES:
        raise SpecError(f"{where}: program {program_name} is over {MAX_PROGRAM_BYTES} bytes")
    return FoldSpec(fold_id, version, ns, program, os.path.basename(program_name), events, channels,
                    fuel, memory_mb * 1024 * 1024, source)


def load_spec(path: str, *, root: str | None = None) -> FoldSpec:
    """Read a spec file and its program (relative to the spec's folder).

    `root`, when given, is a folder both files must stay inside (the daemon passes the
    node's working tree so a request cannot make it read arbitrary files).

    Raises:
        SpecError: as `parse_spec`, or a file that is missing or outside `root`.
    """
    real = os.path.realpath(path)
    _inside(real, root, path)
    try:
        with open(real, "rb") as handle:
            text = handle.read(MAX_PROGRAM_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"cannot read fold spec {path}: {exc.strerror or exc}") from None

    def read_program(name: str) -> bytes:
        program_path = os.path.realpath(os.path.join(os.path.dirname(real), name))
        _inside(program_path, root, name)
        try:
            with open(program_path, "rb") as handle:
                return handle.read(MAX_PROGRAM_BYTES + 1)
        except OSError as exc:
            raise SpecError(f"{path}: cannot read program {name}: {exc.strerror or exc}") from None

    return parse_spec(text, read_program=read_program, source=path)


def _inside(real: str, root: str | None, shown: str) -> None:
    if root is None:
        return
    base = os.path.realpath(root)
    if os.path.commonpath([real, base]) != base:
        raise SpecError(f"{shown} is outside the node's working tree")


def spec_from_value(value: Any, program: bytes) -> FoldSpec:
    """Rebuild a spec from a checkpoint's `fold/spec.json` and `fold/program.lua`.

    Raises:
        SpecError: the stored spec is malformed or its `fold_root` does not match the program.
    """
    if not isinstance(value, dict):
        raise SpecError("fold/spec.json is not an object")
    doc = {k: value[k] for k in ("fold_id", "version", "ns", "program", "channels", "events")
           if k in value}
    limits = value.get("limits")
    if isinstance(limits, dict):
        doc["limits"] = limits
    spec = parse_spec(yaml.safe_dump(doc), read_program=lambda _name: program, source="fold/spec.json")
    if value.get("fold_root") != spec.fold_root:
        raise SpecError(f"fold/spec.json names fold_root {value.get('fold_root')} but "
                        f"fold/program.lua hashes to {spec.fold_root}")
    return spec


def default_spec(ns: str) -> FoldSpec:
    """The fold a namespace gets without a spec (see `_default_fold`)."""
    return FoldSpec(DEFAULT_FOLD_ID, DEFAULT_VERSION, validate_namespace(ns), DEFAULT_PROGRAM,
                    "default.lua", None, ("summary", "latest"))


def find_spec(folds_dir: str, ns: str) -> FoldSpec | None:
    """The one spec in `folds_dir` (`gatos/folds/`) whose `ns` is `ns`; None if there is none.

    Raises:
        SpecError: a spec there is malformed, or more than one names this namespace.
    """
    if not os.path.isdir(folds_dir):
        return None
    found = []
    for name in sorted(os.listdir(folds_dir)):
        if name.endswith((".yaml", ".yml")):
            spec = load_spec(os.path.join(folds_dir, name), root=os.path.dirname(os.path.dirname(folds_dir)))
            if spec.ns == ns:
                found.append(spec)
    if len(found) > 1:
        raise SpecError(f"{len(found)} specs in {folds_dir} fold namespace {ns} "
                        f"({', '.join(s.source or '?' for s in found)}); pass one with --spec")
    return found[0] if found else None
