"""The push-gate hub: a bare repository whose pre-receive hook keeps every invariant.

Nodes meet at the hub with plain `git push`/`git fetch` (file, ssh, `git daemon`,
`git http-backend`). Before any ref moves, `pre-receive` runs `check_updates` over the
whole push with the pushed objects still in quarantine, and refuses the push, naming
each bad ref and why, when it would:

* delete or rewind a replicated ref (journals, state, policies, audit, bus, epochs,
  trust, governance): fast-forward only;
* bring a journal commit whose bytes, Event-CID, signature or owner do not verify
  (against the trust graph as it will be after the push), or a merge into a journal;
* replace a known actor's trusted keys;
* move a state checkpoint whose Proof-of-Fold does not replay to its `State-Root`;
* create a job claim a second time (renewals and takeovers fast-forward the claim),
  or move a job or its result once created.

The hook is `python -m gatosd._hub` with the interpreter that ran `gatos hub init`.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pygit2

from gatosd._merge import key_changes
from gatosd._refclass import Kind, classify
from ledger_core import TRUST_REF, RefName, TrustStore, verify_commit
from ledger_core.errors import LedgerError

ZERO = "0" * 40
HOOK = """#!/bin/sh
# GATOS push-gate (written by `gatos hub init`): every invariant is checked before refs move.
exec {python} -m gatosd._hub "$@"
"""


@dataclass(frozen=True)
class Update:
    ref: str
    old: str
    new: str


def init_hub(path: str) -> dict[str, Any]:
    """A bare repository with the push-gate hook (an existing hub gets its hook renewed)."""
    created = not os.path.exists(os.path.join(path, "HEAD"))
    if created:
        subprocess.run(["git", "init", "--quiet", "--bare", path], check=True, capture_output=True)
    git_dir = os.path.abspath(path)
    hook = os.path.join(git_dir, "hooks", "pre-receive")
    os.makedirs(os.path.dirname(hook), exist_ok=True)
    with open(hook, "w", encoding="utf-8") as handle:
        handle.write(HOOK.format(python=_sh_quote(sys.executable)))
    os.chmod(hook, os.stat(hook).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    for key, value in (("gatos.hub", "true"), ("receive.fsckObjects", "true"),
                       ("uploadpack.allowAnySHA1InWant", "false"), ("core.logAllRefUpdates", "true")):
        subprocess.run(["git", "--git-dir", git_dir, "config", key, value], check=True, capture_output=True)
    return {"hub": git_dir, "created": created, "hook": hook, "url": "file://" + git_dir}


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


class _OverlayRefs:
    """The hub's refs as they will be if the push is accepted (read-only)."""

    def __init__(self, base: Any, updates: dict[str, str]) -> None:
        self.base = base
        self.updates = updates

    def get(self, name: str) -> str | None:
        if name in self.updates:
            value = self.updates[name]
            return None if value == ZERO else value
        return self.base.get(name)

    def list(self, prefix: str) -> dict[str, str]:
        out = {str(k): str(v) for k, v in self.base.list(prefix).items()}
        for ref, new in self.updates.items():
            if ref.startswith(prefix):
                if new == ZERO:
                    out.pop(ref, None)
                else:
                    out[ref] = new
        return out


