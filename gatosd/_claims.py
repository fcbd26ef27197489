"""Exclusive job claims across nodes: the hub decides, by an atomic leased push.

A `RefStore` decorator for the job plane. Reads and every other ref go to the node's
own store; moving a job's `claim` or creating its `result` first pushes the new commit to
the hub with `--force-with-lease=<ref>:<expected>` (expected = the zero OID, i.e. "must
not exist", for a first claim), and only when the hub took it is the local ref moved.
Of several nodes racing for one job exactly one push wins; the others get `RefLocked`
(the job store's "someone else holds it") and move on, after copying the hub's claim so
that a later takeover of an expired lease starts from the right head. The hub's own
pre-receive hook refuses a second creation even from a client that sends no lease.

`compute` never learns about the hub: it sees a ref store whose compare-and-swap is
global.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from gatosd._sync import git
from ledger_core import ObjectId, RefLock, RefName, RefStore
from ledger_core.errors import RefConflict, RefLocked

_GLOBAL = re.compile(r"^refs/gatos/jobs/[0-9a-f]{64}/(claim|result)$")


def _pushed(git_dir: str, remote: str, ref: str, old: str | None, new: str) -> bool:
    proc = git(git_dir, "push", "--porcelain", "--no-verify", f"--force-with-lease={ref}:{old or ''}",
               remote, f"{new}:{ref}", check=False)
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[1].endswith(":" + ref):
            return parts[0] in (" ", "*", "+", "=")
    return False


class _HubLock(RefLock):
    def __init__(self, store: HubClaimRefs, inner: RefLock) -> None:
        super().__init__(inner.name, inner.old)
        self._store = store
        self._inner = inner

    def commit(self, new: ObjectId) -> None:
        if not _pushed(self._store.git_dir, self._store.remote, self.name, self.old, new):
            self._inner.release()  # before copying the winner's claim into the same ref
            self._store.adopt(self.name)
            raise RefLocked(f"{self.name}: the hub holds another value (another node won)")
        self._inner.commit(new)

    def release(self) -> None:
        self._inner.release()


class HubClaimRefs(RefStore):
    """The node's ref store, with claims and results decided at `remote`."""

    def __init__(self, local: RefStore, git_dir: str, remote: str) -> None:
        self.local = local
        self.git_dir = git_dir
        self.remote = remote

    def get(self, name: RefName) -> ObjectId | None:
        return self.local.get(name)

    def list(self, prefix: str) -> dict[RefName, ObjectId]:
        return self.local.list(prefix)

    def adopt(self, name: str) -> None:
        """Copy the hub's value of a claim we lost, so the next look sees the winner."""
        proc = git(self.git_dir, "fetch", "--quiet", "--no-tags", self.remote,
                   f"+{name}:refs/remotes/{self.remote}/gatos/{name[len('refs/gatos/'):]}", check=False)
        if proc.returncode != 0:
            return
        value = git(self.git_dir, "rev-parse", "--verify", "--quiet",
                    f"refs/remotes/{self.remote}/gatos/{name[len('refs/gatos/'):]}", check=False)
        theirs = value.stdout.decode().strip()
        if len(theirs) == 40:
            with contextlib.suppress(RefConflict, RefLocked):
                self.local.compare_and_swap(RefName(name), self.local.get(RefName(name)), ObjectId(theirs))

    def lock(self, name: RefName) -> RefLock:
        inner = self.local.lock(name)
        return _HubLock(self, inner) if _GLOBAL.match(name) else inner

    def __getattr__(self, item: str) -> Any:
        return getattr(self.local, item)


__all__ = ["HubClaimRefs"]
