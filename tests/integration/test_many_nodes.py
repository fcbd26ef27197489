"""Many nodes: a push-gate hub and three nodes, each with its own gatosd, on loopback.

Real repositories, the real `git` transport (file://), real daemons: concurrent appends
everywhere converge after sync with the same State-Root on every node; a claim race
across nodes has one winner; a hub that goes away and comes back; forged and rewound
pushes refused by the hub with nothing changed; one actor writing on two nodes forks its
journal, which is kept, recorded and reported, never merged.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from gatosd._jobs_wiring import job_store
from gatosd.node import Node
from tests.integration.conftest import gatos, git, snapshot
from tests.integration.daemon_support import append_frame, short_dir, start_daemon

pytestmark = pytest.mark.integration


def ok(result: Any) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr + result.stdout
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else {}


def sync(repo: Path, remote: str = "hub") -> dict[str, Any]:
    result = gatos(repo, "sync", remote)
    assert result.stdout, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.fixture
def cluster(tmp_path: Path) -> dict[str, Path]:
    """hub + nodes a (alice, owner), b (bob), c (carol); bob and carol may append anywhere."""
    hub = tmp_path / "hub.git"
    ok(gatos(tmp_path, "hub", "init", str(hub)))
    url = f"file://{hub}"
    a = tmp_path / "a"
    ok(gatos(a, "init", "--actor", "user:alice"))
    ok(gatos(a, "remote", "add", "hub", url))
    assert sync(a)["ok"]
    nodes = {"hub": hub, "a": a}
    for name, actor in (("b", "user:bob"), ("c", "user:carol")):
        out = ok(gatos(tmp_path, "clone", url, str(tmp_path / name), "--actor", actor))
        assert out["published"] is True
        git(tmp_path / name, "remote", "rename", "origin", "hub")
        nodes[name] = tmp_path / name
    # alice grants while her node has not seen the new keys yet... after one sync it has
    assert sync(a)["ok"]
    for actor in ("user:bob", "user:carol"):
        ok(gatos(a, "grant", "--to", actor, "--caps", "*:append,state:*:checkpoint",
                 "--exp", "2099-01-01T00:00:00Z"))
    assert sync(a)["ok"]
    for name in ("b", "c"):
        assert sync(nodes[name])["ok"]
    return nodes


def event_ulids(repo: Path, ns: str = "finance") -> set[str]:
    rows = [json.loads(line) for line in ok_lines(gatos(repo, "log", "--ns", ns, "--json"))]
    return {row["ulid"] for row in rows}


def ok_lines(result: Any) -> list[str]:
    assert result.returncode == 0, result.stderr
    text = result.stdout.strip()
    if text.startswith("["):
        return [json.dumps(row) for row in json.loads(text)]
    return [line for line in text.splitlines() if line.strip()]


def test_three_nodes_converge_with_daemons(cluster: dict[str, Path]) -> None:
    names = ("a", "b", "c")
    with short_dir() as sockets:
        daemons = {n: start_daemon(cluster[n], "--socket", f"{sockets}/{n}") for n in names}
        try:
            errors: list[str] = []

            def writer(name: str) -> None:
                with daemons[name].client() as client:
                    for i in range(25):
                        reply = client.request(append_frame(f"{name}-{i}"))
                        if not reply.get("ok"):
                            errors.append(str(reply))

            threads = [threading.Thread(target=writer, args=(n,)) for n in names]
            for t in threads:
                t.start()
            # sync while the daemons are writing: safe, and picked up by the next round
            for n in names:
                with daemons[n].client() as client:
                    assert client.request({"type": "sync", "id": "s"}).get("ok")
            for t in threads:
                t.join()
            assert not errors, errors[:3]
            for _round in range(2):
                for n in names:
                    with daemons[n].client() as client:
                        reply = client.request({"type": "sync", "id": "s", "remote": "hub"}, timeout=60)
                        assert reply["ok"] and reply["clean"], reply
                        assert not reply["forks"] and not reply["refused"], reply
        finally:
            for d in daemons.values():
                d.stop()
    seen = [event_ulids(cluster[n]) for n in names]
    assert len(seen[0]) == 75 and seen[0] == seen[1] == seen[2]
    roots = set()
    for n in names:
        assert gatos(cluster[n], "verify").returncode == 0
        ok(gatos(cluster[n], "fold", "--ns", "finance"))
        head = git(cluster[n], "rev-parse", "refs/gatos/state/finance").strip()
        message = git(cluster[n], "log", "-1", "--format=%B", head)
        roots.add(next(line for line in message.splitlines() if line.startswith("State-Root:")))
    assert len(roots) == 1, roots
    # the hub has every journal, and checkpoints pushed through it verify (PoF at the gate)
    for n in names:
        assert sync(cluster[n])["ok"]
    hub_refs = git(cluster["hub"], "for-each-ref", "--format=%(refname)", "refs/gatos/journal/finance/")
    assert len(hub_refs.split()) == 3
    assert git(cluster["hub"], "rev-parse", "refs/gatos/state/finance").strip()


def test_trust_divergence_is_joined(tmp_path: Path, cluster: dict[str, Path]) -> None:
    a, b = cluster["a"], cluster["b"]
    ok(gatos(a, "grant", "--to", "user:bob", "--caps", "audit:append", "--exp", "2099-01-01T00:00:00Z"))
    d = tmp_path / "d"
    ok(gatos(tmp_path, "clone", f"file://{cluster['hub']}", str(d), "--actor", "user:dave"))
    report = sync(a)
    assert report["ok"] and "refs/gatos/trust" in report["joined"], report
    sync(b)
    keys = ok_lines(gatos(b, "key", "list", "--json"))
    actors = {json.loads(k)["actor"] for k in keys}
    assert {"user:alice", "user:bob", "user:carol", "user:dave"} <= actors
    hub_trust = git(cluster["hub"], "rev-parse", "refs/gatos/trust").strip()
    assert hub_trust == git(a, "rev-parse", "refs/gatos/trust").strip()


def test_claim_race_across_nodes_has_one_winner(cluster: dict[str, Path]) -> None:
    a = cluster["a"]
    job = ok(gatos(a, "jobs", "enqueue", "--ns", "build", "--command", '["/bin/true"]', "--timeout", "10"))
    job_id = job["job_id"]
    sync(a)
    for n in ("b", "c"):
        sync(cluster[n])
    results: dict[str, Any] = {}
    barrier = threading.Barrier(3)

    def claim(name: str) -> None:
        node = Node.open(str(cluster[name]))
        store = job_store(node, "hub")
        barrier.wait()
        results[name] = store.claim(job_id, f"worker-{name}", node.default_actor, 60_000)

    threads = [threading.Thread(target=claim, args=(n,)) for n in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = {n: c for n, c in results.items() if c is not None}
    assert len(winners) == 1, results
    (won,) = winners.values()
    hub_claim = git(cluster["hub"], "rev-parse", f"refs/gatos/jobs/{job_id[7:]}/claim").strip()
    assert hub_claim == won.commit
    # the losers learned the winner's claim
    for n in ("a", "b", "c"):
        assert git(cluster[n], "rev-parse", f"refs/gatos/jobs/{job_id[7:]}/claim").strip() == hub_claim


def test_hub_unreachable_then_back(tmp_path: Path, cluster: dict[str, Path]) -> None:
    hub = cluster["hub"]
    away = tmp_path / "hub-away"
    shutil.move(str(hub), str(away))
    for n in ("a", "b", "c"):
        ok(gatos(cluster[n], "event", "add", "--ns", "finance", "--type", "offline",
                 "--payload", f'{{"n":"{n}"}}'))
        before = snapshot(cluster[n])
        result = gatos(cluster[n], "sync", "hub")
        assert result.returncode == 2 and "SYNC_FAILED" in result.stderr
        assert snapshot(cluster[n]) == before  # an unreachable hub changes nothing
    shutil.move(str(away), str(hub))
    for _ in range(2):
        for n in ("a", "b", "c"):
            assert sync(cluster[n])["ok"]
    seen = [event_ulids(cluster[n]) for n in ("a", "b", "c")]
    assert len(seen[0]) == 3 and seen[0] == seen[1] == seen[2]


def _push(repo: Path, *args: str) -> Any:
    return subprocess.run(["git", "-C", str(repo), "push", "--porcelain", *args],
                          capture_output=True, text=True)


def test_hub_refuses_forged_and_rewound_pushes(cluster: dict[str, Path]) -> None:
    a, hub = cluster["a"], cluster["hub"]
    for i in range(2):
        ok(gatos(a, "event", "add", "--ns", "finance", "--type", "t", "--payload", f'{{"i":{i}}}'))
    assert sync(a)["ok"]
    ref = "refs/gatos/journal/finance/user/alice"
    head = git(a, "rev-parse", ref).strip()
    before = snapshot(hub)
    # rewound: the journal's parent, forced
    rewound = _push(a, "--force", "hub", f"{head}~1:{ref}")
    assert rewound.returncode != 0 and "non-fast-forward" in rewound.stderr
    # forged: the head's tree with its event bytes changed, signed by nobody
    tree = git(a, "rev-parse", f"{head}^{{tree}}").strip()
    blob = subprocess.run(["git", "-C", str(a), "hash-object", "-w", "--stdin"], input=b"\xa0",
                          capture_output=True, check=True).stdout.decode().strip()
    entries = git(a, "ls-tree", tree).splitlines()
    lines = [e if not e.endswith("\tevent.cbor") else e.split(" ")[0] + " blob " + blob + "\tevent.cbor"
             for e in entries]
    new_tree = subprocess.run(["git", "-C", str(a), "mktree"], input="\n".join(lines) + "\n",
                              capture_output=True, text=True, check=True).stdout.strip()
    message = git(a, "log", "-1", "--format=%B", head)
    forged = subprocess.run(["git", "-C", str(a), "commit-tree", new_tree, "-p", head, "-m", message],
                            capture_output=True, text=True, check=True).stdout.strip()
    pushed = _push(a, "hub", f"{forged}:{ref}")
    assert pushed.returncode != 0 and "gatos-hub: refused" in pushed.stderr, pushed.stderr
    # a state checkpoint without a Proof-of-Fold
    fake = subprocess.run(["git", "-C", str(a), "commit-tree", new_tree,
                           "-m", "state\n\nState-Root: blake3:00"],
                          capture_output=True, text=True, check=True).stdout.strip()
    pushed = _push(a, "hub", f"{fake}:refs/gatos/state/finance")
    assert pushed.returncode != 0 and "Proof-of-Fold" in pushed.stderr, pushed.stderr
    # deleting a journal
    pushed = _push(a, "hub", f":{ref}")
    assert pushed.returncode != 0
    assert snapshot(hub)[0] == before[0]


def test_second_claim_creation_refused_at_hub(cluster: dict[str, Path]) -> None:
    a, b, hub = cluster["a"], cluster["b"], cluster["hub"]
    job = ok(gatos(a, "jobs", "enqueue", "--ns", "build", "--command", '["/bin/true"]', "--timeout", "10"))
    hexid = job["job_id"][7:]
    sync(a)
    sync(b)
    claim_a = Node.open(str(a))
    store_a = job_store(claim_a)  # local claim, then pushed by sync
    assert store_a.claim(job["job_id"], "wa", "user:alice", 60_000) is not None
    assert sync(a)["ok"]
    node_b = Node.open(str(b))
    local_b = job_store(node_b)
    # b has not synced: it creates its own claim locally and forces it at the hub
    won = local_b.claim(job["job_id"], "wb", "user:bob", 60_000)
    assert won is not None
    before = snapshot(hub)
    pushed = _push(b, "--force", "hub", f"{won.commit}:refs/gatos/jobs/{hexid}/claim")
    assert pushed.returncode != 0 and "claimed already" in pushed.stderr, pushed.stderr
    assert snapshot(hub)[0] == before[0]


def copy_private_key(source: Path, target: Path, name: str) -> None:
    """Put an actor's private key on a second node too, as an operator running both would."""
    keys = Path(Node.open(str(source)).repo.gatos_dir) / "keys"
    into = Path(Node.open(str(target)).repo.gatos_dir) / "keys"
    for path in keys.rglob("*"):
        if path.is_file() and name in path.name:
            dest = into / path.relative_to(keys)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)


