"""Composition of the job plane over a `Node`: the store, the blob store, the gate, the
lifecycle-event appender and the bus announcement (used by the CLI, workers and gatosd)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from compute import BlobStore, JobService, JobStore, Runner, SubprocessRunner
from gatosd._bus_writer import ConfigLoader
from gatosd._clock import new_ulid
from gatosd.node import Node
from ledger_core.errors import Conflict
from mind_bus import BusLog, PublishRequest

EMIT_TRIES = 40


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def node_root(node: Node) -> str:
    return (node.repo.repo.workdir or node.repo.git_dir).rstrip("/")


def blob_store(node: Node) -> BlobStore:
    return BlobStore(node_root(node))


CONFIG_CLAIM_REMOTE = "gatos.claimRemote"


def job_store(node: Node, claim_remote: str | None = None) -> JobStore:
    """The node's job store; with a claim remote (argument, else `gatos.claimRemote`),
    claims and results are decided at that hub (`_claims.HubClaimRefs`)."""
    remote = claim_remote or node.repo.config_get(CONFIG_CLAIM_REMOTE)
    refs: Any = node.repo.refs
    if remote:
        from gatosd._claims import HubClaimRefs
        refs = HubClaimRefs(node.repo.refs, node.repo.git_dir, remote)
    return JobStore(node.repo.objects, refs, clock_ms=now_ms)


def gate_of(node: Node) -> Callable[[str, str, str], None]:
    def gate(actor: str, action: str, target: str) -> None:
        node.policy.check_now(actor, action, target)
    return gate


def emitter(node: Node, actor: str) -> Callable[[str, str, dict[str, Any]], None]:
    """Append a lifecycle event as `actor`, retrying while other writers hold the journal.

    Many workers of one node share the actor's journal; the journal's own retries end in
    CONFLICT after a few lost races, which is wrong for a record that must be written.
    """
    def emit(ns: str, type_: str, payload: dict[str, Any]) -> None:
        event = node.sign(node.build_event(type=type_, payload=payload, actor=actor))
        for attempt in range(EMIT_TRIES):
            try:
                node.append(ns, event)
                return
            except Conflict:
                if attempt == EMIT_TRIES - 1:
                    raise
                time.sleep(random.uniform(0.005, 0.05))
    return emit


def local_publisher(node: Node, actor: str) -> Callable[[str, dict[str, Any]], None]:
    """Publish in-process (no daemon running): the same `BusLog` code the daemon uses."""
    def publish(topic: str, payload: dict[str, Any]) -> None:
        log = BusLog(node.repo.objects, node.repo.refs, sign=node.sign, clock=time.time, sleep=time.sleep,
                     config_for=ConfigLoader(node_root(node)), gate=None,
                     policy_root=lambda: node.policy_root)
        log.publish(PublishRequest(topic, payload, new_ulid(), actor))
    return publish


def local_service(node: Node, actor: str) -> JobService:
    return JobService(job_store(node), blob_store(node), emit=emitter(node, actor),
                      publish=local_publisher(node, actor), gate=gate_of(node))


def runners_for(node: Node, runtime: str | None = None) -> dict[str, Runner]:
    """The runners this host has: subprocess always, wasm when wasmtime imports."""
    found: dict[str, Runner] = {}
    if runtime in (None, "subprocess"):
        found["subprocess"] = SubprocessRunner()
    if runtime in (None, "wasm"):
        try:
            from compute._wasm import WasmRunner
        except ImportError:
            pass
        else:
            found["wasm"] = WasmRunner(blob_store(node))
    return found


def lifecycle_events(node: Node, ns: str) -> list[tuple[str, dict[str, Any], str]]:
    """`job.*` events of a namespace, oldest first (by ts, then ULID)."""
    rows = [(e.signed.event.type, e.signed.event.payload, e.signed.event.ts or "", e.signed.event.ulid)
            for e in node.log(ns) if e.signed.event.type.startswith("job.")]
    rows.sort(key=lambda r: (r[2], r[3]))
    return [(t, p, ts) for t, p, ts, _ in rows]


__all__ = ["blob_store", "emitter", "gate_of", "job_store", "lifecycle_events", "local_publisher",
           "local_service", "node_root", "now_ms", "runners_for"]
