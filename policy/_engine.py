"""The gate: the active bundle and trust view, cached by ref value, deciding every write.

`PolicyEngine` is what the node wires in. `refresh()` reads two refs
(`refs/gatos/policies/active`, `refs/gatos/trust`) and reloads only what changed;
`check()` decides a request with the injected clock, queues the audit record of a
denial (or of an allow the policy wants kept) and raises `PolicyDenied`; `gate()` is
the journal's `Gate` hook; `flush()` writes the queued records.

Speed (the gate runs once per event in the journal writer):

* `refresh()` first asks the optional `stamp` hook for a cheap value that changes
  whenever either ref may have changed (the node passes one made of the two loose
  ref files' inode, mtime and size: two `stat` calls). An equal stamp means the refs
  were not touched and nothing is read; `None` means "cannot tell" and the refs are
  read. The stamp is taken *before* the refs are read, so a change racing the read
  changes the next stamp. A change made by another process (`gatos grant`,
  `gatos policy apply`) has moved the ref file before that process returned, so the
  next batch sees it.
* `gate()` remembers allowed, unaudited `append` decisions per (actor, namespace,
  event type, the event's policy root) when no rule that can match reads the payload. The memo is dropped
  whenever the bundle or trust view changes, and it only holds within the span of
  time in which no grant starts or expires (`TrustView.stable_span`), so a memoized
  allow never outlives a grant's `exp`. Denials and audited allows are decided (and
  recorded) every time.

A bundle or trust graph that fails to load does not open the gate: every request
is then denied, naming the reason (`gatos:policy-invalid`, `gatos:trust-invalid`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ledger_core import TRUST_REF, ObjectId, ObjectStore, RefStore, SignedEvent
from ledger_core.errors import LedgerError
from policy._audit import AuditLog, AuditRecord
from policy._decide import Bundle, Decision, Request, decide
from policy._store import ACTIVE_REF, ZERO, SigCache, StoredBundle, load_bundle, load_trust
from policy._trustview import TrustView
from policy.errors import PolicyDenied

MEMO_MAX = 65536


class PolicyEngine:
    """Decides requests against the node's active bundle and trust graph. One per thread."""

    def __init__(self, objects: ObjectStore, refs: RefStore, *, clock: Callable[[], float],
                 sleep: Callable[[float], None], stamp: Callable[[], object] | None = None) -> None:
        self.objects = objects
        self.refs = refs
        self.clock = clock
        self.audit = AuditLog(objects, refs, sleep)
        self._policy_head: ObjectId | bool | None = False  # False: never read
        self._trust_head: ObjectId | bool | None = False
        self.stored: StoredBundle | None = None
        self.bundle_error: str | None = None
        self.trust = TrustView(root=ZERO)
        self._sig_cache: SigCache = {}
        self._stamp_of = stamp
        self._stamp: object = None  # None: never equal (refs are read)
        # (actor, ns, type, policy root) → allowed, valid while now is in [_memo_from, _memo_until)
        self._memo: dict[tuple[str, str, str, str], Decision] = {}
        self._memo_from: float = 0.0
        self._memo_until: float = 0.0

    # -- state ----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Reload the bundle or trust view if their ref moved since the last look."""
        if self._stamp_of is not None:
            stamp = self._stamp_of()
            if stamp is not None and stamp == self._stamp:
                return
            self._stamp = stamp
        head = self.refs.get(ACTIVE_REF)
        if head != self._policy_head:
            try:
                self.stored = load_bundle(self.objects, head) if head else None
                self.bundle_error = None
            except LedgerError as exc:
                self.stored, self.bundle_error = None, exc.reason
            self._policy_head = head
            self.forget()
        trust_head = self.refs.get(TRUST_REF)
        if trust_head != self._trust_head:
            self.trust = load_trust(self.objects, trust_head, self._sig_cache)
            self._trust_head = trust_head
            self.forget()

    def forget(self) -> None:
        """Drop memoized decisions (called whenever the bundle or the trust view changes)."""
        self._memo.clear()
        self._memo_from = self._memo_until = 0.0

    @property
    def bundle(self) -> Bundle | None:
        return self.stored.bundle if self.stored else None

    @property
    def policy_root(self) -> str:
        return self.stored.commit if self.stored else ZERO

    # -- deciding ------------------------------------------------------------------------

    def decide(self, request: Request, now: int | None = None) -> Decision:
        """The decision under the cached state (call `refresh` first); nothing recorded."""
        if self._policy_head is False:
            self.refresh()
        now = int(self.clock()) if now is None else now
        if self.bundle_error is not None:
            return Decision(False, "gatos:policy-invalid",
                            f"the active policy bundle did not load: {self.bundle_error}", True)
        return decide(request, self.bundle, self.trust, now, self.policy_root)

    def check(self, actor: str, action: str, target: str, payload: Any = None, *,
              type: str | None = None, now: int | None = None,
              policy_root: str | None = None) -> Decision:
        """Decide and queue the audit record; raise `PolicyDenied` on a denial."""
        if now is None:
            now = int(self.clock())
        request = Request(actor, action, target, payload, type, policy_root)
        decision = self.decide(request, now)
        if decision.audit or not decision.allowed:
            self.audit.record(AuditRecord(request, decision, self.policy_root,
                                          self.trust.root, now))
        if not decision.allowed:
            raise PolicyDenied(decision.reason, decision.rule)
        return decision

    def check_now(self, actor: str, action: str, target: str, payload: Any = None) -> Decision:
        """`check` with a fresh look at the refs and the audit written at once (CLI commands)."""
        self.refresh()
        try:
            return self.check(actor, action, target, payload)
        finally:
            self.audit.flush()

    def gate(self, ns: str, signed: SignedEvent) -> None:
        """The journal's `Gate`: may the event's (verified) actor append it to `ns`?"""
        event = signed.event
        key = (event.actor, ns, event.type, event.policy_root)
        if key in self._memo:
            now = self.clock()
            if self._memo_from <= now < self._memo_until:
                return
        self._gate(key, event.payload)

    def _gate(self, key: tuple[str, str, str, str], payload: Any) -> None:
        """Decide (and record) one append; memoize the allow when that is sound."""
        actor, ns, type_, root = key
        now = int(self.clock())
        decision = self.check(actor, "append", ns, payload, type=type_, now=now,
                              policy_root=root)  # raises if denied
        bundle = self.bundle
        if decision.audit or bundle is None or self.bundle_error is not None \
                or bundle.reads_payload("append", ns):
            return
        lo, hi = self.trust.stable_span(now)
        if (lo, hi) != (self._memo_from, self._memo_until) or len(self._memo) >= MEMO_MAX:
            self._memo.clear()
            self._memo_from, self._memo_until = lo, hi
        self._memo[key] = decision

    def flush(self) -> list[ObjectId]:
        return self.audit.flush()


__all__ = ["PolicyEngine"]
