"""Proof-of-Execution (v1 envelope) and the result commit that carries it.

`poe.json` holds the canonical JSON bytes of the envelope `{job_id, runner{program,
version, platform}, outputs[], started_at, finished_at}`. `Proof-Of-Execution` is their
BLAKE3 and `Attest-Sig` the worker key's ed25519 signature over exactly those bytes, so
anyone holding the result commit and the worker's public key can check that this worker
says this program produced these outputs for this job.

Outputs are described in the envelope by name, size and BLAKE3; small ones are stored
in the result tree under `outputs/<name>`, large ones in the blob store and described
as blob pointers (`kind: blobptr`). One extra entry named `exit` records how the run
ended (`reason`, `code`, `attempt`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compute._blobs import BlobStore, blob_hash, blob_pointer
from compute.errors import BadProof, BlobCorrupt, BlobNotFound
from ledger_core import SigningKey, blake3_hex, canonical_json, parse_json, parse_signature, verify
from ledger_core._keys import signature_text
from ledger_core.errors import BadSignature, LedgerError

POE_FILE = "poe.json"
INLINE_MAX = 64 * 1024
ABORTED_FILE = "aborted.json"


@dataclass(frozen=True)
class Output:
    name: str
    data: bytes
    truncated: bool = False


def describe_outputs(outputs: list[Output], blobs: BlobStore | None
                     ) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """(envelope entries, files for the result tree); big outputs go to the blob store."""
    entries, files = [], {}
    for out in sorted(outputs, key=lambda o: o.name):
        digest = blob_hash(out.data)
        entry: dict[str, Any] = {"name": out.name, "size": len(out.data), "hash": digest}
        if out.truncated:
            entry["truncated"] = True
        if len(out.data) > INLINE_MAX and blobs is not None:
            blobs.put(out.data)
            entry.update(blob_pointer(digest, len(out.data)))
        else:
            entry["kind"] = "inline"
            files[f"outputs/{out.name}"] = out.data
        entries.append(entry)
    return entries, files


def build_envelope(job_id: str, program: str, version: str, platform: str,
                   outputs: list[dict[str, Any]], exit_info: dict[str, Any],
                   started_at: str | None, finished_at: str | None) -> bytes:
    runner = {"program": program, **({"version": version} if version else {}),
              **({"platform": platform} if platform else {})}
    envelope: dict[str, Any] = {"job_id": job_id, "runner": runner,
                                "outputs": [*outputs, {"name": "exit", **exit_info}]}
    if started_at:
        envelope["started_at"] = started_at
    if finished_at:
        envelope["finished_at"] = finished_at
    return canonical_json(envelope)


def sign_envelope(poe: bytes, key: SigningKey) -> tuple[str, str]:
    """(`blake3:<hex>` of the bytes, `ed25519:<hex>` signature over them)."""
    return "blake3:" + blake3_hex(poe), signature_text(key.sign(poe))


def result_trailers(job_id: str, poe_id: str, worker: str, program: str, sig: str, status: str
                    ) -> list[tuple[str, str]]:
    return [("Job-Id", job_id), ("Proof-Of-Execution", poe_id), ("Worker-Id", worker),
            ("Attest-Program", program), ("Attest-Sig", sig), ("Job-Status", status)]


def verify_result(job_id: str, trailers: dict[str, str], files: dict[str, bytes],
                  blobs: BlobStore | None = None) -> dict[str, Any]:
    """Check a result commit's proof; returns the envelope.

    Raises:
        BadProof: a trailer missing, the hash or signature wrong, the envelope naming another
            job or program, or an output whose bytes do not match its entry.
    """
    for name in ("Job-Id", "Proof-Of-Execution", "Worker-Id", "Attest-Program", "Attest-Sig"):
        if name not in trailers:
            raise BadProof(f"result of {job_id}: trailer {name} is missing")
    if trailers["Job-Id"] != job_id:
        raise BadProof(f"result names job {trailers['Job-Id']}, not {job_id}")
    poe = files.get(POE_FILE)
    if poe is None:
        raise BadProof(f"result of {job_id} has no {POE_FILE}")
    if "blake3:" + blake3_hex(poe) != trailers["Proof-Of-Execution"]:
        raise BadProof(f"{POE_FILE} hashes to blake3:{blake3_hex(poe)}, the trailer says "
                       f"{trailers['Proof-Of-Execution']}")
    try:
        envelope = parse_json(poe, POE_FILE)
        if canonical_json(envelope) != poe:
            raise BadProof(f"{POE_FILE} is not canonical JSON")
        verify(trailers["Worker-Id"], poe, parse_signature(trailers["Attest-Sig"]))
    except BadSignature as exc:
        raise BadProof(f"Attest-Sig does not verify with {trailers['Worker-Id']}: {exc.reason}") from None
    except (LedgerError, ValueError) as exc:
        raise BadProof(f"{POE_FILE} is not a valid envelope: {exc}") from None
    if envelope.get("job_id") != job_id:
        raise BadProof(f"{POE_FILE} names job {envelope.get('job_id')}, not {job_id}")
    if envelope.get("runner", {}).get("program") != trailers["Attest-Program"]:
        raise BadProof("Attest-Program differs from the envelope's runner.program")
    for entry in envelope.get("outputs", []):
        if entry.get("name") == "exit" or "hash" not in entry:
            continue
        if entry.get("kind") == "blobptr":
            if blobs is None:
                continue
            try:
                data = blobs.get(entry["hash"])
            except (BlobNotFound, BlobCorrupt) as exc:
                raise BadProof(f"output {entry['name']}: {exc.reason}") from None
        else:
            data = files.get(f"outputs/{entry['name']}", b"")
        if blob_hash(data) != entry["hash"]:
            raise BadProof(f"output {entry['name']} does not match its hash in {POE_FILE}")
    return envelope


__all__ = ["ABORTED_FILE", "INLINE_MAX", "POE_FILE", "Output", "build_envelope", "describe_outputs",
           "result_trailers", "sign_envelope", "verify_result"]
