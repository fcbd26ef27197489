import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  BadEncodingError, SigningKey, blake3, canonicalBytes, encodeCanonical, eventCid, newUlid, parseJson,
  signEnvelope, stringifyJson, ulidTime, verifySignature, type Envelope, type JsonValue,
} from "../src/index.js";

// dist/test/ → bindings/vectors
const VECTORS = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "vectors");

interface Vector {
  name: string;
  envelope: Envelope;
  canonical_hex: string;
  cid: string;
  public_key: string;
  signature: string;
}

const vectors = parseJson(readFileSync(join(VECTORS, "events.json"), "utf8")) as unknown as Vector[];
const testKey = JSON.parse(readFileSync(join(VECTORS, "test_key.json"), "utf8")) as { seed: string; public_key: string };
const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

test("the test key's public key", () => {
  assert.equal(SigningKey.fromSeed(testKey.seed).publicKey, testKey.public_key);
  assert.ok(vectors.length >= 20);
});

for (const v of vectors) {
  test(`vector ${v.name}: canonical bytes, Event-CID and signature byte for byte`, () => {
    const key = SigningKey.fromSeed(testKey.seed);
    assert.equal(hex(encodeCanonical(v.envelope as unknown as JsonValue)), v.canonical_hex);
    assert.equal(hex(canonicalBytes(v.envelope)), v.canonical_hex);
    const signed = signEnvelope(v.envelope, key);
    assert.equal(signed.cid, v.cid);
    assert.equal(key.publicKey, v.public_key);
    assert.equal(signed.signature, v.signature);
    assert.ok(verifySignature(v.public_key, signed.canonical, v.signature));
    assert.equal(eventCid(Buffer.from(v.canonical_hex, "hex")), v.cid);
  });
}

test("BLAKE3 reference values (SPEC §3) and chunk/tree boundaries", () => {
  assert.equal(hex(blake3(new Uint8Array())), "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
  assert.equal(hex(blake3(Buffer.from("hello"))), "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f");
  const cases: [number, string][] = [
    [1023, "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11"],
    [1025, "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444"],
    [3072, "b98cb0ff3623be03326b373de6b9095218513e64f1ee2edd2525c7ad1e5cffd2"],
    [16385, "1dabe216be2578830263b049de1639f39f05a4da616b9b78c7a5e4e41662fd1f"],
  ];
  for (const [n, want] of cases) {
    const data = Uint8Array.from({ length: n }, (_, i) => i % 251);
    assert.equal(hex(blake3(data)), want, `${n} bytes`);
  }
});

test("values outside the canonical model are refused with BadEncodingError", () => {
  for (const bad of [1.5, 2 ** 60, 2n ** 64n, -(2n ** 64n) - 1n, "\ud800", new Date(), [undefined], { a: () => 1 }]) {
    assert.throws(() => encodeCanonical(bad), BadEncodingError, String(bad));
  }
  let deep: unknown = 1;
  for (let i = 0; i < 70; i++) deep = [deep];
  assert.throws(() => encodeCanonical(deep), BadEncodingError);
});

test("JSON keeps every digit of 64-bit integers both ways", () => {
  const text = '{"a":18446744073709551615,"b":-18446744073709551616,"c":9007199254740991,"d":[1.5,"\\u00e9"]}';
  const value = parseJson(text) as { [k: string]: JsonValue };
  assert.equal(value.a, 18446744073709551615n);
  assert.equal(value.c, 9007199254740991);
  assert.equal(stringifyJson(value), text.replace("\\u00e9", "é"));
});

test("ULIDs are monotonic and carry their time", () => {
  let prev = "";
  for (let i = 0; i < 1000; i++) {
    const u = newUlid();
    assert.ok(u.length === 26 && u > prev, `${u} after ${prev}`);
    prev = u;
  }
  assert.ok(Math.abs(ulidTime(prev) - Date.now()) < 5000);
});