def test_one_actor_on_two_nodes_forks_and_is_reported(tmp_path: Path, cluster: dict[str, Path]) -> None:
    a, c = cluster["a"], cluster["c"]
    # alice's key on node c too (an operator copied it), both nodes in sync
    copy_private_key(a, c, "alice")
    ok(gatos(a, "event", "add", "--ns", "finance", "--type", "t", "--payload", '{"side":"base"}'))
    sync(a)
    sync(c)
    # apart: alice writes on both
    ok(gatos(a, "event", "add", "--ns", "finance", "--type", "t", "--payload", '{"side":"a"}'))
    ok(gatos(c, "event", "add", "--ns", "finance", "--type", "t", "--payload", '{"side":"c"}',
             "--actor", "user:alice"))
    assert sync(a)["ok"]
    ref = "refs/gatos/journal/finance/user/alice"
    mine = git(c, "rev-parse", ref).strip()
    report = sync(c)
    assert len(report["forks"]) == 1, report
    fork = report["forks"][0]
    assert fork["ref"] == ref and fork["local"] == mine
    assert git(c, "rev-parse", ref).strip() == mine          # never merged: local side kept
    assert git(c, "rev-parse", fork["kept_at"]).strip() == fork["remote"]  # other side kept
    assert report["conflict_events"], report                 # governance.conflict appended
    log = ok_lines(gatos(c, "log", "--ns", "governance", "--json"))
    assert any(json.loads(row)["type"] == "governance.conflict" for row in log)
    doctor = gatos(c, "doctor", "--check", "forks", "--json")
    assert doctor.returncode != 0
    findings = json.loads(doctor.stdout)["findings"]
    assert findings and findings[0]["check"] == "forks" and ref in findings[0]["what"]
    # a second sync reports nothing new, and the fork reached the hub for the others
    again = sync(c)
    assert not again["forks"]
    assert git(cluster["hub"], "rev-parse", fork["kept_at"]).strip() == fork["remote"]
    # the operator decides: take the hub's side, replay c's event on top, keep c's side
    c_ulids = event_ulids(c)
    resolved = ok(gatos(c, "fork", "resolve", fork["kept_at"], "--replay"))
    assert resolved["local_only_events"] == 1 and resolved["replayed"] == 1
    assert git(c, "merge-base", "--is-ancestor", fork["remote"], ref, check=False) == ""
    assert c_ulids <= event_ulids(c)                 # nothing of either side is lost
    assert gatos(c, "verify").returncode == 0
    assert gatos(c, "doctor", "--check", "forks").returncode == 0
    assert sync(c)["ok"] and sync(a)["ok"]
    assert event_ulids(a) == event_ulids(c)
    listed = [json.loads(line) for line in ok_lines(gatos(c, "fork", "list"))]
    assert listed and all(row["resolved"] for row in listed if row["ref"] == ref)
    # resolving again is refused, naming why; nothing changes
    before = snapshot(c)
    again = gatos(c, "fork", "resolve", fork["kept_at"])
    assert again.returncode == 2 and "nothing to resolve" in again.stderr
    assert snapshot(c) == before


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_background_sync_over_git_daemon(tmp_path: Path, cluster: dict[str, Path]) -> None:
    """The hub served by `git daemon` on loopback (git:// transport), and gatosd --sync
    converging two nodes with no sync request at all."""
    import time

    port = _free_port()
    hub = cluster["hub"]
    served = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack",
                               f"--base-path={hub.parent}", "--listen=127.0.0.1", f"--port={port}",
                               str(hub.parent)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"git://127.0.0.1:{port}/{hub.name}"
    try:
        for n in ("a", "b"):
            ok(gatos(cluster[n], "remote", "add", "net", url))
        deadline = time.monotonic() + 10
        while gatos(cluster["a"], "sync", "net").returncode != 0:  # the daemon is starting
            assert time.monotonic() < deadline, "git daemon did not come up"
            time.sleep(0.2)
        with short_dir() as sockets:
            daemons = {n: start_daemon(cluster[n], "--socket", f"{sockets}/{n}", "--sync", "net",
                                       "--sync-interval", "0.5") for n in ("a", "b")}
            try:
                with daemons["a"].client() as client:
                    for i in range(5):
                        assert client.request(append_frame(f"a-{i}"))["ok"]
                with daemons["b"].client() as client:
                    for i in range(5):
                        assert client.request(append_frame(f"b-{i}"))["ok"]
                deadline = time.monotonic() + 30
                while True:
                    seen = [event_ulids(cluster[n]) for n in ("a", "b")]
                    if len(seen[0]) == 10 and seen[0] == seen[1]:
                        break
                    assert time.monotonic() < deadline, [len(s) for s in seen]
                    time.sleep(0.3)
            finally:
                for d in daemons.values():
                    d.stop()
        # the hook ran for pushes over git:// too: a rewind is refused there as well
        ref = "refs/gatos/journal/finance/user/alice"
        head = git(cluster["a"], "rev-parse", ref).strip()
        rewound = _push(cluster["a"], "--force", url, f"{head}~1:{ref}")
        assert rewound.returncode != 0 and "non-fast-forward" in rewound.stderr
    finally:
        served.terminate()
        served.wait(10)


