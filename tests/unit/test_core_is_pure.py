"""The ledger core stays sans-I/O: its modules import no I/O, clock, randomness or adapter."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ledger_core

FORBIDDEN = frozenset({
    "pygit2", "os", "socket", "asyncio", "anyio", "subprocess", "time", "threading",
    "pathlib", "shutil", "tempfile", "random", "ledger_git", "gatosd",
})
CORE = Path(ledger_core.__file__).parent
MODULES = sorted(CORE.glob("*.py"))


def imported_roots(source: str) -> set[str]:
    """Top-level package names imported anywhere in `source` (including inside functions)."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == "__import__" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            roots.add(node.args[0].value.split(".")[0])
    return roots


def test_modules_found() -> None:
    """The scan sees every module of the core, including the contract suite."""
    names = {m.name for m in MODULES}
    assert {"__init__.py", "_journal.py", "_ports.py", "memory.py", "contract.py"} <= names


@pytest.mark.parametrize("module", MODULES, ids=[m.name for m in MODULES])
def test_core_module_is_pure(module: Path) -> None:
    """No core module imports pygit2, os, sockets, asyncio, clocks, randomness or adapters."""
    bad = imported_roots(module.read_text(encoding="utf-8")) & FORBIDDEN
    assert not bad, f"{module.name} imports {sorted(bad)}"


def test_scanner_catches_every_import_form() -> None:
    """The scanner sees plain, dotted, from-, nested and __import__ imports."""
    source = (
        "import os.path\nfrom time import monotonic\n"
        "def f():\n    import pygit2\n    return __import__('socket')\n"
        "from . import sibling\n"
    )
    assert imported_roots(source) == {"os", "time", "pygit2", "socket"}
