"""`gatos doctor`: is this node healthy, and if not, what exactly fixes it.

Each check is a small function `(Scan) -> list[Finding]`; a finding has a severity
(`error`: data is wrong or at risk; `warning`: the node works but needs care; `info`:
worth knowing), what is wrong, and the command that fixes it. The node is healthy when
no check reports an error or a warning.

Speed: refs are listed once (`git for-each-ref`), journal history is walked once (one
`git rev-list --parents` over every journal; merges, chains and signature samples all
come from it), signatures are sampled, not all verified (`gatos verify` does that),
and object integrity is one `git fsck`.

Fast-forward-only (`refs`): a ref whose rule is fast-forward-only must descend from
every head recorded for it elsewhere:
- the newest state checkpoint of a namespace records its journals (`Ledger-Head`);
- the newest epoch anchor of a namespace records its journals and state checkpoint;
- the doctor itself records every such head after a run in which this check passed
  (`.git/gatos/doctor/heads.json`, a local witness like a reflog that Git tools cannot
  rewrite by accident). A ref that moved backwards or sideways since then, or vanished,
  is named with the head it should have.
Bus shards are the one exception: retention (`bus.prune`) re-roots a shard on a
`gmb.summary` commit, which is reported as info, not as a fault.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import blake3
import pygit2

from gatosd.node import Node
from ledger_core import (
    EPOCH_PREFIX,
    JOURNAL_PREFIX,
    Anchor,
    ObjectId,
    RefName,
    anchors_by_ns,
    check_anchor_signature,
    continuity_problems,
    format_epoch_id,
    parse_json,
    verify_commit,
)
from ledger_core.errors import LedgerError

ERROR, WARNING, INFO = "error", "warning", "info"
# Refs whose rule is fast-forward only (SPEC §4), watched by the `refs` check.
FF_PREFIXES = ("refs/gatos/journal/", "refs/gatos/state/", "refs/gatos/audit/", "refs/gatos/mbus/",
               "refs/gatos/mbus-ack/", "refs/gatos/policies/", "refs/gatos/trust", "refs/gatos/epoch/",
               "refs/gatos/proposals/", "refs/gatos/approvals/", "refs/gatos/grants/",
               "refs/gatos/revocations/")
SAMPLE_PER_JOURNAL = 8
SAMPLE_TOTAL = 400
LOOSE_LIMIT = 6700        # git's own gc.auto default
PACK_LIMIT = 50           # git's own gc.autoPackLimit default
WATERMARK = os.path.join("doctor", "heads.json")
REPLICA = "<replica>"     # placeholder an operator replaces with a remote that has the data


@dataclass(frozen=True)
class Finding:
    check: str
    severity: str
    what: str
    fix: str | None = None
    ref: str | None = None
    object: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not any(f.severity in (ERROR, WARNING) for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "checks": self.checks, "facts": self.facts,
                "findings": [f.to_dict() for f in self.findings]}


def git(git_dir: str, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], input=input, capture_output=True)


class Scan:
    """What several checks need, computed once per run."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.git_dir = node.repo.git_dir
        self.repo: pygit2.Repository = node.repo.repo
        out = git(self.git_dir, "for-each-ref", "--format=%(refname) %(objectname)", "refs/gatos/").stdout
        self.refs: dict[str, str] = dict(line.split(" ", 1) for line in out.decode().splitlines() if line)
        self.journals = {r: o for r, o in self.refs.items() if r.startswith(JOURNAL_PREFIX)}
        self._parents: dict[str, list[str]] | None = None
        self._anchors: dict[str, list[Anchor | LedgerError]] | None = None
        self.facts: dict[str, Any] = {}  # what checks learned on the way, for the report

    @property
    def parents(self) -> dict[str, list[str]]:
        """commit → parents for every commit reachable from a journal (one `git rev-list`)."""
        if self._parents is None:
            self._parents = {}
            if self.journals:
                heads = "".join(f"{oid}\n" for oid in sorted(set(self.journals.values())))
                out = git(self.git_dir, "rev-list", "--parents", "--stdin", input=heads.encode()).stdout
                for line in out.decode().splitlines():
                    commit, *parents = line.split()
                    self._parents[commit] = parents
        return self._parents

    def chain(self, head: str) -> list[str]:
        """The first-parent chain of a journal, newest first (ends at a root or a boundary)."""
        out, oid, parents = [], head, self.parents
        while oid in parents and len(out) <= len(parents):
            out.append(oid)
            oid = parents[oid][0] if parents[oid] else ""
        return out

    @property
    def anchors(self) -> dict[str, list[Anchor | LedgerError]]:
        if self._anchors is None:
            self._anchors = anchors_by_ns(self.node.repo.objects, self.node.repo.refs)
        return self._anchors

    def stored(self, oid: str) -> bool:
        try:
            return pygit2.Oid(hex=oid) in self.repo.odb
        except ValueError:
            return False

    def is_ancestor(self, older: str, newer: str) -> bool:
        """`older` is `newer` or reachable from it; an archived `older` (compacted away in a
        repository with shallow boundaries) cannot be checked and counts as reachable."""
        if older == newer:
            return True
        if not self.stored(older):
            return os.path.exists(os.path.join(self.git_dir, "shallow"))
        try:
            return bool(self.repo.descendant_of(pygit2.Oid(hex=newer), pygit2.Oid(hex=older)))
        except (pygit2.GitError, KeyError, ValueError):
            return False


