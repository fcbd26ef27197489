/**
 * Client of gatosd, the GATOS node daemon, for Node.js: the JSONL protocol of
 * docs/protocol.md over a unix socket or loopback TCP, events signed locally with
 * ed25519 over canonical DAG-CBOR (byte for byte as the Python core), bus
 * subscriptions as async iterables, and error frames as typed errors.
 */
export * from "./errors.js";
export { blake3 } from "./blake3.js";
export { checkValue, encodeCanonical } from "./cbor.js";
export {
  ZERO_OID, canonicalBytes, completeEvent, envelopeValue, eventCid, newUlid, normalizeActor, signEnvelope, ulidTime,
  type Envelope, type EventInput, type SignedEvent,
} from "./event.js";
export { parseJson, stringifyJson, type JsonValue } from "./json.js";
export { SigningKey, verifySignature } from "./keys.js";
export {
  Bus, Client, Jobs, ReplyStream, Subscription,
  type AppendResult, type ConnectOptions, type Enqueued, type Frame, type Hello, type JobResult, type JournalEntry,
  type Manifest, type Message, type PublishResult, type RequestOptions, type SubscribeOptions,
} from "./client.js";
