"""bench/bench_bus.py installs the peers' Python clients itself when they are missing."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import bench_bus


def test_missing_clients_are_pip_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find = importlib.util.find_spec
    calls: list[list[str]] = []
    # nats missing, redis present, whatever this machine's venv really has
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "nats" else object() if name == "redis"
                        else real_find(name, *a))

    def run(cmd: list[str], **kw: Any) -> Any:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "tool 1.0\n", "")

    monkeypatch.setattr(bench_bus.subprocess, "run", run)
    monkeypatch.setattr(bench_bus.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr("importlib.metadata.version", lambda pkg: "9.9")
    versions = bench_bus.ensure_peers(install=True)
    assert calls[0] == [sys.executable, "-m", "pip", "install", "-q", "nats-py"]
    assert versions["nats-py"] == "9.9" and versions["nats-server"] == "tool 1.0"


def test_no_install_refuses_and_missing_servers_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(SystemExit, match="nats-py"):
        bench_bus.ensure_peers(install=False)
    monkeypatch.undo()
    monkeypatch.setattr(bench_bus.shutil, "which", lambda name: None)
    if importlib.util.find_spec("nats") and importlib.util.find_spec("redis"):
        with pytest.raises(SystemExit, match="nats-server, redis-server"):
            bench_bus.ensure_peers(install=False)
