"""Capabilities: strings such as `demo:append` or `bus:echo/jobs:publish`, with `*` wildcards.

A `*` in a pattern matches any run of characters (also `:`), so `*` alone is every
capability and `bus:*:publish` is publishing on every topic. Every write the gate
decides is one *action* on one *target*, and the capability it needs follows from
the pair through `ACTIONS` (a closed table: an action not in it is denied).
"""

from __future__ import annotations

import re
from functools import lru_cache

from policy.errors import InvalidPolicy

# action → capability template; `{t}` is the target (namespace, topic, …).
ACTIONS: dict[str, str] = {
    "append": "{t}:append",
    "bus.publish": "bus:{t}:publish",
    "bus.subscribe": "bus:{t}:subscribe",
    "jobs.enqueue": "jobs:{t}:enqueue",
    "jobs.claim": "jobs:{t}:claim",
    "jobs.result": "jobs:{t}:result",
    "state.checkpoint": "state:{t}:checkpoint",
    "policy.apply": "policy:apply",
    "trust.grant": "trust:grant",
    "trust.revoke": "trust:revoke",
    "trust.key": "trust:key",
}

_CAP_RE = re.compile(r"[A-Za-z0-9._/*-]+(:[A-Za-z0-9._/*-]+)*")


def capability_for(action: str, target: str) -> str | None:
    """The capability `action` on `target` needs, or None for an unknown action."""
    template = ACTIONS.get(action)
    return None if template is None else template.replace("{t}", target)


def validate_pattern(pattern: object) -> str:
    """Check a capability pattern's shape (letters, digits, `._/-`, `*`, `:` separators)."""
    if not isinstance(pattern, str) or len(pattern) > 256 or not _CAP_RE.fullmatch(pattern):
        raise InvalidPolicy(f"{pattern!r} is not a capability pattern like 'demo:append' or 'bus:*:publish'")
    return pattern


@lru_cache(maxsize=65536)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The regular expression of a pattern: literal text, `*` as `.*`, anchored both ends."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def matches(pattern: str, capability: str) -> bool:
    """Whether `pattern` grants `capability` (a concrete capability string)."""
    if "*" not in pattern:
        return pattern == capability
    if pattern == "*":
        return True
    return compile_pattern(pattern).fullmatch(capability) is not None


def covers(held: str, wanted: str) -> bool:
    """Whether every capability `wanted` matches is also matched by `held`.

    Used to refuse escalation by delegation. Matching `held` against the text of
    `wanted` with its `*` taken literally is exact here: a literal character of
    `held` can never be `*`, so each `*` of `wanted` is absorbed by a `*` of `held`,
    which then matches whatever the `*` of `wanted` stands for.
    """
    return matches(held, wanted)


__all__ = ["ACTIONS", "capability_for", "compile_pattern", "covers", "matches", "validate_pattern"]
