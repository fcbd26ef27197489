"""The decision function: (request, compiled bundle, trust view, now) → decision. Pure.

Semantics (deny by default; docs/policy.md has the long form):

1. an action outside `ACTIONS`, an actor without a trusted key, a trust graph that
   did not load, or an empty bundle → denied by a built-in `gatos:*` rule;
2. the matching `deny` rule that comes first (file name, then line) → denied;
3. every matching `require` rule must be met, in order; the first one the actor
   does not meet → denied, `missing cap: <cap>`;
4. otherwise, if any `allow` or `require` rule matched → allowed by the first of them;
5. otherwise → denied by `gatos:default-deny`.

A grant request (`trust.grant` whose payload lists `caps`) is also denied by
`gatos:escalation` when the issuer does not hold every capability it would give.

`redact` rules add payload fields to hide from whoever reads the record; `audit`
rules (or the bundle's `audit all`) ask for allowed decisions to be recorded too.

Speed: rules are indexed by action (a closed set) and by exact target, so a
request looks only at the rules that can match it; the candidate list of each
(action, target) pair is cached in the compiled bundle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ledger_core import blake3_hex, canonical_json
from policy._caps import ACTIONS, capability_for, matches
from policy._trustview import TrustView
from policy.errors import InvalidPolicy

_NS_ACTIONS = frozenset(("append", "jobs.enqueue", "jobs.claim", "jobs.result", "state.checkpoint"))
_TOPIC_ACTIONS = frozenset(a for a in ACTIONS if a.startswith("bus."))
_CACHE_MAX = 65536
_ZERO = "0" * 40


class Request(NamedTuple):
    """One write (or subscription) to decide (a named tuple: one is built on every append)."""

    actor: str
    action: str
    target: str
    payload: Any = None
    type: str | None = None
    policy_root: str | None = None  # the bundle commit a signed event names (appends)

    def to_value(self) -> dict[str, Any]:
        out: dict[str, Any] = {"actor": self.actor, "action": self.action, "target": self.target}
        if self.payload is not None:
            out["payload"] = self.payload
        if self.type is not None:
            out["type"] = self.type
        if self.policy_root is not None:
            out["policy_root"] = self.policy_root
        return out

    @classmethod
    def from_value(cls, value: dict[str, Any]) -> Request:
        return cls(value["actor"], value["action"], value["target"], value.get("payload"),
                   value.get("type"), value.get("policy_root"))


class Decision(NamedTuple):
    """The answer: allowed or not, which rule decided, why, and what to record or hide."""

    allowed: bool
    rule: str
    reason: str
    audit: bool
    redact: tuple[str, ...] = ()

    def to_value(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "rule": self.rule, "reason": self.reason,
                "audit": self.audit, "redact": list(self.redact)}


Pred = Callable[[Request, tuple[str, ...], str], bool]


def _field(payload: Any, path: str) -> tuple[bool, Any]:
    value = payload
    for part in path.split(".")[1:]:
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, str)):
        return str(value)
    return canonical_json(value).decode()


def _any_match(values: list[str], text: str) -> bool:
    return any(matches(v, text) for v in values)


def _predicate(key: str, op: str, arg: Any) -> Pred:
    """A compiled condition: (request, actor's groups, capability) → bool."""
    if key.startswith("payload."):
        if op in ("<", "<=", ">", ">="):
            compare = {"<": int.__lt__, "<=": int.__le__, ">": int.__gt__, ">=": int.__ge__}[op]

            def numeric(r: Request, g: tuple[str, ...], c: str) -> bool:
                found, value = _field(r.payload, key)
                return found and type(value) is int and compare(value, arg)
            return numeric

        def payload_eq(r: Request, g: tuple[str, ...], c: str) -> bool:
            found, value = _field(r.payload, key)
            return found and _any_match(arg, _text(value))
        positive = payload_eq
    elif key == "actor":
        names = [v for v in arg if not v.startswith("@")]
        groups = [v[1:] for v in arg if v.startswith("@")]

        def actor_eq(r: Request, g: tuple[str, ...], c: str) -> bool:
            return _any_match(names, r.actor) or any(_any_match(groups, x) for x in g)
        positive = actor_eq
    elif key == "group":
        def group_eq(r: Request, g: tuple[str, ...], c: str) -> bool:
            return any(_any_match(arg, x) for x in g)
        positive = group_eq
    else:
        def attr_eq(r: Request, g: tuple[str, ...], c: str) -> bool:
            value = {"action": r.action, "cap": c, "type": r.type or ""}.get(key, r.target)
            return _any_match(arg, value)
        positive = attr_eq
    if op == "!=":
        return lambda r, g, c: not positive(r, g, c)
    return positive


@dataclass(frozen=True)
class _Rule:
    index: int
    id: str
    effect: str
    preds: tuple[Pred, ...]
    caps: tuple[str, ...] = ()
    reason: str = ""
    fields: tuple[str, ...] = ()
    on_payload: bool = False  # a condition reads the payload


def _rule_actions(when: list[list[Any]]) -> set[str]:
    """The known actions a rule can match, from its action/ns/topic conditions."""
    actions = set(ACTIONS)
    for key, op, arg in when:
        if key == "action":
            hit = {a for a in ACTIONS if _any_match(arg, a)}
            actions &= hit if op == "=" else set(ACTIONS) - hit
        elif key == "ns":
            actions &= _NS_ACTIONS
        elif key == "topic":
            actions &= _TOPIC_ACTIONS
    return actions


def _exact_targets(when: list[list[Any]]) -> list[str] | None:
    """Target values a rule is limited to (None: any target), for the index."""
    best: list[str] | None = None
    for key, op, arg in when:
        if key in ("ns", "topic", "target") and op == "=" and not any("*" in v for v in arg):
            best = arg if best is None else [v for v in best if v in arg]
    return best


@dataclass
class Bundle:
    """A compiled bundle: the canonical form plus its indexes. Build with `from_canonical`."""

    canonical: dict[str, Any]
    bundle_id: str
    audit_all: bool
    rules: tuple[_Rule, ...]
    _any: dict[str, tuple[_Rule, ...]] = field(default_factory=dict)
    _exact: dict[str, dict[str, tuple[_Rule, ...]]] = field(default_factory=dict)
    _cache: dict[tuple[str, str], tuple[_Rule, ...]] = field(default_factory=dict)

    @classmethod
    def from_canonical(cls, canonical: dict[str, Any]) -> Bundle:
        """Index a canonical form (from `compile_sources` or a stored `policy.json`)."""
        try:
            if canonical.get("version") != 1 or canonical.get("audit") not in ("all", "deny"):
                raise InvalidPolicy("unknown policy canonical form version or audit mode")
            rules = []
            anyw: dict[str, list[_Rule]] = {a: [] for a in ACTIONS}
            exact: dict[str, dict[str, list[_Rule]]] = {a: {} for a in ACTIONS}
            for i, raw in enumerate(canonical["rules"]):
                when = raw["when"]
                rule = _Rule(i, raw["id"], raw["effect"],
                             tuple(_predicate(k, op, arg) for k, op, arg in when),
                             tuple(raw.get("caps", ())), raw.get("reason", ""),
                             tuple(raw.get("fields", ())),
                             any(str(k).startswith("payload.") for k, _op, _arg in when))
                rules.append(rule)
                targets = _exact_targets(when)
                for action in _rule_actions(when):
                    if targets is None:
                        anyw[action].append(rule)
                    else:
                        for target in targets:
                            exact[action].setdefault(target, []).append(rule)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidPolicy(f"malformed policy canonical form: {exc}") from None
        data = canonical_json(canonical)
        return cls(canonical, blake3_hex(data), canonical["audit"] == "all", tuple(rules),
                   {a: tuple(v) for a, v in anyw.items()},
                   {a: {t: tuple(v) for t, v in d.items()} for a, d in exact.items()})

    @property
    def canonical_bytes(self) -> bytes:
        return canonical_json(self.canonical)

    def candidates(self, action: str, target: str) -> tuple[_Rule, ...]:
        key = (action, target)
        found = self._cache.get(key)
        if found is None:
            exact = self._exact[action].get(target, ())
            found = tuple(sorted(exact + self._any[action], key=lambda r: r.index)) if exact \
                else self._any[action]
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = found
        return found


    def reads_payload(self, action: str, target: str) -> bool:
        """Whether a rule that can match (action, target) has a `payload.*` condition.

        When none has, a decision on that pair does not depend on the payload (the
        gate's per-(actor, namespace, type) cache relies on this).
        """
        return any(rule.on_payload for rule in self.candidates(action, target))


def _deny(rule: str, reason: str) -> Decision:
    return Decision(False, rule, reason, True)


def decide(request: Request, bundle: Bundle | None, trust: TrustView, now: int,
           policy_commit: str | None = None) -> Decision:
    """Decide one request. Same inputs, same decision: nothing here reads a clock or a ref.

    `policy_commit` is the commit of `bundle` (the active one). When it is given and the
    request names another bundle commit (`policy_root` of a signed event; the zero OID
    means the event names none), the request is denied: an event's `Policy-Root` must be
    the bundle it was admitted under.
    """
    cap = capability_for(request.action, request.target)
    if cap is None:
        return _deny("gatos:unknown-action", f"unknown action: {request.action}")
    if trust.error is not None:
        return _deny("gatos:trust-invalid", f"the trust graph did not load: {trust.error}")
    if not trust.known(request.actor):
        return _deny("gatos:unknown-actor", f"unknown actor: {request.actor}")
    if bundle is None or not bundle.rules:
        return _deny("gatos:empty-bundle", "no active policy bundle: everything is denied")
    root = request.policy_root
    if root is not None and policy_commit is not None and root != policy_commit and root != _ZERO:
        return _deny("gatos:policy-root", f"the event names policy root {root}, but the active "
                     f"bundle is {policy_commit}: build and sign it again under the active policy")
    groups = trust.groups_of(request.actor)
    first_ok: _Rule | None = None
    requires: list[_Rule] = []
    redact: list[str] = []
    audit = bundle.audit_all
    for rule in bundle.candidates(request.action, request.target):
        if not all(pred(request, groups, cap) for pred in rule.preds):
            continue
        effect = rule.effect
        if effect == "deny":
            return Decision(False, rule.id, rule.reason, True, tuple(redact))
        if effect == "require":
            requires.append(rule)
        elif effect == "redact":
            redact.extend(rule.fields)
            continue
        elif effect == "audit":
            audit = True
            continue
        if first_ok is None:
            first_ok = rule
    for rule in requires:
        for wanted in rule.caps:
            wanted = cap if wanted == "$cap" else wanted
            if not trust.holds(request.actor, wanted, now):
                why = trust.explain_missing(request.actor, wanted, now)
                return Decision(False, rule.id, f"missing cap: {wanted}" + (f" ({why})" if why else ""),
                                True, tuple(redact))
    escalation = _escalation(request, trust, now)
    if escalation is not None:
        return Decision(False, "gatos:escalation", escalation, True, tuple(redact))
    if first_ok is None:
        return Decision(False, "gatos:default-deny",
                        f"no rule allows {request.action} on {request.target}", True, tuple(redact))
    reason = f"allowed by {first_ok.effect}" + (f" ({cap})" if first_ok.effect == "require" else "")
    return Decision(True, first_ok.id, reason, audit, tuple(sorted(set(redact))))


def _escalation(request: Request, trust: TrustView, now: int) -> str | None:
    """A grant request (`trust.grant` with `payload.caps`) for more than the issuer holds."""
    if request.action != "trust.grant" or not isinstance(request.payload, dict):
        return None
    caps = request.payload.get("caps")
    if not isinstance(caps, list):
        return None
    for cap in caps:
        if not isinstance(cap, str) or not trust.holds_pattern(request.actor, cap, now):
            return f"{request.actor} cannot grant {cap}: it does not hold it (no escalation)"
    return None


def redact_payload(payload: Any, fields: tuple[str, ...] | list[str]) -> Any:
    """A copy of `payload` with each `payload.<path>` replaced by `"[redacted]"`."""
    if not fields or not isinstance(payload, dict):
        return payload
    out = dict(payload)
    for path in fields:
        parts = path.split(".")[1:]
        node = out
        for part in parts[:-1]:
            child = node.get(part) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                node = None
                break
            node[part] = child = dict(child)
            node = child
        if isinstance(node, dict) and parts[-1] in node:
            node[parts[-1]] = "[redacted]"
    return out


__all__ = ["Bundle", "Decision", "Request", "decide", "redact_payload"]
