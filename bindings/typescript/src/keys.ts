import { createPrivateKey, createPublicKey, sign, verify, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { BadSignatureError } from "./errors.js";

// PKCS#8 DER of an ed25519 private key is this fixed prefix followed by the 32-byte seed.
const PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");
const SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

/**
 * An ed25519 private key that signs events locally (Node's built-in crypto), so the
 * private key never travels to the daemon. Its public key must be trusted for its
 * actor on the node (`gatos key new`, or the trust graph).
 */
export class SigningKey {
  /** The actor the key belongs to (`user:alice`), when known. */
  readonly actor: string | undefined;
  /** `ed25519:<64 hex>`. */
  readonly publicKey: string;
  readonly #key: KeyObject;

  private constructor(key: KeyObject, actor: string | undefined) {
    this.#key = key;
    this.actor = actor;
    const spki = createPublicKey(key).export({ format: "der", type: "spki" });
    this.publicKey = `ed25519:${spki.subarray(spki.length - 32).toString("hex")}`;
  }

  /** A key from its 32-byte seed (bytes or 64 hex digits). */
  static fromSeed(seed: Uint8Array | string, actor?: string): SigningKey {
    const raw = typeof seed === "string" ? Buffer.from(seed, "hex") : Buffer.from(seed);
    if (raw.length !== 32 || (typeof seed === "string" && !/^[0-9a-fA-F]{64}$/.test(seed))) {
      throw new BadSignatureError("an ed25519 seed is 32 bytes (64 hex digits)");
    }
    const key = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, raw]), format: "der", type: "pkcs8" });
    return new SigningKey(key, actor);
  }

  /** A node key file (`.git/gatos/keys/<kind>/<name>.key`: JSON `{actor, public_key, seed}`). */
  static fromFile(path: string): SigningKey {
    const doc = JSON.parse(readFileSync(path, "utf8")) as { actor?: string; public_key?: string; seed?: string };
    const key = SigningKey.fromSeed(doc.seed ?? "", doc.actor);
    if (doc.public_key && doc.public_key !== key.publicKey) {
      throw new BadSignatureError(`${path}: public_key does not match the seed`);
    }
    return key;
  }

  /** The raw 64-byte signature of `message`. */
  sign(message: Uint8Array): Uint8Array {
    return new Uint8Array(sign(null, message, this.#key));
  }

  toString(): string {
    return `SigningKey(${this.actor ?? "?"}, ${this.publicKey})`;
  }
}

/** Whether `signature` (`ed25519:<hex>`) signs `message` under `publicKey` (`ed25519:<hex>`). */
export function verifySignature(publicKey: string, message: Uint8Array, signature: string): boolean {
  const pub = /^ed25519:([0-9a-f]{64})$/.exec(publicKey);
  const sig = /^ed25519:([0-9a-f]{128})$/.exec(signature);
  if (!pub || !sig) return false;
  const key = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, Buffer.from(pub[1]!, "hex")]), format: "der", type: "spki" });
  return verify(null, message, key, Buffer.from(sig[1]!, "hex"));
}
