"""Names that end up inside Git ref names (SPEC §2).

Every name is checked here, before any Git call, so that a bad name is a clear
`INVALID_NAME`/`INVALID_NS` error and never a half-written ref. The rules are a
strict subset of `git check-ref-format`: one component of `[A-Za-z0-9._-]`, 1-64
characters, not starting with `.` or `-`, no `..`, not ending in `.lock` or `.`.
"""

from __future__ import annotations

import re
from typing import NewType

from ledger_core.errors import InvalidName, InvalidNamespace

Actor = NewType("Actor", str)
RefName = NewType("RefName", str)

ACTOR_KINDS: tuple[str, ...] = ("agent", "service", "user")
_COMPONENT = re.compile(r"[A-Za-z0-9._-]{1,64}")
_EVENT_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
_REF_BAD = re.compile(r"(\.\.|@\{|[\x00-\x20\x7f~^:?*\[\\]|//|/\.|\.lock/|\.lock$|/$|\.$)")


def _component_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if not value:
        return "must not be empty"
    if len(value) > 64:
        return f"is {len(value)} characters, the limit is 64"
    if not _COMPONENT.fullmatch(value):
        return "may only contain letters, digits, '.', '_' and '-'"
    if value[0] in ".-":
        return "must not start with '.' or '-'"
    if ".." in value:
        return "must not contain '..'"
    if value.endswith(".lock"):
        return "must not end in '.lock'"
    if value.endswith("."):
        return "must not end in '.'"
    return None


def validate_component(value: object, what: str = "name") -> str:
    """Return `value` if it is one safe ref component, else raise `InvalidName`."""
    problem = _component_problem(value)
    if problem:
        raise InvalidName(f"invalid {what} {value!r}: {problem}")
    return value  # type: ignore[return-value]


def validate_namespace(value: object) -> str:
    """Return `value` if it is a valid namespace, else raise `InvalidNamespace`."""
    problem = _component_problem(value)
    if problem:
        raise InvalidNamespace(f"invalid namespace {value!r}: {problem}")
    return value  # type: ignore[return-value]


def validate_actor(value: object) -> Actor:
    """Return `value` if it is `user:`, `agent:` or `service:` plus a safe name."""
    if not isinstance(value, str) or ":" not in value:
        raise InvalidName(
            f"invalid actor {value!r}: expected 'user:<name>', 'agent:<name>' or 'service:<name>'"
        )
    kind, _, name = value.partition(":")
    if kind not in ACTOR_KINDS:
        raise InvalidName(f"invalid actor {value!r}: kind {kind!r} is not one of {ACTOR_KINDS}")
    problem = _component_problem(name)
    if problem:
        raise InvalidName(f"invalid actor {value!r}: the name {problem}")
    return Actor(value)


def normalize_actor(value: object) -> Actor:
    """Accept a bare client name (`"james"`) as `user:james`; validate the result."""
    if isinstance(value, str) and ":" not in value:
        value = f"user:{value}"
    return validate_actor(value)


def validate_event_type(value: object) -> str:
    """Event types are short, printable and never contain a newline (they are a commit subject)."""
    if not isinstance(value, str) or not _EVENT_TYPE.fullmatch(value):
        raise InvalidName(
            f"invalid event type {value!r}: 1-128 characters of letters, digits and '._:/-', "
            "starting with a letter or digit"
        )
    return value


def validate_ref_name(value: object) -> RefName:
    """Check a full ref name (`refs/gatos/...`) with git's check-ref-format rules."""
    if not isinstance(value, str) or not value.startswith("refs/") or _REF_BAD.search(value):
        raise InvalidName(f"invalid ref name {value!r}")
    for part in value.split("/"):
        if not part or part.startswith(".") or part.endswith(".lock"):
            raise InvalidName(f"invalid ref name {value!r}: bad component {part!r}")
    return RefName(value)


def actor_path(actor: str) -> str:
    """`user:alice` -> `user/alice`: Git forbids ':' in ref names."""
    kind, _, name = validate_actor(actor).partition(":")
    return f"{kind}/{name}"


def journal_ref(ns: str, actor: str) -> RefName:
    """The journal ref of one actor in one namespace: `refs/gatos/journal/<ns>/<kind>/<name>`."""
    return RefName(f"refs/gatos/journal/{validate_namespace(ns)}/{actor_path(actor)}")


JOURNAL_PREFIX = "refs/gatos/journal/"


def parse_journal_ref(ref: str) -> tuple[str, Actor]:
    """Inverse of `journal_ref`: return `(ns, actor)` or raise `InvalidName`."""
    if not ref.startswith(JOURNAL_PREFIX):
        raise InvalidName(f"{ref!r} is not a journal ref")
    parts = ref[len(JOURNAL_PREFIX):].split("/")
    if len(parts) != 3:
        raise InvalidName(f"{ref!r} is not refs/gatos/journal/<ns>/<kind>/<name>")
    ns, kind, name = parts
    return validate_namespace(ns), validate_actor(f"{kind}:{name}")
