"""Private keys on disk: `.git/gatos/keys/<kind>/<name>.key`, mode 0600, never in Git.

The key file is JSON `{"actor", "public_key", "seed"}`; it is created with O_EXCL so
an existing key is never overwritten by accident.
"""

from __future__ import annotations

import json
import os

from ledger_core import PublicKeyText, SigningKey, actor_path, validate_actor
from ledger_core.errors import LedgerError, NotFound, StorageError


class KeyExists(LedgerError):
    code = "KEY_EXISTS"


class FileKeyStore:
    def __init__(self, directory: str) -> None:
        self.directory = directory

    def _path(self, actor: str) -> str:
        return os.path.join(self.directory, actor_path(actor) + ".key")

    def has(self, actor: str) -> bool:
        return os.path.exists(self._path(actor))

    def create(self, actor: str) -> SigningKey:
        """Make and store a new key for `actor`; `KeyExists` if one is there."""
        actor = validate_actor(actor)
        key = SigningKey(os.urandom(32))
        path = self._path(actor)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        os.chmod(self.directory, 0o700)
        doc = {"actor": actor, "public_key": key.public_key, "seed": key.seed.hex()}
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeyExists(f"a private key for {actor} already exists at {path}") from None
        except OSError as exc:
            raise StorageError(f"writing key for {actor}: {exc.strerror}") from exc
        with os.fdopen(fd, "w") as handle:
            json.dump(doc, handle)
            handle.write("\n")
        return key

    def load(self, actor: str) -> SigningKey:
        path = self._path(validate_actor(actor))
        try:
            with open(path, encoding="utf-8") as handle:
                doc = json.load(handle)
        except FileNotFoundError:
            raise NotFound(f"no private key for {actor} on this node (looked in {path})") from None
        except (OSError, ValueError) as exc:
            raise StorageError(f"reading key for {actor}: {exc}") from exc
        return SigningKey(bytes.fromhex(doc["seed"]))

    def actors(self) -> list[str]:
        found = []
        if not os.path.isdir(self.directory):
            return found
        for kind in sorted(os.listdir(self.directory)):
            folder = os.path.join(self.directory, kind)
            if not os.path.isdir(folder):
                continue
            for file in sorted(os.listdir(folder)):
                if file.endswith(".key"):
                    found.append(f"{kind}:{file[:-4]}")
        return found

    def public_key(self, actor: str) -> PublicKeyText:
        return self.load(actor).public_key
