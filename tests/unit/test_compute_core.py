"""Job plane core on the in-memory adapters: manifests, blob store, claims, leases, results, PoE."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import referencing

from compute import (
    BadProof,
    BlobCorrupt,
    BlobNotFound,
    BlobStore,
    ClaimLost,
    InvalidJob,
    JobFinished,
    JobStore,
    Manifest,
    fold_lifecycle,
    reconcile,
    verify_result,
)
from compute._poe import POE_FILE, Output, build_envelope, describe_outputs, result_trailers, sign_envelope
from ledger_core import SigningKey
from ledger_core.memory import MemoryObjectStore, MemoryRefStore

SCHEMAS = Path(__file__).resolve().parents[3] / "shared" / "gatos-schemas" / "v1"
KEY = SigningKey(bytes(range(32)))


def validator(name: str) -> jsonschema.Draft202012Validator:
    resources = []
    for path in SCHEMAS.rglob("*.json"):
        doc = json.loads(path.read_text())
        resources.append((doc["$id"], referencing.Resource.from_contents(doc)))
    registry = referencing.Registry().with_resources(resources)
    schema = json.loads((SCHEMAS / "job" / name).read_text())
    return jsonschema.Draft202012Validator(schema, registry=registry)


class Clock:
    def __init__(self, ms: int = 1_700_000_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def store(clock: Clock | None = None) -> JobStore:
    return JobStore(MemoryObjectStore(), MemoryRefStore(), clock_ms=clock or Clock())


ECHO = {"command": ["/bin/echo"], "args": ["hello"], "timeout": 30}


# -- manifests ---------------------------------------------------------------------------

def test_adr_example_job_id_is_blake3_of_canonical_manifest() -> None:
    """The SPEC §3 manifest canonicalizes to the documented bytes."""
    m = Manifest.from_value({"command": ["/usr/bin/env", "bash", "-lc"], "args": ["echo", "hello"],
                             "timeout": 30, "env": {"GREETING": "hello"}})
    assert m.canonical == (b'{"args":["echo","hello"],"command":["/usr/bin/env","bash","-lc"],'
                           b'"env":{"GREETING":"hello"},"timeout":30}')
    assert m.job_id.startswith("blake3:") and len(m.job_id) == 71


@pytest.mark.skipif(not SCHEMAS.exists(), reason="shared/gatos-schemas not beside the clone")
def test_accepted_manifests_validate_against_v1_schema() -> None:
    """Everything Manifest accepts validates against the published schema."""
    check = validator("job_manifest.schema.json")
    for value in (ECHO, {"command": ["wasm", "blake3:" + "a" * 64], "timeout": "PT30S"},
                  {"command": ["x"], "timeout": 0, "cwd": "sub", "ulid": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
                   "inputs": [{"kind": "blobptr", "algo": "blake3", "hash": "blake3:" + "b" * 64, "size": 3}],
                   "policy_root": "sha256:" + "c" * 64}):
        check.validate(Manifest.from_value(value).value)


@pytest.mark.parametrize(("value", "needle"), [
    ({"command": ["x"], "timeout": 1, "runtime": "wasm"}, "unknown manifest field(s): runtime"),
    ({"timeout": 1}, "`command` is required"),
    ({"command": [], "timeout": 1}, "`command` needs at least 1"),
    ({"command": ["x"], "timeout": 1.5}, "`timeout` must be whole seconds"),
    ({"command": ["x"], "timeout": "30s"}, "ISO 8601"),
    ({"command": ["x"], "timeout": 1, "env": {"1BAD": "x"}}, "`env` name '1BAD'"),
    ({"command": ["x"], "timeout": 1, "inputs": [{"kind": "blobptr", "algo": "sha1", "hash": "x"}]},
     "inputs[0]`.algo"),
    ({"command": ["wasm", "sha256:ab"], "timeout": 1}, "WebAssembly job"),
    ({"command": ["x"], "timeout": 1, "ulid": "nope"}, "`ulid` must be"),
])
def test_bad_manifests_name_the_field(value: dict, needle: str) -> None:  # type: ignore[type-arg]
    """Every refusal names what is wrong."""
    with pytest.raises(InvalidJob) as info:
        Manifest.from_value(value)
    assert needle in info.value.reason


def test_yaml_authoring_and_duplicate_keys() -> None:
    """job.yaml gives the same job id as JSON; a repeated key is refused, not silently merged."""
    yaml_text = "command: [/bin/echo]\nargs: [hello]\ntimeout: 30\n"
    assert Manifest.parse(yaml_text).job_id == Manifest.from_value(ECHO).job_id
    with pytest.raises(InvalidJob, match="repeats the key"):
        Manifest.parse("command: [a]\ncommand: [b]\ntimeout: 1\n")
    with pytest.raises(InvalidJob):
        Manifest.parse('{"command": ["a"], "command": ["b"], "timeout": 1}')


def test_empty_args_is_the_same_job_and_durations_parse() -> None:
    """Defaults are left out of the hash; ISO durations become seconds."""
    assert Manifest.from_value({**ECHO, "args": []}).job_id == Manifest.from_value(
        {"command": ["/bin/echo"], "timeout": 30}).job_id
    assert Manifest.from_value({"command": ["x"], "timeout": "P1DT2H3M4.5S"}).timeout_seconds == 93784.5


# -- blob store -----------------------------------------------------------------------------

def test_blob_roundtrip_compressed_and_raw(tmp_path: Path) -> None:
    """Small blobs stay raw, big compressible ones are zstd; both read back verified."""
    blobs = BlobStore(str(tmp_path))
    small, big = b"hi", b"a" * 100_000
    hs, hb = blobs.put(small), blobs.put(big)
    assert blobs.get(hs) == small and blobs.get(hb) == big
    assert (Path(blobs.dir) / (hb[7:] + ".zst")).exists() and (Path(blobs.dir) / hs[7:]).exists()
    assert list(blobs) == sorted([hs, hb]) and blobs.put(big) == hb


def test_blob_flipped_bit_and_missing_blob_are_errors(tmp_path: Path) -> None:
    """A damaged blob is BlobCorrupt on read and in check(); a missing one BlobNotFound."""
    blobs = BlobStore(str(tmp_path))
    name = blobs.put(b"important bytes")
    path = Path(blobs.dir) / name[7:]
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(BlobCorrupt):
        blobs.get(name)
    assert blobs.check() == [name]
    with pytest.raises(BlobNotFound):
        blobs.get("blake3:" + "0" * 64)
    with pytest.raises(InvalidJob):
        blobs.get("blake3:../../etc/passwd")


# -- claims and leases ---------------------------------------------------------------------

def test_job_creation_is_idempotent() -> None:
    """The same manifest is one job; the second create reports it existed."""
    jobs = store()
    job, created = jobs.create(Manifest.from_value(ECHO), "demo", "user:a")
    again, created_again = jobs.create(Manifest.from_value(ECHO), "demo", "user:b")
    assert created and not created_again and again.commit == job.commit and again.enqueued_by == "user:a"
    assert jobs.claimable() == [job.job_id]


def test_exactly_one_claim_and_takeover_only_after_lease() -> None:
    """A live claim excludes everyone; after expiry one worker takes over and the old holder loses."""
    clock = Clock()
    jobs = store(clock)
    job, _ = jobs.create(Manifest.from_value(ECHO), "demo", "user:a")
    first = jobs.claim(job.job_id, "ed25519:" + "1" * 64, "agent:w1", 1000)
    assert first is not None and first.attempt == 1
    assert jobs.claim(job.job_id, "ed25519:" + "2" * 64, "agent:w2", 1000) is None
    assert jobs.claimable() == []
    clock.ms += 999
    assert jobs.claim(job.job_id, "ed25519:" + "2" * 64, "agent:w2", 1000) is None
    clock.ms += 1
    second = jobs.claim(job.job_id, "ed25519:" + "2" * 64, "agent:w2", 1000)
    assert second is not None and second.attempt == 2
    assert jobs.objects.read_commit(second.commit).parents == (first.commit,)  # fast-forward
    with pytest.raises(ClaimLost):
        jobs.renew(first, 1000)
    with pytest.raises(ClaimLost):
        jobs.write_result(job.job_id, {"x": b""}, [("Job-Id", job.job_id)], "r", first)
    renewed = jobs.renew(second, 5000)
    assert renewed.lease_until_ms == clock.ms + 5000


def test_result_is_written_once_and_ends_claims() -> None:
    """The result ref is created once; afterwards the job is neither claimable nor writable."""
    jobs = store()
    job, _ = jobs.create(Manifest.from_value(ECHO), "demo", "user:a")
    claim = jobs.claim(job.job_id, "ed25519:" + "1" * 64, "agent:w1", 1000)
    jobs.write_result(job.job_id, {"a": b"1"}, [("Job-Id", job.job_id)], "result", claim)
    with pytest.raises(JobFinished):
        jobs.write_result(job.job_id, {"a": b"2"}, [("Job-Id", job.job_id)], "result", None)
    assert jobs.claim(job.job_id, "ed25519:" + "2" * 64, "agent:w2", 1000) is None
    assert jobs.claimable() == []


# -- Proof-of-Execution ----------------------------------------------------------------------

def _proof(job_id: str, blobs: BlobStore | None = None) -> tuple[dict[str, str], dict[str, bytes]]:
    entries, files = describe_outputs([Output("stdout", b"hello\n"), Output("out/big", b"z" * 70_000)], blobs)
    poe = build_envelope(job_id, "blake3:" + "e" * 64, "1", "linux", entries,
                         {"reason": "exit", "exit_code": 0}, "2026-01-01T00:00:00Z", None)
    poe_id, sig = sign_envelope(poe, KEY)
    files[POE_FILE] = poe
    trailers = dict(result_trailers(job_id, poe_id, KEY.public_key, "blake3:" + "e" * 64, sig, "succeeded"))
    return trailers, files


def test_poe_verifies_and_validates_against_schema(tmp_path: Path) -> None:
    """A signed envelope verifies, matches the v1 schema, and puts big outputs in the blob store."""
    job_id = Manifest.from_value(ECHO).job_id
    blobs = BlobStore(str(tmp_path))
    trailers, files = _proof(job_id, blobs)
    envelope = verify_result(job_id, trailers, files, blobs)
    big = next(e for e in envelope["outputs"] if e["name"] == "out/big")
    assert big["kind"] == "blobptr" and blobs.get(big["hash"]) == b"z" * 70_000
    if SCHEMAS.exists():
        validator("proof_of_execution_envelope.schema.json").validate(envelope)


@pytest.mark.parametrize("tamper", ["poe", "sig", "output", "job", "trailer"])
def test_tampered_proofs_are_refused(tmp_path: Path, tamper: str) -> None:
    """Any change to the proof, signature, outputs or job is caught."""
    job_id = Manifest.from_value(ECHO).job_id
    trailers, files = _proof(job_id)
    if tamper == "poe":
        files[POE_FILE] = files[POE_FILE].replace(b"\"exit_code\":0", b"\"exit_code\":1")
    elif tamper == "sig":
        trailers["Attest-Sig"] = "ed25519:" + "0" * 128
    elif tamper == "output":
        files["outputs/stdout"] = b"forged\n"
    elif tamper == "job":
        job_id = Manifest.from_value({**ECHO, "timeout": 31}).job_id
        trailers["Job-Id"] = job_id
    else:
        del trailers["Worker-Id"]
    with pytest.raises(BadProof):
        verify_result(job_id, trailers, files)


# -- lifecycle fold ------------------------------------------------------------------------------

def test_lifecycle_fold_and_reconcile() -> None:
    """Events fold to the final state; late events of a lost lease change nothing; refs decide."""
    jid, other = "blake3:" + "1" * 64, "blake3:" + "2" * 64
    events = [("job.pending", {"job_id": jid}, "t1"), ("job.pending", {"job_id": other}, "t1"),
              ("job.claimed", {"job_id": jid, "attempt": 1, "worker": "w1"}, "t2"),
              ("job.running", {"job_id": jid, "attempt": 1}, "t3"),
              ("job.claimed", {"job_id": jid, "attempt": 2, "worker": "w2"}, "t4"),
              ("job.running", {"job_id": jid, "attempt": 2}, "t5"),
              ("job.succeeded", {"job_id": jid, "attempt": 2, "result": "abc", "exit_code": 0}, "t6"),
              ("job.running", {"job_id": jid, "attempt": 1}, "t7")]
    status = fold_lifecycle(jid, events)
    assert status["state"] == "succeeded" and status["attempts"] == 2 and status["worker"] == "w2"
    assert status["runs"] == 2 and status["result"] == "abc"
    assert fold_lifecycle(other, events)["state"] == "pending"
    assert reconcile(fold_lifecycle(other, []), {"job": "x", "claim": "y"})["state"] == "claimed"
    assert reconcile(status, {"job": "x", "result_status": "aborted"})["state"] == "aborted"
