"""The native bus builder (`gatos_native.messages`, `gatos_native.assemble`) gives exactly
what the Python path gives: the same commit ids, pack entries, packs and indexes, and
the same refs on two real repositories fed the same publishes, one through each path.
Skipped where the module is not built, unless `GATOS_REQUIRE_NATIVE=1`."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatosd._bus_native import NativeMessageBuilder, native_builder, native_envelope
from ledger_core import GitObject, PackedObjects, SigningKey, encode_ulid, sign_event
from ledger_core.errors import LedgerError
from ledger_core.memory import MemoryObjectStore
from ledger_git import open_repository
from ledger_git._native import native_module
from ledger_git._pack import assemble_pack, assemble_pack_py, pack_entries
from mind_bus import BusLog, MessageSpec, PublishRequest, TopicConfig, build_messages, presign
from tests.integration.conftest import git

pytestmark = [pytest.mark.integration, pytest.mark.skipif(
    native_module() is None and os.environ.get("GATOS_REQUIRE_NATIVE") != "1",
    reason="gatos_native is not built here (scripts/setup.sh builds it with cargo)")]

KEYS = {"user:a": SigningKey(b"\x01" * 32), "agent:b": SigningKey(b"\x02" * 32)}


def _builder(store_below: int = 1024) -> NativeMessageBuilder:
    builder = native_builder(KEYS.__getitem__, store_below)
    assert builder is not None, "gatos_native is missing: run scripts/setup.sh with cargo on PATH"
    return builder


def _specs(rng: random.Random, count: int, *, sizes: tuple[int, int] = (1, 600)) -> list[MessageSpec]:
    """Messages over three shards of two topics, chained within the batch, some signed
    ahead and some left to the builder, some shards with a parent from before."""
    specs: list[MessageSpec] = []
    last: dict[tuple[str, int], int] = {}
    for i in range(count):
        actor = rng.choice(sorted(KEYS))
        topic, shard = rng.choice(("jobs", "a/b-c.d")), rng.randrange(3)
        canonical = rng.randbytes(rng.randint(*sizes))
        ahead = rng.random() < 0.5
        chain = last.get((topic, shard), -1)
        parent = None if chain >= 0 or rng.random() < 0.3 else rng.randbytes(20).hex()
        specs.append((canonical, KEYS[actor].sign(canonical) if ahead else b"",
                      None if ahead else KEYS[actor].seed, "b" + rng.randbytes(29).hex()[:58], actor,
                      encode_ulid(1_700_000_000_000 + i, rng.randbytes(10)), 1_700_000_000 + i, topic, shard,
                      i + 1, i // 4, 1 + i // 4, rng.randrange(1 << 40), rng.randrange(1, 9), parent, chain,
                      "blake3:" + rng.randbytes(32).hex()))
        last[(topic, shard)] = i
    return specs


@pytest.mark.parametrize("seed", range(6))
def test_messages_match_the_python_builder_and_pack_entries(seed: int) -> None:
    specs = _specs(random.Random(seed), 1 + seed * 7)
    oids, objects = build_messages(specs)
    built = _builder().build(specs)
    assert built is not None
    native_oids, packed = built
    assert native_oids == oids
    assert isinstance(packed, PackedObjects)
    assert packed.entries == [tuple(e) for e in pack_entries(objects, store_below=1024)]
    assert list(packed) == [GitObject(o.kind, o.data) for o in objects]  # entries decode back
    assert assemble_pack(packed.entries) == assemble_pack_py(packed.entries)


def test_an_object_to_deflate_leaves_the_batch_to_python() -> None:
    rng = random.Random(7)
    assert _builder().build(_specs(rng, 3, sizes=(1024, 1024))) is None  # the envelope
    assert _builder(store_below=500).build(_specs(rng, 3, sizes=(10, 20))) is None  # the commit text
    assert _builder().build([]) == ([], PackedObjects([]))


def test_assemble_matches_python_for_deflated_and_many_entries() -> None:
    rng = random.Random(3)
    objects = [GitObject("blob", rng.randbytes(rng.randint(0, 3000))) for _ in range(700)]
    entries = pack_entries(objects, store_below=100)  # most deflated, some stored
    assert assemble_pack(entries) == assemble_pack_py(entries)
    assert assemble_pack([]) == assemble_pack_py([])


def test_bad_specs_are_refused_by_name() -> None:
    module = native_module()
    good = _specs(random.Random(1), 2)
    prefix = (b"100644 event.cbor\0", b"100644 event.sig\0", "gmb.msg")
    bad_sig = [(*good[0][:1], b"\x00" * 63, *good[0][2:])]
    with pytest.raises(ValueError, match="signature is 64 bytes"):
        module.messages(bad_sig, prefix, 1024)
    bad_seed = [(good[0][0], b"", b"\x01" * 31, *good[0][3:])]
    with pytest.raises(ValueError, match="seed is 32 bytes"):
        module.messages(bad_seed, prefix, 1024)
    forward = [(*good[0][:15], 5, good[0][16])]
    with pytest.raises(ValueError, match="later item"):
        module.messages(forward, prefix, 1024)
    with pytest.raises(ValueError, match="20 bytes"):
        module.assemble([(b"\x00" * 19, 0, b"x")])


def test_packed_objects_go_through_the_memory_store() -> None:
    store = MemoryObjectStore()
    _oids, packed = _builder().build(_specs(random.Random(2), 5))  # type: ignore[misc]
    store.write_many(packed)
    for obj in packed:
        assert store.read(obj.oid) == obj
    assert PackedObjects.concat([packed, packed]).entries == packed.entries  # each object once


def _log(path: Path, builder: NativeMessageBuilder | None) -> BusLog:
    repo = open_repository(str(path))
    repo.objects.pack_threshold = 1
    repo.objects.store_below = 1024
    root = "ab" * 20
    return BusLog(repo.objects, repo.refs, sign=lambda ev: sign_event(ev, KEYS[ev.actor]), clock=time.time,
                  sleep=time.sleep, config_for=lambda _t: TopicConfig(shards=3, segment_max_messages=5),
                  policy_root=lambda: root, exclusive=lambda _t: contextlib.nullcontext(),
                  sign_bytes=lambda actor, data: KEYS[actor].sign(data), builder=builder)


def test_two_repositories_fed_alike_through_each_path_hold_the_same_refs(tmp_path: Path) -> None:
    paths = [tmp_path / "py", tmp_path / "native"]
    for path in paths:
        subprocess.run(["git", "init", "-q", str(path)], check=True)
    builder = _builder()
    native_batches = []
    build = builder.build
    builder.build = lambda specs: native_batches.append(build(specs)) or native_batches[-1]  # type: ignore[method-assign]
    logs = [_log(paths[0], None), _log(paths[1], builder)]
    rng = random.Random(11)
    now = int(time.time() * 1000)
    answers: list[list[object]] = [[], []]
    for batch in range(12):
        requests = []
        for i in range(rng.randint(1, 9)):
            actor = rng.choice(sorted(KEYS))
            ulid = encode_ulid(now + batch * 10 + i, rng.randbytes(10))
            payload = {"n": i, "pad": "x" * rng.choice((3, 200, 2000))}  # 2000: deflated, Python builds
            key = rng.choice((None, None, "k1", "k2"))
            pre = presign(KEYS.__getitem__, 1 << 20, "t", payload, key=key, headers={"h": "v"}, ulid=ulid,
                          publisher=actor, policy_root="ab" * 20, sign=rng.random() < 0.5)
            requests.append(PublishRequest("t", payload, ulid, actor, key=key, headers={"h": "v"},
                                           presigned=pre))
        if requests and batch % 3 == 0:
            requests.append(requests[0])  # a repeat inside the batch: a duplicate
        for log, out in zip(logs, answers, strict=True):
            planned = log.plan_many(requests)
            log.apply(planned)
            out.extend(r.to_dict() for r in planned.results)  # type: ignore[union-attr]
    assert answers[0] == answers[1]
    assert any(b is not None for b in native_batches) and any(b is None for b in native_batches)
    assert any(a["duplicate"] for a in answers[0])  # type: ignore[index]
    refs = [git(p, "for-each-ref", "--format=%(refname) %(objectname)") for p in paths]
    assert refs[0] == refs[1] and refs[0].count("refs/gatos/mbus/t/") == 3
    for path in paths:
        git(path, "fsck", "--strict")
    assert [m.payload for m in logs[1].read("t", 0)] == [m.payload for m in logs[0].read("t", 0)]


def _deep(levels: int) -> list[object]:
    value: list[object] = [0]
    for _ in range(levels):
        value = [value]
    return value


# Values the native encoder takes (the plain data model) and values it must leave to
# Python (floats, subclasses, integers beyond 64 bits, lone surrogates, deep nesting).
_plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.text() | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=30), inner, max_size=4),
    max_leaves=12)
_odd = (st.floats(allow_nan=False) | st.integers(2**64, 2**70) | st.integers(-(2**70), -(2**64) - 1)
        | st.just("a\ud800b") | st.just({"k": 1.5}) | st.just({1: "int key"}) | st.just(True.__class__)
        | st.just(_deep(70)))


def _presigned(payload: object, key: str | None, headers: dict[str, str] | None,
               envelope: object) -> object:
    try:
        pre = presign(KEYS.__getitem__, 1 << 20, "a/b", payload, key=key, headers=headers,
                      ulid="01J00000000000000000000001", publisher="user:a", policy_root="ab" * 20,
                      envelope=envelope)  # type: ignore[arg-type]
    except LedgerError as exc:  # InvalidMessage, TooLarge
        return (type(exc), str(exc))
    return (pre.digest, pre.canonical, pre.signature, pre.cid, pre.policy_root)


@given(payload=_plain | _odd | st.lists(_odd, max_size=2), key=st.none() | st.text(min_size=1, max_size=40),
       headers=st.none() | st.dictionaries(st.text(max_size=30), st.text(max_size=30), max_size=3))
@settings(max_examples=400, deadline=None)
def test_native_envelope_gives_the_python_bytes_or_leaves_it_to_python(
        payload: object, key: str | None, headers: dict[str, str] | None) -> None:
    """Same digest, envelope, CID and signature, or the same error, with and without it."""
    envelope = native_envelope()
    assert envelope is not None
    assert _presigned(payload, key, headers, envelope) == _presigned(payload, key, headers, None)


def test_native_envelope_answers_none_for_what_it_does_not_encode() -> None:
    envelope = native_envelope()
    assert envelope is not None
    args = ("gmb.message", None, None, "a/b", "01J00000000000000000000001", "user:a", "ab" * 20,
            "2026-01-01T00:00:00.000Z")

    class Text(str):
        pass

    for odd in (1.5, 2**64, -(2**64) - 1, "\ud800", Text("x"), {1: 2}, {"k": {1, 2}}, object(),
                _deep(66)):
        assert envelope(args[0], odd, *args[1:]) is None, odd
    assert envelope(args[0], 2**64 - 1, *args[1:]) is not None
    assert envelope(args[0], -(2**64), *args[1:]) is None  # in range, beyond i64: left to Python too
