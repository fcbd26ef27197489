"""What both clients share apart from the protocol core: request bodies, local signing,
finding a repository's daemon and the command that spawns one on stdio.

Kept free of asyncio so the CLI (which uses the blocking client) starts fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pygit2

from gatosd._client_errors import DaemonNotRunning
from gatosd._clock import new_ulid
from ledger_core import (
    ZERO_OID,
    Event,
    SigningKey,
    format_timestamp_ms,
    normalize_actor,
    sign_event,
    ulid_ms,
    validate_ulid,
)

DEFAULT_TIMEOUT = 30.0
STATE_FILE = "gatosd.json"


def append_fields(ns: str, type: str, payload: Any, *, actor: str | None, ulid: str | None,
                  caps: Sequence[str] | None, ts: str | None, policy_root: str | None,
                  signing_key: SigningKey | None) -> dict[str, Any]:
    """The fields of an `append_event` request.

    Without `signing_key` the daemon signs with the key it holds for the actor (the
    node's default actor when `actor` is None). With it, the envelope is built and
    signed here, so the private key never leaves this process; `actor` is then required.

    Raises:
        ValueError: `signing_key` without `actor`.
        ledger_core.errors.LedgerError: an envelope field is invalid (checked locally).
    """
    if signing_key is None:
        body: dict[str, Any] = {"type": type, "payload": payload}
        optional = {"ulid": ulid, "ts": ts, "policy_root": policy_root,
                    "caps": list(caps) if caps is not None else None}
        body.update({k: v for k, v in optional.items() if v is not None})
        fields: dict[str, Any] = {"ns": ns, "event": body}
        if actor is not None:
            fields["actor"] = actor
        return fields
    if actor is None:
        raise ValueError("a client-signed event needs `actor` (whose key `signing_key` is)")
    ulid = validate_ulid(ulid) if ulid else new_ulid()
    event = Event.from_value({
        "type": type, "ulid": ulid, "actor": normalize_actor(actor), "payload": payload,
        "policy_root": policy_root or ZERO_OID,
        "ts": ts or format_timestamp_ms(ulid_ms(ulid)),
        **({"caps": list(caps)} if caps is not None else {}),
    })
    signed = sign_event(event, signing_key)
    return {"ns": ns, "event": event.to_value(), "sig": signed.signature_text}


def journal_read_fields(ns: str, actor: str, *, after: str | None, after_ulid: str | None,
                        until: str | None, limit: int | None, last: int | None) -> dict[str, Any]:
    optional = {"after": after, "after_ulid": after_ulid, "until": until, "limit": limit,
                "last": last}
    return {"ns": ns, "actor": actor, **{k: v for k, v in optional.items() if v is not None}}


@dataclass(frozen=True)
class DaemonState:
    """Where a repository's daemon said it listens (`.git/gatos/gatosd.json`)."""

    path: str
    pid: int | None
    socket: str | None
    listen: str | None
    raw: dict[str, Any]

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        if not self.listen:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


def state_file(repo: str) -> str:
    """Path of the daemon state file of the repository containing `repo`.

    Raises:
        DaemonNotRunning: `repo` is not inside a Git repository.
    """
    try:
        git_dir = pygit2.discover_repository(os.fspath(repo))
    except (pygit2.GitError, KeyError, OSError):
        git_dir = None
    if git_dir is None:
        raise DaemonNotRunning(f"{repo} is not inside a Git repository")
    return os.path.join(git_dir.rstrip("/"), "gatos", STATE_FILE)


def read_state(repo: str) -> DaemonState:
    """The daemon state of a repository.

    Raises:
        DaemonNotRunning: no state file (no daemon started, or it exited cleanly), or an
            unreadable one.
    """
    path = state_file(repo)
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except FileNotFoundError:
        raise DaemonNotRunning(f"no gatosd is running for this repository (no {path})") from None
    except (OSError, ValueError) as exc:
        raise DaemonNotRunning(f"cannot read {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise DaemonNotRunning(f"{path} does not hold a JSON object")
    pid, sock, listen = raw.get("pid"), raw.get("socket"), raw.get("listen")
    return DaemonState(path, pid if isinstance(pid, int) else None,
                       sock if isinstance(sock, str) else None,
                       listen if isinstance(listen, str) else None, raw)


def stdio_command(repo: str, extra: Sequence[str] = ()) -> list[str]:
    """`gatosd --stdio` for `repo`, run by this interpreter (so it is this package's daemon)."""
    return [sys.executable, "-m", "gatosd.daemon", "--stdio", "--repo", os.path.abspath(repo),
            *extra]


def stdio_env() -> dict[str, str]:
    """The environment of a spawned daemon: ours, with this package importable first."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    current = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + current if current else "")}


def not_running_reason(state: DaemonState, exc: OSError) -> DaemonNotRunning:
    where = state.socket or state.listen or "?"
    return DaemonNotRunning(f"the daemon of this repository does not answer at {where} "
                            f"(pid {state.pid or '?'}; {exc.strerror or exc}); it may have died")
