import { createConnection, type Socket } from "node:net";
import {
  BadReplyError, CidMismatchError, ConnectionClosedError, GatosError, RequestTimeoutError, errorFromWire,
} from "./errors.js";
import { checkValue } from "./cbor.js";
import { completeEvent, envelopeValue, signEnvelope, type Envelope, type EventInput, type SignedEvent } from "./event.js";
import { parseJson, stringifyJson, type JsonValue } from "./json.js";
import type { SigningKey } from "./keys.js";

/** One reply frame as the daemon sent it (integers beyond 2^53 are bigint). */
export type Frame = { [key: string]: JsonValue };

/** Where the daemon listens: a unix socket, or loopback TCP with its token. */
export interface ConnectOptions {
  /** Unix socket path (a node's default: `.git/gatos/gatosd.sock`). */
  socket?: string;
  /** Loopback TCP `host:port` of a daemon started with `--listen`. */
  address?: string;
  /** The bearer token of a TCP daemon; sent on the first frame (`hello`). */
  token?: string;
  /** Default time limit of a request that is not a stream, in ms (30,000; 0 = none). */
  timeoutMs?: number;
}

export interface RequestOptions {
  /** Time limit in ms for this request (overrides the client's; 0 = none). */
  timeoutMs?: number;
}

export interface Hello {
  server: string;
  version: string;
  protocol: number;
  node: { repo: string; actor: string | null };
  limits: { [name: string]: number };
  methods: string[];
}

export interface AppendResult {
  ns: string;
  ref: string;
  commit: string;
  event_cid: string;
  ulid: string;
  actor: string;
  /** The same ULID and body were appended before: nothing new was written. */
  duplicate: boolean;
}

export interface JournalEntry extends Envelope {
  commit: string;
  event_cid: string;
  sig: string;
}

interface Pending {
  frames: Frame[];
  error: GatosError | undefined;
  wake: (() => void) | undefined;
}

/**
 * A connection to gatosd. Requests are pipelined and matched to replies by id, so
 * any number may run at once; the daemon's keep-alive pings are answered here.
 * Error frames are thrown as the `GatosError` subclass of their code.
 */
export class Client {
  readonly bus: Bus;
  readonly jobs: Jobs;
  #hello!: Hello;
  readonly #socket: Socket;
  readonly #pending = new Map<string, Pending>();
  readonly #timeoutMs: number;
  #nextId = 0;
  #closed: GatosError | undefined;
  #closing: GatosError | undefined;
  #pongWaiters: (() => void)[] = [];
  #chunks: Buffer[] = [];
  readonly #ended: Promise<void>;

  private constructor(socket: Socket, timeoutMs: number) {
    this.#socket = socket;
    this.#timeoutMs = timeoutMs;
    this.bus = new Bus(this);
    this.jobs = new Jobs(this);
    socket.on("data", (data: Buffer) => this.#feed(data));
    this.#ended = new Promise((resolve) => {
      socket.on("close", () => {
        this.#end(this.#closing ?? new ConnectionClosedError("the daemon closed the connection"));
        resolve();
      });
    });
    socket.on("error", (err) => this.#end(new ConnectionClosedError(err.message)));
  }

  /** Connect and say hello; `client.hello` then holds the daemon's versions, limits and methods. */
  static async connect(options: ConnectOptions): Promise<Client> {
    let socket: Socket;
    if (options.socket && !options.address) {
      socket = createConnection({ path: options.socket });
    } else if (options.address && !options.socket) {
      const at = options.address.lastIndexOf(":");
      socket = createConnection({ host: options.address.slice(0, at).replace(/^\[|\]$/g, ""), port: Number(options.address.slice(at + 1)) });
    } else {
      throw new TypeError("set exactly one of `socket` and `address`");
    }
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    socket.setNoDelay(true);
    const client = new Client(socket, options.timeoutMs ?? 30_000);
    try {
      client.#hello = (await client.request("hello", options.token ? { token: options.token } : {})) as unknown as Hello;
    } catch (err) {
      await client.close();
      throw err;
    }
    return client;
  }

  get hello(): Hello {
    return this.#hello;
  }

  /** Close the connection; requests still waiting fail with `ConnectionClosedError`. */
  async close(): Promise<void> {
    this.#socket.end();
    this.#socket.destroySoon?.();
    await this.#ended;
  }