def test_incomparable_policies_are_a_conflict(cluster: dict[str, Path]) -> None:
    """Two nodes apply different policy bundles while apart: neither is a descendant of the
    other, so sync keeps the other side as a fork and never picks one silently."""
    a, c = cluster["a"], cluster["c"]
    rules = Path(a) / "gatos" / "policies" / "00-default.rules"
    original = rules.read_text()
    rules.write_text(original.replace("audit deny", "audit all"))  # node a's edit
    ok(gatos(a, "policy", "apply"))
    assert sync(a)["ok"]
    # alice's key on carol's node too, and a different edit applied there as alice
    copy_private_key(a, c, "alice")
    crules = Path(c) / "gatos" / "policies" / "00-default.rules"
    crules.parent.mkdir(parents=True, exist_ok=True)
    crules.write_text(original + "require caps=$cap\n")  # node c's, different
    applied = gatos(c, "policy", "apply", str(crules.parent), "--as", "user:alice")
    assert applied.returncode == 0, applied.stderr
    mine = git(c, "rev-parse", "refs/gatos/policies/active").strip()
    report = sync(c)
    kinds = {f["ref"]: f for f in report["forks"]}
    assert "refs/gatos/policies/active" in kinds, report
    assert git(c, "rev-parse", "refs/gatos/policies/active").strip() == mine


