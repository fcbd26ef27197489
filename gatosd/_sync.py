"""Replication through plain Git remotes: fetch, reconcile ref by ref, push.

`sync` fetches every replicated ref of a remote into `refs/remotes/<name>/gatos/*` (never
straight over the node's own refs), then reconciles each one with the local ref by the
rules of `_refclass`:

* local behind → adopt the remote value by compare-and-swap, after verifying what it
  brings (every new journal commit: bytes, CID, signature, owner; a trust graph that
  does not replace a known actor's keys; a state checkpoint whose Proof-of-Fold holds,
  re-run from its base checkpoint, as the hub does);
* local ahead or missing remotely → push, with the remote value read by the fetch as the
  lease (`--force-with-lease=<ref>:<old>`), so a push never overwrites what it did not see;
* diverged → by kind: a journal fork is kept (the remote side under `refs/gatos/forks/…`,
  the local head untouched), recorded as a `governance.conflict` event and shown by
  `gatos doctor`; trust, audit and state checkpoints are joined (`_merge`: a union for
  trust and audit, the remote checkpoint's content for state, which is derived, once its
  Proof-of-Fold holds); a
  policy that is not a descendant, or any other log, is kept as a conflict the same way
  as a journal fork.

Every local ref move is a compare-and-swap through the ref store, the same lock protocol
the daemon's writers use, so sync is safe while the daemon runs. Rounds repeat (fetch →
reconcile → push) while a push lost a race, up to `rounds` times.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pygit2

from gatosd._hub import prove_state
from gatosd._merge import join_log, join_state, join_trust, key_changes
from gatosd._refclass import GATOS, Kind, classify, fork_ref, replicated
from ledger_core import RefName, read_range, verify_commit
from ledger_core.errors import LedgerError, RefConflict

ZERO = "0" * 40
CONFLICT_NS = "governance"
CONFLICT_TYPE = "governance.conflict"


class SyncError(LedgerError):
    code = "SYNC_FAILED"


class UnknownRemote(LedgerError):
    code = "NOT_FOUND"


@dataclass
class SyncReport:
    remote: str
    fetched: int = 0
    adopted: list[str] = field(default_factory=list)
    pushed: list[str] = field(default_factory=list)
    joined: list[str] = field(default_factory=list)
    forks: list[dict[str, str]] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)
    push_rejected: list[dict[str, str]] = field(default_factory=list)
    conflict_events: list[str] = field(default_factory=list)
    rounds: int = 0

    @property
    def ok(self) -> bool:
        return not self.refused and not self.push_rejected

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items()}
        out["ok"] = self.ok
        return out


def git(git_dir: str, *args: str, check: bool = True, input: bytes | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
    """Run the git CLI on a repository (Git's own transports: file, ssh, git, http)."""
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    proc = subprocess.run(["git", "--git-dir", git_dir, *args], capture_output=True, input=input,
                          env=env, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise SyncError(f"git {' '.join(args[:2])} failed: "
                        f"{proc.stderr.decode('utf-8', 'replace').strip()[-800:]}")
    return proc


# -- remotes --------------------------------------------------------------------------

def tracking_prefix(name: str) -> str:
    return f"refs/remotes/{name}/gatos/"


def fetch_refspec(name: str) -> str:
    return f"+refs/gatos/*:{tracking_prefix(name)}*"


def add_remote(git_dir: str, name: str, url: str) -> dict[str, str]:
    """`git remote add` with GATOS's fetch refspec (no branches, no tags)."""
    from ledger_core import validate_namespace  # one path component, like a remote name
    validate_namespace(name)
    existing = git(git_dir, "remote", check=False).stdout.decode().split()
    if name in existing:
        raise SyncError(f"remote {name!r} exists already (gatos remote remove {name} first)")
    git(git_dir, "remote", "add", "--no-tags", name, url)
    git(git_dir, "config", "--replace-all", f"remote.{name}.fetch", fetch_refspec(name))
    git(git_dir, "config", "--add", f"remote.{name}.fetch", "^refs/gatos/cache/*")
    git(git_dir, "config", "--add", f"remote.{name}.fetch", "^refs/gatos/sessions/*")
    return {"name": name, "url": url}


def list_remotes(git_dir: str) -> list[dict[str, str]]:
    names = git(git_dir, "remote", check=False).stdout.decode().split()
    out = []
    for name in names:
        url = git(git_dir, "remote", "get-url", name, check=False).stdout.decode().strip()
        out.append({"name": name, "url": url})
    return out


def remove_remote(git_dir: str, name: str) -> None:
    if name not in git(git_dir, "remote", check=False).stdout.decode().split():
        raise UnknownRemote(f"no remote named {name!r}")
    git(git_dir, "remote", "remove", name)


def default_remote(git_dir: str) -> str:
    """`gatos.remote` from git config, else the only remote, else `origin`."""
    proc = git(git_dir, "config", "--get", "gatos.remote", check=False)
    if proc.returncode == 0 and proc.stdout.strip():
        return proc.stdout.decode().strip()
    names = git(git_dir, "remote", check=False).stdout.decode().split()
    if len(names) == 1:
        return names[0]
    if "origin" in names:
        return "origin"
    raise UnknownRemote("no remote to sync with: gatos remote add NAME URL (or name one)")


# -- the node side ----------------------------------------------------------------------

class Syncer:
    """Reconciles one node with one remote. Takes the node's parts, never the daemon.

    Args:
        repo: the node's pygit2 repository (ancestry, joins).
        refs: the node's ref store (every local move is a compare-and-swap through it).
        objects: the node's object store (journal verification).
        keys: the trust store (a `KeyResolver`), read after trust was adopted.
        record_conflict: appends a `governance.conflict` event for a new fork and
            returns its commit id (or raises; the fork is kept either way).
    """

    def __init__(self, repo: pygit2.Repository, refs: Any, objects: Any, keys: Any,
                 record_conflict: Callable[[dict[str, str]], str] | None = None) -> None:
        self.repo = repo
        self.refs = refs
        self.objects = objects
        self.keys = keys
        self.record_conflict = record_conflict
        self.git_dir = repo.path.rstrip("/")

    # - helpers -
    def _is_ancestor(self, old: str, new: str) -> bool:
        if old == new:
            return True
        try:
            return bool(self.repo.descendant_of(new, old))
        except (KeyError, ValueError, pygit2.GitError):
            return False

    def _local(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.refs.list(GATOS).items() if replicated(str(k))}

    def _tracked(self, name: str) -> dict[str, str]:
        prefix = tracking_prefix(name)
        out = {}
        for ref in self.repo.references.iterator():
            if ref.name.startswith(prefix):
                target = ref.target
                out[GATOS + ref.name[len(prefix):]] = str(target)
        return {k: v for k, v in out.items() if replicated(k)}

    def _cas(self, ref: str, old: str | None, new: str) -> bool:
        try:
            self.refs.compare_and_swap(RefName(ref), old, new)  # type: ignore[arg-type]
            return True
        except RefConflict:
            return False

    def _verify_journal_range(self, ref: str, new: str, old: str | None) -> list[str]:
        """Check every commit the remote adds to a journal before it becomes ours."""
        problems: list[str] = []
        oid: str | None = new
        while oid is not None and oid != old:
            for problem in verify_commit(self.objects, RefName(ref), oid, self.keys):  # type: ignore[arg-type]
                problems.append(f"{oid[:12]}: {problem.reason}")
            if problems:
                return problems
            parents = self.objects.read_commit(oid).parents
            oid = parents[0] if parents else None
        if old is not None and oid != old:
            problems.append(f"does not descend from the local head {old[:12]}")
        return problems

    # - one round -
    def reconcile(self, name: str, report: SyncReport) -> dict[str, str | None]:
        """Adopt, join or keep each tracked ref; returns the refs to push → remote value."""
        local = self._local()
        remote = self._tracked(name)
        report.fetched = len(remote)
        # Trust first (journal verification needs its keys), then policies, then the rest.
        order = sorted(remote, key=lambda r: (classify(r) is not Kind.TRUST,
                                              classify(r) is not Kind.POLICY_ACTIVE, r))
        for ref in order:
            self._reconcile_one(ref, local.get(ref), remote[ref], report)
        local = self._local()
        to_push: dict[str, str | None] = {}
        for ref, oid in local.items():
            theirs = remote.get(ref)
            if theirs == oid:
                continue
            if theirs is None or self._is_ancestor(theirs, oid):
                to_push[ref] = theirs
        return to_push

    def _reconcile_one(self, ref: str, mine: str | None, theirs: str, report: SyncReport) -> None:
        kind = classify(ref)
        if mine == theirs:
            return
        if mine is not None and self._is_ancestor(theirs, mine):
            return  # we are ahead: pushed later
        behind = mine is None or self._is_ancestor(mine, theirs)
        if behind:
            problems = self._admit(ref, kind, mine, theirs)
            if problems:
                report.refused.append({"ref": ref, "remote": theirs, "reason": "; ".join(problems)})
                return
            if self._cas(ref, mine, theirs):
                report.adopted.append(ref)
            return
        # diverged
        assert mine is not None
        if kind is Kind.TRUST:
            joined = join_trust(self.repo, mine, theirs)
            if joined.oid is None:
                self._fork(ref, kind, mine, theirs, report, "; ".join(joined.conflicts))
            else:
                problems = key_changes(self.repo, mine, joined.oid)
                if problems:
                    self._fork(ref, kind, mine, theirs, report, "; ".join(problems))
                elif self._cas(ref, mine, joined.oid):
                    report.joined.append(ref)
        elif kind is Kind.AUDIT:
            joined = join_log(self.repo, mine, theirs, "audit: join")
            if joined.oid and self._cas(ref, mine, joined.oid):
                report.joined.append(ref)
        elif kind is Kind.STATE:
            problems = prove_state(self.objects, self.refs, theirs)
            if problems:
                report.refused.append({"ref": ref, "remote": theirs, "reason": "; ".join(problems)})
                return
            joined = join_state(self.repo, mine, theirs)
            if joined.oid and self._cas(ref, mine, joined.oid):
                report.joined.append(ref)
        else:
            self._fork(ref, kind, mine, theirs, report, "histories diverged")

    def _admit(self, ref: str, kind: Kind, mine: str | None, theirs: str) -> list[str]:
        if kind is Kind.JOURNAL:
            return self._verify_journal_range(ref, theirs, mine)
        if kind is Kind.TRUST:
            return key_changes(self.repo, mine, theirs)
        if kind is Kind.STATE:
            return prove_state(self.objects, self.refs, theirs)
        if kind in (Kind.ONCE, Kind.FORK) and mine is not None:
            return ["created once: a different value exists here"]
        return []

    def _fork(self, ref: str, kind: Kind, mine: str, theirs: str, report: SyncReport, why: str) -> None:
        kept = fork_ref(ref, theirs)
        base = self.repo.merge_base(mine, theirs)
        info = {"ref": ref, "kind": kind.value, "local": mine, "remote": theirs,
                "base": str(base) if base else ZERO, "kept_at": kept, "why": why}
        if self.refs.get(RefName(kept)) is not None:
            return  # known already: reported once
        if not self._cas(kept, None, theirs):
            return
        report.forks.append(info)
        if self.record_conflict is not None:
            try:
                report.conflict_events.append(self.record_conflict(info))
            except LedgerError as exc:
                info["event_error"] = exc.reason

    # - push -
    def push(self, name: str, to_push: dict[str, str | None], report: SyncReport) -> None:
        if not to_push:
            return
        local = self._local()
        leases = [f"--force-with-lease={ref}:{old or ''}" for ref, old in sorted(to_push.items())]
        specs = [f"{local[ref]}:{ref}" for ref in sorted(to_push)]
        proc = git(self.git_dir, "push", "--porcelain", "--no-verify", *leases, name, *specs, check=False)
        text = proc.stdout.decode("utf-8", "replace")
        statuses = _porcelain(text)
        for ref in sorted(to_push):
            flag, summary = statuses.get(ref, ("!", proc.stderr.decode("utf-8", "replace").strip()[-300:]))
            if flag in (" ", "*", "+", "="):
                report.pushed.append(ref)
                self._track(name, ref, local[ref])
            else:
                report.push_rejected.append({"ref": ref, "reason": summary or "rejected"})
        if proc.returncode != 0 and not statuses:
            raise SyncError(f"git push {name} failed: "
                            f"{proc.stderr.decode('utf-8', 'replace').strip()[-800:]}")

    def _track(self, name: str, ref: str, oid: str) -> None:
        tracking = tracking_prefix(name) + ref[len(GATOS):]
        self.repo.references.create(tracking, pygit2.Oid(hex=oid), force=True)

    def fetch(self, name: str) -> None:
        git(self.git_dir, "fetch", "--quiet", "--no-tags", "--prune", name,
            fetch_refspec(name), "^refs/gatos/cache/*", "^refs/gatos/sessions/*")

    def sync(self, name: str, *, rounds: int = 4, push: bool = True) -> SyncReport:
        report = SyncReport(remote=name)
        for _ in range(rounds):
            report.rounds += 1
            report.push_rejected.clear()
            self.fetch(name)
            to_push = self.reconcile(name, report)
            if push:
                self.push(name, to_push, report)
            if not report.push_rejected:
                break
        report.adopted = sorted(set(report.adopted))
        report.pushed = sorted(set(report.pushed))
        report.joined = sorted(set(report.joined))
        return report


def fork_absorbed(repo: pygit2.Repository, objects: Any, ref: str, kept: str, current: str | None) -> bool:
    """Whether `ref` (now at `current`) holds everything of a kept side `kept`.

    A side is absorbed when the ref descends from it, or, for a journal, when every
    event of that side past the common base is in the current journal, compared by ULID.
    This is what `gatos fork resolve --replay` leaves behind.
    """
    if current is None:
        return False
    if current == kept:
        return True
    try:
        if repo.descendant_of(current, kept):
            return True
    except (KeyError, ValueError, pygit2.GitError):
        return False
    if classify(ref) is not Kind.JOURNAL:
        return False
    base = repo.merge_base(kept, current)
    after = str(base) if base else None
    theirs = {e.signed.event.ulid for e in read_range(objects, kept, after=after)}
    ours = {e.signed.event.ulid for e in read_range(objects, current, after=after)}
    return theirs <= ours


def _porcelain(text: str) -> dict[str, tuple[str, str]]:
    """`git push --porcelain` lines `<flag>\\t<from>:<to>\\t<summary>` → to → (flag, summary)."""
    out = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and len(parts[0]) == 1 and ":" in parts[1]:
            out[parts[1].rsplit(":", 1)[1]] = (parts[0], parts[2] if len(parts) > 2 else "")
    return out


__all__ = ["CONFLICT_NS", "CONFLICT_TYPE", "SyncError", "SyncReport", "Syncer", "UnknownRemote",
           "add_remote", "default_remote", "fetch_refspec", "fork_absorbed", "git", "list_remotes",
           "remove_remote", "tracking_prefix"]
