"""The rule language: parse `gatos/policies/*.rules` into the bundle's canonical form.

One rule per line, `#` starts a comment, shell-style quoting:

    audit deny                                   # directive: record denials (default) or `all`
    deny    actor=@interns ns=payroll reason="interns never touch payroll"
    require caps=$cap                            # the request's own capability
    require ns=finance type=invoice.paid caps=finance:approve
    allow   action=bus.subscribe topic=public.*
    redact  action=bus.subscribe fields=payload.ssn,payload.card
    audit   action=policy.apply                  # also record these allows

A rule is an effect and `key OP value` conditions (all must hold). Keys: `actor`
(`@group` means a member), `group`, `action`, `ns`, `topic`, `target`, `cap`, `type`,
`payload.<field>[.<field>…]`; `=`/`!=` take comma lists with `*` wildcards,
`<`, `<=`, `>`, `>=` compare payload integers. Its id is `<file>:<line>`.

Why a line language and not YAML: every rule must carry the exact line it came
from (the audit names it), and a reviewer should read one rule as one line.
The canonical form is plain JSON data, so its BLAKE3 is the bundle id.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from policy._caps import ACTIONS, validate_pattern
from policy.errors import InvalidPolicy

EFFECTS = ("allow", "audit", "deny", "redact", "require")
CANONICAL_VERSION = 1
_COND_RE = re.compile(r"([a-z][A-Za-z0-9_.-]*)(!=|<=|>=|=|<|>)(.*)", re.DOTALL)
_KEYS = ("actor", "group", "action", "ns", "topic", "target", "cap", "type")
_PARAMS = {"deny": ("reason",), "require": ("caps",), "redact": ("fields",),
           "allow": (), "audit": ()}
_FILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}\.rules")


def _condition(key: str, op: str, raw: str, where: str) -> list[Any]:
    if key not in _KEYS and not (key.startswith("payload.") and len(key) > 8):
        raise InvalidPolicy(f"{where}: unknown key {key!r} (keys: {', '.join(_KEYS)}, payload.<field>)")
    if op in ("<", "<=", ">", ">="):
        if not key.startswith("payload."):
            raise InvalidPolicy(f"{where}: {op} compares payload integers only")
        try:
            return [key, op, int(raw)]
        except ValueError:
            raise InvalidPolicy(f"{where}: {raw!r} is not an integer") from None
    values = raw.split(",")
    if not raw or any(not v for v in values):
        raise InvalidPolicy(f"{where}: {key}{op} needs a value")
    if key == "action":
        for value in values:
            if "*" not in value and value not in ACTIONS:
                raise InvalidPolicy(f"{where}: unknown action {value!r} (actions: {', '.join(ACTIONS)})")
    if key == "cap":
        values = [validate_pattern(v) for v in values]
    return [key, op, sorted(set(values))]


def parse_rule(line: str, where: str) -> dict[str, Any] | None:
    """One line → a canonical rule (None for a blank or comment line)."""
    try:
        tokens = shlex.split(line, comments=True, posix=True)
    except ValueError as exc:
        raise InvalidPolicy(f"{where}: {exc}") from None
    if not tokens:
        return None
    effect, rest = tokens[0], tokens[1:]
    if effect not in EFFECTS:
        raise InvalidPolicy(f"{where}: unknown effect {effect!r} (effects: {', '.join(EFFECTS)})")
    rule: dict[str, Any] = {"id": where, "effect": effect, "when": []}
    for token in rest:
        match = _COND_RE.fullmatch(token)
        if not match:
            raise InvalidPolicy(f"{where}: {token!r} is not key=value")
        key, op, raw = match.groups()
        if key in _PARAMS[effect]:
            if op != "=" or key in rule:
                raise InvalidPolicy(f"{where}: `{key}` must be given once with `=`")
            if key == "reason":
                if not raw or "\n" in raw or len(raw) > 200:
                    raise InvalidPolicy(f"{where}: a reason is one line of 1 to 200 characters")
                rule[key] = raw
            elif key == "caps":
                rule[key] = [c if c == "$cap" else validate_pattern(c) for c in raw.split(",")]
            else:
                fields = raw.split(",")
                if any(not f.startswith("payload.") or len(f) <= 8 for f in fields):
                    raise InvalidPolicy(f"{where}: redact fields are payload.<field> paths")
                rule[key] = sorted(set(fields))
            continue
        rule["when"].append(_condition(key, op, raw, where))
    if effect == "require":
        rule.setdefault("caps", ["$cap"])
    if effect == "redact" and "fields" not in rule:
        raise InvalidPolicy(f"{where}: redact needs fields=payload.<field>,…")
    if effect == "deny":
        rule.setdefault("reason", f"denied by rule {where}")
    rule["when"].sort(key=lambda c: (c[0], c[1], repr(c[2])))
    return rule


def parse_file(name: str, text: str) -> tuple[list[dict[str, Any]], str | None]:
    """Rules of one file and its `audit all|deny` directive (None when absent)."""
    if not _FILE_RE.fullmatch(name):
        raise InvalidPolicy(f"policy file name {name!r} must look like 'name.rules'")
    rules: list[dict[str, Any]] = []
    audit: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"{name}:{number}"
        stripped = line.split("#", 1)[0].split()
        if len(stripped) == 2 and stripped[0] == "audit" and "=" not in stripped[1]:
            if stripped[1] not in ("all", "deny"):
                raise InvalidPolicy(f"{where}: `audit` takes `all` or `deny`")
            if audit is not None and audit != stripped[1]:
                raise InvalidPolicy(f"{where}: a second, different `audit` directive")
            audit = stripped[1]
            continue
        rule = parse_rule(line, where)
        if rule is not None:
            rules.append(rule)
    return rules, audit


def compile_sources(files: dict[str, str]) -> dict[str, Any]:
    """Every file (in name order) → the canonical form of a bundle.

    Raises:
        InvalidPolicy: a line that does not parse, or `audit` directives that disagree.
    """
    rules: list[dict[str, Any]] = []
    audits: set[str] = set()
    for name in sorted(files):
        file_rules, audit = parse_file(name, files[name])
        rules.extend(file_rules)
        if audit:
            audits.add(audit)
    if len(audits) > 1:
        raise InvalidPolicy("policy files disagree on `audit` (all vs deny)")
    return {"version": CANONICAL_VERSION, "audit": audits.pop() if audits else "deny",
            "rules": rules}


__all__ = ["CANONICAL_VERSION", "EFFECTS", "compile_sources", "parse_file", "parse_rule"]
