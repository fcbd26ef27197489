"""Replication benchmark: three nodes with N events each converge through a hub.

    .venv/bin/python bench/bench_sync.py [--events 10000] [--runs 3] [--markdown]

Each run builds, in a temp dir: a push-gate hub (`gatos hub init`), node a (owner
user:alice) and nodes b and c cloned from the hub (`gatos clone --actor`), with bob and
carol granted `bench:append`; then every node appends N events to its own journal
(`Node.append_many`, not timed). Timed, in the same run:

1. **GATOS**: `gatos sync hub` rounds a, b, c, a, b (the fewest that converge three
   nodes through one hub), in-process (`sync_node`). Every journal commit adopted is
   verified (bytes, CID, signature, owner) on the node, and every pushed one by the
   hub's pre-receive hook.
2. **git, unverified** (the peer): the same node repositories copied before the sync,
   and a plain bare hub without hook; the same rounds as `git push hub 'refs/gatos/*'`
   and `git fetch hub '+refs/gatos/*:refs/gatos/*'` — Git's transport with nothing
   checked, the floor any Git-based replication pays.

Reported: seconds to converge (median of runs), events replicated per second (each node
receives the other two nodes' 2N events: 6N event copies), and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gatosd._cli_sync import clone_node, sync_node  # noqa: E402
from gatosd._hub import init_hub  # noqa: E402
from gatosd._sync import add_remote  # noqa: E402
from gatosd.node import Node  # noqa: E402
from ledger_core import encode_ulid, format_timestamp_ms  # noqa: E402
from policy import issue_grant  # noqa: E402

NS = "bench"
T0 = 1_700_000_000_000
ROUNDS = ("a", "b", "c", "a", "b")


def git(*args: str) -> None:
    subprocess.run(["git", *args], check=True, capture_output=True)


def setup(root: Path, events: int) -> dict[str, Path]:
    hub = root / "hub.git"
    init_hub(str(hub))
    a = root / "a"
    node_a, _ = Node.init(str(a), "user:alice", discover=False)
    add_remote(node_a.repo.git_dir, "hub", f"file://{hub}")
    sync_node(node_a, "hub")
    paths = {"hub": hub, "a": a}
    for name, actor in (("b", "user:bob"), ("c", "user:carol")):
        clone_node(f"file://{hub}", str(root / name), actor)
        git("-C", str(root / name), "remote", "rename", "origin", "hub")
        paths[name] = root / name
    node_a = Node.open(str(a))
    sync_node(node_a, "hub")
    for actor in ("user:bob", "user:carol"):
        issue_grant(node_a.policy, node_a.signing_key("user:alice"), issuer="user:alice", subject=actor,
                    caps=[f"{NS}:append"], exp=None)
    sync_node(node_a, "hub")
    for name in ("b", "c"):
        sync_node(Node.open(str(paths[name])), "hub")
    for k, (name, actor) in enumerate((("a", "user:alice"), ("b", "user:bob"), ("c", "user:carol"))):
        node = Node.open(str(paths[name]))
        for start in range(0, events, 5000):
            items = []
            for i in range(start, min(events, start + 5000)):
                ms = T0 + i * 3 + k
                ev = node.build_event(type="invoice.created", payload={"i": i, "node": name}, actor=actor,
                                      ulid=encode_ulid(ms, (k * 10**9 + i).to_bytes(10, "big")),
                                      ts=format_timestamp_ms(ms))
                items.append((NS, node.sign(ev)))
            for result in node.append_many(items, preverified=True):
                if isinstance(result, Exception):
                    raise result
    return paths


def journal_heads(repo: Path) -> dict[str, str]:
    out = subprocess.run(["git", "-C", str(repo), "for-each-ref", "--format=%(refname) %(objectname)",
                          f"refs/gatos/journal/{NS}/"], check=True, capture_output=True, text=True).stdout
    return dict(line.split(" ") for line in out.splitlines())


def run_gatos(paths: dict[str, Path]) -> float:
    started = time.perf_counter()
    for name in ROUNDS:
        report = sync_node(Node.open(str(paths[name])), "hub")
        if not report.ok or report.forks:
            raise SystemExit(f"sync {name}: {report.to_dict()}")
    seconds = time.perf_counter() - started
    heads = [journal_heads(paths[n]) for n in ("a", "b", "c")]
    assert heads[0] == heads[1] == heads[2] and len(heads[0]) == 3, heads
    return seconds


def run_git(paths: dict[str, Path], root: Path) -> float:
    hub = root / "plain.git"
    git("init", "-q", "--bare", str(hub))
    started = time.perf_counter()
    for name in ROUNDS:
        repo = str(paths[name])
        git("-C", repo, "fetch", "-q", "--no-tags", f"file://{hub}",
            "+refs/gatos/journal/*:refs/gatos/journal/*")
        git("-C", repo, "push", "-q", f"file://{hub}", "refs/gatos/journal/*:refs/gatos/journal/*")
    seconds = time.perf_counter() - started
    heads = [journal_heads(paths[n]) for n in ("a", "b", "c")]
    assert heads[0] == heads[1] == heads[2] and len(heads[0]) == 3, heads
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000, help="events per node")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    gatos_s, git_s = [], []
    for run in range(args.runs):
        root = Path(tempfile.mkdtemp(prefix="gatos-bench-sync-"))
        try:
            paths = setup(root, args.events)
            copies = {}
            for name in ("a", "b", "c"):
                copies[name] = root / f"{name}-git"
                shutil.copytree(paths[name], copies[name], symlinks=True)
            gatos_s.append(run_gatos(paths))
            git_s.append(run_git(copies, root))
            print(f"run {run + 1}: gatos {gatos_s[-1]:.2f} s, git {git_s[-1]:.2f} s",
                  file=sys.stderr, flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    replicated = 6 * args.events
    g, p = statistics.median(gatos_s), statistics.median(git_s)
    result = {"events_per_node": args.events, "runs": args.runs, "gatos_s": gatos_s, "git_s": git_s,
              "gatos_median_s": g, "git_median_s": p, "gatos_events_per_s": replicated / g,
              "git_events_per_s": replicated / p, "gatos_over_git": p / g, "load": os.getloadavg()}
    if args.markdown:
        print(f"| system | converge s (runs) | median s | events replicated/s |\n| --- | --- | ---: | ---: |\n"
              f"| GATOS sync (verified, hub hook) | {', '.join(f'{s:.2f}' for s in gatos_s)} | {g:.2f} | "
              f"{replicated / g:,.0f} |\n"
              f"| git push/fetch (unverified) | {', '.join(f'{s:.2f}' for s in git_s)} | {p:.2f} | "
              f"{replicated / p:,.0f} |\n\nGATOS / git: {p / g:.2f}x; load {os.getloadavg()}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
