// BLAKE3-256 (hash mode only), after the portable reference implementation.
// Node's crypto has no BLAKE3 and Event-CIDs need it; events are small, so a plain
// serial implementation keeps the package free of runtime dependencies.

const BLOCK_LEN = 64;
const CHUNK_LEN = 1024;
const CHUNK_START = 1;
const CHUNK_END = 2;
const PARENT = 4;
const ROOT = 8;

const IV = new Uint32Array([
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
]);
const PERMUTATION = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];

const rotr = (x: number, n: number): number => ((x >>> n) | (x << (32 - n))) >>> 0;

function g(s: Uint32Array, a: number, b: number, c: number, d: number, mx: number, my: number): void {
  s[a] = (s[a]! + s[b]! + mx) >>> 0;
  s[d] = rotr(s[d]! ^ s[a]!, 16);
  s[c] = (s[c]! + s[d]!) >>> 0;
  s[b] = rotr(s[b]! ^ s[c]!, 12);
  s[a] = (s[a]! + s[b]! + my) >>> 0;
  s[d] = rotr(s[d]! ^ s[a]!, 8);
  s[c] = (s[c]! + s[d]!) >>> 0;
  s[b] = rotr(s[b]! ^ s[c]!, 7);
}

function compress(cv: Uint32Array, block: Uint32Array, counter: number, blockLen: number, flags: number): Uint32Array {
  const s = new Uint32Array(16);
  s.set(cv, 0);
  s.set(IV.subarray(0, 4), 8);
  s[12] = counter >>> 0;
  s[13] = Math.floor(counter / 0x100000000) >>> 0;
  s[14] = blockLen;
  s[15] = flags;
  let m = Uint32Array.from(block);
  for (let r = 0; r < 7; r++) {
    g(s, 0, 4, 8, 12, m[0]!, m[1]!);
    g(s, 1, 5, 9, 13, m[2]!, m[3]!);
    g(s, 2, 6, 10, 14, m[4]!, m[5]!);
    g(s, 3, 7, 11, 15, m[6]!, m[7]!);
    g(s, 0, 5, 10, 15, m[8]!, m[9]!);
    g(s, 1, 6, 11, 12, m[10]!, m[11]!);
    g(s, 2, 7, 8, 13, m[12]!, m[13]!);
    g(s, 3, 4, 9, 14, m[14]!, m[15]!);
    const p = new Uint32Array(16);
    for (let i = 0; i < 16; i++) p[i] = m[PERMUTATION[i]!]!;
    m = p;
  }
  for (let i = 0; i < 8; i++) {
    s[i] = (s[i]! ^ s[i + 8]!) >>> 0;
    s[i + 8] = (s[i + 8]! ^ cv[i]!) >>> 0;
  }
  return s;
}

function words(block: Uint8Array): Uint32Array {
  const padded = new Uint8Array(BLOCK_LEN);
  padded.set(block);
  const view = new DataView(padded.buffer);
  const w = new Uint32Array(16);
  for (let i = 0; i < 16; i++) w[i] = view.getUint32(4 * i, true);
  return w;
}

interface Output {
  cv: Uint32Array;
  block: Uint32Array;
  counter: number;
  blockLen: number;
  flags: number;
}

const chainingValue = (o: Output): Uint32Array =>
  compress(o.cv, o.block, o.counter, o.blockLen, o.flags).slice(0, 8);

function chunkOutput(chunk: Uint8Array, counter: number): Output {
  let cv = IV.slice();
  let flags = CHUNK_START;
  while (chunk.length > BLOCK_LEN) {
    cv = compress(cv, words(chunk.subarray(0, BLOCK_LEN)), counter, BLOCK_LEN, flags).slice(0, 8);
    chunk = chunk.subarray(BLOCK_LEN);
    flags = 0;
  }
  return { cv, block: words(chunk), counter, blockLen: chunk.length, flags: flags | CHUNK_END };
}

function parentOutput(left: Uint32Array, right: Uint32Array): Output {
  const block = new Uint32Array(16);
  block.set(left, 0);
  block.set(right, 8);
  return { cv: IV.slice(), block, counter: 0, blockLen: BLOCK_LEN, flags: PARENT };
}

/** The 32-byte BLAKE3 hash of `data`. */
export function blake3(data: Uint8Array): Uint8Array {
  const chunks = Math.max(1, Math.ceil(data.length / CHUNK_LEN));
  const stack: Uint32Array[] = [];
  for (let i = 0; i < chunks - 1; i++) {
    let cv = chainingValue(chunkOutput(data.subarray(i * CHUNK_LEN, (i + 1) * CHUNK_LEN), i));
    for (let total = i + 1; (total & 1) === 0; total >>>= 1) {
      cv = chainingValue(parentOutput(stack.pop()!, cv));
    }
    stack.push(cv);
  }
  let out = chunkOutput(data.subarray((chunks - 1) * CHUNK_LEN), chunks - 1);
  for (let j = stack.length - 1; j >= 0; j--) out = parentOutput(stack[j]!, chainingValue(out));
  const s = compress(out.cv, out.block, 0, out.blockLen, out.flags | ROOT);
  const digest = new Uint8Array(32);
  const view = new DataView(digest.buffer);
  for (let i = 0; i < 8; i++) view.setUint32(4 * i, s[i]!, true);
  return digest;
}
