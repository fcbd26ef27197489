"""`gatos jobs …`, `gatos worker`, `gatos reproduce`, `gatos health` and `gatos blob …`.

Enqueue, status, result and cancel go through the repository's running daemon when
there is one (so lifecycle events join its batches), else in-process. A worker is its
own process: it claims through the refs (compare-and-swap), so any number of workers
in any number of processes share the queue safely.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import Any

from compute import (
    Limits,
    Manifest,
    RetryPolicy,
    Worker,
    fold_lifecycle,
    parse_job_id,
    reconcile,
    subprocess_health,
)
from gatosd._cli_common import print_json as _out
from gatosd._cli_common import repo_path as _repo
from gatosd._jobs_wiring import (
    blob_store,
    emitter,
    gate_of,
    job_store,
    lifecycle_events,
    local_service,
    runners_for,
)
from gatosd.node import Node
from ledger_core import normalize_actor, parse_json
from ledger_core.errors import LedgerError


def _manifest_from_args(args: argparse.Namespace) -> Manifest:
    if args.file:
        with open(args.file, "rb") as handle:
            return Manifest.parse(handle.read())
    if not args.command_json or args.timeout is None:
        raise LedgerError("give --file job.yaml, or --command JSON and --timeout N")
    value: dict[str, Any] = {"command": parse_json(args.command_json, "--command"), "timeout": args.timeout}
    if args.args_json:
        value["args"] = parse_json(args.args_json, "--args")
    if args.env_json:
        value["env"] = parse_json(args.env_json, "--env")
    if args.input:
        value["inputs"] = [parse_json(i, "--input") for i in args.input]
    if args.ulid:
        value["ulid"] = args.ulid
    return Manifest.from_value(value)


def status_of(node: Node, job_id: str) -> dict[str, Any]:
    service = local_service(node, node.default_actor)
    job = service.store.get(job_id)
    status = fold_lifecycle(job.job_id, lifecycle_events(node, job.ns))
    return reconcile({**status, "ns": job.ns}, service.refs_of(job.job_id))


def cmd_enqueue(args: argparse.Namespace) -> int:
    from gatosd.cli import _daemon

    manifest = _manifest_from_args(args)
    client = _daemon(args)
    if client is not None:
        with client:
            fields: dict[str, Any] = {"ns": args.ns, "manifest": manifest.value}
            if args.actor:
                fields["actor"] = args.actor
            _out(client.request("jobs.enqueue", **fields))
        return 0
    node = Node.open(_repo(args))
    actor = normalize_actor(args.actor) if args.actor else node.default_actor
    _out(local_service(node, actor).enqueue(manifest, args.ns, actor))
    return 0


def _via_daemon(args: argparse.Namespace, method: str, **fields: Any) -> bool:
    from gatosd.cli import _daemon

    client = _daemon(args)
    if client is None:
        return False
    with client:
        _out(client.request(method, **fields))
    return True


def cmd_status(args: argparse.Namespace) -> int:
    job_id = parse_job_id(args.job_id)
    if not _via_daemon(args, "jobs.status", job_id=job_id):
        _out(status_of(Node.open(_repo(args)), job_id))
    return 0


def cmd_result(args: argparse.Namespace) -> int:
    job_id = parse_job_id(args.job_id)
    if not _via_daemon(args, "jobs.result", job_id=job_id):
        node = Node.open(_repo(args))
        _out(local_service(node, node.default_actor).result(job_id))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    job_id = parse_job_id(args.job_id)
    if not _via_daemon(args, "jobs.cancel", job_id=job_id, reason=args.reason or ""):
        node = Node.open(_repo(args))
        actor = normalize_actor(args.actor) if args.actor else node.default_actor
        _out(local_service(node, actor).cancel(job_id, actor, args.reason or ""))
    return 0


def _limits(args: argparse.Namespace) -> Limits:
    return Limits(cpu_seconds=args.cpu, memory_bytes=args.memory_mb * 1024 * 1024,
                  output_bytes=args.output_bytes, processes=args.processes)


def _make_worker(repo: str, args: argparse.Namespace) -> Worker:
    node = Node.open(repo)
    actor = normalize_actor(args.actor) if args.actor else node.default_actor
    store = job_store(node, args.claim_remote)
    return Worker(store, blob_store(node), runners_for(node, args.runtime), actor=actor,
                  key=node.signing_key(actor), emit=emitter(node, actor), gate=gate_of(node), sleep=time.sleep,
                  lease_ms=args.lease_ms, retry=RetryPolicy(max_attempts=args.max_attempts,
                                                            backoff_ms=args.backoff_ms),
                  limits=_limits(args), work_root=args.work_dir)


def cmd_worker(args: argparse.Namespace) -> int:
    """Claim and run jobs until stopped (SIGTERM/SIGINT), or until idle with --exit-when-idle."""
    repo = _repo(args)
    stop = threading.Event()
    done = [0]
    lock = threading.Lock()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def loop() -> None:
        worker = _make_worker(repo, args)
        idle = 0.0
        while not stop.is_set():
            ran = worker.poll(args.ns)
            if ran is not None:
                idle = 0.0
                with lock:
                    done[0] += 1
                    if args.max_jobs and done[0] >= args.max_jobs:
                        stop.set()
                if args.verbose:
                    _out({"ran": ran})
                continue
            if args.exit_when_idle:
                return
            idle = min(1.0, idle * 2 or args.poll_ms / 1000)
            stop.wait(idle)

    threads = [threading.Thread(target=loop, name=f"gatos-worker-{i}") for i in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)
    _out({"jobs_run": done[0]})
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    node = Node.open(_repo(args))
    service = local_service(node, node.default_actor)
    report = service.reproduce(parse_job_id(args.job_id), runners_for(node), _limits(args))
    _out(report)
    return 0 if report["identical"] else 1


def health_report() -> dict[str, Any]:
    report: dict[str, Any] = {"subprocess": subprocess_health()}
    try:
        from compute._wasm import wasm_health
    except ImportError as exc:
        report["wasm"] = {"available": False, "why": str(exc)}
    else:
        report["wasm"] = wasm_health()
    report["not_enforced"] = sorted(f"subprocess.{k}" for k, v in report["subprocess"].items() if not v)
    return report


def cmd_health(args: argparse.Namespace) -> int:
    _out(health_report())
    return 0


def cmd_blob_put(args: argparse.Namespace) -> int:
    store = blob_store(Node.open(_repo(args)))
    data = sys.stdin.buffer.read() if args.file == "-" else open(args.file, "rb").read()  # noqa: SIM115
    name = store.put(data)
    _out({"kind": "blobptr", "algo": "blake3", "hash": name, "size": len(data)})
    return 0


def cmd_blob_get(args: argparse.Namespace) -> int:
    data = blob_store(Node.open(_repo(args))).get(args.hash)
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return 0


def _limit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cpu", type=int, default=60, help="CPU seconds per run (rlimit)")
    p.add_argument("--memory-mb", type=int, default=512, help="address space per run (rlimit)")
    p.add_argument("--processes", type=int, default=64, help="processes of the job's user (rlimit)")
    p.add_argument("--output-bytes", type=int, default=1024 * 1024, help="cap per output stream")


def add_parsers(sub: Any) -> None:
    jobs = sub.add_parser("jobs", help="the job plane").add_subparsers(dest="jobs_cmd", required=True)
    p = jobs.add_parser("enqueue", help="create a job (JSON with its id on stdout)")
    p.add_argument("--ns", required=True)
    p.add_argument("--file", help="job.yaml or job.json")
    p.add_argument("--command", dest="command_json", help='JSON list, e.g. ["/bin/echo"]')
    p.add_argument("--args", dest="args_json", help='JSON list, e.g. ["hello"]')
    p.add_argument("--env", dest="env_json", help='JSON object of strings')
    p.add_argument("--input", action="append", help="a blob pointer (JSON), repeatable")
    p.add_argument("--timeout", type=int, help="seconds")
    p.add_argument("--ulid", help="makes an otherwise identical job a new one")
    p.add_argument("--actor")
    p.add_argument("--no-daemon", action="store_true", default=argparse.SUPPRESS)
    p.set_defaults(func=cmd_enqueue)
    for name, func, text in (("status", cmd_status, "lifecycle folded from events, checked against refs"),
                             ("result", cmd_result, "the result: status, verified PoE, outputs"),
                             ("cancel", cmd_cancel, "abort a job that has no result yet")):
        p = jobs.add_parser(name, help=text)
        p.add_argument("job_id")
        p.add_argument("--no-daemon", action="store_true", default=argparse.SUPPRESS)
        if name == "cancel":
            p.add_argument("--reason")
            p.add_argument("--actor")
        p.set_defaults(func=func)

    p = sub.add_parser("worker", help="claim and run jobs")
    p.add_argument("--ns")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--runtime", choices=("subprocess", "wasm"))
    p.add_argument("--actor")
    p.add_argument("--lease-ms", type=int, default=30_000)
    p.add_argument("--claim-remote", metavar="REMOTE",
                   help="decide claims at this hub by leased push (default: git config gatos.claimRemote)")
    p.add_argument("--max-attempts", type=int, default=1, help="runs per claim before the job fails")
    p.add_argument("--backoff-ms", type=int, default=500)
    p.add_argument("--poll-ms", type=int, default=50)
    p.add_argument("--max-jobs", type=int, help="stop after this many jobs")
    p.add_argument("--exit-when-idle", action="store_true", help="stop when nothing is claimable")
    p.add_argument("--work-dir", help="where workspaces are made (default: the system temp dir)")
    p.add_argument("--verbose", action="store_true")
    _limit_args(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("reproduce", help="run a finished job again and compare its outputs")
    p.add_argument("job_id")
    _limit_args(p)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("health", help="which sandbox protections are enforced on this host")
    p.set_defaults(func=cmd_health)

    blob = sub.add_parser("blob", help="the blob store").add_subparsers(dest="blob_cmd", required=True)
    p = blob.add_parser("put", help="store a file (or - for stdin); prints its blob pointer")
    p.add_argument("file")
    p.set_defaults(func=cmd_blob_put)
    p = blob.add_parser("get", help="print a blob's bytes (integrity checked)")
    p.add_argument("hash")
    p.set_defaults(func=cmd_blob_get)


__all__ = ["add_parsers", "health_report", "status_of"]
