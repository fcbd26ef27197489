"""Opening a node's Git repository and wiring the Git adapters to it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pygit2

from ledger_git._keystore import FileKeyStore
from ledger_git._objects import GitObjectStore
from ledger_git._refs import FileRefStore
from ledger_git.errors import NotARepository, map_git_errors


@dataclass
class GitRepository:
    """A node's repository with its object store, ref store and key store."""

    repo: pygit2.Repository
    objects: GitObjectStore
    refs: FileRefStore
    keys: FileKeyStore

    @property
    def git_dir(self) -> str:
        return self.repo.path.rstrip("/")

    @property
    def gatos_dir(self) -> str:
        return os.path.join(self.git_dir, "gatos")

    def config_get(self, key: str) -> str | None:
        try:
            return str(self.repo.config[key])
        except KeyError:
            return None

    def config_set(self, key: str, value: str) -> None:
        with map_git_errors(f"setting git config {key}"):
            self.repo.config[key] = value


def _wire(repo: pygit2.Repository, durable: bool) -> GitRepository:
    if durable:
        pygit2.settings.enable_fsync_gitdir = True
    git_dir = repo.path.rstrip("/")
    return GitRepository(
        repo=repo,
        objects=GitObjectStore(repo, durable=durable),
        refs=FileRefStore(git_dir, durable=durable),
        keys=FileKeyStore(os.path.join(git_dir, "gatos", "keys")),
    )


def open_repository(path: str, *, durable: bool = False) -> GitRepository:
    """Open the repository containing `path` (a work tree, a .git folder or a bare repo)."""
    found = pygit2.discover_repository(path)
    if found is None:
        raise NotARepository(f"{path} is not inside a Git repository (run `gatos init` first)")
    with map_git_errors(f"opening {found}"):
        return _wire(pygit2.Repository(found), durable)


def init_repository(path: str, *, discover: bool = True,
                    bare: bool = False) -> tuple[GitRepository, bool]:
    """Open the repository at `path`, creating it (`git init`) when there is none.

    With `discover`, a repository enclosing `path` counts; without it (a path the
    user named explicitly), only a repository rooted at `path` does.
    Returns the repository and whether it was created.
    """
    found = pygit2.discover_repository(path) if os.path.exists(path) else None
    if found is not None and not discover:
        root = os.path.realpath(path)
        if os.path.realpath(found.rstrip("/")) not in (root, os.path.join(root, ".git")):
            found = None
    if found is not None:
        return _wire(pygit2.Repository(found), False), False
    with map_git_errors(f"git init {path}"):
        os.makedirs(path, exist_ok=True)
        return _wire(pygit2.init_repository(path, bare=bare), False), True
