"""Append throughput of the GATOS journal, measured against `git fast-import`.

What is measured (SPEC §5: one commit per event, linear journal, ref moved by CAS):

1. one-at-a-time: `Node.append(ns, signed)` per event on a real repository. Each
   append verifies the ed25519 signature, builds the event commit, writes its four
   objects loose (blob event.cbor, blob event.sig, tree, commit) and moves the
   journal ref by compare-and-swap (Git's lock-file protocol).
2. group commit: `Node.append_many(batch)` with `--batch` events per call. Same
   verification and the same commits, but each batch is written as one pack and
   the ref moves once per batch.
3. the peer, `git fast-import --quiet`, writing the very same commits (same blobs,
   tree, identities, times and message) chained on the same ref of a fresh
   repository. The stream is built before the timer starts; the timer covers the
   whole process: start-up, feeding the stream, packing and the ref update.
4. for context only, the same fast-import with glibc's heap trimming turned off
   (`TUNED_ENV`): on some machines fast-import spends most of its time in brk().

Why: group commit is meant to get within a small factor of the fastest way Git
itself has to write many commits (the goal is at least 50 % of fast-import's rate),
and a single-event append must stay cheap enough for interactive use (the goal is at
least 2,000 events/s). Signing is reported on its own and is not in the append
rates, because events arrive signed by their clients; verification is in them.

Setup: a "client" node (actor `user:client`) builds and signs the events once; every
run of every mode uses a fresh repository (`Node.init(..., "user:bench")`) that
trusts the client's public key, so all modes append byte-identical events and must
end on the same head commit. Afterwards one repository of each mode is checked with
`git fsck --strict`, `git rev-list --count` (== N) and `Node.verify()` (the logic of
`gatos verify`), and the three heads are compared.

    .venv/bin/python bench/bench_ledger.py --events 5000 --runs 3 [--markdown]
    .venv/bin/python bench/bench_ledger.py --profile one   # cProfile one mode instead
    .venv/bin/python bench/bench_ledger.py --dir /dev/shm  # repositories on tmpfs
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

from gatosd.node import Node
from ledger_core import Event, SignedEvent, journal_ref
from ledger_core._gitobj import format_trailers, signature_line
from ledger_core._journal_commit import EVENT_FILE, SIG_FILE, event_trailers
from ledger_core.errors import LedgerError

NS = "bench"
CLIENT = "user:client"
OWNER = "user:bench"
NOTE = "a benchmark event with a short human-readable note"

MODES = ("one", "group", "fastimport", "fastimport-tuned")
LABELS = {
    "sign": "signing (node.sign)",
    "one": "one-at-a-time append",
    "group": "group commit (append_many)",
    "fastimport": "git fast-import",
    "fastimport-tuned": "git fast-import, malloc tuned",
}
# glibc returns freed heap to the kernel after every object fast-import deflates (one
# brk() pair per object); where page faults are dear that dominates its run time. The
# tuned peer keeps the heap; it is reported beside the default one, never instead of it.
TUNED_ENV = {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=67108864"}


@dataclass
class Timings:
    """Seconds per run for each mode, and what each rate is counted in."""

    events: int
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def add(self, mode: str, seconds: float) -> None:
        self.seconds.setdefault(mode, []).append(seconds)

    def rates(self, mode: str) -> list[float]:
        return [self.events / s for s in self.seconds[mode]]

    def median_rate(self, mode: str) -> float:
        return statistics.median(self.rates(mode))


# -- events -------------------------------------------------------------------------


def make_events(client: Node, n: int) -> list[Event]:
    return [client.build_event(type="bench.event", payload={"i": i, "note": NOTE})
            for i in range(n)]


def sign_all(client: Node, events: Sequence[Event]) -> tuple[list[SignedEvent], float]:
    start = time.perf_counter()
    signed = [client.sign(ev) for ev in events]
    return signed, time.perf_counter() - start


def fresh_node(path: Path, client_key: str) -> Node:
    """A new repository with its owner's key, trusting the client's public key."""
    node, _ = Node.init(str(path), OWNER, discover=False)
    node.trust.add_key(CLIENT, client_key, by=OWNER, seconds=0)  # type: ignore[arg-type]
    return node


# -- the three writers --------------------------------------------------------------


def run_one(path: Path, client_key: str, signed: Sequence[SignedEvent], _batch: int
            ) -> tuple[float, str]:
    node = fresh_node(path, client_key)
    append = node.append
    start = time.perf_counter()
    for s in signed:
        last = append(NS, s)
    elapsed = time.perf_counter() - start
    return elapsed, last.commit


def run_group(path: Path, client_key: str, signed: Sequence[SignedEvent], batch: int
              ) -> tuple[float, str]:
    node = fresh_node(path, client_key)
    batches = [[(NS, s) for s in signed[k:k + batch]] for k in range(0, len(signed), batch)]
    outcomes = []
    start = time.perf_counter()
    for items in batches:
        outcomes.append(node.append_many(items))
    elapsed = time.perf_counter() - start
    errors = [r for results in outcomes for r in results if isinstance(r, LedgerError)]
    if errors:
        raise SystemExit(f"group commit refused {len(errors)} events, first: {errors[0]!r}")
    return elapsed, outcomes[-1][-1].commit  # type: ignore[union-attr]


def fast_import_stream(signed: Sequence[SignedEvent]) -> bytes:
    """The fast-import stream of the journal commits, byte-identical to GATOS's."""
    ref = journal_ref(NS, CLIENT)
    out: list[bytes] = []
    for s in signed:
        ident = signature_line(s.event.actor, s.event.actor, s.event.commit_time)
        message = f"{s.event.type}\n\n{format_trailers(event_trailers(s))}".encode()
        out += [
            f"commit {ref}\nauthor {ident}\ncommitter {ident}\n".encode(),
            f"data {len(message)}\n".encode(), message, b"\n",
            f"M 100644 inline {EVENT_FILE}\ndata {len(s.canonical)}\n".encode(),
            s.canonical, b"\n",
            f"M 100644 inline {SIG_FILE}\ndata {len(s.signature)}\n".encode(),
            s.signature, b"\n\n",
        ]
    out.append(b"done\n")
    return b"".join(out)


