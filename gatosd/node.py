"""A node: one Git repository wired to the ledger core (the composition root for the ledger).

The CLI and (later) the daemon both act through a `Node`, so a command-line append
and a daemon append follow exactly the same path: build → sign → verify → gate →
journal compare-and-swap.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gatosd._clock import new_ulid, now_seconds
from ledger_core import (
    DEFAULT_MAX_EVENT_BYTES,
    JOURNAL_PREFIX,
    TRUST_REF,
    ZERO_OID,
    AppendResult,
    Event,
    Journal,
    JournalEntry,
    PublicKeyText,
    SignedEvent,
    SigningKey,
    TrustStore,
    VerifyReport,
    format_timestamp_ms,
    journal_ref,
    normalize_actor,
    read_range,
    sign_event,
    ulid_ms,
    validate_actor,
    validate_namespace,
    validate_ulid,
    verify_all,
    verify_signed,
)
from ledger_core.errors import BadSignature, LedgerError, UnknownActor
from ledger_git import GitRepository, KeyExists, init_repository, open_repository
from policy import DEFAULT_FILE, DEFAULT_RULES, AuditFailed, PolicyDenied, PolicyEngine, bootstrap

POLICY_ACTIVE_REF = "refs/gatos/policies/active"
CONFIG_ACTOR = "gatos.actor"
CONFIG_MAX_EVENT_BYTES = "gatos.maxEventBytes"


def policy_refs_stamp(git_dir: str) -> Callable[[], object]:
    """The gate's cheap "did the policy or trust ref move?" test: two `stat` calls.

    Refs are updated by renaming a new file over the old one (Git's lock protocol, used
    by every GATOS process and by git), so an unchanged (inode, mtime, size) of both
    loose ref files means both refs still hold what was read last time; it is the same
    test the ref store uses to reuse a ref value it already read. `None` (a ref file is
    missing, e.g. after `git pack-refs`) makes the engine read the refs every time.
    """
    active = os.path.join(git_dir, POLICY_ACTIVE_REF)
    trust = os.path.join(git_dir, TRUST_REF)
    stat = os.stat

    def stamp() -> object:
        try:
            a, b = stat(active), stat(trust)
        except OSError:
            return None
        return (a.st_ino, a.st_mtime_ns, a.st_size, b.st_ino, b.st_mtime_ns, b.st_size)
    return stamp


class NoActor(LedgerError):
    code = "NO_ACTOR"


class InvalidConfig(LedgerError):
    code = "INVALID_CONFIG"


def actor_from_git_name(name: str) -> str | None:
    """`git config user.name` → `user:<name>`, with characters outside [A-Za-z0-9._-] as '-'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")[:64].rstrip(".-")
    cleaned = cleaned.replace("..", ".")
    if not cleaned or cleaned.endswith(".lock"):
        return None
    return f"user:{cleaned}"


