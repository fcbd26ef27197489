"""Epochs on a real repository: anchors, compaction into a `git bundle`, and restore.

`gatos epoch new <ns>` writes the next anchor (see `ledger_core._epoch`) with the node
owner's key, created with expected-old = nothing, so two racing writers cannot both
make epoch N.

Compaction cuts a namespace's journals at the heads its newest anchor recorded:

1. every retained boundary (a recorded head whose parent is still stored) gets a
   temporary ref `refs/gatos/archive/<ns>/<epoch-id>/<kind>/<name>`; `git bundle create`
   writes them and all their history, the refs are deleted, `git bundle verify` checks
   the file;
2. the boundaries are added to `.git/shallow` (Git's own grafting file: `rev-list`,
   `fsck`, `gc`, `repack` and `bundle` all treat those commits as having no parents);
3. `git repack -a -d` and `git prune --expire=now` drop what is no longer reachable.

Why shallow boundaries and not rewriting: every commit id stays what it was (event
commits pin their parents' ids, signatures and anchors stay valid), replicas that kept
the history need nothing, and Git's own tools understand the result. `gatos verify`
accepts a journal that ends at a boundary only when a signed anchor recorded it.

Restore (`gatos epoch restore FILE…`, oldest archive first) unbundles the objects and
removes the boundaries whose parents are stored again, so the journal is whole.
A running gatosd would race the prune (objects written but not yet referenced could go),
so compaction and restore take the daemon's instance lock and refuse while it runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from collections.abc import Iterator, Sequence
from typing import Any

from gatosd.node import Node
from ledger_core import (
    EPOCH_PREFIX,
    JOURNAL_PREFIX,
    Anchor,
    ObjectId,
    anchor_objects,
    anchors_by_ns,
    continuity_problems,
    epoch_ref,
    format_epoch_id,
    validate_namespace,
)
from ledger_core.errors import LedgerError

STATE_PREFIX = "refs/gatos/state/"
ARCHIVE_PREFIX = "refs/gatos/archive/"


class EpochError(LedgerError):
    code = "EPOCH"


def run_git(git_dir: str, *args: str, input: bytes | None = None, check: bool = True
            ) -> subprocess.CompletedProcess[bytes]:
    """`git --git-dir=<git_dir> …`; a non-zero exit is an `EpochError` naming the command."""
    result = subprocess.run(["git", f"--git-dir={git_dir}", *args], input=input, capture_output=True)
    if check and result.returncode != 0:
        raise EpochError(f"git {' '.join(args)} failed: "
                         f"{result.stderr.decode(errors='replace').strip()}")
    return result


def is_ancestor(git_dir: str, older: str, newer: str) -> bool:
    """`older` is `newer` or its ancestor; an `older` already archived by compaction (no
    longer stored in a repository with shallow boundaries) cannot be checked here and
    counts as an ancestor: its bundle holds it."""
    if older == newer:
        return True
    code = run_git(git_dir, "merge-base", "--is-ancestor", older, newer, check=False).returncode
    if code in (0, 1):
        return code == 0
    stored = run_git(git_dir, "cat-file", "-e", f"{older}^{{commit}}", check=False).returncode == 0
    return not stored and bool(read_shallow(git_dir))


def read_shallow(git_dir: str) -> set[str]:
    try:
        with open(os.path.join(git_dir, "shallow"), encoding="ascii") as handle:
            return {line.strip() for line in handle if line.strip()}
    except FileNotFoundError:
        return set()


def write_shallow(git_dir: str, oids: set[str]) -> None:
    """Replace `.git/shallow` through Git's lock file (`shallow.lock`, O_EXCL, renamed)."""
    path = os.path.join(git_dir, "shallow")
    lock = path + ".lock"
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise EpochError(f"{lock} exists: another git process is changing shallow boundaries") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write("".join(f"{oid}\n" for oid in sorted(oids)))
            handle.flush()
            os.fsync(handle.fileno())
        if oids:
            os.replace(lock, path)
        else:
            os.unlink(lock)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        raise