# -- checks ---------------------------------------------------------------------------------

def check_refs(scan: Scan) -> list[Finding]:
    """Fast-forward only: each watched ref descends from every head recorded for it."""
    recorded: dict[str, list[tuple[str, str]]] = {}  # ref → [(oid, where recorded)]
    for ref, head in scan.refs.items():
        if ref.startswith("refs/gatos/state/"):
            try:
                commit = scan.node.repo.objects.read_commit(ObjectId(head))
            except LedgerError:
                continue  # fsck names the damaged object
            for line in _trailer_values(commit.message, "Ledger-Head"):
                oid, _, journal = line.partition(" ")
                if journal:
                    recorded.setdefault(journal, []).append((oid, f"checkpoint {head[:12]} on {ref}"))
    for items in scan.anchors.values():
        newest = next((a for a in reversed(items) if isinstance(a, Anchor)), None)
        if newest is None:
            continue
        where = f"epoch anchor {newest.ns}/{format_epoch_id(newest.epoch)}"
        for journal, oid in newest.journals.items():
            recorded.setdefault(journal, []).append((oid, where))
        if newest.state:
            recorded.setdefault(f"refs/gatos/state/{newest.ns}", []).append((newest.state["commit"], where))
    for ref, oid in _read_watermark(scan).items():
        recorded.setdefault(ref, []).append((oid, "the doctor's last healthy run"))
    findings = []
    for ref, items in sorted(recorded.items()):
        current = scan.refs.get(ref)
        for oid, where in items:
            if current is None:
                sev = WARNING if ref.startswith("refs/gatos/mbus") else ERROR
                findings.append(Finding("refs", sev, f"{ref} is gone; {where} recorded it at {oid}",
                                        _restore_fix(scan, ref, oid), ref, oid))
                break
            if scan.is_ancestor(oid, current):
                continue
            if ref.startswith("refs/gatos/mbus/") and _bus_rerooted(scan, current):
                findings.append(Finding("refs", INFO, f"{ref} was re-rooted by bus retention "
                                        f"(was {oid[:12]}, recorded by {where})", None, ref))
                break
            rewound = scan.stored(oid) and scan.is_ancestor(current, oid)
            how = "was rewound" if rewound else "moved sideways (not a fast-forward)"
            findings.append(Finding(
                "refs", ERROR, f"{ref} {how}: it is at {current}, but {where} recorded {oid}",
                _restore_fix(scan, ref, oid, current), ref, current))
            break
    return findings


