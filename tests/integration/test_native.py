"""The native pack reader (`gatos_native`) gives exactly what the pure Python path gives.

Each case runs twice on one real repository, with `GATOS_NATIVE=0` (pure Python: the
pack reader of `echo_fold._packs` and the port) and with the module, and compares
fold states, windows and checkpoint commits, cache index commits and walked columns:
with loose objects in the middle of a journal, after `git gc --aggressive` (deltas),
and with a damaged pack object (an error on both paths, never a different answer).
Skipped where the module is not built, unless `GATOS_REQUIRE_NATIVE=1`.
"""

from __future__ import annotations

import os
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from echo_fold import Folder, _native, _packs, parse_spec
from echo_fold._source import EventReader
from echo_fold.errors import ProgramError
from gatosd._cache_wiring import cache_store
from gatosd.node import Node
from kv_cache import IndexSpec
from kv_cache._headers import walk_columns, walk_columns_native
from ledger_core import encode_ulid, format_timestamp_ms
from ledger_core.errors import LedgerError
from tests.integration.daemon_support import append_numbered, make_node

pytestmark = pytest.mark.integration

REQUIRED = os.environ.get("GATOS_REQUIRE_NATIVE") == "1"
needs_native = pytest.mark.skipif(
    _native._module is None and not REQUIRED,
    reason="gatos_native is not built here (scripts/setup.sh builds it with cargo)")

PROGRAM = b"""
function init() return {totals = {count = 0, cents = 0, dice = 0}, table = {}} end
function step(s, ev)
  local p = ev.payload
  s.totals.count = s.totals.count + 1
  s.totals.cents = s.totals.cents + (p.amount or 0)
  s.totals.dice = s.totals.dice + rng().below(6)
  s.table[p.id] = {amount = p.amount, tags = p.tags, actor = ev.actor, seq = ev.seq, ts = ev.ts,
                   commit = ev.commit, cid = ev.cid, policy = ev.policy_root, note = p.note,
                   caps = ev.caps, big = p.big}
end
"""
SPEC = b"fold_id: t\nversion: 1\nns: finance\nprogram: p.lua\nchannels: [totals, table]\n"
ACTORS = ("user:alice", "user:bob")
T0 = 1_700_000_000_000


def _payload(i: int) -> dict[str, Any]:
    out: dict[str, Any] = {"id": f"INV-{i % 7}", "amount": i * 3 - 40}
    if i % 3 == 0:
        out["tags"] = ["a", {"deep": [i, True, False], "": "é\u2603"}, "\x00\xff", []]
    if i % 5 == 0:
        out["note"] = None
    if i % 11 == 0:
        out["big"] = [2**63 - 1, -(2**63), 2**32, -1 - i, 23, 24, 255, 256, 65535, 65536]
    return out


def _append(node: Node, ns: str, start: int, count: int) -> None:
    append_numbered(node, ns, range(start, start + count), lambda i: dict(
        type="invoice.created", payload=_payload(i), actor=ACTORS[i % 2], ts=format_timestamp_ms(T0 + i),
        caps=["finance:append"] if i % 4 == 0 else None), t0=T0)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = make_node(tmp_path / "node", *ACTORS)
    node = Node.open(str(path))
    _append(node, "finance", 0, 150)      # one pack
    _append(node, "other", 1000, 40)      # another namespace in its own pack
    _append(node, "finance", 150, 5)      # loose objects (below the pack threshold)
    _append(node, "finance", 155, 120)    # another pack: the native walk stops at the loose ones
    return path


def _fold(path: Path, monkeypatch: pytest.MonkeyPatch, *, native: bool) -> tuple[Any, str]:
    monkeypatch.setenv("GATOS_NATIVE", "1" if native else "0")
    monkeypatch.setenv("GATOS_FOLD_PACKS", "1")
    node = Node.open(str(path))
    folder = Folder(node.repo.objects, node.repo.refs)
    with EventReader.open(node.repo.objects) as reader:
        assert (reader.native is not None) is native
    spec = parse_spec(SPEC, read_program=lambda _n: PROGRAM)
    computed = folder.compute(spec, folder.journals("finance"))
    _objects, oid, root = folder._build(spec, computed, None)
    return computed, oid + " " + root