def test_a_node_refuses_a_checkpoint_whose_fold_does_not_prove(
        tmp_path: Path, cluster: dict[str, Path]) -> None:
    """A peer with no hub hook serves a checkpoint whose state file was edited: sync
    re-runs its Proof-of-Fold on the node, refuses it and keeps the local state ref,
    while the journals it brings are adopted; the genuine checkpoint is then adopted."""
    a, b = cluster["a"], cluster["b"]
    for i in range(3):
        ok(gatos(a, "event", "add", "--ns", "finance", "--type", "t", "--payload", f'{{"i":{i}}}'))
    ok(gatos(a, "fold", "--ns", "finance"))
    real = git(a, "rev-parse", "refs/gatos/state/finance").strip()
    index = tmp_path / "tamper.index"
    env = dict(os.environ, GIT_INDEX_FILE=str(index))

    def run(*args: str, data: bytes | None = None) -> str:
        out = subprocess.run(["git", "-C", str(a), *args], input=data, env=env, capture_output=True, check=True)
        return out.stdout.decode().strip()

    run("read-tree", real)
    state = json.loads(run("cat-file", "blob", f"{real}:state/finance.json"))
    edited = run("hash-object", "-w", "--stdin", data=json.dumps({**state, "forged": 1}).encode())
    run("update-index", "--cacheinfo", f"100644,{edited},state/finance.json")
    parents = [arg for p in git(a, "log", "-1", "--format=%P", real).split() for arg in ("-p", p)]
    tampered = run("commit-tree", run("write-tree"), *parents, "-m", git(a, "log", "-1", "--format=%B", real))
    peer = tmp_path / "peer.git"
    git(tmp_path, "init", "-q", "--bare", str(peer))
    git(a, "push", "-q", str(peer), "refs/gatos/*:refs/gatos/*")
    git(a, "push", "-q", "--force", str(peer), f"{tampered}:refs/gatos/state/finance")
    ok(gatos(b, "remote", "add", "peer", f"file://{peer}"))
    before = subprocess.run(["git", "-C", str(b), "rev-parse", "-q", "--verify", "refs/gatos/state/finance"],
                            capture_output=True, text=True).stdout.strip()

    report = sync(b, "peer")
    refused = {r["ref"]: r["reason"] for r in report["refused"]}
    assert "Proof-of-Fold" in refused.get("refs/gatos/state/finance", ""), report
    after = subprocess.run(["git", "-C", str(b), "rev-parse", "-q", "--verify", "refs/gatos/state/finance"],
                           capture_output=True, text=True).stdout.strip()
    assert after == before != tampered
    assert len(event_ulids(b)) >= 3  # the journals were adopted

    git(a, "push", "-q", "--force", str(peer), f"{real}:refs/gatos/state/finance")
    report = sync(b, "peer")
    assert not report["refused"], report
    assert git(b, "rev-parse", "refs/gatos/state/finance").strip() == real