@dataclass
class InitResult:
    repo: str
    actor: str
    public_key: str
    created_repo: bool
    created_key: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Node:
    """A GATOS node over a Git repository."""

    def __init__(self, repo: GitRepository) -> None:
        self.repo = repo
        self.trust = TrustStore(repo.objects, repo.refs)
        # The gate: every append is decided against the active policy bundle and the
        # trust graph (cached by ref value); denials are audited by `append_many`.
        self.policy = PolicyEngine(repo.objects, repo.refs, clock=time.time, sleep=time.sleep,
                                   stamp=policy_refs_stamp(repo.git_dir))
        self.journal = Journal(repo.objects, repo.refs, self.trust,
                               sleep=time.sleep, random=random.random, gate=self.policy.gate)
        self._signing_keys: dict[str, SigningKey] = {}
        self._max_event_bytes: int | None = None
        self._default_actor: str | None = None

    @classmethod
    def open(cls, path: str, *, durable: bool = False) -> Node:
        return cls(open_repository(path, durable=durable))

    @classmethod
    def init(cls, path: str, actor: str | None = None, *, discover: bool = True
             ) -> tuple[Node, InitResult]:
        """Make `path` a node: `git init` if needed, the owner's key, its public key trusted."""
        repo, created_repo = init_repository(path, discover=discover)
        node = cls(repo)
        if actor is None:
            actor = repo.config_get(CONFIG_ACTOR)
        if actor is None:
            git_name = repo.config_get("user.name")
            actor = actor_from_git_name(git_name) if git_name else None
        if actor is None:
            raise NoActor("no actor: pass --actor user:NAME (or set git config user.name)")
        actor = validate_actor(actor)
        repo.config_set(CONFIG_ACTOR, actor)
        public_key, created_key = node.ensure_key(actor, by=actor)
        node._install_default_policy(actor)
        workdir = repo.repo.workdir or repo.git_dir
        return node, InitResult(workdir.rstrip("/"), actor, public_key, created_repo, created_key)

    def _install_default_policy(self, owner: str) -> None:
        """The owner holds every capability, everyone else is denied (idempotent).

        The rules also go to `gatos/policies/` in the working tree (when it has none) so
        the owner can edit them and `gatos policy apply`.
        """
        bootstrap(self.policy, owner, now_seconds())
        workdir = self.repo.repo.workdir
        if workdir and not os.path.exists(os.path.join(workdir, "gatos", "policies")):
            os.makedirs(os.path.join(workdir, "gatos", "policies"))
            with open(os.path.join(workdir, "gatos", "policies", DEFAULT_FILE), "w",
                      encoding="utf-8") as handle:
                handle.write(DEFAULT_RULES)

    # -- configuration --------------------------------------------------------------

    @property
    def default_actor(self) -> str:
        """`gatos.actor` from git config, read once per Node (it is set by `gatos init`)."""
        if self._default_actor is None:
            actor = self.repo.config_get(CONFIG_ACTOR)
            if actor is None:
                raise NoActor("this node has no default actor: run `gatos init` or pass --actor")
            self._default_actor = validate_actor(actor)
        return self._default_actor

    @property
    def max_event_bytes(self) -> int:
        """`gatos.maxEventBytes` from git config (read once per Node), default 1 MiB."""
        if self._max_event_bytes is None:
            value = self.repo.config_get(CONFIG_MAX_EVENT_BYTES)
            try:
                self._max_event_bytes = int(value) if value else DEFAULT_MAX_EVENT_BYTES
            except ValueError:
                raise InvalidConfig(f"{CONFIG_MAX_EVENT_BYTES} = {value!r} is not an integer") from None
        return self._max_event_bytes

    @property
    def policy_root(self) -> str:
        return self.repo.refs.get(POLICY_ACTIVE_REF) or ZERO_OID  # type: ignore[arg-type]

    # -- keys -------------------------------------------------------------------------

    def ensure_key(self, actor: str, *, by: str | None = None) -> tuple[PublicKeyText, bool]:
        """Make a private key for `actor` unless one exists; trust its public key."""
        created = False
        if self.repo.keys.has(actor):
            key = self.repo.keys.load(actor)
        else:
            key = self.repo.keys.create(actor)
            created = True
        self.trust.add_key(actor, key.public_key, by=by or actor, seconds=now_seconds())
        return key.public_key, created

    def new_key(self, actor: str) -> PublicKeyText:
        """`gatos key new`: a fresh key for an actor that has none on this node."""
        actor = validate_actor(actor)
        if self.repo.keys.has(actor):
            raise KeyExists(f"{actor} already has a private key on this node")
        by = self.repo.config_get(CONFIG_ACTOR) or actor
        self.policy.check_now(by, "trust.key", actor)
        return self.ensure_key(actor, by=by)[0]

    def list_keys(self) -> list[dict[str, Any]]:
        local = set(self.repo.keys.actors())
        rows = []
        for actor, keys in sorted(self.trust.all_keys().items()):
            for key in keys:
                rows.append({"actor": actor, "public_key": key, "private_key": actor in local})
        return rows

    # -- events -----------------------------------------------------------------------

    def build_event(self, *, type: str, payload: Any, actor: str | None = None,
                    ulid: str | None = None, ts: str | None = None,
                    caps: Sequence[str] | None = None) -> Event:
        """An envelope filled in the node's way: ULID now, `ts` from the ULID, active policy."""
        actor = normalize_actor(actor) if actor else self.default_actor
        if ulid:
            ulid, ms = validate_ulid(ulid), None
        else:
            ulid, ms = new_ulid.new()
        return Event.from_value({
            "type": type, "ulid": ulid, "actor": actor, "payload": payload,
            "policy_root": self.policy_root,
            "ts": ts or format_timestamp_ms(ulid_ms(ulid) if ms is None else ms),
            **({"caps": list(caps)} if caps is not None else {}),
        })

    def signing_key(self, actor: str) -> SigningKey:
        """The node-held private key of `actor` (read from disk once per Node)."""
        key = self._signing_keys.get(actor)
        if key is None:
            key = self._signing_keys[actor] = self.repo.keys.load(actor)
        return key

    def sign(self, event: Event) -> SignedEvent:
        return sign_event(event, self.signing_key(event.actor), self.max_event_bytes)

    def append(self, ns: str, signed: SignedEvent) -> AppendResult:
        result = self.append_many([(ns, signed)])[0]
        if isinstance(result, LedgerError):
            raise result
        return result

    def append_many(self, items: Sequence[tuple[str, SignedEvent]], *,
                    preverified: bool | Sequence[bool] = False) -> list[AppendResult | LedgerError]:
        """Gate and append a batch; the batch's denials are audited before it returns."""
        self.policy.refresh()
        results = self.journal.append_many(items, preverified=preverified)
        try:
            self.policy.flush()
        except AuditFailed as exc:  # still denied; say the record is missing
            results = [AuditFailed(f"denied by {r.rule} ({r.reason}); {exc.reason}")
                       if isinstance(r, PolicyDenied) else r for r in results]
        return results

    def check_signed(self, signed: SignedEvent, *, signed_here: bool = False) -> None:
        """What `Journal.append` checks of a signature, done ahead of the writer.

        An event this node just signed needs no ed25519 verification: it is enough that
        the signing key's public key is trusted for the actor (a set lookup).
        """
        if not signed_here:
            verify_signed(signed, self.trust)
            return
        trusted = self.trust.keys_for(signed.event.actor)
        if not trusted:
            raise UnknownActor(f"no trusted public key for actor {signed.event.actor}")
        if self.signing_key(signed.event.actor).public_key not in trusted:
            raise BadSignature(f"this node's key for {signed.event.actor} is not a trusted key")

    def add_event(self, ns: str, **fields: Any) -> AppendResult:
        """Build, sign with the node-held key, and append one event."""
        validate_namespace(ns)
        return self.append(ns, self.sign(self.build_event(**fields)))

    # -- reading and verifying ----------------------------------------------------------

    def journals(self, ns: str | None = None) -> dict[str, str]:
        prefix = JOURNAL_PREFIX + (validate_namespace(ns) + "/" if ns else "")
        return dict(self.repo.refs.list(prefix))

    def log(self, ns: str, actor: str | None = None, *, limit: int | None = None
            ) -> list[JournalEntry]:
        """Events of a namespace (one actor or all), newest first by (ts, ULID)."""
        if actor:
            ref = journal_ref(ns, normalize_actor(actor))
            heads = {ref: head} if (head := self.repo.refs.get(ref)) else {}
        else:
            heads = self.journals(ns)
        entries: list[JournalEntry] = []
        for head in heads.values():
            entries.extend(read_range(self.repo.objects, head, last=limit))  # type: ignore[arg-type]
        entries.sort(key=lambda e: (e.signed.event.ts or "", e.signed.event.ulid), reverse=True)
        return entries[:limit] if limit else entries

    def verify(self) -> VerifyReport:
        return verify_all(self.repo.objects, self.repo.refs, self.trust)


__all__ = ["InitResult", "NoActor", "Node", "actor_from_git_name", "policy_refs_stamp"]
