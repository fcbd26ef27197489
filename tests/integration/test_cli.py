"""The `gatos` CLI on real repositories, checked with plain git."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import nacl.signing
import pytest

from tests.integration.conftest import BIN, gatos, git, git_bytes, snapshot

pytestmark = pytest.mark.integration


def add(repo: Path, *args: str) -> dict:
    result = gatos(repo, "event", "add", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_init_creates_repo_key_and_trusted_public_key(node: Path) -> None:
    """init runs git init, keeps the private key 0600 outside Git, commits the public key."""
    key_file = node / ".git" / "gatos" / "keys" / "user" / "alice.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    seed = json.loads(key_file.read_text())["seed"]
    blobs = git(node, "cat-file", "--batch-all-objects", "--batch")
    assert seed not in blobs
    listed = json.loads(gatos(node, "key", "list", "--json").stdout)
    assert listed == [{"actor": "user:alice", "public_key": json.loads(key_file.read_text())["public_key"]}]
    tree = git(node, "ls-tree", "-r", "--name-only", "refs/gatos/trust")
    assert "gatos/trust/actors/user/alice.json" in tree.split()


def test_init_is_idempotent_and_defaults_actor_from_git_user_name(tmp_path: Path) -> None:
    """Without --actor the owner comes from git config user.name; a second init changes nothing."""
    repo = tmp_path / "n"
    git(tmp_path, "init", "-q", str(repo))
    git(repo, "config", "user.name", "Ada Lovelace")
    first = json.loads(gatos(repo, "init").stdout)
    assert first["actor"] == "user:Ada-Lovelace" and first["created_key"]
    before = snapshot(repo)
    second = json.loads(gatos(repo, "init").stdout)
    assert second["public_key"] == first["public_key"] and not second["created_key"]
    assert snapshot(repo) == before


def test_event_add_is_a_commit_git_can_read_and_anyone_can_verify(node: Path) -> None:
    """The commit tree holds event.cbor + event.sig; the signature verifies with the public key alone."""
    out = add(node, "--ns", "finance", "--type", "invoice.created", "--payload", '{"id":1,"s":"é"}')
    assert {"commit", "event_cid", "ref", "duplicate"} <= out.keys()
    assert out["ref"] == "refs/gatos/journal/finance/user/alice" and out["duplicate"] is False
    assert git(node, "rev-parse", out["ref"]).strip() == out["commit"]
    raw = git_bytes(node, "cat-file", "blob", f"{out['commit']}:event.cbor")
    sig = git_bytes(node, "cat-file", "blob", f"{out['commit']}:event.sig")
    assert len(sig) == 64
    public = json.loads(gatos(node, "key", "list", "--json").stdout)[0]["public_key"]
    nacl.signing.VerifyKey(bytes.fromhex(public.split(":")[1])).verify(raw, sig)
    message = git(node, "log", "-1", "--format=%B", out["commit"])
    assert f"Event-CID: {out['event_cid']}" in message and "Sig-Alg: ed25519" in message
    assert git(node, "rev-list", "--parents", "-1", out["commit"]).split() == [out["commit"]]
    git(node, "fsck", "--strict", "--no-dangling")


def test_same_ulid_same_content_replays_different_content_is_refused(node: Path) -> None:
    """Idempotency: replay returns the first commit; a changed body under the same ULID changes nothing."""
    args = ["--ns", "ops", "--type", "deploy", "--ulid", "01JBZ00000000000000000000A"]
    first = add(node, *args, "--payload", '{"v":1}')
    again = add(node, *args, "--payload", '{"v":1}')
    assert again["commit"] == first["commit"] and again["duplicate"] is True
    before = snapshot(node)
    bad = gatos(node, "event", "add", *args, "--payload", '{"v":2}')
    assert bad.returncode == 2 and "ULID_REUSED" in bad.stderr
    assert snapshot(node) == before


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--ns", "../x"], "INVALID_NS"),
        (["--ns", "a:b"], "INVALID_NS"),
        (["--ns", "x.lock"], "INVALID_NS"),
        (["--ns", ""], "INVALID_NS"),
        (["--ns", "n" * 65], "INVALID_NS"),
        (["--ns", "ok", "--actor", "user:../x"], "INVALID_NAME"),
        (["--ns", "ok", "--actor", "robot:x"], "INVALID_NAME"),
        (["--ns", "ok", "--type", "bad\ntype"], "INVALID_NAME"),
        (["--ns", "ok", "--payload", '{"x":1.5}'], "BAD_ENCODING"),
        (["--ns", "ok", "--payload", '{"x":NaN}'], "BAD_ENCODING"),
        (["--ns", "ok", "--payload", '{"x":1e400}'], "BAD_ENCODING"),
        (["--ns", "ok", "--payload", '{"x":'], "BAD_ENCODING"),
        (["--ns", "ok", "--ulid", "not-a-ulid"], "INVALID_EVENT"),
        (["--ns", "ok", "--actor", "user:mallory"], "NOT_FOUND"),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(node: Path, args: list[str], code: str) -> None:
    """Invalid names, floats, NaN, bad JSON, bad ULIDs, keyless actors: error code, repository untouched."""
    base = {"--type": "t", "--payload": "{}"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    flat = [x for kv in base.items() for x in kv]
    before = snapshot(node)
    result = gatos(node, "event", "add", *flat)
    assert result.returncode == 2, result.stdout
    assert f"gatos: {code}:" in result.stderr
    assert snapshot(node) == before


def test_payload_over_the_configured_limit_is_too_large(node: Path) -> None:
    """gatos.maxEventBytes bounds the encoded event; the default is 1 MiB."""
    big = json.dumps({"blob": "x" * (1024 * 1024)})
    before = snapshot(node)
    result = gatos(node, "event", "add", "--ns", "ok", "--type", "t", "--payload", "-", input=big)
    assert result.returncode == 2 and "TOO_LARGE" in result.stderr
    git(node, "config", "gatos.maxEventBytes", "200")
    result = gatos(node, "event", "add", "--ns", "ok", "--type", "t", "--payload", '{"s":"' + "y" * 300 + '"}')
    assert result.returncode == 2 and "TOO_LARGE" in result.stderr
    assert snapshot(node) == before


def test_log_shows_every_actor_newest_first(node: Path) -> None:
    """log --json lists the events of a namespace from every actor's journal."""
    assert gatos(node, "key", "new", "--actor", "agent:bot").returncode == 0
    assert gatos(node, "grant", "--to", "agent:bot", "--caps", "n:append").returncode == 0
    add(node, "--ns", "n", "--type", "a", "--payload", '{"i":1}')
    add(node, "--ns", "n", "--type", "b", "--payload", '{"i":2}', "--actor", "agent:bot")
    lines = [json.loads(x) for x in gatos(node, "log", "--ns", "n", "--json").stdout.splitlines()]
    assert [x["type"] for x in lines] == ["b", "a"]
    assert [x["actor"] for x in lines] == ["agent:bot", "user:alice"]
    only = gatos(node, "log", "--ns", "n", "--actor", "agent:bot", "--json").stdout.splitlines()
    assert len(only) == 1


