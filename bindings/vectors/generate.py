"""Generate the SDK conformance vectors from the Python core (`ledger_core`).

    .venv/bin/python bindings/vectors/generate.py          # rewrite events.json
    .venv/bin/python bindings/vectors/generate.py --check  # exit 1 if it would change

Each vector is an event envelope as JSON, its canonical DAG-CBOR bytes (hex), its
Event-CID and its ed25519 signature by the fixed test key of `test_key.json`. Every
SDK encodes and signs the envelopes itself and must get the same bytes;
`tests/unit/test_binding_vectors.py` keeps this file equal to what the core produces.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ledger_core import Event, SigningKey, sign_event

HERE = Path(__file__).resolve().parent
EVENTS = HERE / "events.json"
TEST_KEY = HERE / "test_key.json"

# A fixed, public test key: bytes 0..31. Never use it for anything but these vectors.
SEED = bytes(range(32))
ZERO = "0" * 40
ULID = "01J9ZQ4V8M6W3X2Y1Z0A9B8C7D"

_INTEGERS = [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**53 + 1,
             2**63 - 1, 2**63, 2**64 - 1, -1, -24, -25, -256, -257, -(2**31), -(2**53) - 1,
             -(2**63), -(2**63) - 1, -(2**64)]


def _envelope(type: str, payload: Any, **extra: Any) -> dict[str, Any]:
    # Keys deliberately not in canonical order: the SDKs must sort them.
    return {"type": type, "payload": payload, "ulid": extra.pop("ulid", ULID),
            "actor": extra.pop("actor", "user:alice"),
            "policy_root": extra.pop("policy_root", ZERO), **extra}


def cases() -> list[tuple[str, dict[str, Any]]]:
    """(name, envelope) of every vector, in file order."""
    return [
        ("minimal", _envelope("note.created", {"text": "hello"})),
        ("empty-map-payload", _envelope("empty.map", {})),
        ("empty-list-payload", _envelope("empty.list", [])),
        ("empty-string-payload", _envelope("empty.string", "")),
        ("null-payload", _envelope("empty.null", None)),
        ("scalar-payloads", _envelope("scalars", [True, False, None, 0, "", "x"])),
        ("all-optional-fields", _envelope(
            "invoice.paid", {"invoice": 1}, caps=["finance.write", "finance:append"],
            sig_alg="ed25519", ts="2026-11-22T04:35:00Z")),
        ("empty-caps", _envelope("caps.none", {"a": 1}, caps=[])),
        ("ts-milliseconds", _envelope("clock.ms", {"n": 1}, ts="2026-01-02T03:04:05.678Z")),
        ("ts-nanoseconds", _envelope("clock.ns", {"n": 2}, ts="2026-01-02T03:04:05.123456789Z")),
        ("sha256-policy-root", _envelope("policy.sha256", {"n": 3}, policy_root="ab" * 32)),
        ("agent-actor", _envelope("agent.tick", {"n": 4}, actor="agent:bot-1.v2")),
        ("service-actor", _envelope("svc.tick", {"n": 5}, actor="service:ingest_x")),
        ("unicode-text", _envelope("unicode.text", {
            "latin": "héllo wörld", "cjk": "日本語のテキスト", "emoji": "🐈‍⬛ gatos 🚀",
            "rtl": "שלום", "combining": "e\u0301", "nul": "a\u0000b",
            "controls": "tab\there\nnewline\r\u001f", "quote": "\"\\/", "bom": "\ufeffx",
            "astral": "\U0001d11e", "max": "\U0010ffff"})),
        ("unicode-keys-sorting", _envelope("unicode.keys", {
            "z": 1, "é": 2, "aa": 3, "b": 4, "日本": 5, "ab": 6, "a": 7, "": 8, "🐈": 9,
            "A": 10, "Z": 11, "~": 12})),
        ("key-length-sorting", _envelope("keys.length", {
            "k" * 24: 1, "k" * 23: 2, "k" * 25: 3, "kkk": 4, "l": 5, "kk": 6, "k" * 256: 7})),
        ("integers", _envelope("ints", _INTEGERS)),
        ("integer-map", _envelope("ints.map", {
            "max_u64": 2**64 - 1, "min_i64": -(2**63), "min_cbor": -(2**64),
            "safe_js": 2**53 - 1, "unsafe_js": 2**53 + 1, "neg_one": -1})),
        ("nested", _envelope("nested.deep", {
            "a": {"b": {"c": {"d": {"e": [1, [2, [3, [4, {"f": []}]]]]}}}},
            "list_of_maps": [{"x": 1, "y": [{}]}, {"x": 2, "y": [[]]}],
            "empty": {"map": {}, "list": [], "string": ""}})),
        ("long-string", _envelope("long.text", {"s": "gatos " * 50, "t": "x" * 23,
                                                "u": "y" * 24, "v": "ü" * 200})),
        ("long-list", _envelope("long.list", list(range(30)))),
        ("big-map", _envelope("big.map", {f"key{i:02d}": i for i in range(25)})),
        ("list-300-bytes", _envelope("long.ints", [i % 256 for i in range(300)])),
        # Over 1 KiB of canonical bytes: several BLAKE3 chunks, so the CID exercises the tree.
        ("multi-chunk", _envelope("large.payload", {"blob": "abcdefgh" * 700, "tail": "é" * 1500})),
    ]


def build() -> list[dict[str, Any]]:
    """The vectors, computed by the core."""
    key = SigningKey(SEED)
    vectors = []
    for name, envelope in cases():
        event = Event.from_value(envelope)
        signed = sign_event(event, key)
        vectors.append({"name": name, "envelope": envelope, "canonical_hex": signed.canonical.hex(),
                        "cid": signed.cid, "public_key": key.public_key,
                        "signature": signed.signature_text})
    return vectors


def render(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def test_key() -> dict[str, str]:
    return {"seed": SEED.hex(), "public_key": SigningKey(SEED).public_key,
            "note": "fixed public test key of the SDK vectors; never trust it on a real node"}


def main(argv: list[str]) -> int:
    files = {EVENTS: render(build()), TEST_KEY: render(test_key())}
    if "--check" in argv:
        stale = [p.name for p, text in files.items()
                 if not p.exists() or p.read_text(encoding="utf-8") != text]
        if stale:
            print(f"stale: {', '.join(stale)}; run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    print(f"wrote {len(build())} vectors to {EVENTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
