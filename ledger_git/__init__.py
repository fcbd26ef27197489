"""The Git adapter of the ledger ports (pygit2 + Git's own lock-file protocol for refs)."""

from __future__ import annotations

from ledger_git._keystore import FileKeyStore, KeyExists
from ledger_git._maintenance import PackMaintainer
from ledger_git._objects import PACK_THRESHOLD, GitObjectStore
from ledger_git._pack import PackEntry, assemble_pack, build_pack, pack_entries, write_pack
from ledger_git._refs import FileRefStore
from ledger_git._repo import GitRepository, init_repository, open_repository
from ledger_git._spares import SpareFiles
from ledger_git.errors import NotARepository, map_git_errors

__all__ = [
    "PACK_THRESHOLD",
    "FileKeyStore",
    "FileRefStore",
    "GitObjectStore",
    "GitRepository",
    "KeyExists",
    "NotARepository",
    "PackEntry",
    "PackMaintainer",
    "SpareFiles",
    "assemble_pack",
    "build_pack",
    "init_repository",
    "map_git_errors",
    "open_repository",
    "pack_entries",
    "write_pack",
]