def _cache(path: Path, monkeypatch: pytest.MonkeyPatch, *, native: bool) -> str | None:
    monkeypatch.setenv("GATOS_NATIVE", "1" if native else "0")
    store = cache_store(Node.open(str(path)))
    return store.update(IndexSpec("finance"), full=True).commit


def _agree(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (pure, pure_oid), (fast, fast_oid) = (_fold(path, monkeypatch, native=False),
                                          _fold(path, monkeypatch, native=True))
    assert fast.state == pure.state and fast.window == pure.window
    assert fast.policy_root == pure.policy_root and fast.new_events == pure.new_events
    assert fast_oid == pure_oid  # same checkpoint commit, same State-Root
    assert _cache(path, monkeypatch, native=True) == _cache(path, monkeypatch, native=False)


def test_required_native_module_is_built() -> None:
    """With GATOS_REQUIRE_NATIVE=1 (a machine that has cargo), the module must import and be used."""
    if not REQUIRED:
        pytest.skip("GATOS_REQUIRE_NATIVE is not set")
    assert _native._module is not None, "gatos_native is missing: run scripts/setup.sh with cargo on PATH"
    assert _native.available()


@needs_native
def test_fold_and_cache_agree_with_loose_objects(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loose commits in the middle of a journal: the native walk stops there, Python goes on."""
    _agree(repo, monkeypatch)
    pure, _ = _fold(repo, monkeypatch, native=False)
    assert pure.window.events == 275


@needs_native
def test_fold_and_cache_agree_after_aggressive_gc(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After `git gc --aggressive` objects are deltas in one pack: the same answers."""
    subprocess.run(["git", "-C", str(repo), "gc", "-q", "--aggressive", "--prune=now"], check=True)
    _agree(repo, monkeypatch)


@needs_native
def test_incremental_fold_agrees(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fold from a checkpoint (a walk with a stop commit) gives the full fold's answer."""
    for native in (False, True):
        monkeypatch.setenv("GATOS_NATIVE", "1" if native else "0")
        node = Node.open(str(repo))
        folder = Folder(node.repo.objects, node.repo.refs)
        spec = parse_spec(SPEC, read_program=lambda _n: PROGRAM)
        first = folder.fold(spec)
        _append(node, "finance", 400 + 100 * native, 30)
        again = folder.fold(spec)
        assert again.incremental and again.new_events == 30
        scratch = folder.fold(spec, incremental=False, write=False)
        assert scratch.state_root == again.state_root
        assert first.written is not native  # the second round starts from the first's checkpoint


@needs_native
def test_native_walk_columns_equal_pure(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole journals walked natively give the pure walker's columns, loose tail and all."""
    monkeypatch.setenv("GATOS_NATIVE", "1")
    node = Node.open(str(repo))
    store = cache_store(node)
    heads = [h for _, h in sorted(store.heads("finance").items())]
    native = _native.open_native(node.repo.objects)
    assert native is not None
    assert walk_columns_native(native, store.read_commit, heads) == [
        walk_columns(store.read_commit, head) for head in heads]


def _damage(pack_path: str, offset: int, body: bytes, old: bytes, new: bytes) -> None:
    """Rewrite one packed object's zlib stream in place with `old` replaced by `new`."""
    damaged = zlib.compress(body.replace(old, new, 1), 9)
    stored = Path(pack_path).read_bytes()
    at = offset + 1
    while stored[at - 1] & 0x80:
        at += 1
    original = zlib.decompressobj()
    original.decompress(stored[at:])
    room = len(stored) - at - len(original.unused_data)
    assert len(damaged) <= room
    os.chmod(pack_path, 0o644)
    Path(pack_path).write_bytes(stored[:at] + damaged + b"\0" * (room - len(damaged)) + stored[at + room:])


@needs_native
def test_a_damaged_commit_is_an_error_on_both_paths(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A packed commit whose bytes no longer hash to its id is never used, natively or not."""
    node = Node.open(str(repo))
    head = next(iter(dict(node.repo.refs.list("refs/gatos/journal/finance/")).values()))
    reader = _packs.PackReader(node.repo.objects.objects_dir)
    body = reader.commit(bytes.fromhex(head))
    found = reader._locate(bytes.fromhex(head))
    assert body is not None and found is not None
    reader.close()
    _damage(found[0].pack_path, found[1], body, b"invoice.created\n\n", b"invoice.createe\n\n")
    for native in (False, True):
        with pytest.raises(LedgerError, match=head):
            _fold(repo, monkeypatch, native=native)


@needs_native
def test_a_damaged_event_is_an_error_on_both_paths(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An event blob changed in the pack fails its Event-CID check on both paths."""
    node = Node.open(str(repo))
    head = next(iter(dict(node.repo.refs.list("refs/gatos/journal/finance/")).values()))
    commit = node.repo.objects.read_commit(head)
    blob_oid = next(e.oid for e in node.repo.objects.read_tree(commit.tree) if e.name == "event.cbor")
    reader = _packs.PackReader(node.repo.objects.objects_dir)
    key = bytes.fromhex(blob_oid)
    body, found = reader.blob(key), reader._locate(key)
    assert body is not None and found is not None
    reader.close()
    _damage(found[0].pack_path, found[1], body, b"INV-", b"INW-")
    for native in (False, True):
        with pytest.raises(LedgerError):
            _fold(repo, monkeypatch, native=native)


# Every value shape the native reader writes as Lua text, and those it must leave to
# Python (an array with a null, ints past 64 bits, nesting past its depth), with a
# program that records each payload's exact shape, `#` of every table included.
SHAPES_PROGRAM = b"""
local function ser(v, out)
  local t = type(v)
  if t == "table" then
    out[#out + 1] = "{"
    for k, x in pairs(v) do ser(k, out); out[#out + 1] = "="; ser(x, out); out[#out + 1] = "," end
    out[#out + 1] = "#" .. #v .. "}"
  elseif t == "string" then
    out[#out + 1] = "s"
    for i = 1, #v do out[#out + 1] = string.format("%02x", string.byte(v, i)) end
  else
    out[#out + 1] = tostring(v) .. ":" .. (math.type(v) or t)
  end
end
function init() return {rows = {}} end
function step(s, ev)
  local out = {}
  ser(ev.payload, out)
  s.rows[#s.rows + 1] = {ev.seq, ev.actor, ev.ts or "-", ev.cid, ev.commit, table.concat(out)}
end
"""
SHAPES_SPEC = b"fold_id: shapes\nversion: 1\nns: shapes\nprogram: p.lua\nchannels: [rows]\n"
MAIN_SPEC = b"fold_id: t\nversion: 1\nns: shapes\nprogram: p.lua\nchannels: [main]\n"


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = [i, value] if i % 2 else {"k": value}
    return value


SHAPES: list[Any] = [
    {"s": '"\\\n\r\t\x00\x1f\x7f]]--[[ "},os.exit(),{"', "u": "é\u2603\U0001f600", "empty": ""},
    {'a"b': 1, "": 2, "\n": 3, "]=": 4, "\\": [5]},
    {"bin": b"\x00\xff\"\\\n]]", "flags": [True, False], "none": None},
    {"edges": [2**63 - 1, -(2**63), 0, -1, 23, 24, 255, 256, 65535, 65536, 2**32]},
    {"wide": [*range(120), [list(range(55)) for _ in range(3)]]},
    {"deep": _nested(30)},
    {"empty": [], "map": {}},
    {"holes": [1, None, 3]},          # left to Python: a hole
    {"deeper": _nested(40)},          # left to Python: past the text depth
    [1, 2, 3],                        # a payload that is not a map
    "just text",
    None,
]


def _shapes_node(tmp_path: Path, payloads: list[Any], *, ts_every: int = 0) -> Path:
    """A node whose `shapes` namespace holds one event per payload, in one pack (alternating
    actors; a `ts` on events whose index is not a multiple of `ts_every`, when set)."""
    path = make_node(tmp_path / "node", *ACTORS)
    append_numbered(Node.open(str(path)), "shapes", range(len(payloads)), lambda i: dict(
        type="shape", payload=payloads[i], actor=ACTORS[i % 2],
        ts=format_timestamp_ms(T0 + i) if ts_every and i % ts_every else None), t0=T0)
    return path


def _fold_shapes(path: Path, monkeypatch: pytest.MonkeyPatch, *, native: bool,
                 spec: bytes = SHAPES_SPEC, program: bytes = SHAPES_PROGRAM) -> tuple[Folder, Any]:
    """A folder on a freshly opened node with or without the native reader, and the spec."""
    monkeypatch.setenv("GATOS_NATIVE", "1" if native else "0")
    reopened = Node.open(str(path))
    return (Folder(reopened.repo.objects, reopened.repo.refs),
            parse_spec(spec, read_program=lambda _n: program))


def _count_chunks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records how many events each Lua text chunk carried."""
    from echo_fold import _sandbox
    chunks: list[int] = []
    real = _sandbox.Sandbox.run_chunk

    def counting(self: Any, chunk: bytes, count: int, base: int, packed: str) -> None:
        chunks.append(count)
        real(self, chunk, count, base, packed)

    monkeypatch.setattr(_sandbox.Sandbox, "run_chunk", counting)
    return chunks


@needs_native
def test_lua_text_chunks_equal_python_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Events read natively as Lua text fold to the same state as converted Python objects,
    for quoting, escapes, integer edges, wide and deep tables, maps with nulls; the shapes
    the text cannot express exactly go through Python in the same fold."""
    # several batches, each shape many times, in a pack
    path = _shapes_node(tmp_path, [SHAPES[i % len(SHAPES)] for i in range(600)], ts_every=3)
    chunks = _count_chunks(monkeypatch)
    states = []
    for native in (False, True):
        folder, spec = _fold_shapes(path, monkeypatch, native=native)
        computed = folder.compute(spec, folder.journals("shapes"))
        states.append((computed.state, computed.window, folder._build(spec, computed, None)[1:]))
    assert states[0] == states[1]
    assert len(states[0][0]["rows"]) == 600
    assert 0 < sum(chunks) < 600  # most events went as text, the unusual ones through Python
    assert sum(chunks) >= 600 - 4 * (600 // len(SHAPES) + 1)


@needs_native
@pytest.mark.parametrize("wide", [2**63, -(2**63) - 1, 2**64 - 1, -(2**64)])
def test_an_integer_past_64_bits_fails_the_fold_on_both_paths(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wide: int) -> None:
    """Lua holds signed 64-bit integers: a wider one is a clear fold error naming the
    event, the same with and without the native reader, and no checkpoint is written."""
    path = _shapes_node(tmp_path, [{"n": [1, {"x": wide}]} if i == 25 else {"n": i} for i in range(40)])
    bad_ulid = encode_ulid(T0 + 25, (25).to_bytes(10, "big"))
    for native in (False, True):
        folder, spec = _fold_shapes(path, monkeypatch, native=native)
        with pytest.raises(ProgramError, match=rf"event 26 \(ulid {bad_ulid}.*{wide}.*64-bit"):
            folder.fold(spec)
        assert folder.refs.get("refs/gatos/state/shapes") is None


@needs_native
def test_a_program_error_names_the_same_event_with_the_reader_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the native reader the next batch is read on a second thread: an error in the
    program still names the event it failed on, and the thread is gone afterwards."""
    import threading
    path = _shapes_node(tmp_path, [{"n": i} for i in range(9000)])  # three batches
    program = b"function init() return {n = 0} end\n" \
              b"function step(s, ev) if ev.payload.n == 5000 then error('boom') end s.n = s.n + 1 end\n"
    before = threading.active_count()
    for native in (False, True):
        folder, spec = _fold_shapes(path, monkeypatch, native=native, program=program, spec=MAIN_SPEC)
        with pytest.raises(ProgramError, match=r"boom.* at event 5001 \(ulid "):
            folder.fold(spec)
        assert threading.active_count() == before


def _random_value(rnd: Any, depth: int) -> Any:
    """A random DAG-CBOR value of the shapes payloads take (no floats: folds refuse them)."""
    pick = rnd.randrange(10 if depth < 6 else 6)
    if pick == 0:
        return rnd.choice([0, 1, -1, 23, 24, -24, -25, 255, 256, 2**31, 2**63 - 1, -(2**63),
                           rnd.randrange(-(2**63), 2**63)])
    if pick == 1:
        alphabet = ['"', "\\", "\n", "\r", "\0", "\x7f", "]", "=", "[", "a", "é", "\u2603", "\U0001f600", " "]
        return "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(8)))
    if pick == 2:
        return bytes(rnd.randrange(256) for _ in range(rnd.randrange(6)))
    if pick == 3:
        return rnd.choice([True, False])
    if pick == 4:
        return None if rnd.randrange(4) == 0 else rnd.randrange(-5, 5)
    if pick == 5:
        return rnd.randrange(1000)
    if pick in (6, 7):
        return [_random_value(rnd, depth + 1) for _ in range(rnd.randrange(0, 70 if depth < 2 else 5))]
    keys = ["a", "b", "", '"', "\\n", "k" * 3, "é", "id"]
    return {rnd.choice(keys): _random_value(rnd, depth + 1) for _ in range(rnd.randrange(5))}


@needs_native
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_payloads_fold_the_same_natively(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """Seeded random payloads (strings of quotes, backslashes and control bytes, integer
    edges, bytes, nulls in maps and arrays, wide and nested tables): the native reader's
    Lua text and Python's conversion fold to the same state, `#` of every table included."""
    import random
    rnd = random.Random(seed)
    path = _shapes_node(tmp_path, [{"v": _random_value(rnd, 0), "w": _random_value(rnd, 1)}
                                   for _ in range(300)])
    chunks = _count_chunks(monkeypatch)
    states = []
    for native in (False, True):
        folder, spec = _fold_shapes(path, monkeypatch, native=native)
        computed = folder.compute(spec, folder.journals("shapes"))
        states.append((computed.state, computed.window))
    assert states[0] == states[1]
    assert sum(chunks) >= 100, chunks  # a good part of them went as Lua text


@needs_native
def test_large_payloads_are_split_into_bounded_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch whose text would pass 4 MiB goes as several chunks, folding as before."""
    path = _shapes_node(tmp_path, [{"blob": f"{i:06d}" + "\\x01" * 60_000} for i in range(120)])
    program = (b"function init() return {rows = {}} end\n"
               b"function step(s, ev) local b = ev.payload.blob\n"
               b"  s.rows[#s.rows + 1] = {#b, string.sub(b, 1, 8), ev.seq} end\n")
    chunks = _count_chunks(monkeypatch)
    states = []
    for native in (False, True):
        folder, spec = _fold_shapes(path, monkeypatch, native=native, program=program)
        states.append(folder.compute(spec, folder.journals("shapes")).state)
    assert states[0] == states[1]
    assert sum(chunks) == 120 and len(chunks) >= 2, chunks
