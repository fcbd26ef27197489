"""A throw-away GATOS node with a running `gatosd` and job worker, for the SDK suites.

    python bindings/testnode.py

makes a node in a fresh temporary folder (owner `user:alice`; `user:bob` holds a key
and a `*:append` grant; `user:mallory` holds a trusted key and no grant), starts
`gatosd` on a unix socket and on loopback TCP with a token, and a `gatos worker` for
the namespace `work`, then prints ONE JSON line on stdout:

    {"repo", "socket", "tcp", "token", "owner", "job_ns",
     "signer": {"actor", "seed", "public_key", "key_file"}, "denied": {…same…}}

It keeps everything running until its stdin ends (the test closed it, or died) or it
gets SIGTERM/SIGINT, then stops the worker and the daemon and removes the folder.
Any test in any language can therefore start it as a child, read one line, and close
its stdin when done. It runs with the interpreter it was started by, and finds
`gatos`/`gatosd` next to that interpreter (the project's .venv).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
READY_TIMEOUT = 30.0
OWNER, SIGNER, DENIED, JOB_NS = "user:alice", "user:bob", "user:mallory", "work"


def _env() -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.setdefault("GIT_AUTHOR_NAME", "gatos-sdk-test")
    env.setdefault("GIT_AUTHOR_EMAIL", "sdk-test@gatos.invalid")
    env.setdefault("GIT_COMMITTER_NAME", env["GIT_AUTHOR_NAME"])
    env.setdefault("GIT_COMMITTER_EMAIL", env["GIT_AUTHOR_EMAIL"])
    return env


def gatos(repo: Path, *args: str) -> str:
    result = subprocess.run([str(BIN / "gatos"), "--repo", str(repo), "--no-daemon", *args],
                            capture_output=True, text=True, env=_env())
    if result.returncode != 0:
        raise SystemExit(f"testnode: gatos {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def key_info(repo: Path, actor: str) -> dict[str, Any]:
    kind, name = actor.split(":", 1)
    path = repo / ".git" / "gatos" / "keys" / kind / f"{name}.key"
    doc = json.loads(path.read_text(encoding="utf-8"))
    return {"actor": actor, "seed": doc["seed"], "public_key": doc["public_key"], "key_file": str(path)}


def make_node(repo: Path) -> None:
    gatos(repo, "init", "--actor", OWNER)
    gatos(repo, "key", "new", "--actor", SIGNER)
    gatos(repo, "grant", "--to", SIGNER, "--caps", "*:append")
    gatos(repo, "key", "new", "--actor", DENIED)


def wait_ready(proc: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{") and '"ready"' in line:
                return dict(json.loads(line))
        if proc.poll() is not None:
            raise SystemExit(f"testnode: gatosd exited {proc.returncode}: {log.read_text()}")
        time.sleep(0.02)
    proc.kill()
    raise SystemExit(f"testnode: gatosd not ready after {READY_TIMEOUT}s: {log.read_text()}")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def main() -> int:
    # Unix socket paths are limited to 107 bytes: keep the folder short.
    folder = Path(tempfile.mkdtemp(prefix="gsdk-", dir="/tmp"))
    daemon = worker = None
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    try:
        repo = folder / "node"
        make_node(repo)
        token = secrets.token_hex(16)
        (folder / "token").write_text(token + "\n", encoding="utf-8")
        log = folder / "gatosd.log"
        with open(log, "wb") as err:
            daemon = subprocess.Popen(
                [str(BIN / "gatosd"), "--repo", str(repo), "--socket", str(folder / "s"),
                 "--listen", "127.0.0.1:0", "--token-file", str(folder / "token")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=_env())
        ready = wait_ready(daemon, log)
        with open(folder / "worker.log", "wb") as out:
            worker = subprocess.Popen(
                [str(BIN / "gatos"), "--repo", str(repo), "--no-daemon", "worker", "--ns", JOB_NS,
                 "--poll-ms", "100"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=_env())
        info = {"repo": str(repo), "socket": ready["socket"], "tcp": ready["listen"], "token": token,
                "owner": OWNER, "job_ns": JOB_NS, "signer": key_info(repo, SIGNER),
                "denied": key_info(repo, DENIED), "log": str(log)}
        print(json.dumps(info), flush=True)
        threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
        while not done.wait(0.5):
            if daemon.poll() is not None:
                print(f"testnode: gatosd exited {daemon.returncode}", file=sys.stderr)
                return 1
        return 0
    finally:
        stop(worker)
        stop(daemon)
        with contextlib.suppress(OSError):
            shutil.rmtree(folder)


if __name__ == "__main__":
    sys.exit(main())