@contextlib.contextmanager
def daemon_excluded(node: Node) -> Iterator[None]:
    """Hold gatosd's instance lock, so no daemon writes while objects are pruned."""
    os.makedirs(node.repo.gatos_dir, mode=0o700, exist_ok=True)
    path = os.path.join(node.repo.gatos_dir, "gatosd.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EpochError("gatosd is running on this repository: stop it first (compaction "
                             "prunes objects and would race its writes)") from None
        yield
    finally:
        os.close(fd)


class Epochs:
    """Anchors, compaction and restore for one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.git_dir = node.repo.git_dir

    def anchors(self, ns: str) -> list[Anchor]:
        """The namespace's anchors, oldest first; a damaged one is an error."""
        items = anchors_by_ns(self.node.repo.objects, self.node.repo.refs).get(validate_namespace(ns), [])
        out = []
        for item in items:
            if isinstance(item, LedgerError):
                raise EpochError(f"a damaged anchor in {ns}: {item.reason} (run `gatos doctor`)")
            out.append(item)
        return out

    def _state(self, ns: str) -> dict[str, str] | None:
        oid = self.node.repo.refs.get(STATE_PREFIX + ns)  # type: ignore[arg-type]
        if oid is None:
            return None
        root = self.node.repo.objects.read_commit(oid).trailers.get("State-Root")
        return {"commit": oid, "state_root": root} if root else None

    def new(self, ns: str, *, now: int) -> Anchor:
        """Write the next anchor of `ns` (journal heads and newest State-Root now)."""
        ns = validate_namespace(ns)
        journals = self.node.journals(ns)
        if not journals:
            raise EpochError(f"namespace {ns} has no journals to anchor")
        anchors = self.anchors(ns)
        problems = continuity_problems(anchors, lambda a, b: is_ancestor(self.git_dir, a, b), journals)
        if problems:
            raise EpochError("; ".join(problems) + " (run `gatos doctor`)")
        previous = anchors[-1] if anchors else None
        anchor = Anchor(ns=ns, epoch=previous.epoch + 1 if previous else 1,
                        previous=previous.commit if previous else None,
                        journals=dict(journals), state=self._state(ns), created_at=now)
        actor = self.node.default_actor
        key = self.node.signing_key(actor)
        objects, oid = anchor_objects(anchor, key.sign, actor)
        self.node.repo.objects.write_many(objects)
        self.node.repo.refs.compare_and_swap(epoch_ref(ns, anchor.epoch), None, oid)
        return Anchor(**{**anchor.__dict__, "signed_by": actor, "commit": oid})

    def _default_archive(self, anchor: Anchor) -> str:
        folder = os.path.join(self.node.repo.gatos_dir, "archive")
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, f"{anchor.ns}-{format_epoch_id(anchor.epoch)}.bundle")

    def compact(self, ns: str, archive: str | None = None) -> dict[str, Any]:
        """Archive the journal history below the newest anchor of `ns` and prune it."""
        anchors = self.anchors(ns)
        if not anchors:
            raise EpochError(f"namespace {ns} has no epoch: run `gatos epoch new {ns}` first")
        anchor = anchors[-1]
        objects = self.node.repo.objects
        cut = {ref: oid for ref, oid in sorted(anchor.journals.items())
               if (parents := objects.read_commit(oid).parents) and objects.contains(parents[0])}
        result: dict[str, Any] = {"ns": ns, "epoch": format_epoch_id(anchor.epoch), "anchor": anchor.commit,
                                  "boundaries": cut, "archive": None, "archived_commits": 0}
        if not cut:
            return result  # nothing below the anchor is stored any more
        path = os.path.abspath(archive or self._default_archive(anchor))
        with daemon_excluded(self.node):
            before = self._count_objects()
            temp = {self._archive_ref(anchor, ref): oid for ref, oid in cut.items()}
            self._update_refs(temp)
            try:
                run_git(self.git_dir, "bundle", "create", "--quiet", path, *sorted(temp))
            finally:
                self._update_refs({ref: None for ref in temp})
            run_git(self.git_dir, "bundle", "verify", "--quiet", path)
            archived = sum(int(run_git(self.git_dir, "rev-list", "--count", oid).stdout) - 1
                           for oid in cut.values())
            write_shallow(self.git_dir, read_shallow(self.git_dir) | set(cut.values()))
            run_git(self.git_dir, "repack", "-a", "-d", "-q")
            run_git(self.git_dir, "prune", "--expire=now")
            after = self._count_objects()
        result.update(archive=path, archived_commits=archived, objects_before=before, objects_after=after)
        return result

    def restore(self, bundles: Sequence[str]) -> dict[str, Any]:
        """Bring archived history back from bundles (oldest epoch first) and drop boundaries."""
        restored = []
        with daemon_excluded(self.node):
            for path in bundles:
                check = run_git(self.git_dir, "bundle", "verify", "--quiet", path, check=False)
                if check.returncode != 0:
                    raise EpochError(f"{path} cannot be restored here: "
                                     f"{check.stderr.decode(errors='replace').strip()} "
                                     "(restore older archives first)")
                run_git(self.git_dir, "bundle", "unbundle", path)
                restored.append(os.path.abspath(path))
            shallow = read_shallow(self.git_dir)
            now = {self._lowest_stored(ObjectId(oid)) for oid in shallow}
            now.discard(None)
            write_shallow(self.git_dir, now)  # type: ignore[arg-type]
        return {"restored": restored, "boundaries_removed": sorted(shallow - now),
                "boundaries_left": sorted(now)}  # type: ignore[type-var]

    def _lowest_stored(self, oid: ObjectId) -> str | None:
        """Follow first parents down from a boundary while they are stored: the commit
        whose parent is still missing is the new boundary (None: the history is whole).
        An archive made after an earlier compaction starts at the earlier boundary, so
        restoring only some archives leaves a boundary lower down, never a hole."""
        objects = self.node.repo.objects
        current: ObjectId | None = oid
        while current is not None:
            parents = objects.read_commit(current).parents
            if not parents:
                return None
            if not objects.contains(parents[0]):
                return current
            current = parents[0]
        return None

    @staticmethod
    def _archive_ref(anchor: Anchor, journal: str) -> str:
        rest = journal[len(JOURNAL_PREFIX):].split("/", 1)[1]  # <kind>/<name>
        return f"{ARCHIVE_PREFIX}{anchor.ns}/{format_epoch_id(anchor.epoch)}/{rest}"

    def _update_refs(self, refs: dict[str, str | None]) -> None:
        lines = "".join(f"update {ref} {oid}\n" if oid else f"delete {ref}\n" for ref, oid in refs.items())
        run_git(self.git_dir, "update-ref", "--stdin", input=lines.encode())

    def _count_objects(self) -> int:
        out = run_git(self.git_dir, "count-objects", "-v").stdout.decode()
        values = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
        return int(values.get("count", 0)) + int(values.get("in-pack", 0))


def epoch_refs(node: Node) -> dict[str, str]:
    return dict(node.repo.refs.list(EPOCH_PREFIX))


__all__ = ["ARCHIVE_PREFIX", "EpochError", "Epochs", "daemon_excluded", "is_ancestor", "read_shallow",
           "run_git", "write_shallow"]
