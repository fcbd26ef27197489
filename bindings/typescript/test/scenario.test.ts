import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  Client, GatosError, InvalidNameError, InvalidNamespaceError, JobError, JobNotFoundError, PolicyDeniedError,
  SigningKey, UnauthorizedError, UnknownTypeError, canonicalBytes, completeEvent, newUlid, signEnvelope,
  type Envelope,
} from "../src/index.js";

// dist/test/ → bindings/
const BINDINGS = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

interface TestNode {
  socket: string;
  tcp: string;
  token: string;
  owner: string;
  job_ns: string;
  signer: { actor: string; key_file: string };
  denied: { actor: string; key_file: string };
}

let node: TestNode;
let stopNode: () => Promise<void>;
let client: Client;

before(async () => {
  // bindings/testnode.py: a throw-away node with gatosd and a job worker, alive until its stdin ends.
  const python = process.env.GATOS_PYTHON ?? join(BINDINGS, "..", ".venv", "bin", "python");
  const child = spawn(python, [join(BINDINGS, "testnode.py")], { stdio: ["pipe", "pipe", "inherit"] });
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  stopNode = async () => {
    child.stdin.end();
    await exited;
  };
  const lines = createInterface({ input: child.stdout });
  const [line] = await Promise.race([
    new Promise<string[]>((resolve) => lines.once("line", (l) => resolve([l]))),
    exited.then(() => { throw new Error("testnode.py exited before printing its connection line"); }),
  ]);
  node = JSON.parse(line!) as TestNode;
  client = await Client.connect({ socket: node.socket });
});

after(async () => {
  await client?.close();
  await stopNode?.();
});

test("hello over the unix socket", () => {
  assert.equal(client.hello.server, "gatosd");
  assert.equal(client.hello.protocol, 1);
  assert.equal(client.hello.node.actor, node.owner);
  assert.ok(client.hello.methods.includes("append_event"));
});

test("TCP with the token; a wrong token is UnauthorizedError; keep-alive ping", async () => {
  const tcp = await Client.connect({ address: node.tcp, token: node.token });
  try {
    assert.equal(typeof (await tcp.status()).pid, "number");
    await tcp.ping();
  } finally {
    await tcp.close();
  }
  await assert.rejects(Client.connect({ address: node.tcp, token: "wrong-token-0123456789" }), UnauthorizedError);
});

test("append signed here, read back", async () => {
  const key = SigningKey.fromFile(node.signer.key_file);
  const envelope = completeEvent({
    type: "invoice.created", caps: ["finance:append"],
    payload: { amount: 18446744073709551615n, neg: -9223372036854775808n, text: "héllo 🐈", nested: { list: [1, "two", null, true] } },
  }, key);
  const signed = signEnvelope(envelope, key);
  const res = await client.appendSignedEvent("finance", signed);
  assert.equal(res.duplicate, false);
  assert.equal(res.actor, node.signer.actor);
  assert.equal(res.event_cid, signed.cid);
  const again = await client.appendSignedEvent("finance", signed);
  assert.equal(again.duplicate, true);
  assert.equal(again.commit, res.commit);
  const [entry, ...rest] = await client.journalRead("finance", node.signer.actor, { last: 1 });
  assert.equal(rest.length, 0);
  assert.equal(entry!.commit, res.commit);
  assert.equal(entry!.sig, signed.signature);
  assert.equal(entry!.ulid, envelope.ulid);
  const { commit: _c, event_cid: _e, sig: _s, ...readBack } = entry!;
  assert.deepEqual(Buffer.from(canonicalBytes(readBack as Envelope)), Buffer.from(signed.canonical));
  assert.equal(await client.journalHead("finance", node.signer.actor), res.commit);
});

test("append signed by the node", async () => {
  const res = await client.appendEvent("finance", { type: "note", payload: { n: 1 } });
  assert.equal(res.actor, node.owner);
  assert.equal(res.duplicate, false);
});

test("publish, subscribe, ack", async () => {
  const sub = await client.bus.subscribe("sdk/ts", { from: "earliest", group: "workers" });
  for (const n of [1, 2]) await client.bus.publish("sdk/ts", { n }, { key: "k" });
  const seen: number[] = [];
  for await (const message of sub) {
    assert.equal(message.publisher, node.owner);
    assert.equal(message.delivery, 1);
    seen.push((message.payload as { n: number }).n);
    await sub.ack(message);
    if (seen.length === 2) break;
  }
  assert.deepEqual(seen, [1, 2]);
  await sub.close();
  assert.equal(sub.delivered, 2);
});

test("enqueue a job and wait for its result", async () => {
  const job = await client.jobs.enqueue(node.job_ns, { command: ["/bin/echo"], args: ["hello from ts", newUlid()], timeout: 30 });
  const states: string[] = [];
  const result = await client.jobs.wait(job.job_id, { timeoutMs: 60_000, onState: (s) => states.push(s) });
  assert.equal(result.status, "succeeded", JSON.stringify(states));
  assert.equal(result.verified, true);
  assert.match(String(result.outputs?.stdout), /^hello from ts /);
  assert.equal((await client.jobs.status(job.job_id)).state, "succeeded");
});

test("a denied append is a PolicyDeniedError with its rule", async () => {
  const key = SigningKey.fromFile(node.denied.key_file);
  await assert.rejects(client.appendSigned("finance", { type: "invoice.created", payload: {} }, key), (err: unknown) => {
    assert.ok(err instanceof PolicyDeniedError && err instanceof GatosError);
    assert.equal(err.code, "POLICY_DENY");
    assert.ok(err.rule);
    return true;
  });
});

test("other error frames are typed", async () => {
  await assert.rejects(client.appendEvent("Fin/ance", { type: "x", payload: 1 }), InvalidNamespaceError);
  await assert.rejects(client.appendEvent("Fin/ance", { type: "x", payload: 1 }), InvalidNameError);
  await assert.rejects(client.request("nope"), UnknownTypeError);
  const missing = client.jobs.status(`blake3:${"0".repeat(64)}`);
  await assert.rejects(missing, JobNotFoundError);
  await assert.rejects(client.jobs.status(`blake3:${"0".repeat(64)}`), JobError);
});