def run_fastimport(path: Path, stream: bytes, env: dict[str, str] | None = None
                   ) -> tuple[float, str]:
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    environ = {**os.environ, **(env or {})}
    start = time.perf_counter()
    subprocess.run(["git", "-C", str(path), "fast-import", "--quiet", "--done"],
                   input=stream, env=environ, check=True)
    elapsed = time.perf_counter() - start
    return elapsed, git(path, "rev-parse", journal_ref(NS, CLIENT))


# -- checks --------------------------------------------------------------------------


def git(path: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"git {' '.join(args)} failed in {path}:\n{done.stderr}")
    return done.stdout.strip()


def check_repository(mode: str, path: Path, client_key: str, n: int) -> str:
    """fsck --strict, commit count and `gatos verify`; returns a one-line summary."""
    git(path, "fsck", "--strict", "--no-progress")
    ref = journal_ref(NS, CLIENT)
    count = int(git(path, "rev-list", "--count", ref))
    if count != n:
        raise SystemExit(f"{mode}: {ref} has {count} commits, expected {n}")
    # a fast-import repository is plain Git: make it a node (trusting the client) to verify it
    plain = mode.startswith("fastimport")
    node = fresh_node(path, client_key) if plain else Node.open(str(path))
    report = node.verify()
    if not report.ok or report.events != n:
        raise SystemExit(f"{mode}: verify failed: {report.to_dict()}")
    return f"{mode}: fsck --strict ok, rev-list --count {count}, verify ok ({report.events} events)"


# -- reporting ----------------------------------------------------------------------


def file_create_us(root: Path, count: int = 2000) -> float:
    """Median-free simple probe: microseconds to create, write and close one small file.

    A one-at-a-time append creates five files (four loose objects and the ref lock),
    so this bounds its rate on the disk under test whatever the Python code does.
    """
    folder = root / "create-probe"
    folder.mkdir()
    start = time.perf_counter()
    for i in range(count):
        fd = os.open(folder / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b"0" * 41)
        os.close(fd)
    return (time.perf_counter() - start) / count * 1e6


