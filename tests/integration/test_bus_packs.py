"""The bus writer's packs, as Git reads them: objects stored uncompressed below
`store_below`, the `.pack` written under its final name, a leftover `.pack` replaced."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ledger_core import GitObject
from ledger_git import open_repository
from ledger_git._pack import build_pack, pack_entries, write_pack_entries
from tests.integration.conftest import git


def test_stored_and_deflated_objects_read_back_with_git(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path / "r")], check=True)
    repo = open_repository(str(tmp_path / "r"))
    repo.objects.pack_threshold = 1
    repo.objects.store_below = 1024
    small = GitObject("blob", b"small " * 10)
    big = GitObject("blob", b"big " * 2000)  # deflated: above store_below
    huge = GitObject("blob", os.urandom(70_000))  # more than one stored block if stored
    repo.objects.write_many([small, big, huge])
    for obj in (small, big, huge):
        assert git(tmp_path / "r", "cat-file", "-t", obj.oid).strip() == "blob"
        assert repo.objects.read(obj.oid).data == obj.data
    repo.objects.pack_threshold = 64
    loose = GitObject("blob", b"loose and stored")
    repo.objects.write_many([loose])
    assert git(tmp_path / "r", "cat-file", "-p", loose.oid) == "loose and stored"
    git(tmp_path / "r", "fsck", "--strict")
    import zlib

    from ledger_git._deflate import stored
    for n in (0, 1, 65535, 65536, 140_000):
        data = os.urandom(n)
        assert zlib.decompress(stored(data)) == data


def test_a_leftover_pack_without_index_is_replaced(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path / "r")], check=True)
    objects_dir = tmp_path / "r" / ".git" / "objects"
    objs = [GitObject("blob", f"m{i}".encode()) for i in range(3)]
    _pack, _idx, name = build_pack(objs)
    (objects_dir / "pack").mkdir(exist_ok=True)
    leftover = objects_dir / "pack" / f"pack-{name}.pack"
    leftover.write_bytes(b"PACK truncated by a crash")
    assert write_pack_entries(str(objects_dir), pack_entries(objs)) == name
    git(tmp_path / "r", "verify-pack", str(objects_dir / "pack" / f"pack-{name}.idx"))
    for obj in objs:
        assert git(tmp_path / "r", "cat-file", "-p", obj.oid) == obj.data.decode()
    assert not [p for p in os.listdir(objects_dir / "pack") if p.startswith("tmp_")]
