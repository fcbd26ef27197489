"""The fold's pack reader gives exactly what the object store port gives.

Folds run on a real repository twice: once reading every object through the port
(pygit2) and once through `echo_fold._packs` (forced on from the first event), and
must agree on state, `Inputs-Root`, policy root and event count — for packed and
loose events, after `git repack` turned objects into deltas, and with a second
namespace sharing the packs.
"""

from __future__ import annotations

import os
import random
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from echo_fold import Folder, _packs, parse_spec
from echo_fold._source import EventReader, NotAncestor, cid_matches
from gatosd.node import Node
from ledger_core import event_cid, format_timestamp_ms
from ledger_core.errors import LedgerError
from tests.integration.daemon_support import append_numbered, make_node

pytestmark = pytest.mark.integration

PROGRAM = b"""
function init() return {totals = {count = 0, cents = 0, dice = 0}, table = {}} end
function step(s, ev)
  local p = ev.payload
  s.totals.count = s.totals.count + 1
  s.totals.cents = s.totals.cents + (p.amount or 0)
  s.totals.dice = s.totals.dice + rng().below(6)
  s.table[p.id] = {amount = p.amount, tags = p.tags, actor = ev.actor, seq = ev.seq, ts = ev.ts,
                   commit = ev.commit, cid = ev.cid, policy = ev.policy_root, note = p.note}
end
"""
SPEC = b"fold_id: t\nversion: 1\nns: finance\nprogram: p.lua\nchannels: [totals, table]\n"
ACTORS = ("user:alice", "user:bob")
T0 = 1_700_000_000_000


def _payload(i: int) -> dict[str, Any]:
    out: dict[str, Any] = {"id": f"INV-{i % 7}", "amount": i * 3 - 40}
    if i % 3 == 0:
        out["tags"] = ["a", {"deep": [i, True, False]}, b"\x00\xff".decode("latin-1")]
    if i % 5 == 0:
        out["note"] = None
    return out


def _append(node: Node, ns: str, start: int, count: int) -> None:
    append_numbered(node, ns, range(start, start + count), lambda i: dict(
        type="invoice.created", payload=_payload(i), actor=ACTORS[i % 2],
        ts=format_timestamp_ms(T0 + i)), t0=T0)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = make_node(tmp_path / "node", *ACTORS)
    node = Node.open(str(path))
    _append(node, "finance", 0, 150)      # one pack
    _append(node, "other", 1000, 40)      # another namespace in its own pack
    _append(node, "finance", 150, 5)      # loose objects (below the pack threshold)
    _append(node, "finance", 155, 120)    # another pack, mixed with...
    _append(node, "other", 2000, 70)      # ...more of the other namespace
    return path