def _restore_fix(scan: Scan, ref: str, recorded: str, current: str | None = None) -> str:
    if scan.stored(recorded):
        old = current or ""
        fix = f"git update-ref {ref} {recorded} {old}".rstrip()
        if current and not scan.is_ancestor(current, recorded):
            fix += (f"   # after saving what only the current head has: "
                    f"git log --oneline {recorded}..{current}")
        return fix
    return f"git fetch {REPLICA} +{ref}:{ref}   # the recorded head {recorded} is not stored here"


def _bus_rerooted(scan: Scan, head: str) -> bool:
    try:
        commit = scan.repo.get(head)
        for _ in range(1_000_000):
            if not commit.parents:
                return str(commit.message).startswith("gmb.summary")
            commit = commit.parents[0]
    except (pygit2.GitError, KeyError, ValueError):
        return False
    return False


def check_merges(scan: Scan) -> list[Finding]:
    """Journals are linear: no commit on a journal has two parents."""
    findings = []
    for ref, head in sorted(scan.journals.items()):
        for oid in scan.chain(head):
            parents = scan.parents[oid]
            if len(parents) > 1:
                fix = (f"git update-ref {ref} {parents[0]} {head}" if oid == head else
                       f"git update-ref {ref} {parents[0]} {head}   # then re-append the events "
                       f"after it: git log --reverse --format=%H {oid}..{head}")
                findings.append(Finding("merges", ERROR, f"merge commit {oid} ({len(parents)} parents) "
                                        f"in journal {ref}", fix, ref, oid))
    return findings


def sample(chain: list[str], ref: str, k: int) -> list[str]:
    """A deterministic sample of a chain: the newest, the oldest and `k-2` spread between,
    offset by a hash of the ref and head so successive runs look at different events."""
    n = len(chain)
    if n <= k:
        return list(chain)
    seed = int.from_bytes(blake3.blake3(f"{ref} {chain[0]}".encode()).digest()[:8], "big")
    step = (n - 1) / (k - 1)
    picks = {0, n - 1}
    picks.update(min(n - 2, 1 + int((i + (seed % 1000) / 1000) * step)) for i in range(k - 2))
    return [chain[i] for i in sorted(picks)]