def filesystem(path: Path) -> str:
    """Type, device and options of the mount holding `path`."""
    best = ("", "unknown")
    real = os.path.realpath(path)
    try:
        with open("/proc/mounts", encoding="utf-8") as handle:
            for line in handle:
                dev, mnt, kind, opts = line.split()[:4]
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) \
                        and len(mnt) >= len(best[0]):
                    best = (mnt, f"{kind} on {dev} mounted at {mnt} ({opts})")
    except OSError:
        pass
    return best[1]


def machine(where: Path) -> dict[str, str]:
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle
                        if line.startswith("model name")), "")
    except OSError:
        pass
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu or platform.processor() or "unknown",
        "os": platform.platform(),
        "python": platform.python_version(),
        "git": subprocess.run(["git", "--version"], capture_output=True, text=True,
                              check=True).stdout.strip(),
        "pygit2": f"{pygit2.__version__} (libgit2 {pygit2.LIBGIT2_VERSION})",
        "repositories in": f"{where}: {filesystem(where)}",
    }


def rows(t: Timings, sign: Timings) -> list[tuple[str, float, float, float, float]]:
    """(label, median ev/s, min, max, median seconds) per mode."""
    out = []
    for mode, timings in [("sign", sign), *((m, t) for m in MODES)]:
        rates = timings.rates(mode)
        out.append((LABELS[mode], statistics.median(rates), min(rates), max(rates),
                    statistics.median(timings.seconds[mode])))
    return out


def ratios(t: Timings) -> list[tuple[str, float, str]]:
    fi, tuned = t.median_rate("fastimport"), t.median_rate("fastimport-tuned")
    group, one = t.median_rate("group"), t.median_rate("one")
    return [
        ("group commit / fast-import", group / fi,
         "goal ≥ 0.50: " + ("met" if group / fi >= 0.5 else "MISSED")),
        ("one-at-a-time / fast-import", one / fi,
         "goal one-at-a-time ≥ 2,000 ev/s: " + ("met" if one >= 2000 else "MISSED")),
        ("group commit / fast-import tuned", group / tuned, "for context"),
        ("one-at-a-time / fast-import tuned", one / tuned, "for context"),
    ]


def print_table(t: Timings, sign: Timings) -> None:
    print(f"\n{'mode':<33} {'median ev/s':>12} {'min ev/s':>10} {'max ev/s':>10} {'median s':>9}")
    for label, med, lo, hi, secs in rows(t, sign):
        print(f"{label:<33} {med:>12,.0f} {lo:>10,.0f} {hi:>10,.0f} {secs:>9.3f}")
    print()
    for label, value, note in ratios(t):
        print(f"{label:<33} {value:>12.3f}   ({note})")


