import { BadEncodingError } from "./errors.js";
import type { JsonValue } from "./json.js";

// Canonical DAG-CBOR (SPEC §3): definite lengths, shortest integer forms, map keys
// sorted by their encoded bytes (shorter first), no floats, no tags. The data model
// is JSON without floats: null, booleans, integers in [-2^64, 2^64-1] (`number`
// when safe, else `bigint`), UTF-8 text, arrays and string-keyed plain objects.

const MAX_DEPTH = 64;
const MIN_INT = -(2n ** 64n);
const MAX_INT = 2n ** 64n - 1n;
const utf8 = new TextEncoder();
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Check that `value` is in the canonical data model; throw `BadEncodingError`
 * naming the first value outside it (a float, an unsafe `number`, an integer out of
 * range, a lone surrogate, a non-plain object, nesting deeper than 64).
 */
export function checkValue(value: unknown, path = "$", depth = 0): asserts value is JsonValue {
  if (depth > MAX_DEPTH) throw new BadEncodingError(`${path}: nested deeper than ${MAX_DEPTH} levels`);
  if (value === null || typeof value === "boolean") return;
  if (typeof value === "string") return checkText(value, path);
  if (typeof value === "number") {
    if (!Number.isInteger(value)) {
      throw new BadEncodingError(`${path}: floats are not allowed in signed data (${value}); use integers or Q32.32 fixed point`);
    }
    if (!Number.isSafeInteger(value)) {
      throw new BadEncodingError(`${path}: ${value} is beyond Number.MAX_SAFE_INTEGER; pass it as a bigint`);
    }
    return;
  }
  if (typeof value === "bigint") {
    if (value < MIN_INT || value > MAX_INT) {
      throw new BadEncodingError(`${path}: integer ${value} is outside the 64-bit range of DAG-CBOR`);
    }
    return;
  }
  if (Array.isArray(value)) {
    value.forEach((item, i) => checkValue(item, `${path}[${i}]`, depth + 1));
    return;
  }
  if (typeof value === "object") {
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) {
      throw new BadEncodingError(`${path}: ${proto?.constructor?.name ?? "this"} objects cannot be encoded; use plain objects`);
    }
    for (const [key, item] of Object.entries(value)) {
      checkText(key, path);
      if (item === undefined) throw new BadEncodingError(`${path}.${key}: undefined cannot be encoded`);
      checkValue(item, `${path}.${key}`, depth + 1);
    }
    return;
  }
  throw new BadEncodingError(`${path}: ${typeof value} values cannot be encoded`);
}

function checkText(text: string, path: string): void {
  if (LONE_SURROGATE.test(text)) throw new BadEncodingError(`${path}: text holds a lone surrogate, which is not Unicode`);
}

class Writer {
  private buf = new Uint8Array(256);
  length = 0;

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
  }

  bytes(data: Uint8Array): void {
    this.reserve(data.length);
    this.buf.set(data, this.length);
    this.length += data.length;
  }

  head(major: number, n: bigint): void {
    const m = major << 5;
    if (n < 24n) this.bytes(Uint8Array.of(m | Number(n)));
    else if (n < 0x100n) this.bytes(Uint8Array.of(m | 24, Number(n)));
    else if (n < 0x10000n) this.bytes(Uint8Array.of(m | 25, Number(n >> 8n), Number(n & 0xffn)));
    else if (n < 0x100000000n) {
      const b = new Uint8Array(5);
      b[0] = m | 26;
      new DataView(b.buffer).setUint32(1, Number(n));
      this.bytes(b);
    } else {
      const b = new Uint8Array(9);
      b[0] = m | 27;
      new DataView(b.buffer).setBigUint64(1, n);
      this.bytes(b);
    }
  }

  result(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return a.length - b.length;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

function encodeInto(w: Writer, v: JsonValue): void {
  if (v === null) return w.bytes(Uint8Array.of(0xf6));
  if (v === true) return w.bytes(Uint8Array.of(0xf5));
  if (v === false) return w.bytes(Uint8Array.of(0xf4));
  if (typeof v === "number" || typeof v === "bigint") {
    const n = BigInt(v);
    return n >= 0n ? w.head(0, n) : w.head(1, -1n - n);
  }
  if (typeof v === "string") {
    const data = utf8.encode(v);
    w.head(3, BigInt(data.length));
    return w.bytes(data);
  }
  if (Array.isArray(v)) {
    w.head(4, BigInt(v.length));
    for (const item of v) encodeInto(w, item);
    return;
  }
  const entries = Object.entries(v).map(([k, item]) => [utf8.encode(k), item] as const);
  entries.sort((a, b) => compareBytes(a[0], b[0]));
  w.head(5, BigInt(entries.length));
  for (const [key, item] of entries) {
    w.head(3, BigInt(key.length));
    w.bytes(key);
    encodeInto(w, item);
  }
}

/** Canonical DAG-CBOR bytes of `value` (checked first: see `checkValue`). */
export function encodeCanonical(value: unknown): Uint8Array {
  checkValue(value);
  const w = new Writer();
  encodeInto(w, value);
  return w.result();
}