class Gate:
    """Checks a push's ref updates against the hub's repository."""

    def __init__(self, git_dir: str, *, quarantine: str | None = None) -> None:
        from ledger_git import open_repository

        self.repo = open_repository(git_dir)
        if quarantine:
            self.repo.repo.odb.add_disk_alternate(quarantine)
        self.pg: pygit2.Repository = self.repo.repo

    def _ff(self, old: str, new: str) -> bool:
        if old in (ZERO, new):
            return True
        try:
            return bool(self.pg.descendant_of(new, old))
        except (KeyError, ValueError, pygit2.GitError):
            return False

    def check(self, updates: Iterable[Update]) -> list[tuple[str, str]]:
        """(ref, reason) for every update the hub must refuse; [] accepts the push."""
        updates = list(updates)
        overlay = _OverlayRefs(self.repo.refs, {u.ref: u.new for u in updates})
        keys = TrustStore(self.repo.objects, overlay)  # type: ignore[arg-type]
        refused: list[tuple[str, str]] = []
        for u in updates:
            for reason in self._check_one(u, overlay, keys):
                refused.append((u.ref, reason))
        return refused

    def _check_one(self, u: Update, overlay: _OverlayRefs, keys: TrustStore) -> list[str]:
        kind = classify(u.ref)
        if kind is Kind.LOCAL:
            return []
        if u.new == ZERO:
            return [f"{kind.value} refs are never deleted"]
        if kind in (Kind.ONCE, Kind.FORK):
            if u.old != ZERO:
                return ["created once: it exists already and may not move"]
            return []
        if not self._ff(u.old, u.new):
            if kind is Kind.CLAIM:
                return [f"the job is claimed already (claim {u.old[:12]}); a second claim is refused"]
            return [f"non-fast-forward update ({u.old[:12]} → {u.new[:12]}): {kind.value} refs only grow"]
        if kind is Kind.JOURNAL:
            return self._journal(u, keys)
        if kind is Kind.TRUST:
            return key_changes(self.pg, None if u.old == ZERO else u.old, u.new)
        if kind is Kind.STATE:
            return self._state(u, overlay)
        return []

    def _journal(self, u: Update, keys: TrustStore) -> list[str]:
        problems: list[str] = []
        oid: str | None = u.new
        stop = None if u.old == ZERO else u.old
        count = 0
        while oid is not None and oid != stop:
            count += 1
            for problem in verify_commit(self.repo.objects, RefName(u.ref), oid, keys):  # type: ignore[arg-type]
                problems.append(f"commit {oid[:12]}: {problem.reason}")
            if problems:
                return problems
            parents = self.repo.objects.read_commit(oid).parents  # type: ignore[arg-type]
            oid = parents[0] if parents else None
        return problems

    def _state(self, u: Update, overlay: _OverlayRefs) -> list[str]:
        return prove_state(self.repo.objects, overlay, u.new)


def prove_state(objects: Any, refs: Any, oid: str) -> list[str]:
    """The Proof-of-Fold of a state checkpoint, re-run over its window from its base
    checkpoint: no problems, or why it does not prove what it claims. The hub runs it on
    every pushed checkpoint, and a node on every checkpoint it adopts from a remote."""
    from echo_fold import Folder, verify_checkpoint

    folder = Folder(objects, refs)
    try:
        report = verify_checkpoint(folder, oid, window="base")
    except LedgerError as exc:
        return [f"Proof-of-Fold of {oid[:12]} cannot be checked: {exc.reason}"]
    if not report.ok:
        return [f"Proof-of-Fold of {oid[:12]} does not verify: " + "; ".join(report.problems)]
    return []


def read_updates(lines: Iterable[str]) -> list[Update]:
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3:
            out.append(Update(parts[2], parts[0], parts[1]))
    return out


def main() -> int:
    """The pre-receive hook: stdin has `<old> <new> <ref>` lines; exit 1 refuses the push."""
    git_dir = os.environ.get("GIT_DIR", ".")
    updates = read_updates(sys.stdin.read().splitlines())
    try:
        gate = Gate(git_dir, quarantine=os.environ.get("GIT_QUARANTINE_PATH")
                    or os.environ.get("GIT_OBJECT_DIRECTORY"))
        refused = gate.check(updates)
    except Exception as exc:  # the hook must fail closed, and say why
        print(f"gatos-hub: refused: the push could not be checked: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    for ref, reason in refused:
        print(f"gatos-hub: refused {ref}: {reason}", file=sys.stderr)
    if refused:
        print(f"gatos-hub: push refused ({len(refused)} problem(s)); no ref was changed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["Gate", "TRUST_REF", "Update", "init_hub", "main", "read_updates"]
