"""Policy gate benchmark: decisions per second (1,000 rules, 10,000 grants) and the gate's cost per append.

    .venv/bin/python bench/bench_policy.py [--rules 1000] [--grants 10000] [--decisions 200000]

1. Decisions/s: a bundle of `--rules` rules (one `require` per namespace plus a few
   wildcard rules) and a trust graph with `--grants` signed grants to 1,000 actors,
   each in its own namespace; requests cycle over actors and namespaces (allowed and
   denied). The pure `decide` is timed; goal ≥ 50,000/s.
2. Gate overhead per append: `Node.append_many` on a real repository, one event per
   call, with the gate as installed (`PolicyEngine.refresh` + `gate` + `flush`) and with
   the journal gate removed, on identical events; the per-call medians and the median
   of the gate's own calls are reported; goal ≤ 20 µs median. `refresh()` is timed
   as an extra call right after each append (cold, as in the writer between batches)
   and also as the call `append_many` makes itself. The gate memoizes allowed appends
   per (actor, namespace, type), so `gate()` is also timed with the memo dropped
   before each append (`--misses` appends): the cost of a first or payload-dependent
   decision.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gatosd.node import Node
from ledger_core import PublicKeyText, SigningKey
from policy import (
    ActorInfo,
    Bundle,
    Request,
    TrustView,
    check_grant,
    compile_sources,
    decide,
    make_grant,
)

T0 = 1_700_000_000


def big_bundle(rules: int) -> Bundle:
    lines = ["audit deny", 'deny actor=@interns ns=payroll reason="no"',
             "allow action=bus.subscribe topic=public.*"]
    lines += [f"require ns=ns{i} type=t{i % 7} caps=ns{i}:append" for i in range(rules - len(lines))]
    lines.append("require caps=$cap")
    return Bundle.from_canonical(compile_sources({"bench.rules": "\n".join(lines) + "\n"}))


def big_trust(grants: int, actors: int = 1000) -> TrustView:
    owner = SigningKey(bytes([1]) * 32)
    key = PublicKeyText(owner.public_key)
    infos = {"user:owner": ActorInfo((key,), ("owners",), ("*",))}
    infos.update({f"user:a{i}": ActorInfo((key,), ("interns",) if i % 50 == 0 else (), ())
                  for i in range(actors)})
    docs = {}
    for g in range(grants):
        subject = f"user:a{g % actors}"
        doc, sig = make_grant(owner, issuer="user:owner", subject=subject,
                              caps=[f"ns{(g // actors + g) % actors}:append", f"bus:t{g}:publish"],
                              aud="gatos:bench", iat=T0, exp=T0 + 10_000 if g % 10 else None)
        grant = check_grant(doc, sig, [key])
        docs[grant.grant_id] = grant
    return TrustView(root="1" * 40, audience="gatos:bench", actors=infos, grants=docs)


def bench_decisions(args: argparse.Namespace) -> dict[str, float]:
    started = time.perf_counter()
    bundle, trust = big_bundle(args.rules), big_trust(args.grants)
    setup = time.perf_counter() - started
    requests = [Request(f"user:a{i % 1000}", "append", f"ns{(i * 7) % 1000}", {"n": i}, f"t{i % 7}")
                for i in range(4096)]
    requests += [Request("user:owner", "bus.publish", f"t{i}") for i in range(256)]
    n = args.decisions
    allowed = 0
    started = time.perf_counter()
    for i in range(n):
        allowed += decide(requests[i % len(requests)], bundle, trust, T0 + i % 20_000).allowed
    elapsed = time.perf_counter() - started
    return {"setup_s": setup, "decisions_per_s": n / elapsed, "allowed_share": allowed / n,
            "rules": len(bundle.rules), "grants": len(trust.grants)}


def bench_gate(args: argparse.Namespace) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="bench-policy-"))
    try:
        node, _ = Node.init(str(root / "node"), "user:owner", discover=False)
        engine = node.policy
        ungated = Node.open(str(root / "node"))
        ungated.journal.gate = None
        gate_calls: list[float] = []
        real_gate = engine.gate

        def timed_gate(ns, signed):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            try:
                real_gate(ns, signed)
            finally:
                gate_calls.append(time.perf_counter() - t)

        node.journal.gate = timed_gate
        inner_refresh: list[float] = []
        real_refresh = engine.refresh

        def timed_refresh() -> None:
            t = time.perf_counter()
            try:
                real_refresh()
            finally:
                inner_refresh.append(time.perf_counter() - t)

        engine.refresh = timed_refresh  # type: ignore[method-assign]
        with_gate, without = [], []
        refresh, flush = [], []
        for i in range(args.appends):
            for target, sink in ((node, with_gate), (ungated, without)):
                event = target.sign(target.build_event(type="bench", payload={"i": i}))
                t = time.perf_counter()
                target.append_many([(f"g{'a' if target is node else 'b'}", event)], preverified=True)
                sink.append(time.perf_counter() - t)
            t = time.perf_counter()
            engine.refresh()
            refresh.append(time.perf_counter() - t)
            t = time.perf_counter()
            engine.flush()
            flush.append(time.perf_counter() - t)
        engine.refresh = real_refresh  # type: ignore[method-assign]
        hits = list(gate_calls)
        gate_calls.clear()
        for i in range(args.misses):
            event = node.sign(node.build_event(type="bench", payload={"i": i}))
            engine.forget()
            node.append_many([("ga", event)], preverified=True)
        us = 1e6
        gate_us = statistics.median(hits) * us
        refresh_us = statistics.median(refresh) * us
        flush_us = statistics.median(flush) * us
        return {"append_with_gate_us": statistics.median(with_gate) * us,
                "append_without_gate_us": statistics.median(without) * us,
                "gate_call_us": gate_us, "refresh_us": refresh_us, "flush_empty_us": flush_us,
                "refresh_in_append_us": statistics.median(inner_refresh) * us,
                "gate_miss_us": statistics.median(gate_calls) * us if gate_calls else float("nan"),
                "gate_total_us": gate_us + refresh_us + flush_us}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--grants", type=int, default=10_000)
    parser.add_argument("--decisions", type=int, default=200_000)
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--misses", type=int, default=500)
    args = parser.parse_args()
    d = bench_decisions(args)
    print(f"decide: {d['rules']} rules, {d['grants']} grants (setup {d['setup_s']:.1f}s incl. signing): "
          f"{d['decisions_per_s']:,.0f} decisions/s, {d['allowed_share']:.0%} allowed "
          f"(goal ≥ 50,000: {'met' if d['decisions_per_s'] >= 50_000 else 'MISSED'})")
    g = bench_gate(args)
    print(f"append_many, 1 event per call, median: with gate {g['append_with_gate_us']:.0f} µs, "
          f"without {g['append_without_gate_us']:.0f} µs")
    print(f"gate per append, median: gate() {g['gate_call_us']:.1f} µs + refresh() {g['refresh_us']:.1f} µs "
          f"+ empty flush() {g['flush_empty_us']:.1f} µs = {g['gate_total_us']:.1f} µs "
          f"(goal ≤ 20: {'met' if g['gate_total_us'] <= 20 else 'MISSED'})")
    print(f"  refresh() as called by append_many: {g['refresh_in_append_us']:.1f} µs; "
          f"gate() with the memo dropped (a fresh decision): {g['gate_miss_us']:.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