def check_signatures(scan: Scan) -> list[Finding]:
    """A sample of events per journal: bytes, CID, signature, trailers (ledger_core)."""
    findings: list[Finding] = []
    per = max(2, min(SAMPLE_PER_JOURNAL, SAMPLE_TOTAL // max(1, len(scan.journals))))
    checked = 0
    for ref, head in sorted(scan.journals.items()):
        for oid in sample(scan.chain(head), ref, per):
            checked += 1
            for problem in verify_commit(scan.node.repo.objects, RefName(ref), ObjectId(oid), scan.node.trust):
                if "merge commit" in problem.reason:
                    continue  # the merges check names it
                findings.append(Finding("signatures", ERROR, f"event commit {oid} of {ref}: {problem.reason}",
                                        f"gatos verify   # full report; then restore {ref} from a replica: "
                                        f"git fetch {REPLICA} +{ref}:{ref}", ref, oid))
    scan.facts["sampled_events"] = checked
    return findings


def check_epochs(scan: Scan) -> list[Finding]:
    """Each namespace's anchors: well formed, signed, linked, and heads moving forward."""
    findings = []
    for ns, items in sorted(scan.anchors.items()):
        good = []
        for item in items:
            if isinstance(item, LedgerError):
                findings.append(Finding("epochs", ERROR, f"epoch anchor in {ns or '?'}: {item.reason}",
                                        f"git for-each-ref {EPOCH_PREFIX}{ns}   # delete the bad anchor "
                                        f"and every later one (git update-ref -d <ref>), then "
                                        f"gatos epoch new {ns}"))
                continue
            try:
                check_anchor_signature(item, scan.node.trust)
            except LedgerError as exc:
                findings.append(Finding("epochs", ERROR, exc.reason,
                                        f"git update-ref -d {_anchor_ref(item)}   # then gatos epoch new {ns}",
                                        _anchor_ref(item), item.commit))
            good.append(item)
        for problem in continuity_problems(good, scan.is_ancestor):
            findings.append(Finding("epochs", ERROR, problem,
                                    f"git for-each-ref {EPOCH_PREFIX}{ns}   # remove the anchor named and "
                                    f"those after it (git update-ref -d <ref>), then gatos epoch new {ns}",
                                    f"{EPOCH_PREFIX}{ns}"))
    return findings


def _anchor_ref(anchor: Anchor) -> str:
    return f"{EPOCH_PREFIX}{anchor.ns}/{format_epoch_id(anchor.epoch)}"


def check_cache(scan: Scan) -> list[Finding]:
    """Indexes behind their journals (rebuilt lazily on query; rebuild ahead of time)."""
    import kv_cache

    stale_indexes = getattr(kv_cache, "stale_indexes", None)
    if stale_indexes is None:
        raise _Skipped("kv_cache.stale_indexes is not available")
    findings = []
    for item in stale_indexes(scan.node) or []:
        item = item if isinstance(item, dict) else {"ref": str(item)}
        ns, ref = item.get("ns"), str(item.get("ref") or item.get("index") or "?")
        problem = item.get("problem") or "behind its journals"
        findings.append(Finding("cache", WARNING, f"index {ref} is stale: {problem} (queries rebuild it "
                                "lazily; rebuild now to keep them fast)",
                                f"gatos cache rebuild {ns}" if ns else f"git update-ref -d {ref}",
                                ref if ref.startswith("refs/") else None))
    return findings


def check_packs(scan: Scan) -> list[Finding]:
    """Loose objects, packs, sizes; git's own auto-gc limits as the thresholds."""
    out = git(scan.git_dir, "count-objects", "-v").stdout.decode()
    values = {k: int(v) for k, _, v in (line.partition(": ") for line in out.splitlines()) if v.isdigit()}
    loose, packed, packs = values.get("count", 0), values.get("in-pack", 0), values.get("packs", 0)
    scan.facts["objects"] = {"loose_objects": loose, "loose_kib": values.get("size", 0),
                        "packed_objects": packed, "packs": packs, "pack_kib": values.get("size-pack", 0),
                        "packed_ratio": round(packed / (loose + packed), 3) if loose + packed else 1.0}
    findings = []
    if loose > LOOSE_LIMIT:
        findings.append(Finding("packs", WARNING, f"{loose} loose objects (over {LOOSE_LIMIT}): reads and "
                                "fsck slow down", "git repack -d -q && git prune-packed"))
    if packs > PACK_LIMIT:
        findings.append(Finding("packs", WARNING, f"{packs} packs (over {PACK_LIMIT}): every lookup "
                                "searches each index", "git repack -a -d -q --write-bitmap-index"))
    if values.get("garbage", 0):
        findings.append(Finding("packs", WARNING, f"{values['garbage']} garbage file(s) in the object "
                                "folder (left by a crashed writer)", "git count-objects -vH   # then remove "
                                "the files under .git/objects/pack it names"))
    if packed + loose > 10_000 and not os.path.exists(os.path.join(scan.git_dir, "objects", "info",
                                                                    "commit-graph")):
        findings.append(Finding("packs", INFO, "no commit-graph: history walks (doctor, fsck, rev-list) "
                                "are slower than they need be", "git commit-graph write --reachable"))
    return findings


def check_objects(scan: Scan) -> list[Finding]:
    """`git fsck`: corrupt, missing and dangling objects."""
    result = git(scan.git_dir, "fsck", "--no-progress", "--no-reflogs")
    text = (result.stdout + result.stderr).decode(errors="replace")
    findings, dangling = [], 0
    for line in text.splitlines():
        words = line.split()
        if line.startswith("dangling "):
            dangling += 1
        elif line.startswith(("missing ", "broken link")) or "corrupt" in line or line.startswith("error:"):
            oid = next((w.rstrip(":") for w in words if len(w.rstrip(":")) == 40), None)
            path = next((w for w in words if "/objects/" in w), None)
            if path:
                fix = f"mv {path} {path}.bad && git fetch {REPLICA} '+refs/gatos/*:refs/gatos/*'"
            else:
                fix = f"git fetch {REPLICA} '+refs/gatos/*:refs/gatos/*'   # brings back good copies"
            findings.append(Finding("objects", ERROR, line.strip(), fix, None, oid))
        elif line.startswith("notice:") or not line.strip():
            continue
        elif result.returncode != 0:
            findings.append(Finding("objects", ERROR, line.strip(), "git fsck --full   # inspect"))
    if result.returncode != 0 and not findings:
        findings.append(Finding("objects", ERROR, f"git fsck exited {result.returncode}", "git fsck --full"))
    if dangling:
        findings.append(Finding("objects", INFO, f"{dangling} dangling object(s) (left by interrupted "
                                "or superseded writes; harmless)", "git prune --expire=2.weeks.ago"))
    return findings


def check_blobs(scan: Scan) -> list[Finding]:
    """Blob store: stored bytes match their names; blobs named by jobs and results exist."""
    from gatosd._jobs_wiring import blob_store

    store = blob_store(scan.node)
    findings = []
    for name in store.check():
        hexpart = name[7:]
        findings.append(Finding("blobs", ERROR, f"blob {name} is damaged: its bytes do not hash to its name",
                                f"rm -f {store.dir}/{hexpart} {store.dir}/{hexpart}.zst && "
                                f"gatos blob put <the original file>", None, name))
    for name, users in sorted(_pointers(scan).items()):
        if not store.has(name):
            findings.append(Finding("blobs", ERROR, f"blob {name} is missing; named by {', '.join(users)}",
                                    f"gatos blob put <the file whose BLAKE3 is {name[7:]}>   # or copy "
                                    f"gatos/objects/blake3/{name[7:]} from a replica", None, name))
    return findings


def _pointers(scan: Scan) -> dict[str, list[str]]:
    """blake3 name → who names it: job manifests' inputs and results' blob outputs."""
    asks = []
    for ref in sorted(scan.refs):
        if ref.startswith("refs/gatos/jobs/") and ref.endswith("/job"):
            asks.append((ref, "job.json"))
        elif ref.startswith("refs/gatos/jobs/") and ref.endswith("/result"):
            asks.append((ref, "poe.json"))
    if not asks:
        return {}
    out = git(scan.git_dir, "cat-file", "--batch", input="".join(f"{r}:{f}\n" for r, f in asks).encode()).stdout
    found: dict[str, list[str]] = {}
    pos = 0
    for ref, file in asks:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        pos = end + 1
        if len(header) != 3:
            continue  # missing: fsck or the jobs plane reports it
        size = int(header[2])
        body, pos = out[pos:pos + size], pos + size + 1
        try:
            value = parse_json(body, file)
        except LedgerError:
            continue
        items = value.get("inputs", []) if file == "job.json" else value.get("outputs", [])
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and item.get("kind") == "blobptr" and isinstance(item.get("hash"), str):
                found.setdefault(item["hash"], []).append(ref)
    return found


class _Skipped(Exception):
    pass


def _trailer_values(message: str, key: str) -> list[str]:
    paragraph = message.rstrip("\n").rsplit("\n\n", 1)[-1]
    return [line[len(key) + 2:] for line in paragraph.split("\n") if line.startswith(key + ": ")]


def _watermark_path(scan: Scan) -> str:
    return os.path.join(scan.node.repo.gatos_dir, WATERMARK)


def _read_watermark(scan: Scan) -> dict[str, str]:
    try:
        with open(_watermark_path(scan), "rb") as handle:
            value = json.loads(handle.read())
        return {str(k): str(v) for k, v in value.get("heads", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def record_heads(scan: Scan) -> None:
    """Write the watermark: the current head of every fast-forward-only ref."""
    heads = {r: o for r, o in scan.refs.items() if r.startswith(FF_PREFIXES)}
    path = _watermark_path(scan)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump({"version": 1, "heads": heads}, handle, sort_keys=True)
    os.replace(path + ".tmp", path)


def check_forks(scan: Scan) -> list[Finding]:
    """Divergences sync kept (`refs/gatos/forks/<ref>/<oid>`) that the ref has not absorbed.

    A journal forks when one actor wrote on two nodes while they were apart; sync never
    merges the sides, it keeps the other one here and appends a `governance.conflict`
    event. The fork stays a finding until the ref descends from the kept side.
    """
    from gatosd._refclass import FORKS_PREFIX, forked_ref
    from gatosd._sync import fork_absorbed

    findings = []
    for fork, oid in sorted(scan.refs.items()):
        if not fork.startswith(FORKS_PREFIX):
            continue
        ref, kept = forked_ref(fork)
        current = scan.refs.get(ref)
        if fork_absorbed(scan.repo, scan.node.repo.objects, ref, oid, current):
            continue
        findings.append(Finding(
            "forks", WARNING,
            f"{ref} forked: this node has {str(current)[:12]}, another node wrote {kept[:12]} "
            f"on the same history (kept at {fork}); neither side was merged",
            f"git log --oneline {current} {oid} --not $(git merge-base {current} {oid}); "
            f"gatos fork resolve {fork} --replay   (takes the hub's side, appends this node's "
            "events again on top and keeps the local side)", ref, oid))
    return findings


CHECKS: dict[str, Callable[[Scan], list[Finding]]] = {
    "refs": check_refs, "merges": check_merges, "signatures": check_signatures,
    "epochs": check_epochs, "cache": check_cache, "packs": check_packs,
    "objects": check_objects, "blobs": check_blobs, "forks": check_forks,
}


def run_doctor(node: Node, checks: Iterable[str] | None = None, *, record: bool = True,
               accept: bool = False) -> Report:
    """Run the checks (all by default) and return the report.

    Args:
        record: after a run whose `refs` check passed, record the current heads as the
            watermark later runs compare against.
        accept: record the current heads even if the `refs` check failed (after an
            operator has decided the current heads are right).
    """
    scan = Scan(node)
    report = Report()
    names = list(checks) if checks else list(CHECKS)
    for name in names:
        if name not in CHECKS:
            raise LedgerError(f"unknown check {name!r}; checks are {', '.join(CHECKS)}")
        started = time.perf_counter()
        try:
            found = CHECKS[name](scan)
            status = "failed" if any(f.severity in (ERROR, WARNING) for f in found) else "ok"
        except _Skipped as exc:
            found, status = [], "skipped: " + str(exc)
        except (LedgerError, OSError, pygit2.GitError, ValueError, KeyError) as exc:
            found = [Finding(name, ERROR, f"the check could not run: {exc}", "git fsck --full")]
            status = "failed"
        report.findings += found
        report.checks[name] = {"status": status, "ms": round((time.perf_counter() - started) * 1000, 1)}
    report.facts = {"refs": len(scan.refs), "journals": len(scan.journals),
                    "journal_commits": len(scan._parents) if scan._parents is not None else None,
                    "compacted": os.path.exists(os.path.join(scan.git_dir, "shallow")), **scan.facts}
    refs_ok = report.checks.get("refs", {}).get("status") == "ok"
    if accept or (record and refs_ok):
        record_heads(scan)
    return report


def format_report(report: Report) -> str:
    """The human-readable report: one line per check, then each finding with its fix."""
    lines = []
    for name, info in report.checks.items():
        lines.append(f"{name:<11} {info['status']:<8} ({info['ms']:g} ms)")
    order = {ERROR: 0, WARNING: 1, INFO: 2}
    for f in sorted(report.findings, key=lambda f: order.get(f.severity, 3)):
        lines.append(f"{f.severity.upper()}: [{f.check}] {f.what}")
        if f.fix:
            lines.append(f"    fix: {f.fix}")
    lines.append("healthy" if report.healthy else
                 f"NOT HEALTHY: {sum(f.severity == ERROR for f in report.findings)} error(s), "
                 f"{sum(f.severity == WARNING for f in report.findings)} warning(s)")
    return "\n".join(lines)


__all__ = ["CHECKS", "ERROR", "INFO", "WARNING", "Finding", "Report", "Scan", "format_report", "record_heads",
           "run_doctor", "sample"]