def test_verify_names_a_forged_commit(node: Path) -> None:
    """A commit whose trailers were edited with plain git fails verify, which names it."""
    out = add(node, "--ns", "n", "--type", "a", "--payload", '{"amount":1}')
    assert gatos(node, "verify").returncode == 0
    raw = git(node, "cat-file", "commit", out["commit"])
    forged_msg = raw.split("\n\n", 1)[1].replace("Event-Type: a", "Event-Type: b")
    tree = git(node, "rev-parse", f"{out['commit']}^{{tree}}").strip()
    env = {**os.environ, "GIT_AUTHOR_NAME": "user:alice", "GIT_AUTHOR_EMAIL": "user:alice",
           "GIT_COMMITTER_NAME": "user:alice", "GIT_COMMITTER_EMAIL": "user:alice",
           "GIT_AUTHOR_DATE": "@0 +0000", "GIT_COMMITTER_DATE": "@0 +0000"}
    forged = subprocess.run(["git", "-C", str(node), "commit-tree", tree], input=forged_msg,
                            capture_output=True, text=True, env=env, check=True).stdout.strip()
    git(node, "update-ref", out["ref"], forged, out["commit"])
    result = gatos(node, "verify")
    assert result.returncode == 1
    assert forged in result.stdout and "Event-Type" in result.stdout
    report = json.loads(gatos(node, "verify", "--json").stdout)
    assert report["ok"] is False and report["problems"][0]["commit"] == forged


def test_stale_lock_is_reported_clearly_and_never_overwritten(node: Path) -> None:
    """A <ref>.lock left by a crash gives LOCKED naming the file at once; the ref stays as it was."""
    out = add(node, "--ns", "n", "--type", "a", "--payload", "{}")
    lock = node / ".git" / (out["ref"] + ".lock")
    lock.write_text("garbage\n")
    os.utime(lock, (time.time() - 3600, time.time() - 3600))
    before = snapshot(node)
    started = time.monotonic()
    result = gatos(node, "event", "add", "--ns", "n", "--type", "a", "--payload", "{}")
    assert result.returncode == 2 and "LOCKED" in result.stderr and str(lock) in result.stderr
    assert "crashed writer" in result.stderr and time.monotonic() - started < 5
    assert snapshot(node)[0] == before[0]
    lock.unlink()
    assert gatos(node, "event", "add", "--ns", "n", "--type", "a", "--payload", "{}").returncode == 0


def test_a_busy_lock_is_waited_for(node: Path) -> None:
    """A lock held briefly by another writer (here: git's own lock file) delays the append, no error."""
    out = add(node, "--ns", "n", "--type", "a", "--payload", "{}")
    lock = node / ".git" / (out["ref"] + ".lock")
    lock.write_text("held\n")
    timer = threading.Timer(0.5, lock.unlink)
    timer.start()
    try:
        result = gatos(node, "event", "add", "--ns", "n", "--type", "a", "--payload", '{"i":2}')
    finally:
        timer.join()
    assert result.returncode == 0, result.stderr
    assert int(git(node, "rev-list", "--count", out["ref"])) == 2


def test_git_gatos_is_the_same_cli(node: Path) -> None:
    """`git gatos …` finds git-gatos on PATH."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(["git", "-C", str(node), "gatos", "verify"], capture_output=True,
                            text=True, env=env)
    assert result.returncode == 0 and result.stdout.startswith("ok:")


def test_not_a_repository_is_a_clear_error(tmp_path: Path) -> None:
    """Commands outside a node say so instead of failing obscurely."""
    result = gatos(tmp_path / "nowhere", "log", "--ns", "x")
    assert result.returncode == 2 and "NOT_A_REPOSITORY" in result.stderr
