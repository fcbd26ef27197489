"""Job manifests (v1): parse, validate against the published schema, canonical bytes, job id.

The v1 schema allows no field beyond `command`, `args`, `timeout`, `env`, `cwd`,
`inputs`, `policy_root` and `ulid`, so the runtime is chosen from `command` itself:
`["wasm", "blake3:<hex>"]` runs the WebAssembly module with that hash from the blob
store; anything else is a subprocess. The job id is `blake3:` of the canonical JSON of
the manifest *with its defaults left out*, so `args: []` and no `args` name one job.

The checks are written out (not a generic JSON-Schema engine at run time) so that every
error names the field and the rule it breaks; a test validates accepted manifests with
`jsonschema` against `shared/gatos-schemas/v1/job/job_manifest.schema.json`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from compute.errors import InvalidJob
from ledger_core import blake3_hex, canonical_json, parse_json
from ledger_core.errors import LedgerError

FIELDS = ("command", "args", "timeout", "env", "cwd", "inputs", "policy_root", "ulid")
_DURATION = re.compile(
    r"^P(?:(?:(?P<Y>\d+)Y)?(?:(?P<Mo>\d+)M)?(?:(?P<W>\d+)W)?(?:(?P<D>\d+)D)?)"
    r"(?:T(?:(?P<H>\d+)H)?(?:(?P<Mi>\d+)M)?(?:(?P<S>\d+(?:\.\d+)?)S)?)?$")
_SCHEMA_DURATION = re.compile(
    r"^P(?:(?:\d+[YMWD])+(?:T(?:\d+H|\d+M|\d+(?:\.\d+)?S)+)?|T(?:\d+H|\d+M|\d+(?:\.\d+)?S)+)$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BLAKE3 = re.compile(r"^blake3:[0-9a-f]{64}$")
_POLICY_ROOT = re.compile(r"^sha256:[0-9a-f]{64}$")
_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
_UNIT_SECONDS = {"Y": 365 * 86400, "Mo": 30 * 86400, "W": 7 * 86400, "D": 86400,
                 "H": 3600, "Mi": 60}
WASM = "wasm"


class _StrictLoader(yaml.SafeLoader):
    """The safe YAML loader, refusing duplicate keys (PyYAML keeps the last one silently)."""


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise InvalidJob(f"job.yaml repeats the key {key!r}")
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def duration_seconds(text: str) -> float:
    """An ISO 8601 duration of the schema's form (`PT30S`, `P1DT2H`) in seconds.

    Years and months have no fixed length; they count as 365 and 30 days.
    """
    match = _DURATION.match(text) if _SCHEMA_DURATION.match(text) else None
    if match is None:
        raise InvalidJob(f"timeout {text!r} is not an ISO 8601 duration such as PT30S or PT5M")
    total = 0.0
    for unit, seconds in _UNIT_SECONDS.items():
        if match.group(unit):
            total += int(match.group(unit)) * seconds
    if match.group("S"):
        total += float(match.group("S"))
    return total


def _strings(value: Any, field: str, *, min_items: int = 0) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidJob(f"`{field}` must be a list of strings")
    if len(value) < min_items:
        raise InvalidJob(f"`{field}` needs at least {min_items} item(s)")
    return list(value)


def _check_inputs(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise InvalidJob("`inputs` must be a list of blob pointers")
    out = []
    for i, item in enumerate(value):
        where = f"`inputs[{i}]`"
        if not isinstance(item, dict):
            raise InvalidJob(f"{where} must be an object {{kind, algo, hash[, size]}}")
        extra = set(item) - {"kind", "algo", "hash", "size"}
        if extra:
            raise InvalidJob(f"{where} has unknown field(s): {', '.join(sorted(extra))}")
        if item.get("kind") != "blobptr":
            raise InvalidJob(f"{where}.kind must be \"blobptr\"")
        if item.get("algo") != "blake3":
            raise InvalidJob(f"{where}.algo must be \"blake3\"")
        if not isinstance(item.get("hash"), str) or not _BLAKE3.match(item["hash"]):
            raise InvalidJob(f"{where}.hash must be blake3:<64 lowercase hex>")
        size = item.get("size")
        if "size" in item and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise InvalidJob(f"{where}.size must be a non-negative integer")
        out.append(dict(item))
    return out


@dataclass(frozen=True)
class Manifest:
    """A validated v1 job manifest (the canonical value, defaults left out)."""

    value: dict[str, Any]

    @classmethod
    def from_value(cls, value: Any) -> Manifest:
        """Validate a decoded manifest.

        Raises:
            InvalidJob: an unknown field, a missing `command`/`timeout`, or a field of the
                wrong shape; the message names the field.
        """
        if not isinstance(value, dict):
            raise InvalidJob("a job manifest must be an object")
        extra = set(value) - set(FIELDS)
        if extra:
            raise InvalidJob(f"unknown manifest field(s): {', '.join(sorted(map(str, extra)))} "
                             f"(v1 allows {', '.join(FIELDS)})")
        for required in ("command", "timeout"):
            if required not in value:
                raise InvalidJob(f"`{required}` is required")
        out: dict[str, Any] = {"command": _strings(value["command"], "command", min_items=1)}
        if "args" in value:
            args = _strings(value["args"], "args")
            if args:
                out["args"] = args
        timeout = value["timeout"]
        if isinstance(timeout, bool) or not isinstance(timeout, (int, str)):
            raise InvalidJob("`timeout` must be whole seconds or an ISO 8601 duration (PT30S)")
        if isinstance(timeout, int) and timeout < 0:
            raise InvalidJob("`timeout` must not be negative")
        if isinstance(timeout, str):
            duration_seconds(timeout)
        out["timeout"] = timeout
        if "env" in value:
            env = value["env"]
            if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
                raise InvalidJob("`env` must map names to strings")
            bad = [k for k in env if not isinstance(k, str) or not _ENV_NAME.match(k)]
            if bad:
                raise InvalidJob(f"`env` name {bad[0]!r} is not [A-Za-z_][A-Za-z0-9_]*")
            out["env"] = dict(env)
        if "cwd" in value:
            if not isinstance(value["cwd"], str) or not value["cwd"]:
                raise InvalidJob("`cwd` must be a non-empty string")
            out["cwd"] = value["cwd"]
        if "inputs" in value:
            out["inputs"] = _check_inputs(value["inputs"])
        for name, pattern, shape in (("policy_root", _POLICY_ROOT, "sha256:<64 lowercase hex>"),
                                     ("ulid", _ULID, "a 26-letter ULID")):
            if name in value:
                if not isinstance(value[name], str) or not pattern.match(value[name]):
                    raise InvalidJob(f"`{name}` must be {shape}")
                out[name] = value[name]
        if out["command"][0] == WASM and (len(out["command"]) != 2 or not _BLAKE3.match(out["command"][1])):
            raise InvalidJob('a WebAssembly job\'s command is ["wasm", "blake3:<module hash>"]')
        canonical_json(out)  # integers within 64 bits, no floats
        return cls(out)

    @classmethod
    def parse(cls, text: str | bytes, *, yaml_ok: bool = True) -> Manifest:
        """A manifest from JSON, or from YAML authoring (`job.yaml`) when `yaml_ok`.

        YAML is read with the safe loader; a float anywhere is refused by validation.
        """
        try:
            raw = text.decode("utf-8") if isinstance(text, bytes) else text
        except UnicodeDecodeError:
            raise InvalidJob("job manifest is not UTF-8") from None
        if raw.lstrip().startswith("{") or not yaml_ok:
            try:
                value = parse_json(raw, "job manifest")
            except LedgerError as exc:
                raise InvalidJob(exc.reason) from None
        else:
            try:
                value = yaml.load(raw, Loader=_StrictLoader)
            except yaml.YAMLError as exc:
                raise InvalidJob(f"job.yaml does not parse: {exc}") from None
        return cls.from_value(value)

    @property
    def canonical(self) -> bytes:
        return canonical_json(self.value)

    @property
    def job_id(self) -> str:
        return "blake3:" + blake3_hex(self.canonical)

    @property
    def hex(self) -> str:
        return self.job_id.split(":", 1)[1]

    @property
    def command(self) -> list[str]:
        return list(self.value["command"])

    @property
    def args(self) -> list[str]:
        return list(self.value.get("args", []))

    @property
    def timeout_seconds(self) -> float:
        timeout = self.value["timeout"]
        return float(timeout) if isinstance(timeout, int) else duration_seconds(timeout)

    @property
    def runtime(self) -> str:
        """`wasm` or `subprocess`, read from `command` (see the module docstring)."""
        return "wasm" if self.value["command"][0] == WASM else "subprocess"

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return [dict(i) for i in self.value.get("inputs", [])]

    def to_yaml(self) -> str:
        """The authoring form stored beside `job.json` in the job commit (keys sorted)."""
        return yaml.safe_dump(self.value, sort_keys=True, allow_unicode=True, default_flow_style=False)


def parse_job_id(value: object) -> str:
    """`blake3:<hex>` or bare `<hex>` → `blake3:<hex>`."""
    if isinstance(value, str):
        text = value if value.startswith("blake3:") else "blake3:" + value
        if _BLAKE3.match(text):
            return text
    raise InvalidJob(f"{value!r} is not a job id (blake3:<64 lowercase hex>)")


__all__ = ["FIELDS", "WASM", "Manifest", "duration_seconds", "parse_job_id"]
