"""Fixtures for integration tests: real repositories, the real CLI, plain git."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def git(repo: Path, *args: str, check: bool = True) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True)
    if check and result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout.decode("utf-8", errors="replace")


def git_bytes(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True).stdout


def gatos(repo: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([str(BIN / "gatos"), "--repo", str(repo), *args],
                          capture_output=True, text=True, env=env, input=input)


def snapshot(repo: Path) -> tuple[str, frozenset[str]]:
    """Every ref with its value and every object id: what 'nothing changed' compares."""
    refs = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    objects = git(repo, "cat-file", "--batch-all-objects", "--batch-check=%(objectname)")
    return refs, frozenset(objects.split())


@pytest.fixture
def node(tmp_path: Path) -> Path:
    """A fresh node owned by user:alice, made by the CLI."""
    repo = tmp_path / "node"
    result = gatos(repo, "init", "--actor", "user:alice")
    assert result.returncode == 0, result.stderr
    return repo
