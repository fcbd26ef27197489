import { randomBytes } from "node:crypto";
import { blake3 } from "./blake3.js";
import { checkValue, encodeCanonical } from "./cbor.js";
import { InvalidEventError, InvalidNameError } from "./errors.js";
import type { JsonValue } from "./json.js";
import type { SigningKey } from "./keys.js";

/** The policy root of a node before any policy bundle exists. */
export const ZERO_OID = "0".repeat(40);

/** An event envelope (SPEC §5). `sig` travels beside it, never inside the signed bytes. */
export interface Envelope {
  type: string;
  ulid: string;
  actor: string;
  payload: JsonValue;
  policy_root: string;
  caps?: string[];
  sig_alg?: string;
  ts?: string;
}

/** What a caller gives to build an envelope: anything missing is completed. */
export type EventInput = Partial<Envelope> & { type: string; payload: JsonValue };

/** An envelope with its canonical bytes, Event-CID and signature. */
export interface SignedEvent {
  envelope: Envelope;
  canonical: Uint8Array;
  cid: string;
  /** `ed25519:<128 hex>`. */
  signature: string;
}

const ACTOR = /^(user|agent|service):[A-Za-z0-9._-]{1,64}$/;
const NAME = /^[A-Za-z0-9._-]{1,64}$/;

/** A bare name is `user:<name>` (SPEC §2). */
export const normalizeActor = (actor: string): string => (NAME.test(actor) ? `user:${actor}` : actor);

/** The map whose canonical bytes are signed: required fields plus the optional ones set. */
export function envelopeValue(e: Envelope): { [key: string]: JsonValue } {
  for (const field of ["type", "ulid", "actor", "policy_root"] as const) {
    if (typeof e[field] !== "string" || !e[field]) throw new InvalidEventError(`the envelope needs \`${field}\``);
  }
  if (!ACTOR.test(e.actor)) throw new InvalidNameError(`actor ${e.actor} is not kind:name (user, agent or service)`);
  checkValue(e.payload, "payload");
  const value: { [key: string]: JsonValue } = {
    type: e.type, ulid: e.ulid, actor: e.actor, payload: e.payload, policy_root: e.policy_root,
  };
  if (e.caps !== undefined) value.caps = [...e.caps];
  if (e.sig_alg !== undefined) value.sig_alg = e.sig_alg;
  if (e.ts !== undefined) value.ts = e.ts;
  return value;
}

/** Canonical DAG-CBOR bytes of the unsigned envelope. */
export const canonicalBytes = (e: Envelope): Uint8Array => encodeCanonical(envelopeValue(e));

const CID_PREFIX = Uint8Array.of(0x01, 0x71, 0x1e, 0x20);
const BASE32 = "abcdefghijklmnopqrstuvwxyz234567";

function base32(data: Uint8Array): string {
  let out = "";
  let acc = 0;
  let bits = 0;
  for (const byte of data) {
    acc = ((acc << 8) | byte) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += BASE32[(acc >> bits) & 31];
    }
  }
  if (bits > 0) out += BASE32[(acc << (5 - bits)) & 31];
  return out;
}

/** The Event-CID of canonical bytes: CIDv1, dag-cbor, BLAKE3-256, base32 lowercase ("b…"). */
export function eventCid(canonical: Uint8Array): string {
  const cid = new Uint8Array(36);
  cid.set(CID_PREFIX);
  cid.set(blake3(canonical), 4);
  return `b${base32(cid)}`;
}

/** Encode and sign an envelope. */
export function signEnvelope(envelope: Envelope, key: SigningKey): SignedEvent {
  const canonical = canonicalBytes(envelope);
  return { envelope, canonical, cid: eventCid(canonical), signature: `ed25519:${Buffer.from(key.sign(canonical)).toString("hex")}` };
}

/**
 * Complete an event for client signing: `actor` from the key, a fresh ULID, `ts`
 * from the ULID's time, the zero policy root.
 */
export function completeEvent(input: EventInput, key?: SigningKey): Envelope {
  const actor = normalizeActor(input.actor ?? key?.actor ?? "");
  const ulid = input.ulid ?? newUlid();
  const out: Envelope = {
    type: input.type, ulid, actor, payload: input.payload, policy_root: input.policy_root ?? ZERO_OID,
    ts: input.ts ?? new Date(ulidTime(ulid)).toISOString(),
  };
  if (input.caps !== undefined) out.caps = [...input.caps];
  if (input.sig_alg !== undefined) out.sig_alg = input.sig_alg;
  return out;
}

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
let lastMs = -1;
let lastRandom = 0n;

/** A fresh ULID, monotonic within this process. */
export function newUlid(): string {
  let ms = Date.now();
  if (ms <= lastMs) {
    ms = lastMs;
    lastRandom = (lastRandom + 1n) & ((1n << 80n) - 1n);
  } else {
    lastMs = ms;
    lastRandom = BigInt(`0x${randomBytes(10).toString("hex")}`);
  }
  let n = (BigInt(ms) << 80n) | lastRandom;
  let out = "";
  for (let i = 0; i < 26; i++) {
    out = CROCKFORD[Number(n & 31n)] + out;
    n >>= 5n;
  }
  return out;
}

/** The millisecond time a ULID holds. */
export function ulidTime(ulid: string): number {
  let ms = 0;
  for (const c of ulid.slice(0, 10).toUpperCase()) ms = ms * 32 + CROCKFORD.indexOf(c);
  return ms;
}