@pytest.fixture
def packs_always(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(EventReader, "PACKS_AFTER", 0)
    yield


def _fold(path: Path, *, packs: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    monkeypatch.setenv("GATOS_FOLD_PACKS", "1" if packs else "0")
    node = Node.open(str(path))
    folder = Folder(node.repo.objects, node.repo.refs)
    spec = parse_spec(SPEC, read_program=lambda _n: PROGRAM)
    computed = folder.compute(spec, folder.journals("finance"))
    used = EventReader.open(node.repo.objects).packs is not None
    assert used is packs
    return computed, folder


def _same(a: Any, b: Any) -> None:
    assert a.state == b.state
    assert a.window == b.window
    assert a.policy_root == b.policy_root and a.new_events == b.new_events


def test_packs_and_port_agree(repo: Path, packs_always: None, monkeypatch: pytest.MonkeyPatch) -> None:
    slow, _ = _fold(repo, packs=False, monkeypatch=monkeypatch)
    fast, _ = _fold(repo, packs=True, monkeypatch=monkeypatch)
    _same(slow, fast)
    assert fast.window.events == 275 and fast.state["totals"]["count"] == 275  # no "other" events


def test_packs_read_what_they_can_and_leave_the_rest_to_the_port(
        repo: Path, packs_always: None, monkeypatch: pytest.MonkeyPatch) -> None:
    node = Node.open(str(repo))
    heads = dict(node.repo.refs.list("refs/gatos/journal/finance/"))
    with EventReader.open(node.repo.objects) as reader:
        assert reader.packs is not None
        chains = [reader.walk(heads[ref], None, j) for j, ref in enumerate(sorted(heads))]
        blobs = [reader.blob(h) for chain in chains for h in chain]
        # the five loose events (commit, tree, blob each) went through the port
        assert reader.packs.misses == 15
    assert all(event_cid(b) == h.cid for b, h in zip(blobs, [h for c in chains for h in c], strict=True))


def test_walks_from_packs_and_port_agree(repo: Path, packs_always: None) -> None:
    node = Node.open(str(repo))
    heads = dict(node.repo.refs.list("refs/gatos/journal/finance/"))
    jobs = [(heads[ref], None) for ref in sorted(heads)]
    with EventReader.open(node.repo.objects) as reader:
        got = reader.walk_many(jobs)
    with EventReader(node.repo.objects) as port:
        assert got == port.walk_many(jobs)
    with EventReader.open(node.repo.objects) as reader:
        middle = got[1][40]
        assert reader.walk_many([(heads[sorted(heads)[1]], middle.commit)], first=1)[0] == got[1][41:]
        with pytest.raises(NotAncestor):
            reader.walk_many([(heads[sorted(heads)[0]], middle.commit)])


def test_after_git_repack_deltas_fall_back_to_the_port(
        repo: Path, packs_always: None, monkeypatch: pytest.MonkeyPatch) -> None:
    slow, _ = _fold(repo, packs=False, monkeypatch=monkeypatch)
    subprocess.run(["git", "-C", str(repo), "repack", "-a", "-d", "-f", "--window=50", "--depth=50"],
                   check=True, capture_output=True)
    fast, _ = _fold(repo, packs=True, monkeypatch=monkeypatch)
    _same(slow, fast)


def test_incremental_from_a_checkpoint_agrees(repo: Path, packs_always: None,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATOS_FOLD_PACKS", "1")
    node = Node.open(str(repo))
    folder = Folder(node.repo.objects, node.repo.refs)
    spec = parse_spec(SPEC, read_program=lambda _n: PROGRAM)
    first = folder.fold(spec)
    _append(node, "finance", 400, 90)
    again = folder.fold(spec)
    assert again.incremental and again.new_events == 90
    scratch = folder.compute(spec, folder.journals("finance"))
    assert scratch.window.inputs_root == folder.compute(spec, folder.journals("finance"),
                                                        folder.latest("finance")).window.inputs_root
    assert folder.fold(spec, write=False, incremental=False).state_root == again.state_root
    assert first.events == 275


def test_a_commit_that_does_not_hash_to_its_id_is_not_taken_from_the_packs(
        repo: Path, packs_always: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A damaged packed commit: the packs answer None and the port is asked, which refuses."""
    monkeypatch.setenv("GATOS_FOLD_PACKS", "1")
    node = Node.open(str(repo))
    head = next(iter(dict(node.repo.refs.list("refs/gatos/journal/finance/")).values()))
    key = bytes.fromhex(head)
    reader = _packs.PackReader(node.repo.objects.objects_dir)
    body = reader.commit(key)
    assert body is not None
    found = reader._locate(key)
    assert found is not None
    pack, offset = found
    reader.close()
    # Same length, one letter of the message changed, recompressed in place when it fits.
    damaged = zlib.compress(body.replace(b"invoice.created\n\n", b"invoice.createe\n\n", 1), 9)
    header_len = 2  # a commit of 128..2047 bytes has a two-byte pack entry header
    stored = Path(pack.pack_path).read_bytes()
    original = zlib.decompressobj()
    original.decompress(stored[offset + header_len:])
    room = len(stored) - offset - header_len - len(original.unused_data)
    assert len(damaged) <= room
    damaged = damaged + b"\0" * (room - len(damaged))
    os.chmod(pack.pack_path, 0o644)
    start = offset + header_len
    Path(pack.pack_path).write_bytes(stored[:start] + damaged + stored[start + room:])
    reader = _packs.PackReader(node.repo.objects.objects_dir)
    assert reader.read(key, 1) is not None and reader.commit(key) is None
    reader.close()
    with pytest.raises(LedgerError, match=head):
        _fold(repo, packs=True, monkeypatch=monkeypatch)


def test_cid_check_matches_event_cid_exactly() -> None:
    rng = random.Random(7)
    for _ in range(300):
        blob = os.urandom(rng.randrange(0, 300))
        cid = event_cid(blob)
        assert cid_matches(blob, cid)
        for bad in (cid.upper(), cid[:-1], cid + "a", "B" + cid[1:], cid.replace(cid[5], "0", 1),
                    cid[:10] + "_" + cid[11:], " " + cid[1:], cid[:-1] + "\u0661",
                    event_cid(blob + b"\0")):
            assert not cid_matches(blob, bad)
