"""The SDK vectors (bindings/vectors) are exactly what the Python core produces."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

from ledger_core import Event, SignedEvent, decode, event_cid

VECTORS = Path(__file__).resolve().parents[2] / "bindings" / "vectors"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gatos_binding_vectors", VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_vectors_equal_a_fresh_generation() -> None:
    """events.json and test_key.json are byte for byte what generate.py writes now."""
    gen = _generator()
    assert (VECTORS / "events.json").read_text(encoding="utf-8") == gen.render(gen.build())
    assert (VECTORS / "test_key.json").read_text(encoding="utf-8") == gen.render(gen.test_key())


def test_each_vector_decodes_hashes_and_verifies() -> None:
    """Every vector's bytes decode strictly to its envelope, hash to its CID, and verify."""
    vectors = json.loads((VECTORS / "events.json").read_text(encoding="utf-8"))
    names = [v["name"] for v in vectors]
    assert len(names) == len(set(names)) >= 20
    for vector in vectors:
        canonical = bytes.fromhex(vector["canonical_hex"])
        assert decode(canonical) == Event.from_value(vector["envelope"]).to_value(), vector["name"]
        assert event_cid(canonical) == vector["cid"]
        signed = SignedEvent.from_bytes(canonical, bytes.fromhex(vector["signature"].split(":")[1]))
        signed.verify(vector["public_key"])


def test_vectors_cover_the_issue_list() -> None:
    """Unicode, empty and nested payloads, big and negative integers, every optional field."""
    vectors = {v["name"]: v["envelope"] for v in json.loads((VECTORS / "events.json").read_text("utf-8"))}
    optional = {"caps", "sig_alg", "ts"}
    assert optional <= set(vectors["all-optional-fields"])
    ints = vectors["integers"]["payload"]
    assert 2**64 - 1 in ints and -(2**64) in ints and -(2**63) in ints
    wanted = {"unicode-text", "unicode-keys-sorting", "nested", "empty-map-payload", "null-payload"}
    assert wanted <= set(vectors)


def test_every_sdk_names_every_wire_code() -> None:
    """Each SDK declares a typed error for every code the daemon may send
    (`gatosd.errors.WIRE_CODES`), so a new code cannot reach one SDK only."""
    import pytest

    from gatosd.errors import WIRE_CODES

    root = VECTORS.parent
    for source in ("go/errors.go", "typescript/src/errors.ts", "rust/src/error.rs"):
        text = (root / source).read_text(encoding="utf-8")
        missing = [code for code in WIRE_CODES if f'"{code}"' not in text]
        if missing:
            pytest.fail(f"bindings/{source} has no error for {', '.join(missing)}")
