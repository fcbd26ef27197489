"""Job methods of the daemon: `jobs.enqueue`, `jobs.claim`, `jobs.status`, `jobs.result`,
`jobs.cancel` and `jobs.wait` (streamed).

Git work (job, claim and result refs, reading journals) runs on a small thread pool,
each thread with its own repository handle. Lifecycle events go through the daemon's
group commit like every other append, and the `gatos.jobs.pending` announcement through
the bus writer, so a daemon never races its own writers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from compute import JobService, Manifest, fold_lifecycle, parse_job_id, reconcile
from compute._jobs import job_ref
from gatosd._bus_methods import BusMethods
from gatosd._group_commit import GroupCommitter
from gatosd._jobs_wiring import blob_store, gate_of, job_store, lifecycle_events
from gatosd._registry import Context, Registry
from gatosd.errors import bad_frame
from gatosd.node import Node
from ledger_core import normalize_actor, validate_namespace

T = TypeVar("T")
WAIT_POLL = 0.1  # seconds between looks at a waited job's refs


class JobMethods:
    """Binds `compute` to the protocol."""

    def __init__(self, repo_path: str, front: Node, committer: GroupCommitter, bus: BusMethods) -> None:
        self.repo_path = repo_path
        self.front = front
        self.committer = committer
        self.bus = bus
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gatos-jobs")
        self._local = threading.local()

    def register(self, registry: Registry) -> None:
        registry.add("jobs.enqueue", self.enqueue)
        registry.add("jobs.claim", self.claim)
        registry.add("jobs.status", self.status)
        registry.add("jobs.result", self.result)
        registry.add("jobs.cancel", self.cancel)
        registry.add("jobs.wait", self.wait, stream=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _node(self) -> Node:
        node = getattr(self._local, "node", None)
        if node is None:
            node = self._local.node = Node.open(self.repo_path)
        return node

    async def _run(self, fn: Callable[[Node], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self._node()))

    def _actor(self, frame: dict[str, Any]) -> str:
        actor = frame.get("actor")
        return normalize_actor(actor) if actor is not None else self.front.default_actor

    async def _emit(self, ns: str, type_: str, payload: dict[str, Any], actor: str) -> None:
        signed = self.front.sign(self.front.build_event(type=type_, payload=payload, actor=actor))
        self.front.check_signed(signed, signed_here=True)
        await self.committer.submit(ns, signed)

    def _service(self, node: Node, actor: str, loop: asyncio.AbstractEventLoop) -> JobService:
        """A service whose events and bus messages are handed to the event loop's writers."""
        def emit(ns: str, type_: str, payload: dict[str, Any]) -> None:
            asyncio.run_coroutine_threadsafe(self._emit(ns, type_, payload, actor), loop).result()

        def publish(topic: str, payload: dict[str, Any]) -> None:
            asyncio.run_coroutine_threadsafe(self.bus.announce(topic, payload, actor=actor), loop).result()

        return JobService(job_store(node), blob_store(node), emit=emit, publish=publish, gate=gate_of(node))

    @staticmethod
    def _job_id(frame: dict[str, Any]) -> str:
        return parse_job_id(frame.get("job_id"))

    async def enqueue(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """Create a job from `manifest` (or the manifest's fields in the frame) in namespace `ns`."""
        ns = validate_namespace(frame.get("ns"))
        body = frame.get("manifest")
        if body is None:
            body = {k: frame[k] for k in ("command", "args", "timeout", "env", "cwd", "inputs",
                                          "policy_root", "ulid") if k in frame}
        manifest = Manifest.from_value(body)
        actor = self._actor(frame)
        loop = asyncio.get_running_loop()
        return await self._run(lambda node: self._service(node, actor, loop).enqueue(manifest, ns, actor))

    async def claim(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """Claim one job (`job_id`, or the next claimable one of `ns`) for `actor` with a lease.

        The caller then holds the claim: it must renew it (claim again the same job before the
        lease ends) and write the result itself; results cannot yet be submitted over the
        protocol, so this serves inspection and tests of the exclusive claim.
        """
        actor = self._actor(frame)
        lease_ms = frame.get("lease_ms", 30_000)
        if not isinstance(lease_ms, int) or isinstance(lease_ms, bool) or lease_ms < 1:
            raise bad_frame("`lease_ms` must be a positive integer")
        ns = validate_namespace(frame["ns"]) if frame.get("ns") is not None else None
        wanted = self._job_id(frame) if frame.get("job_id") is not None else None
        key = self.front.signing_key(actor).public_key

        def run(node: Node) -> dict[str, Any]:
            store = job_store(node)
            for job_id in [wanted] if wanted else store.claimable(ns):
                job = store.get(job_id)
                gate_of(node)(actor, "jobs.claim", job.ns)
                claim = store.claim(job.job_id, key, actor, lease_ms)
                if claim is not None:
                    return {"claimed": True, "job": job.to_dict(), "claim": claim.to_dict()}
            return {"claimed": False}

        out = await self._run(run)
        if out["claimed"]:
            claim = out["claim"]
            await self._emit(out["job"]["ns"], "job.claimed", {
                "job_id": claim["job_id"], "attempt": claim["attempt"], "worker": claim["worker"],
                "lease_until_ms": claim["lease_until_ms"]}, actor)
        return out

    async def status(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """The lifecycle folded from the job's events, corrected by its refs."""
        job_id = self._job_id(frame)

        def run(node: Node) -> dict[str, Any]:
            store = job_store(node)
            job = store.get(job_id)
            service = JobService(store, blob_store(node), emit=_no_emit, publish=None, gate=None)
            folded = fold_lifecycle(job.job_id, lifecycle_events(node, job.ns))
            return reconcile({**folded, "ns": job.ns}, service.refs_of(job.job_id))

        return await self._run(run)

    async def result(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """The result with its Proof-of-Execution verified, and the outputs."""
        job_id = self._job_id(frame)
        return await self._run(lambda node: JobService(
            job_store(node), blob_store(node), emit=_no_emit, publish=None, gate=None).result(job_id))

    async def cancel(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """Abort a job without a result (needs `jobs:<ns>:enqueue`)."""
        job_id = self._job_id(frame)
        reason = frame.get("reason", "")
        if not isinstance(reason, str):
            raise bad_frame("`reason` must be a string")
        actor = self._actor(frame)
        loop = asyncio.get_running_loop()
        return await self._run(lambda node: self._service(node, actor, loop).cancel(job_id, actor, reason))

    async def wait(self, ctx: Context, frame: dict[str, Any]) -> dict[str, Any]:
        """Ack, a frame at each state change (pending → claimed → finished), then the result."""
        job_id = self._job_id(frame)
        timeout_ms = frame.get("timeout_ms")
        if timeout_ms is not None and (not isinstance(timeout_ms, int) or timeout_ms < 0):
            raise bad_frame("`timeout_ms` must be a non-negative integer")
        hexpart = job_id[7:]

        def look(node: Node) -> str:
            refs = node.repo.refs
            if refs.get(job_ref(hexpart, "job")) is None:
                job_store(node).get(job_id)  # raises JOB_NOT_FOUND
            if refs.get(job_ref(hexpart, "result")) is not None:
                return "finished"
            return "claimed" if refs.get(job_ref(hexpart, "claim")) is not None else "pending"

        await ctx.ack()
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        last = None
        while True:
            state = await self._run(look)
            if state != last:
                last = state
                if state != "finished":
                    await ctx.send({"state": state, "job_id": job_id})
            if state == "finished":
                return await self.result(ctx, {"job_id": job_id})
            if deadline is not None and time.monotonic() >= deadline:
                return {"job_id": job_id, "state": state, "timed_out": True}
            await asyncio.sleep(WAIT_POLL)


def _no_emit(ns: str, type_: str, payload: dict[str, Any]) -> None:
    raise AssertionError("a read-only job method tried to append an event")


__all__ = ["JobMethods"]
