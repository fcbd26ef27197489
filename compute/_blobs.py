"""The content-addressed blob store: `gatos/objects/blake3/<hex>` (SPEC §4).

Inputs of jobs, WebAssembly modules and large outputs live here, named by the BLAKE3
of their bytes. A blob is stored raw (`<hex>`) or zstd-compressed (`<hex>.zst`, chosen
by the writer when it saves space); either way the name is the hash of the
*uncompressed* bytes and every read hashes what it returns, so a flipped bit is an
error (`BlobCorrupt`), never silently wrong data. Writes go to a temporary file in the
same folder, are fsynced and renamed into place: a reader sees all of a blob or none.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from typing import Any

import blake3
import zstandard

from compute.errors import BlobCorrupt, BlobNotFound, InvalidJob

_HEX = re.compile(r"^[0-9a-f]{64}$")
ZSTD_SUFFIX = ".zst"
COMPRESS_AT = 4096  # bytes; smaller blobs are not worth a zstd frame


def blob_hash(data: bytes) -> str:
    """`blake3:<hex>` of `data`."""
    return "blake3:" + blake3.blake3(data).hexdigest()


def hex_of(hash_text: str) -> str:
    """`blake3:<hex>` (or bare hex) → hex, refusing anything else (it becomes a file name)."""
    hexpart = hash_text[7:] if hash_text.startswith("blake3:") else hash_text
    if not _HEX.match(hexpart):
        raise InvalidJob(f"{hash_text!r} is not a blake3:<64 lowercase hex> hash")
    return hexpart


def blob_pointer(hash_text: str, size: int) -> dict[str, Any]:
    """The pointer form a manifest or a result uses for a stored blob."""
    return {"kind": "blobptr", "algo": "blake3", "hash": "blake3:" + hex_of(hash_text), "size": size}


class BlobStore:
    """Blobs under `<root>/gatos/objects/blake3/`."""

    def __init__(self, root: str, *, compress: bool = True, level: int = 3) -> None:
        self.dir = os.path.join(root, "gatos", "objects", "blake3")
        self.compress = compress
        self.level = level

    def _path(self, hexpart: str) -> str:
        return os.path.join(self.dir, hexpart)

    def put(self, data: bytes) -> str:
        """Store `data` (idempotent) and return its `blake3:<hex>`."""
        name = blob_hash(data)
        hexpart = name[7:]
        if self.has(name):
            return name
        body, suffix = data, ""
        if self.compress and len(data) >= COMPRESS_AT:
            packed = zstandard.ZstdCompressor(level=self.level).compress(data)
            if len(packed) < len(data) * 9 // 10:
                body, suffix = packed, ZSTD_SUFFIX
        os.makedirs(self.dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o444)
            os.replace(tmp, self._path(hexpart) + suffix)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return name

    def put_file(self, path: str) -> str:
        with open(path, "rb") as handle:
            return self.put(handle.read())

    def has(self, hash_text: str) -> bool:
        hexpart = hex_of(hash_text)
        return os.path.exists(self._path(hexpart)) or os.path.exists(self._path(hexpart) + ZSTD_SUFFIX)

    def get(self, hash_text: str) -> bytes:
        """The blob's bytes, checked against its name.

        Raises:
            BlobNotFound: no such blob.
            BlobCorrupt: the stored bytes (or their zstd frame) do not give the hash.
        """
        hexpart = hex_of(hash_text)
        path = self._path(hexpart)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            try:
                with open(path + ZSTD_SUFFIX, "rb") as handle:
                    packed = handle.read()
            except FileNotFoundError:
                raise BlobNotFound(f"no blob blake3:{hexpart} in {self.dir}") from None
            try:
                data = zstandard.ZstdDecompressor().decompress(packed)
            except zstandard.ZstdError as exc:
                raise BlobCorrupt(f"blob blake3:{hexpart} is not a valid zstd frame: {exc}") from None
        if blake3.blake3(data).hexdigest() != hexpart:
            raise BlobCorrupt(f"blob blake3:{hexpart} is damaged: its bytes hash to "
                              f"{blob_hash(data)}")
        return data

    def __iter__(self) -> Iterator[str]:
        """Every stored hash (`blake3:<hex>`), sorted."""
        if not os.path.isdir(self.dir):
            return iter(())
        names = {n.removesuffix(ZSTD_SUFFIX) for n in os.listdir(self.dir)}
        return iter(sorted("blake3:" + n for n in names if _HEX.match(n)))

    def check(self) -> list[str]:
        """The hashes whose stored bytes are damaged (for `gatos doctor`)."""
        bad = []
        for name in self:
            try:
                self.get(name)
            except BlobCorrupt:
                bad.append(name)
        return bad


__all__ = ["COMPRESS_AT", "ZSTD_SUFFIX", "BlobStore", "blob_hash", "blob_pointer", "hex_of"]
