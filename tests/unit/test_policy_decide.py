"""The pure decision: rule language, table of requests → decisions, determinism, wildcards."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger_core import PublicKeyText
from policy import (
    ActorInfo,
    Bundle,
    InvalidPolicy,
    Request,
    TrustView,
    capability_for,
    compile_sources,
    covers,
    decide,
    matches,
    redact_payload,
)

T0 = 1_700_000_000
KEY = PublicKeyText("ed25519:" + "11" * 32)

RULES = """\
# a test bundle
audit deny
deny    actor=@interns ns=payroll reason="interns never touch payroll"
require ns=finance type=invoice.paid caps=finance:approve
require caps=$cap
allow   action=bus.subscribe topic=public.*
redact  action=append fields=payload.ssn
deny    ns=finance payload.amount>1000000 reason="too large"
audit   action=policy.apply
"""


def trust() -> TrustView:
    actors = {
        "user:owner": ActorInfo((KEY,), ("owners",), ("*",)),
        "user:ann": ActorInfo((KEY,), ("leads",), ("finance:append", "bus:*:publish")),
        "user:ivan": ActorInfo((KEY,), ("interns",), ("*:append",)),
        "user:nobody": ActorInfo((KEY,), (), ()),
    }
    return TrustView(root="1" * 40, audience="gatos:x", actors=actors)


def bundle(text: str = RULES) -> Bundle:
    return Bundle.from_canonical(compile_sources({"10-test.rules": text}))


TABLE = [
    # actor, action, target, payload, type → allowed, rule, reason (prefix)
    ("user:owner", "append", "finance", {}, "x", True, "10-test.rules:5", "allowed by require"),
    ("user:ann", "append", "finance", {"amount": 5}, "x", True, "10-test.rules:5", "allowed"),
    ("user:ann", "append", "finance", {}, "invoice.paid", False, "10-test.rules:4",
     "missing cap: finance:approve"),
    ("user:owner", "append", "finance", {"amount": 2_000_000}, "x", False, "10-test.rules:8", "too large"),
    ("user:ann", "append", "demo", {}, "x", False, "10-test.rules:5", "missing cap: demo:append"),
    ("user:ivan", "append", "payroll", {}, "x", False, "10-test.rules:3", "interns never touch payroll"),
    ("user:ivan", "append", "demo", {}, "x", True, "10-test.rules:5", "allowed"),
    ("user:nobody", "bus.subscribe", "public.news", None, None, False, "10-test.rules:5",
     "missing cap: bus:public.news:subscribe"),
    ("user:ann", "bus.publish", "echo/jobs", None, None, True, "10-test.rules:5", "allowed"),
    ("user:ann", "policy.apply", "bundle", None, None, False, "10-test.rules:5", "missing cap: policy:apply"),
    ("user:ghost", "append", "demo", {}, "x", False, "gatos:unknown-actor", "unknown actor: user:ghost"),
    ("user:owner", "frobnicate", "demo", {}, "x", False, "gatos:unknown-action", "unknown action"),
    ("user:ann", "trust.grant", "user:nobody", {"caps": ["x:append"]}, None, False, "10-test.rules:5",
     "missing cap: trust:grant"),
    ("user:owner", "state.checkpoint", "finance", None, None, True, "10-test.rules:5", "allowed"),
]


@pytest.mark.parametrize(("actor", "action", "target", "payload", "type_", "allowed", "rule", "reason"),
                         TABLE)
def test_decision_table(actor: str, action: str, target: str, payload: object, type_: str | None,
                        allowed: bool, rule: str, reason: str) -> None:
    """Each request gets the decision, rule id and reason the table says."""
    got = decide(Request(actor, action, target, payload, type_), bundle(), trust(), T0)
    assert (got.allowed, got.rule) == (allowed, rule)
    assert got.reason.startswith(reason)
    assert got.audit or got.allowed  # every denial is recorded


def test_missing_cap_reason_is_exact() -> None:
    """The denial reason names the capability, exactly as the wire example shows."""
    got = decide(Request("user:nobody", "append", "demo"), bundle(), trust(), T0)
    assert got.reason == "missing cap: demo:append"


def test_audit_rules_and_redaction() -> None:
    """`audit` rules record allows; `redact` lists payload fields to hide."""
    got = decide(Request("user:owner", "policy.apply", "bundle"), bundle(), trust(), T0)
    assert got.allowed and got.audit
    got = decide(Request("user:owner", "append", "hr", {"ssn": "1", "n": 1}), bundle(), trust(), T0)
    assert got.allowed and not got.audit and got.redact == ("payload.ssn",)
    assert redact_payload({"ssn": "1", "n": 1}, got.redact) == {"ssn": "[redacted]", "n": 1}


def test_deny_by_default() -> None:
    """An empty bundle, no bundle, or no matching rule: denied with a rule id and a reason."""
    for empty in (None, bundle("# nothing\n")):
        got = decide(Request("user:owner", "append", "demo"), empty, trust(), T0)
        assert (got.allowed, got.rule) == (False, "gatos:empty-bundle")
    got = decide(Request("user:owner", "append", "demo"), bundle("allow action=bus.subscribe\n"), trust(), T0)
    assert (got.allowed, got.rule) == (False, "gatos:default-deny")
    broken = TrustView(root="1" * 40, error="boom")
    assert decide(Request("user:owner", "append", "d"), bundle(), broken, T0).rule == "gatos:trust-invalid"


def test_escalation_is_part_of_the_decision() -> None:
    """Granting a capability one does not hold is denied by `gatos:escalation`."""
    b = bundle("require caps=$cap\n")
    t = TrustView(root="1" * 40, actors={"user:g": ActorInfo((KEY,), (), ("trust:grant", "demo:*"))})
    ok = decide(Request("user:g", "trust.grant", "user:x", {"caps": ["demo:append"]}), b, t, T0)
    assert ok.allowed
    bad = decide(Request("user:g", "trust.grant", "user:x", {"caps": ["*"]}), b, t, T0)
    assert (bad.allowed, bad.rule) == (False, "gatos:escalation")


@pytest.mark.parametrize("text", [
    "permit x=1", "allow actor", "allow colour=red", "deny reason=", "require caps=a b",
    "allow action=frob", "allow payload.n>abc", "redact", "allow actor<3", 'deny reason="open',
    "audit sometimes",
])
def test_bad_rules_are_refused_with_their_line(text: str) -> None:
    """A rule that does not parse is an InvalidPolicy naming <file>:<line>."""
    with pytest.raises(InvalidPolicy, match=r"r\.rules:2"):
        compile_sources({"r.rules": "# ok\n" + text + "\n"})


def test_canonical_form_ignores_comments_and_condition_order() -> None:
    """Comments, spacing and condition order do not change the bundle id; a rule change does."""
    a = bundle("allow ns=a actor=user:x  # c\n")
    b = bundle("allow   actor=user:x ns=a\n")
    c = bundle("allow actor=user:y ns=a\n")
    assert a.bundle_id == b.bundle_id != c.bundle_id


def test_wildcards_and_cover() -> None:
    """`*` matches any run of characters; `covers` is pattern inclusion."""
    assert matches("*", "bus:x:publish") and matches("bus:*:publish", "bus:a/b:publish")
    assert not matches("bus:*:publish", "bus:a:subscribe") and not matches("demo:append", "demo2:append")
    assert covers("bus:*", "bus:x*:publish") and covers("*", "anything*")
    assert not covers("bus:x*:publish", "bus:*:publish") and not covers("demo:append", "demo:*")
    assert capability_for("jobs.claim", "q") == "jobs:q:claim" and capability_for("nope", "q") is None


names = st.sampled_from(["user:owner", "user:ann", "user:ivan", "user:nobody", "user:ghost"])
actions = st.sampled_from(["append", "bus.publish", "bus.subscribe", "jobs.enqueue", "policy.apply",
                           "trust.grant", "state.checkpoint", "bogus"])
targets = st.sampled_from(["finance", "payroll", "demo", "public.news", "echo/jobs"])
payloads = st.one_of(st.none(), st.dictionaries(st.sampled_from(["amount", "ssn", "caps"]),
                                                st.integers(-2**40, 2**40), max_size=3))


@given(names, actions, targets, payloads, st.integers(0, 2**40))
def test_decisions_are_deterministic(actor: str, action: str, target: str, payload: object, now: int) -> None:
    """Same request + same bundle + same trust + same time → the same decision, every time."""
    request = Request(actor, action, target, payload, "t")
    first = decide(request, bundle(), trust(), now)
    again = decide(Request.from_value(request.to_value()), Bundle.from_canonical(bundle().canonical),
                   trust(), now)
    assert first == again
    assert first.allowed or first.audit
