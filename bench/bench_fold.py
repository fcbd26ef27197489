"""Fold throughput: events folded per second, full and incremental, beside plain Python.

    .venv/bin/python bench/bench_fold.py [--events 1000000] [--new 1000] [--rounds 3]

The data set (one namespace, two actor journals, `invoice.created` events with
`{"id": "INV-<i mod 1000>", "amount": i}`) is built once with `Node.append_many` in
large batches and cached under /tmp (`--cache`). Measured in the same run:

* full: `Folder.compute` from the first event (read commits, merge, read and check
  event bytes, run the Lua program, encode the state) plus building the checkpoint;
* incremental: the same from a checkpoint, over `--new` events appended after it;
* peers: a plain Python loop doing the same reduction (a) reading the same journals
  through the same reader (`EventReader`: pack files when it can, else the object
  store port; Event-CID checked; envelope decoded with cbor2), (b) over events
  already decoded in memory.

Medians of `--rounds` runs. With the native reader built (`gatos_native`, see
native/) journals are walked and event batches read natively; `GATOS_NATIVE=0` measures
the pure Python path. The first output line says which ran.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import policy
from echo_fold import Folder, _native, parse_spec
from echo_fold._order import merge
from echo_fold._source import EventReader, decode_event
from gatosd.node import Node
from ledger_core import encode_ulid, format_timestamp_ms
from ledger_git._deflate import STORE_BELOW

PROGRAM = b"""
function init() return {totals = {count = 0, cents = 0}, table = {}} end
function step(s, ev)
  local p = ev.payload
  s.totals.count = s.totals.count + 1
  s.totals.cents = s.totals.cents + p.amount
  s.table[p.id] = p.amount
