"""Cache benchmark: index build over 1,000,000 events and query latency, next to SQLite.

    .venv/bin/python bench/bench_cache.py [--events 1000000] [--runs 7] [--markdown]

The events are the fold benchmark's cached data set (`bench/bench_fold.py` builds it once
under the system temp dir: two actors, ts = the ULID's millisecond). In the same run:

1. GATOS: a full rebuild of the namespace's `default` index (actor, type, day) from the
   journals: walking every commit, building the bitmaps, writing the tree and the ref;
   once in one process and once as `gatos cache rebuild` runs it (journals walked in
   worker processes), which must give the same commit.
2. SQLite (stdlib, a file database in the temp dir): one table of the same events
   `(pos, actor, type, ts)` inserted from memory (the rows come from our own walk, so
   SQLite is not charged for reading Git) plus indexes on `actor`, `type`, `ts` and
   `(actor, ts)`.
3. Queries, median over `--runs`, each returning the matching positions as a list:
   two filters (`actor = alice` and a 100-second window) and one (`actor = alice`);
   GATOS on the index loaded in memory, as the daemon keeps it; SQLite with its page
   cache warm. Goals: build ≤ 10 s, the two-filter query ≤ 5 ms and faster than SQLite.

With the native reader built (`gatos_native`), both GATOS builds walk the journals in
native threads (no worker processes); `GATOS_NATIVE=0` measures the pure Python path.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_fold import build  # noqa: E402

from echo_fold import _native  # noqa: E402
from gatosd._cache_wiring import cache_store, rebuild  # noqa: E402
from kv_cache import IndexSpec, Query, match  # noqa: E402
from kv_cache._headers import merge, walk_back  # noqa: E402

T0_S = 1_700_000_000


def median_ms(fn, runs: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    times, size = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        size = len(fn())
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    path = os.path.join(tempfile.gettempdir(), f"gatos-bench-fold-{args.events + 1000}")
    node = build(path, args.events + 1000)
    store = cache_store(node)
    spec = IndexSpec("bench")

    started = time.perf_counter()
    result = store.update(spec, full=True)
    serial_build = time.perf_counter() - started
    serial_commit = result.commit
    started = time.perf_counter()
    result = rebuild(node, "bench", "default")[0]  # what `gatos cache rebuild` runs: journals in parallel
    gatos_build = time.perf_counter() - started
    assert result.commit == serial_commit, "parallel and serial builds differ"
    index = store.load(spec)
    assert index is not None and index.count == result.count

    rows = [(pos, h.actor, h.type, h.seconds) for pos, h in enumerate(merge(
        [walk_back(store.read_commit, head, None) for _, head in sorted(store.heads("bench").items())]))]
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(os.path.join(tmp, "events.db"))
        started = time.perf_counter()
        db.execute("CREATE TABLE events (pos INTEGER PRIMARY KEY, actor TEXT, type TEXT, ts INTEGER)")
        db.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)
        for column in ("actor", "type", "ts", "actor, ts"):
            db.execute(f"CREATE INDEX i_{column.replace(', ', '_')} ON events ({column})")
        db.commit()
        sqlite_build = time.perf_counter() - started
        low, high = T0_S + 300, T0_S + 399
        two = Query(actor="user:alice", since=low, until=high)
        one = Query(actor="user:alice")
        g2, n2 = median_ms(lambda: list(match(index, two)), args.runs)
        s2, m2 = median_ms(lambda: [r[0] for r in db.execute(
            "SELECT pos FROM events WHERE actor = ? AND ts BETWEEN ? AND ? ORDER BY pos",
            ("user:alice", low, high))], args.runs)
        g1, n1 = median_ms(lambda: list(match(index, one)), args.runs)
        s1, m1 = median_ms(lambda: [r[0] for r in db.execute(
            "SELECT pos FROM events WHERE actor = ? ORDER BY pos", ("user:alice",))], args.runs)
        db.close()
    assert (n2, n1) == (m2, m1), f"answers differ: gatos {(n2, n1)} sqlite {(m2, m1)}"
    report = {"events": index.count, "gatos_build_s": gatos_build, "gatos_serial_build_s": serial_build,
              "sqlite_build_s": sqlite_build,
              "two_filter_ms": {"gatos": g2, "sqlite": s2, "matches": n2},
              "one_filter_ms": {"gatos": g1, "sqlite": s1, "matches": n1}, "cpus": os.cpu_count()}
    report["native"] = _native.available()
    if not args.markdown:
        print(json.dumps(report, indent=2))
        return
    print(f"native reader: {'yes' if _native.available() else 'no (pure Python)'}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"| measure ({index.count:,} events) | GATOS | SQLite | ratio (SQLite / GATOS) |")
    print("| --- | --- | --- | --- |")
    print(f"| build (GATOS from Git, journals in parallel; SQLite from memory) | {gatos_build:.1f} s | "
          f"{sqlite_build:.1f} s | {sqlite_build / gatos_build:.2f}x |")
    print(f"| build, GATOS in one process | {serial_build:.1f} s | | |")
    print(f"| two filters (actor, 100 s window; {n2:,} rows) | {g2:.2f} ms | {s2:.2f} ms | {s2 / g2:.1f}x |")
    print(f"| one filter (actor; {n1:,} rows) | {g1:.2f} ms | {s1:.2f} ms | {s1 / g1:.1f}x |")


if __name__ == "__main__":
    main()
