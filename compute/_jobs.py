"""Jobs, claims and results in Git (SPEC §4): `refs/gatos/jobs/<hex>/{job,claim,result}`.

- **job**: created once (expected old = zero OID); tree `job.json` (the canonical
  manifest: its BLAKE3 is the job id) and `job.yaml` (the authoring form); trailers
  `Job-Id`, `Job-Ns`, `Enqueued-By`.
- **claim**: the first claim is created with expected old = zero OID, so exactly one
  creator wins. A claim carries a lease (`Lease-Until`, ms since the epoch). The holder
  renews by moving the ref fast-forward from the claim it holds; after the lease has run
  out, another worker may take over by moving the ref fast-forward from the *expired*
  claim (parent = that claim, `Attempt` + 1). Every move is a compare-and-swap under the
  ref's lock, so at any time exactly one claim commit is the head, and a holder whose
  renewal finds another head knows it lost the job and must stop without a result.
- **result**: created once (expected old = zero OID) by the holder of the live claim, or
  by a cancel. A second result can never be written, which makes "completes exactly
  once" a property of the ref, whatever the workers do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from compute._manifest import Manifest, parse_job_id
from compute.errors import ClaimLost, JobError, JobFinished, JobNotFound
from ledger_core import ObjectId, ObjectStore, RefStore, canonical_json, parse_json, validate_namespace
from ledger_core._trees import commit_files, make_commit
from ledger_core.errors import RefConflict, RefLocked

JOBS_PREFIX = "refs/gatos/jobs/"
IDENT = "gatos-jobs"
PENDING_TOPIC = "gatos.jobs.pending"


def job_ref(hexpart: str, leaf: str) -> str:
    return f"{JOBS_PREFIX}{hexpart}/{leaf}"


def _hex(job_id: str) -> str:
    return parse_job_id(job_id)[7:]


@dataclass(frozen=True)
class Job:
    job_id: str
    manifest: Manifest
    ns: str
    enqueued_by: str
    commit: ObjectId

    @property
    def hex(self) -> str:
        return self.job_id[7:]

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "ns": self.ns, "enqueued_by": self.enqueued_by,
                "commit": self.commit, "manifest": self.manifest.value}


@dataclass(frozen=True)
class Claim:
    job_id: str
    worker: str          # ed25519:<hex> of the worker key
    actor: str
    attempt: int
    lease_until_ms: int
    commit: ObjectId

    def expired(self, now_ms: int) -> bool:
        return now_ms >= self.lease_until_ms

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "worker": self.worker, "actor": self.actor, "attempt": self.attempt,
                "lease_until_ms": self.lease_until_ms, "commit": self.commit}


class JobStore:
    """The job plane's refs over the ledger ports; time comes from an injected clock (ms)."""

    def __init__(self, objects: ObjectStore, refs: RefStore, *, clock_ms: Callable[[], int]) -> None:
        self.objects = objects
        self.refs = refs
        self.clock_ms = clock_ms

    # -- jobs ---------------------------------------------------------------------------

    def create(self, manifest: Manifest, ns: str, actor: str) -> tuple[Job, bool]:
        """Write the job commit unless the job exists; returns (job, created)."""
        ns = validate_namespace(ns)
        hexpart = manifest.hex
        existing = self.refs.get(job_ref(hexpart, "job"))
        if existing is not None:
            return self.get(manifest.job_id), False
        files = {"job.json": manifest.canonical, "job.yaml": manifest.to_yaml().encode("utf-8")}
        trailers = [("Job-Id", manifest.job_id), ("Job-Ns", ns), ("Enqueued-By", actor)]
        objects, oid = make_commit(files, f"job {hexpart}", trailers, None, self.clock_ms() // 1000, IDENT)
        self.objects.write_many(objects)
        try:
            self.refs.compare_and_swap(job_ref(hexpart, "job"), None, oid)
        except (RefConflict, RefLocked):
            return self.get(manifest.job_id), False
        return Job(manifest.job_id, manifest, ns, actor, oid), True

    def get(self, job_id: str) -> Job:
        hexpart = _hex(job_id)
        oid = self.refs.get(job_ref(hexpart, "job"))
        if oid is None:
            raise JobNotFound(f"no job blake3:{hexpart}")
        trailers, files, _ = commit_files(self.objects, oid)
        manifest = Manifest.parse(files["job.json"], yaml_ok=False)
        if manifest.job_id != "blake3:" + hexpart or trailers.get("Job-Id") != manifest.job_id:
            raise JobError(f"job blake3:{hexpart}: job.json hashes to {manifest.job_id}")
        return Job(manifest.job_id, manifest, trailers.get("Job-Ns", ""), trailers.get("Enqueued-By", ""), oid)

    def refs_by_job(self) -> dict[str, dict[str, ObjectId]]:
        """hex → {leaf: oid} for every job ref (one listing)."""
        out: dict[str, dict[str, ObjectId]] = {}
        for name, oid in self.refs.list(JOBS_PREFIX).items():
            hexpart, _, leaf = name[len(JOBS_PREFIX):].partition("/")
            out.setdefault(hexpart, {})[leaf] = oid
        return out

    def claimable(self, ns: str | None = None) -> list[str]:
        """Job ids with no result and no live claim (oldest job commit first, then by id)."""
        now = self.clock_ms()
        found = []
        for hexpart, leaves in sorted(self.refs_by_job().items()):
            if "job" not in leaves or "result" in leaves:
                continue
            if "claim" in leaves and not self.read_claim(leaves["claim"]).expired(now):
                continue
            if ns is not None and self.get("blake3:" + hexpart).ns != ns:
                continue
            found.append("blake3:" + hexpart)
        return found

    # -- claims ---------------------------------------------------------------------------

    def read_claim(self, oid: ObjectId) -> Claim:
        _, files, _ = commit_files(self.objects, oid)
        value = parse_json(files["claim.json"], "claim.json")
        return Claim(value["job_id"], value["worker"], value["actor"], value["attempt"],
                     value["lease_until_ms"], oid)

    def current_claim(self, job_id: str) -> Claim | None:
        oid = self.refs.get(job_ref(_hex(job_id), "claim"))
        return None if oid is None else self.read_claim(oid)

    def _claim_commit(self, job_id: str, worker: str, actor: str, attempt: int, lease_ms: int,
                      parent: ObjectId | None, now: int) -> tuple[list[Any], ObjectId, int]:
        until = now + lease_ms
        body = canonical_json({"job_id": job_id, "worker": worker, "actor": actor, "attempt": attempt,
                               "lease_until_ms": until, "claimed_at_ms": now})
        trailers = [("Job-Id", job_id), ("Worker-Id", worker), ("Actor", actor),
                    ("Attempt", str(attempt)), ("Lease-Until", str(until))]
        objects, oid = make_commit({"claim.json": body}, f"claim {job_id[7:]}", trailers, parent, now // 1000,
                                     IDENT)
        return objects, oid, until

    def claim(self, job_id: str, worker: str, actor: str, lease_ms: int) -> Claim | None:
        """Claim the job, or take over an expired claim; None when someone else holds it."""
        hexpart = _hex(job_id)
        if self.refs.get(job_ref(hexpart, "result")) is not None:
            return None
        name = job_ref(hexpart, "claim")
        try:
            with self.refs.lock(name) as held:
                now = self.clock_ms()
                attempt, parent = 1, None
                if held.old is not None:
                    previous = self.read_claim(held.old)
                    if not previous.expired(now):
                        return None
                    attempt, parent = previous.attempt + 1, held.old
                objects, oid, until = self._claim_commit(job_id, worker, actor, attempt, lease_ms, parent, now)
                self.objects.write_many(objects)
                held.commit(oid)
        except RefLocked:
            return None  # another worker is claiming right now: it wins, we move on
        return Claim(job_id, worker, actor, attempt, until, oid)

    def renew(self, claim: Claim, lease_ms: int) -> Claim:
        """Extend the lease of a claim we hold.

        Raises:
            ClaimLost: the claim ref no longer points at `claim` (taken over after expiry).
        """
        name = job_ref(claim.job_id[7:], "claim")
        try:
            with self.refs.lock(name) as held:
                if held.old != claim.commit:
                    raise ClaimLost(f"the claim on {claim.job_id} moved to {held.old}: lease lost")
                now = self.clock_ms()
                objects, oid, until = self._claim_commit(claim.job_id, claim.worker, claim.actor,
                                                         claim.attempt, lease_ms, claim.commit, now)
                self.objects.write_many(objects)
                held.commit(oid)
        except RefLocked:
            raise ClaimLost(f"the claim on {claim.job_id} is being taken over") from None
        return Claim(claim.job_id, claim.worker, claim.actor, claim.attempt, until, oid)

    # -- results ---------------------------------------------------------------------------

    def write_result(self, job_id: str, files: dict[str, bytes], trailers: list[tuple[str, str]],
                     subject: str, claim: Claim | None) -> ObjectId:
        """Create the result ref (once). With `claim`, only while that claim is the live one.

        Raises:
            JobFinished: a result exists already.
            ClaimLost: `claim` is no longer the head of the claim ref.
        """
        hexpart = _hex(job_id)
        if claim is not None and self.refs.get(job_ref(hexpart, "claim")) != claim.commit:
            raise ClaimLost(f"the claim on {job_id} was taken over: result not written")
        parent = claim.commit if claim is not None else None
        objects, oid = make_commit(files, subject, trailers, parent, self.clock_ms() // 1000, IDENT)
        self.objects.write_many(objects)
        try:
            self.refs.compare_and_swap(job_ref(hexpart, "result"), None, oid)
        except (RefConflict, RefLocked):
            raise JobFinished(f"{job_id} already has a result") from None
        return oid

    def has_result(self, job_id: str) -> bool:
        return self.refs.get(job_ref(_hex(job_id), "result")) is not None

    def result(self, job_id: str) -> tuple[ObjectId, dict[str, str], dict[str, bytes]] | None:
        oid = self.refs.get(job_ref(_hex(job_id), "result"))
        if oid is None:
            return None
        trailers, files, _ = commit_files(self.objects, oid)
        return oid, trailers, files


__all__ = ["JOBS_PREFIX", "PENDING_TOPIC", "Claim", "Job", "JobStore", "job_ref"]