end
"""
SPEC = b"fold_id: bench\nversion: 1\nns: bench\nprogram: p.lua\nchannels: [totals, table]\n"
ACTORS = ("user:alice", "user:bob")
NS = "bench"
T0 = 1_700_000_000_000
# How the objects were written: a data set written another way is built again.
LAYOUT = f"store_below={STORE_BELOW}"


def build(path: str, events: int, batch: int = 20_000) -> Node:
    """The cached data set with at least `events` events."""
    marker = os.path.join(path, ".bench-events")
    if os.path.exists(marker):
        with open(marker) as handle:
            count, _, layout = handle.read().partition(" ")
            if int(count) >= events and layout == LAYOUT:
                return Node.open(path)
    shutil.rmtree(path, ignore_errors=True)
    node, _ = Node.init(path, ACTORS[0], discover=False)
    node.ensure_key(ACTORS[1])
    # Deny by default: the second actor may append to the bench namespace once granted.
    policy.issue_grant(node.policy, node.signing_key(ACTORS[0]), issuer=ACTORS[0],
                       subject=ACTORS[1], caps=[f"{NS}:append"], exp=None)
    started = time.perf_counter()
    for start in range(0, events, batch):
        items = []
        for i in range(start, min(events, start + batch)):
            ulid = encode_ulid(T0 + i, i.to_bytes(10, "big"))
            ev = node.build_event(type="invoice.created", payload={"id": f"INV-{i % 1000}", "amount": i},
                                  actor=ACTORS[i % 2], ulid=ulid, ts=format_timestamp_ms(T0 + i))
            items.append(("bench", node.sign(ev)))
        for result in node.append_many(items, preverified=True):
            if isinstance(result, Exception):
                raise result
        print(f"  built {min(events, start + batch)} events ({time.perf_counter() - started:.0f}s)",
              file=sys.stderr, flush=True)
    with open(marker, "w") as handle:
        handle.write(f"{events} {LAYOUT}")
    return node


def heads_at(folder: Folder, count: int) -> dict[str, Any]:
    """Journal heads after the first `count` events (the data set alternates actors)."""
    heads = folder.journals("bench")
    out = {}
    with EventReader.open(folder.objects) as reader:
        for j, ref in enumerate(sorted(heads)):
            chain = reader.walk(heads[ref], None, j)
            keep = (count + (1 if j == 0 else 0)) // 2
            if keep:
                out[ref] = chain[keep - 1].commit
    return out


def python_reduce(events: list[dict[str, Any]]) -> dict[str, Any]:
    totals = {"count": 0, "cents": 0}
    table: dict[str, int] = {}
    for ev in events:
        p = ev["payload"]
        totals["count"] += 1
        totals["cents"] += p["amount"]
        table[p["id"]] = p["amount"]
    return {"totals": totals, "table": table}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--new", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--incr-reps", type=int, default=5, help="incremental folds timed per round")
    ap.add_argument("--cache", default="/tmp/gatos-bench-fold")
    args = ap.parse_args()
    total = args.events + args.new
    node = build(f"{args.cache}-{total}", total)
    folder = Folder(node.repo.objects, node.repo.refs)
    spec = parse_spec(SPEC, read_program=lambda _n: PROGRAM)
    old_heads, new_heads = heads_at(folder, args.events), folder.journals("bench")

    full, incr, incr_first, py_io, py_mem = [], [], [], [], []  # type: ignore[var-annotated]
    full_cpu, py_cpu = [], []  # type: ignore[var-annotated]  # CPU seconds of this process
    state_full = state_py = None
    base = None
    for _ in range(args.rounds):
        t, c = time.perf_counter(), time.process_time()
        computed = folder.compute(spec, old_heads)
        objects, oid, _root = folder._build(spec, computed, None)
        full.append(time.perf_counter() - t)
        full_cpu.append(time.process_time() - c)
        state_full = computed.state
        if base is None:
            folder.objects.write_many(objects)
            base = folder.read_checkpoint(oid)

        del computed, objects
        gc.collect()  # what the full fold left behind must not be collected inside the timer
        for rep in range(args.incr_reps):
            t = time.perf_counter()
            more = folder.compute(spec, new_heads, base)
            folder._build(spec, more, oid)
            (incr_first if rep == 0 and not incr_first else incr).append(time.perf_counter() - t)
            assert more.new_events == args.new

        t, c = time.perf_counter(), time.process_time()
        with EventReader.open(folder.objects) as reader:
            chains = [reader.walk(old_heads[ref], None, j) for j, ref in enumerate(sorted(old_heads))]
            events = [decode_event(h, reader.blob(h)) for h in merge(chains)]
        state_py = python_reduce(events)
        py_io.append(time.perf_counter() - t)
        py_cpu.append(time.process_time() - c)

        t = time.perf_counter()
        python_reduce(events)
        py_mem.append(time.perf_counter() - t)
        del chains, events
        gc.collect()

    assert state_py == {"totals": state_full["totals"], "table": state_full["table"]}, "peers disagree"
    n = args.events
    rows = [
        ("echo_fold full (Lua)", n, statistics.median(full)),
        (f"echo_fold incremental (+{args.new})", args.new, statistics.median(incr)),
        ("  the first incremental of the process", args.new, incr_first[0]),
        ("Python loop, same reader", n, statistics.median(py_io)),
        ("Python loop, events in memory", n, statistics.median(py_mem)),
    ]
    print(f"native reader: {'yes' if _native.available() else 'no (pure Python)'}")
    print(f"events={n} new={args.new} rounds={args.rounds} incremental reps={args.incr_reps} (medians); "
          f"load average at the end {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print("full rounds: " + ", ".join(f"{x:.1f}" for x in full) + " s; Python loop rounds: "
          + ", ".join(f"{x:.1f}" for x in py_io) + " s; incremental: "
          + ", ".join(f"{x * 1000:.1f}" for x in incr) + " ms")
    print(f"{'case':<36} {'events':>9} {'seconds':>9} {'events/s':>11}")
    for name, count, seconds in rows:
        print(f"{name:<36} {count:>9} {seconds:>9.3f} {count / seconds:>11,.0f}")
    full_s, incr_ms = statistics.median(full) * 1e6 / n, statistics.median(incr) * 1000
    print(f"full fold of {n:,}: {statistics.median(full):.1f} s, scaled to 1,000,000: {full_s:.1f} s "
          f"(goal ≤ 10 s: {'met' if full_s <= 10 else 'MISSED'})")
    print(f"full fold / Python loop, same reader: {statistics.median(full) / statistics.median(py_io):.2f}x; "
          f"CPU seconds (the machine is shared): full {statistics.median(full_cpu):.1f}, "
          f"Python loop {statistics.median(py_cpu):.1f}")
    print(f"incremental +{args.new}: {incr_ms:.1f} ms median, first {incr_first[0] * 1000:.1f} ms "
          f"(goal ≤ 50 ms for +1,000: {'met' if incr_ms <= 50 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
