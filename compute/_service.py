"""The job plane's operations for the CLI and the daemon: enqueue, cancel, result, reproduce.

Side effects outside the job refs come in through callables: `emit(ns, type, payload)`
appends a lifecycle event, `publish(topic, payload)` puts a message on the bus, and
`gate(actor, action, target)` raises `PolicyDenied` (audited by the caller's engine).
Cancelling needs the enqueue capability of the namespace (`jobs:<ns>:enqueue`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from compute._blobs import BlobStore
from compute._jobs import PENDING_TOPIC, JobStore
from compute._manifest import Manifest
from compute._poe import ABORTED_FILE, POE_FILE, verify_result
from compute._runner import Limits, Runner
from compute._worker import run_job
from compute.errors import BadProof, JobNotFound
from ledger_core import blake3_hex, canonical_json, parse_json

Emit = Callable[[str, str, dict[str, Any]], None]
Publish = Callable[[str, dict[str, Any]], None]
Gate = Callable[[str, str, str], None]


class JobService:
    def __init__(self, store: JobStore, blobs: BlobStore, *, emit: Emit, publish: Publish | None,
                 gate: Gate | None) -> None:
        self.store = store
        self.blobs = blobs
        self.emit = emit
        self.publish = publish
        self.gate = gate

    def enqueue(self, manifest: Manifest, ns: str, actor: str) -> dict[str, Any]:
        """Create the job (idempotent by job id), record `job.pending`, announce it on the bus."""
        if self.gate is not None:
            self.gate(actor, "jobs.enqueue", ns)
        job, created = self.store.create(manifest, ns, actor)
        if created:
            self.emit(job.ns, "job.pending", {"job_id": job.job_id, "by": actor})
            if self.publish is not None:
                self.publish(PENDING_TOPIC, {"job_id": job.job_id, "ns": job.ns})
        return {"job_id": job.job_id, "ns": job.ns, "commit": job.commit, "duplicate": not created,
                "runtime": manifest.runtime}

    def cancel(self, job_id: str, actor: str, reason: str = "") -> dict[str, Any]:
        """Abort a job that has no result yet: the result ref records the cancel (no PoE: nothing ran
        to completion), and a worker running it stops at its next check."""
        job = self.store.get(job_id)
        if self.gate is not None:
            self.gate(actor, "jobs.enqueue", job.ns)
        body = canonical_json({"job_id": job.job_id, "status": "aborted", "by": actor, "reason": reason,
                               "at_ms": self.store.clock_ms()})
        claim = self.store.current_claim(job.job_id)
        oid = self.store.write_result(job.job_id, {ABORTED_FILE: body},
                                      [("Job-Id", job.job_id), ("Job-Status", "aborted"),
                                       ("Cancelled-By", actor)],
                                      f"result {job.hex} aborted", None)
        self.emit(job.ns, "job.aborted", {"job_id": job.job_id, "by": actor, "reason": reason,
                                          "result": oid, **({"attempt": claim.attempt} if claim else {})})
        return {"job_id": job.job_id, "result": oid, "state": "aborted"}

    def refs_of(self, job_id: str) -> dict[str, Any]:
        job = self.store.get(job_id)
        leaves = self.store.refs_by_job().get(job.hex, {})
        out: dict[str, Any] = {"job": leaves.get("job"), "claim": leaves.get("claim"),
                               "result": leaves.get("result")}
        if leaves.get("claim"):
            out["claim_info"] = self.store.read_claim(leaves["claim"]).to_dict()
        found = self.store.result(job.job_id)
        if found is not None:
            out["result_status"] = found[1].get("Job-Status", "succeeded")
        return out

    def result(self, job_id: str, *, verify: bool = True) -> dict[str, Any]:
        """The result: status, PoE (checked), outputs inline (UTF-8 text where it decodes) or as pointers."""
        job = self.store.get(job_id)
        found = self.store.result(job.job_id)
        if found is None:
            raise JobNotFound(f"{job.job_id} has no result yet")
        oid, trailers, files = found
        status = trailers.get("Job-Status", "succeeded")
        out: dict[str, Any] = {"job_id": job.job_id, "commit": oid, "status": status, "trailers": trailers}
        if ABORTED_FILE in files:
            out["aborted"] = parse_json(files[ABORTED_FILE], ABORTED_FILE)
            return out
        envelope = verify_result(job.job_id, trailers, files, self.blobs) if verify else \
            parse_json(files[POE_FILE], POE_FILE)
        out["verified"] = verify
        out["poe"] = envelope
        outputs: dict[str, Any] = {}
        for entry in envelope["outputs"]:
            name = entry["name"]
            if name == "exit":
                out["exit"] = {k: v for k, v in entry.items() if k != "name"}
                continue
            data = files.get(f"outputs/{name}")
            if data is None:
                outputs[name] = {k: v for k, v in entry.items() if k != "name"}
                continue
            try:
                outputs[name] = data.decode("utf-8")
            except UnicodeDecodeError:
                outputs[name] = {"base64": __import__("base64").b64encode(data).decode()}
        out["outputs"] = outputs
        return out

    def reproduce(self, job_id: str, runners: dict[str, Runner], limits: Limits,
                  work_root: str | None = None) -> dict[str, Any]:
        """Run the job again here and compare every output with the recorded PoE."""
        job = self.store.get(job_id)
        found = self.store.result(job.job_id)
        if found is None or POE_FILE not in found[2]:
            raise JobNotFound(f"{job.job_id} has no executed result to reproduce")
        try:
            envelope = verify_result(job.job_id, found[1], found[2], self.blobs)
        except BadProof as exc:
            return {"job_id": job.job_id, "identical": False, "drift": {"name": "poe", "reason": exc.reason}}
        outcome, outputs = run_job(job, runners, self.blobs, limits, work_root)
        recorded = {e["name"]: e for e in envelope["outputs"]}
        fresh = {o.name: "blake3:" + blake3_hex(o.data) for o in outputs}
        exit_now = outcome.summary()
        names = sorted(set(recorded) | set(fresh) - {"exit"})
        for name in names:
            if name == "exit":
                was = {k: recorded["exit"].get(k) for k in ("reason", "exit_code")}
                now = {k: exit_now.get(k) for k in ("reason", "exit_code")}
                if was != now:
                    return {"job_id": job.job_id, "identical": False,
                            "drift": {"name": "exit", "recorded": was, "reproduced": now}}
                continue
            if recorded.get(name, {}).get("hash") != fresh.get(name):
                return {"job_id": job.job_id, "identical": False,
                        "drift": {"name": name, "recorded": recorded.get(name, {}).get("hash"),
                                  "reproduced": fresh.get(name)}}
        program_same = outcome.program == envelope["runner"]["program"]
        return {"job_id": job.job_id, "identical": True, "outputs": len(fresh),
                "same_program": program_same}


__all__ = ["JobService"]
