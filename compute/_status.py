"""`gatos jobs status`: the lifecycle folded from a job's events, checked against its refs.

The events (`job.pending`, `job.claimed`, `job.running`, `job.retry`, `job.succeeded`,
`job.failed`, `job.aborted`) tell the story; the refs are the authority on how it ended
(a result exists or not). The fold is pure: events in journal order in, a dict out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

TERMINAL = ("succeeded", "failed", "aborted")
_STATES = {"job.pending": "pending", "job.claimed": "claimed", "job.running": "running",
           "job.retry": "running", "job.succeeded": "succeeded", "job.failed": "failed",
           "job.aborted": "aborted"}


def fold_lifecycle(job_id: str, events: Iterable[tuple[str, dict[str, Any], str]]) -> dict[str, Any]:
    """Fold `(type, payload, ts)` events (oldest first) of any jobs into the status of `job_id`."""
    status: dict[str, Any] = {"job_id": job_id, "state": "unknown", "attempts": 0, "runs": 0,
                              "history": []}
    for kind, payload, ts in events:
        if kind not in _STATES or not isinstance(payload, dict) or payload.get("job_id") != job_id:
            continue
        state = _STATES[kind]
        if status["state"] in TERMINAL and state not in TERMINAL:
            continue  # a late event of a worker that lost its lease changes nothing
        if kind == "job.claimed":
            status["attempts"] = max(status["attempts"], int(payload.get("attempt", 1)))
            status["worker"] = payload.get("worker")
        if kind == "job.running":
            status["runs"] += 1
        if state in TERMINAL:
            for key in ("result", "poe", "reason", "exit_code", "detail"):
                if key in payload:
                    status[key] = payload[key]
        status["state"] = state
        status["history"].append({"state": kind[4:], "ts": ts,
                                  **({"attempt": payload["attempt"]} if "attempt" in payload else {})})
    return status


def reconcile(status: dict[str, Any], refs: dict[str, Any]) -> dict[str, Any]:
    """Let the refs correct the fold: a result decides the end; a claim alone means claimed."""
    out = dict(status)
    out["refs"] = refs
    result_status = refs.get("result_status")
    if result_status:
        out["state"] = result_status
    elif out["state"] in ("unknown", *TERMINAL) and refs.get("job"):
        out["state"] = "claimed" if refs.get("claim") else "pending"
    return out


__all__ = ["TERMINAL", "fold_lifecycle", "reconcile"]
