"""Errors of the Git adapter. They are the core's errors (so callers handle one family);
this module only translates foreign exceptions at the boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pygit2

from ledger_core.errors import LedgerError, StorageError


class NotARepository(LedgerError):
    """The path is not inside a Git repository."""

    code = "NOT_A_REPOSITORY"


@contextmanager
def map_git_errors(what: str) -> Iterator[None]:
    """Turn `pygit2.GitError` and `OSError` into `StorageError`, naming the operation."""
    try:
        yield
    except LedgerError:
        raise
    except pygit2.GitError as exc:
        raise StorageError(f"{what}: git error: {exc}") from exc
    except OSError as exc:
        raise StorageError(f"{what}: {exc.strerror or exc}") from exc
