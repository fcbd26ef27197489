"""The Git adapter of the ledger ports (pygit2 + Git's own lock-file protocol for refs)."""

from __future__ import annotations

from ledger_git._keystore import FileKeyStore, KeyExists
from ledger_git._objects import PACK_THRESHOLD, GitObjectStore
from ledger_git._pack import build_pack, write_pack
from ledger_git._refs import FileRefStore
from ledger_git._repo import GitRepository, init_repository, open_repository
from ledger_git.errors import NotARepository, map_git_errors

__all__ = [
    "PACK_THRESHOLD",
    "FileKeyStore",
    "FileRefStore",
    "GitObjectStore",
    "GitRepository",
    "KeyExists",
    "NotARepository",
    "build_pack",
    "init_repository",
    "map_git_errors",
    "open_repository",
    "write_pack",
]