  /** Send a request and return its final frame (ack and progress frames are skipped). */
  async request(type: string, fields: { [key: string]: unknown } = {}, options: RequestOptions = {}): Promise<Frame> {
    const stream = this.stream(type, fields);
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const timeout = timeoutMs > 0
      ? new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          stream.cancel();
          reject(new RequestTimeoutError(`no reply to ${type} within ${timeoutMs} ms`));
        }, timeoutMs);
      })
      : undefined;
    try {
      const work = (async () => {
        for await (const frame of stream) if (stream.done) return frame;
        throw new ConnectionClosedError(`${type}: no final frame`);
      })();
      return await (timeout ? Promise.race([work, timeout]) : work);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Send a request answered by several frames; iterate over them (the last has `ok`). */
  stream(type: string, fields: { [key: string]: unknown } = {}): ReplyStream {
    if (this.#closed) throw this.#closed;
    const id = `t${++this.#nextId}`;
    const pending: Pending = { frames: [], error: undefined, wake: undefined };
    this.#pending.set(id, pending);
    this.#write({ ...fields, type, id });
    return new ReplyStream(id, pending, () => this.#pending.delete(id));
  }

  /** Send a keep-alive ping and wait for its pong. */
  async ping(): Promise<void> {
    if (this.#closed) throw this.#closed;
    const pong = new Promise<void>((resolve) => this.#pongWaiters.push(resolve));
    this.#write({ kind: "ping" });
    await pong;
  }

  /** `status`: pid, uptime, queue and counters of the daemon. */
  status(): Promise<Frame> {
    return this.request("status");
  }

  /** `verify`: check every journal of the node. */
  verify(): Promise<Frame> {
    return this.request("verify", {}, { timeoutMs: 0 });
  }

  /**
   * Append an event signed by the node with the key it holds for the actor
   * (`event.actor`, else the node's default actor). Missing `ulid`, `ts` and
   * `policy_root` are filled in by the daemon.
   */
  async appendEvent(ns: string, event: EventInput): Promise<AppendResult> {
    checkValue(event.payload, "payload");
    return (await this.request("append_event", { ns, event })) as unknown as AppendResult;
  }

  /**
   * Sign an event here (the private key never leaves this process) and append it.
   * Missing fields are completed (`completeEvent`); the daemon's Event-CID must equal
   * the one computed here (`CidMismatchError` otherwise).
   */
  appendSigned(ns: string, event: EventInput, key: SigningKey): Promise<AppendResult> {
    return this.appendSignedEvent(ns, signEnvelope(completeEvent(event, key), key));
  }

  /** Append an event signed beforehand (`signEnvelope`). */
  async appendSignedEvent(ns: string, signed: SignedEvent): Promise<AppendResult> {
    const event = envelopeValue(signed.envelope);
    const out = (await this.request("append_event", { ns, event, sig: signed.signature })) as unknown as AppendResult;
    if (out.event_cid !== signed.cid) {
      throw new CidMismatchError(`the daemon stored ${out.event_cid}, this client signed ${signed.cid}`);
    }
    return out;
  }

  /** The events of one journal, oldest first (long reads come in several frames, joined here). */
  async journalRead(ns: string, actor: string, options: { after?: string; after_ulid?: string; until?: string; limit?: number; last?: number } = {}): Promise<JournalEntry[]> {
    const entries: JournalEntry[] = [];
    for await (const frame of this.stream("journal.read", { ...options, ns, actor })) {
      if (Array.isArray(frame.entries)) entries.push(...(frame.entries as unknown as JournalEntry[]));
    }
    return entries;
  }

  /** The head commit of a journal, or null when it is empty or absent. */
  async journalHead(ns: string, actor: string): Promise<string | null> {
    return (await this.request("journal.head", { ns, actor })).head as string | null;
  }

  /** `fold_state`: fold a namespace into a state checkpoint; `onProgress` sees progress frames. */
  async foldState(ns: string, options: { spec?: string; channel?: string; full?: boolean; onProgress?: (p: { done: number; total: number }) => void } = {}): Promise<Frame> {
    const { onProgress, ...fields } = options;
    let last: Frame | undefined;
    for await (const frame of this.stream("fold_state", { ...fields, ns })) {
      last = frame;
      if (frame.progress && onProgress && !("ok" in frame)) onProgress(frame.progress as { done: number; total: number });
    }
    return last!;
  }

  /** `state.get`: the newest checkpoint of a namespace. */
  stateGet(ns: string, options: { channel?: string; key?: string } = {}): Promise<Frame> {
    return this.request("state.get", { ...options, ns });
  }

  // -- the wire ------------------------------------------------------------------------

  #write(frame: { [key: string]: unknown }): void {
    this.#socket.write(`${stringifyJson(frame)}\n`);
  }

  #feed(data: Buffer): void {
    let start = 0;
    for (let nl = data.indexOf(10, start); nl >= 0; nl = data.indexOf(10, start)) {
      this.#chunks.push(data.subarray(start, nl));
      const line = Buffer.concat(this.#chunks).toString("utf8");
      this.#chunks = [];
      start = nl + 1;
      if (line.trim()) this.#route(line);
    }
    if (start < data.length) this.#chunks.push(data.subarray(start));
  }

  #route(line: string): void {
    let frame: JsonValue;
    try {
      frame = parseJson(line);
    } catch {
      this.#closing = new BadReplyError(`the daemon sent a line that is not JSON: ${line.slice(0, 200)}`);
      this.#socket.destroy();
      return;
    }
    if (typeof frame !== "object" || frame === null || Array.isArray(frame)) return;
    if (frame.kind === "ping") return this.#write({ kind: "pong" });
    if (frame.kind === "pong") return void this.#pongWaiters.shift()?.();
    const id = frame.id;
    if (typeof id !== "string") {
      // `"id": null` failures: a dropped over-long line, or a refusal before a close.
      if (frame.ok === false) {
        if (this.#pending.size === 1) this.#push([...this.#pending.values()][0]!, frame);
        else this.#closing = errorFromWire(frame.error);
      }
      return;
    }
    const pending = this.#pending.get(id);
    if (pending) this.#push(pending, frame);
  }

  #push(pending: Pending, frame: Frame): void {
    pending.frames.push(frame);
    pending.wake?.();
  }

  #end(reason: GatosError): void {
    if (this.#closed) return;
    this.#closed = reason;
    for (const pending of this.#pending.values()) {
      pending.error = reason;
      pending.wake?.();
    }
    for (const wake of this.#pongWaiters.splice(0)) wake();
  }
}

/**
 * The frames of one request, as an async iterator: `ack`, progress or data frames,
 * and last the final frame (after which `done` is true). An error frame is thrown.
 */
export class ReplyStream implements AsyncIterable<Frame> {
  readonly id: string;
  /** True once the final frame was returned. */
  done = false;
  readonly #pending: Pending;
  readonly #release: () => void;

  constructor(id: string, pending: Pending, release: () => void) {
    this.id = id;
    this.#pending = pending;
    this.#release = release;
  }

  /** The next frame, or undefined after the final one. */
  async next(): Promise<Frame | undefined> {
    if (this.done) return undefined;
    while (this.#pending.frames.length === 0) {
      if (this.#pending.error) {
        this.cancel();
        throw this.#pending.error;
      }
      await new Promise<void>((resolve) => (this.#pending.wake = resolve));
      this.#pending.wake = undefined;
    }
    const frame = this.#pending.frames.shift()!;
    if (!("ok" in frame)) return frame;
    this.cancel();
    if (frame.ok === true) return frame;
    throw errorFromWire(frame.error, this.id);
  }

  /** Stop receiving this request's frames (it may still run on the daemon). */
  cancel(): void {
    this.done = true;
    this.#release();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Frame> {
    for (let frame = await this.next(); frame !== undefined; frame = await this.next()) yield frame;
  }
}

export interface PublishResult {
  topic: string;
  shard: number;
  position: number;
  ulid: string;
  commit: string;
  duplicate: boolean;
}

/** One delivered `bus.message`. */
export interface Message {
  topic: string;
  shard: number;
  position: number;
  ulid: string;
  key: string | null;
  headers: { [name: string]: string };
  publisher: string;
  commit: string;
  payload: JsonValue;
  /** 1 on the first delivery, more when redelivered. */
  delivery: number;
  group?: string;
}

export interface SubscribeOptions {
  /** `earliest`, `HEAD`, `HEAD-<n>`, a position or a ULID. */
  from?: string | number;
  /** Consumer group: messages are shared among its subscribers and must be acked. */
  group?: string;
  ack_wait_ms?: number;
  max_in_flight?: number;
  max_deliver?: number;
}

/** The message plane: `client.bus.publish`, `subscribe`, `ack`, `nack`. */
export class Bus {
  readonly #client: Client;

  constructor(client: Client) {
    this.#client = client;
  }

  /** Publish one message; resolves after its commit is on the topic's ref. */
  async publish(topic: string, payload: JsonValue, options: { key?: string; ulid?: string; headers?: { [name: string]: string } } = {}): Promise<PublishResult> {
    checkValue(payload, "payload");
    return (await this.#client.request("bus.publish", { ...options, topic, payload })) as unknown as PublishResult;
  }

  /** Subscribe to a topic: `for await (const msg of sub) …`; `sub.close()` unsubscribes. */
  async subscribe(topic: string, options: SubscribeOptions = {}): Promise<Subscription> {
    const stream = this.#client.stream("bus.subscribe", { ...options, topic });
    const first = await stream.next(); // the ack, or the refusal thrown
    if (stream.done) throw new BadReplyError(`the subscription to ${topic} ended at once: ${stringifyJson(first)}`);
    return new Subscription(this.#client, this, stream, options.group);
  }

  /** Acknowledge a delivered message for a consumer group. */
  ack(group: string, message: Message): Promise<Frame> {
    return this.#client.request("bus.ack", ackFields(group, message));
  }

  /** Give a delivered message back for redelivery. */
  nack(group: string, message: Message): Promise<Frame> {
    return this.#client.request("bus.nack", ackFields(group, message));
  }
}

const ackFields = (group: string, m: Message) => ({ topic: m.topic, group, ulid: m.ulid, shard: m.shard, position: m.position });

/** A running `bus.subscribe`: an async iterable of messages. */
export class Subscription implements AsyncIterable<Message> {
  /** The daemon's count of delivered messages, once the subscription has ended. */
  delivered: number | undefined;
  readonly #client: Client;
  readonly #bus: Bus;
  readonly #stream: ReplyStream;
  readonly #group: string | undefined;

  constructor(client: Client, bus: Bus, stream: ReplyStream, group: string | undefined) {
    this.#client = client;
    this.#bus = bus;
    this.#stream = stream;
    this.#group = group;
  }

  /** The next message, or undefined once the subscription ended. */
  async next(): Promise<Message | undefined> {
    for (;;) {
      const frame = await this.#stream.next();
      if (frame === undefined) return undefined;
      if (this.#stream.done) {
        this.delivered = Number(frame.delivered ?? 0);
        return undefined;
      }
      if (frame.type === "bus.message") return frame as unknown as Message;
    }
  }

  /** Ack a message of this subscription's group. */
  ack(message: Message): Promise<Frame> {
    if (!this.#group) throw new TypeError("ack needs a subscription in a consumer group");
    return this.#bus.ack(this.#group, message);
  }

  /** Unsubscribe and wait for the subscription's final frame. */
  async close(): Promise<void> {
    if (this.#stream.done) return;
    await this.#client.request("bus.unsubscribe", { subscription: this.#stream.id });
    while ((await this.next()) !== undefined) { /* drain messages sent before the unsubscribe */ }
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Message> {
    for (let m = await this.next(); m !== undefined; m = await this.next()) yield m;
  }
}

/** A v1 job manifest (docs/jobs.md). */
export interface Manifest {
  command: string[];
  args?: string[];
  /** Whole seconds, or an ISO 8601 duration such as `PT30S`. */
  timeout: number | string;
  env?: { [name: string]: string };
  cwd?: string;
  inputs?: JsonValue[];
  policy_root?: string;
  /** Makes an otherwise identical job a new one. */
  ulid?: string;
}

export interface Enqueued {
  job_id: string;
  ns: string;
  commit: string;
  duplicate: boolean;
  runtime: string;
}

export interface JobResult {
  job_id: string;
  /** `succeeded`, `failed` or `aborted`. */
  status: string;
  commit: string;
  verified?: boolean;
  trailers: { [name: string]: string };
  poe?: Frame;
  /** By name: UTF-8 text, `{base64}`, or a blob pointer. */
  outputs?: { [name: string]: JsonValue };
  exit?: Frame;
  aborted?: Frame;
  /** Set by `wait` when its timeout passed first (`state` says where the job is). */
  timed_out?: boolean;
  state?: string;
}

/** The job plane: `client.jobs.enqueue`, `status`, `result`, `wait`, `cancel`. */
export class Jobs {
  readonly #client: Client;

  constructor(client: Client) {
    this.#client = client;
  }

  async enqueue(ns: string, manifest: Manifest): Promise<Enqueued> {
    return (await this.#client.request("jobs.enqueue", { ns, manifest })) as unknown as Enqueued;
  }

  /** The lifecycle folded from the job's events, corrected by its refs (`state`, `attempts`, `history`, …). */
  status(jobId: string): Promise<Frame> {
    return this.#client.request("jobs.status", { job_id: jobId });
  }

  async result(jobId: string): Promise<JobResult> {
    return (await this.#client.request("jobs.result", { job_id: jobId })) as unknown as JobResult;
  }

  /** Wait for the result; `onState` sees each state change before it (pending, claimed). */
  async wait(jobId: string, options: { timeoutMs?: number; onState?: (state: string) => void } = {}): Promise<JobResult> {
    const fields: { [key: string]: unknown } = { job_id: jobId };
    if (options.timeoutMs !== undefined) fields.timeout_ms = options.timeoutMs;
    const stream = this.#client.stream("jobs.wait", fields);
    for await (const frame of stream) {
      if (stream.done) return frame as unknown as JobResult;
      if (typeof frame.state === "string") options.onState?.(frame.state);
    }
    throw new ConnectionClosedError("jobs.wait ended without a result");
  }

  async cancel(jobId: string, reason = ""): Promise<JobResult> {
    return (await this.#client.request("jobs.cancel", { job_id: jobId, reason })).result as unknown as JobResult;
  }
}
