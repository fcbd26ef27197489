"""The trust view's capability index gives the same answers as scanning every grant."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger_core import PublicKeyText, SigningKey
from policy import ActorInfo, TrustView, check_grant, make_grant
from policy._caps import matches

T0 = 1_700_000_000
OWNER = SigningKey(bytes([9]) * 32)
KEY = PublicKeyText(OWNER.public_key)
ACTORS = ["user:a", "user:b", "user:c"]
CAPS = ["n1:append", "n2:append", "n*:append", "*", "bus:t:publish", "bus:*:publish"]
_grant = st.tuples(st.sampled_from(ACTORS), st.lists(st.sampled_from(CAPS), min_size=1, max_size=3),
                   st.sampled_from([None, T0 + 10, T0 + 1000]))


def _view(specs: list[tuple[str, list[str], int | None]]) -> TrustView:
    actors = {"user:owner": ActorInfo((KEY,), (), ("*",))}
    actors.update({a: ActorInfo((KEY,), (), ()) for a in ACTORS})
    grants = {}
    for subject, caps, exp in specs:
        doc, sig = make_grant(OWNER, issuer="user:owner", subject=subject, caps=caps, aud="gatos:t",
                              iat=T0, exp=exp)
        grant = check_grant(doc, sig, [KEY])
        grants[grant.grant_id] = grant
    return TrustView(root="1" * 40, audience="gatos:t", actors=actors, grants=grants)


@settings(max_examples=60, deadline=None)
@given(st.lists(_grant, max_size=6), st.sampled_from(ACTORS),
       st.sampled_from(["n1:append", "n2:append", "n3:append", "bus:t:publish", "bus:u:publish", "x:y"]),
       st.sampled_from([T0, T0 + 100, T0 + 5000]))
def test_indexed_holds_equals_a_full_scan(specs: list[tuple[str, list[str], int | None]], actor: str,
                                          cap: str, now: int) -> None:
    """holds() through the (subject, cap) index and the wildcard list = any live grant matching."""
    view = _view(specs)
    naive = any(any(matches(held, cap) for held in g.caps) and view.grant_problem(g, now) is None
                for g in view.by_subject.get(actor, ()))
    assert view.holds(actor, cap, now) is naive