def print_markdown(args: argparse.Namespace, t: Timings, sign: Timings,
                   info: dict[str, str], extra: list[str]) -> None:
    cmd = " ".join([os.path.relpath(sys.executable), *sys.argv])
    print("\n```")
    print(f"$ {cmd}")
    print("```\n")
    print(f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    for key, value in info.items():
        print(f"- {key}: {value}")
    print(f"- events per run: {args.events}; runs: {args.runs}; batch: {args.batch}")
    for line in extra:
        print(f"- {line}")
    print("\n| mode | median events/s | min | max | median seconds |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, med, lo, hi, secs in rows(t, sign):
        print(f"| {label} | {med:,.0f} | {lo:,.0f} | {hi:,.0f} | {secs:.3f} |")
    print("\n| ratio of medians | value | |")
    print("| --- | ---: | --- |")
    for label, value, note in ratios(t):
        print(f"| {label} | {value:.3f} | {note} |")


# -- main ---------------------------------------------------------------------------


def profile(mode: str, root: Path, client: Node, client_key: str,
            signed: Sequence[SignedEvent], events: Sequence[Event], batch: int) -> None:
    target: Callable[[], object]
    if mode == "sign":
        def target() -> object:
            return sign_all(client, events)
    elif mode == "fastimport":
        def target() -> object:
            return fast_import_stream(signed)
    else:
        path = root / f"profile-{mode}"
        node = fresh_node(path, client_key)
        if mode == "one":
            def target() -> object:
                return [node.append(NS, s) for s in signed]
        else:
            def target() -> object:
                return [node.append_many([(NS, s) for s in signed[k:k + batch]])
                        for k in range(0, len(signed), batch)]
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.runcall(target)
    print(f"{mode}: {len(signed)} events in {time.perf_counter() - start:.3f}s under cProfile")
    stats = pstats.Stats(prof, stream=sys.stdout).strip_dirs()
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=5000, help="events per run (N)")
    parser.add_argument("--runs", type=int, default=3, help="runs per mode (R)")
    parser.add_argument("--batch", type=int, default=1000, help="events per append_many")
    parser.add_argument("--markdown", action="store_true", help="also print a RESULTS.md block")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the temporary repositories go (default: the system temp dir)")
    parser.add_argument("--profile", choices=("sign", "one", "group", "fastimport"),
                        help="profile one pass of a mode with cProfile instead of timing; "
                             "'fastimport' profiles building the stream")
    args = parser.parse_args(argv)
    n = args.events

    with tempfile.TemporaryDirectory(prefix="gatos-bench-", dir=args.dir) as tmp:
        root = Path(tmp)
        client, _ = Node.init(str(root / "client"), CLIENT, discover=False)
        client_key = client.trust.keys_for(CLIENT)[0]
        events = make_events(client, n)
        if args.profile:
            signed, _ = sign_all(client, events)
            profile(args.profile, root, client, client_key, signed, events, args.batch)
            return 0

        t, sign = Timings(n), Timings(n)
        checks: list[str] = []
        heads: dict[str, str] = {}
        signed: list[SignedEvent] = []
        for run in range(args.runs):
            signed, secs = sign_all(client, events)  # ed25519 is deterministic: same bytes
            sign.add("sign", secs)
            stream = fast_import_stream(signed)
            for mode in MODES:
                path = root / f"run{run}-{mode}"
                if mode.startswith("fastimport"):
                    env = TUNED_ENV if mode == "fastimport-tuned" else None
                    secs, head = run_fastimport(path, stream, env)
                elif mode == "one":
                    secs, head = run_one(path, client_key, signed, args.batch)
                else:
                    secs, head = run_group(path, client_key, signed, args.batch)
                t.add(mode, secs)
                print(f"run {run + 1}/{args.runs} {LABELS[mode]:<30} {secs:8.3f}s "
                      f"{n / secs:>10,.0f} ev/s  head {head[:12]}", flush=True)
                if run == 0:
                    heads[mode] = head
                    checks.append(check_repository(mode, path, client_key, n))
                elif head != heads[mode]:
                    raise SystemExit(f"{mode}: run {run + 1} ended on {head}, not {heads[mode]}")
                # Repositories stay until the end: deleting ~25,000 files between runs
                # makes file creation in the next run slower on some file systems.
        if len(set(heads.values())) != 1:
            raise SystemExit(f"the modes disagree on the head commit: {heads}")
        checks.append(f"all modes end on the same head commit {heads['one']}")
        size = statistics.mean(len(s.canonical) for s in signed)
        create = file_create_us(root)
        checks.append(f"file system probe: creating one small file takes {create:.0f} µs here, "
                      f"so the 5 files of one single append take {5 * create / 1000:.1f} ms")

    print("\nchecks (first run of each mode):")
    for line in checks:
        print(f"  {line}")
    print_table(t, sign)
    if args.markdown:
        extra = [f"event size: {size:.0f} bytes of canonical CBOR on average, "
                 "4 objects per event (event.cbor, event.sig, tree, commit)",
                 *checks]
        print_markdown(args, t, sign, machine(root.parent), extra)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
