import assert from "node:assert/strict";
import { AssertionError, Prng } from "../base/mod.ts";
import {
  CodecError,
  CONF_MEMBER_COUNT_MAX,
  decodeMessage,
  encodedMessageSizeBytes,
  encodeMessage,
  MESSAGE_CONTEXT_SIZE_BYTES_MAX,
  MESSAGE_ENTRY_COUNT_MAX,
  MESSAGE_HEADER_SIZE_BYTES,
  MESSAGE_SIZE_BYTES_MAX,
  MESSAGE_TYPES,
  MessageEncoder,
  readMessage,
  writeMessage,
} from "./codec.ts";
import { EMPTY_BYTES, emptyMessage, type Entry, type Message } from "./types.ts";

const SEED = 0x5eed_c0de;

/** Integers that stress the u64 split: small, around 2^32, and the safe maximum. */
function randomU64(prng: Prng): number {
  switch (prng.nextInt(5)) {
    case 0:
      return 0;
    case 1:
      return prng.nextInt(1000);
    case 2:
      return 0xffff_ffff + prng.nextInt(3) - 1;
    case 3:
      return Number.MAX_SAFE_INTEGER - prng.nextInt(3);
    default:
      return prng.nextU32() * 0x20_0000 + prng.nextInt(0x20_0000) -
        (prng.nextInt(2) === 0 ? 0 : prng.nextU32());
  }
}

function randomBytes(prng: Prng, lengthMax: number): Uint8Array {
  const length = prng.nextInt(lengthMax + 1);
  return length === 0 ? EMPTY_BYTES : prng.bytes(length);
}

function randomNodeId(prng: Prng): number {
  return prng.nextInt(4) === 0 ? prng.nextU32() : prng.nextInt(8);
}

function randomMessage(prng: Prng): Message {
  const msg = emptyMessage(
    MESSAGE_TYPES[prng.nextInt(MESSAGE_TYPES.length)]!,
    randomNodeId(prng),
    randomNodeId(prng),
    Math.max(0, Math.min(Number.MAX_SAFE_INTEGER, randomU64(prng))),
  );
  msg.logTerm = Math.abs(randomU64(prng));
  msg.index = Math.abs(randomU64(prng));
  msg.commit = Math.abs(randomU64(prng));
  msg.reject = prng.nextInt(2) === 1;
  msg.rejectHint = Math.abs(randomU64(prng));
  msg.context = randomBytes(prng, 24);
  const entries: Entry[] = [];
  const count = prng.nextInt(4) === 0 ? 0 : prng.nextInt(12);
  for (let i = 0; i < count; i++) {
    entries.push({
      term: Math.abs(randomU64(prng)),
      index: Math.abs(randomU64(prng)),
      type: prng.nextInt(5) === 0 ? "conf_change" : "normal",
      data: randomBytes(prng, 80),
    });
  }
  msg.entries = entries;
  if (prng.nextInt(5) === 0) {
    const ids = (): number[] => Array.from({ length: prng.nextInt(6) }, () => randomNodeId(prng));
    msg.snapshot = {
      meta: {
        index: Math.abs(randomU64(prng)),
        term: Math.abs(randomU64(prng)),
        conf: { voters: ids(), learners: ids() },
      },
      data: randomBytes(prng, 300),
    };
  }
  return msg;
}

function decodeError(bytes: Uint8Array): CodecError {
  try {
    decodeMessage(bytes);
  } catch (e) {
    if (e instanceof CodecError) return e;
    throw e;
  }
  throw new Error("decodeMessage() accepted bytes it should have rejected");
}

Deno.test("decodeMessage() round-trips random messages (seeded) and the encoding is canonical", () => {
  const prng = new Prng(SEED);
  const encoder = new MessageEncoder(16);
  for (let i = 0; i < 3000; i++) {
    const msg = randomMessage(prng);
    const bytes = encodeMessage(msg);
    assert.equal(bytes.length, encodedMessageSizeBytes(msg), `seed ${SEED} case ${i}`);
    const decoded = decodeMessage(bytes);
    assert.deepEqual(decoded, msg, `seed ${SEED} case ${i}`);
    assert.deepEqual(encodeMessage(decoded), bytes, `seed ${SEED} case ${i}: re-encoding`);
    assert.deepEqual(encoder.encode(msg), bytes, `seed ${SEED} case ${i}: reused encoder`);
  }
});

Deno.test("writeMessage()/readMessage() pack many messages back to back in one shared buffer", () => {
  const prng = new Prng(SEED + 1);
  const messages = Array.from({ length: 200 }, () => randomMessage(prng));
  const total = messages.reduce((n, m) => n + encodedMessageSizeBytes(m), 7);
  const bytes = new Uint8Array(total + 5);
  const view = new DataView(bytes.buffer);
  const bounds: [number, number][] = [];
  let at = 7; // not aligned on purpose
  for (const m of messages) {
    const end = writeMessage(view, bytes, at, m);
    bounds.push([at, end]);
    at = end;
  }
  assert.equal(at, total);
  messages.forEach((m, i) => {
    const [start, end] = bounds[i]!;
    assert.deepEqual(readMessage(view, bytes, start, end), m, `message ${i}`);
  });
});

Deno.test("decodeMessage() returns views into its input, not copies", () => {
  const msg = emptyMessage("append", 1, 2, 3);
  msg.entries = [{ term: 3, index: 4, type: "normal", data: new Uint8Array([9, 9, 9]) }];
  const bytes = encodeMessage(msg);
  const decoded = decodeMessage(bytes);
  assert.equal(decoded.entries[0]!.data.buffer, bytes.buffer);
  assert.equal(decoded.context, EMPTY_BYTES);
});

Deno.test("decodeMessage() keeps the extreme values of every numeric field", () => {
  const msg = emptyMessage("snapshot", 0xffff_ffff, 0, Number.MAX_SAFE_INTEGER);
  msg.logTerm = 0x1_0000_0000;
  msg.index = 0xffff_ffff;
  msg.commit = Number.MAX_SAFE_INTEGER;
  msg.rejectHint = 2 ** 52;
  msg.snapshot = {
    meta: {
      index: Number.MAX_SAFE_INTEGER,
      term: 1,
      conf: { voters: [0xffff_ffff], learners: [] },
    },
    data: new Uint8Array([1]),
  };
  assert.deepEqual(decodeMessage(encodeMessage(msg)), msg);
});

Deno.test("decodeMessage() rejects every strict prefix of a valid message as truncated", () => {
  const prng = new Prng(SEED + 2);
  for (let i = 0; i < 40; i++) {
    const bytes = encodeMessage(randomMessage(prng));
    for (let cut = 0; cut < bytes.length; cut++) {
      const e = decodeError(bytes.subarray(0, cut));
      assert.equal(e.kind, "truncated", `case ${i} cut at ${cut}: ${e.message}`);
    }
  }
});

Deno.test("decodeMessage() rejects a wrong version, unknown codes, set reserved bits and trailing bytes", () => {
  const msg = emptyMessage("append", 1, 2, 3);
  msg.entries = [{ term: 3, index: 4, type: "normal", data: new Uint8Array([1]) }];
  const good = encodeMessage(msg);
  const patched = (at: number, value: number): Uint8Array => {
    const b = good.slice();
    b[at] = value;
    return b;
  };
  assert.equal(decodeError(patched(0, 2)).kind, "version");
  assert.equal(decodeError(patched(0, 0)).kind, "version");
  assert.equal(decodeError(patched(1, MESSAGE_TYPES.length)).kind, "invalid");
  assert.equal(decodeError(patched(2, 4)).kind, "invalid");
  assert.equal(decodeError(patched(3, 1)).kind, "invalid");
  // The entry's type byte follows its two u64s.
  assert.equal(decodeError(patched(MESSAGE_HEADER_SIZE_BYTES + 16, 2)).kind, "invalid");
  // A u64 above 2^53 - 1 (term's high word).
  assert.equal(decodeError(patched(12, 0x01)).kind, "invalid");
  assert.match(decodeError(patched(12, 0x01)).message, /term is larger than 2\^53/);
  const trailing = new Uint8Array(good.length + 1);
  trailing.set(good);
  assert.equal(decodeError(trailing).kind, "invalid");
  assert.match(decodeError(trailing).message, /1 trailing bytes/);
});

Deno.test("decodeMessage() rejects counts and lengths over their named limits before allocating", () => {
  const good = encodeMessage(emptyMessage("heartbeat", 1, 2, 3));
  const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
  const entries = good.slice();
  view(entries).setUint32(56, MESSAGE_ENTRY_COUNT_MAX + 1);
  assert.equal(decodeError(entries).kind, "oversized");
  const manyButShort = good.slice();
  view(manyButShort).setUint32(56, MESSAGE_ENTRY_COUNT_MAX);
  assert.equal(decodeError(manyButShort).kind, "truncated");
  const context = good.slice();
  view(context).setUint32(52, MESSAGE_CONTEXT_SIZE_BYTES_MAX + 1);
  assert.equal(decodeError(context).kind, "oversized");

  const snap = emptyMessage("snapshot", 1, 2, 3);
  snap.snapshot = {
    meta: { index: 1, term: 1, conf: { voters: [1], learners: [] } },
    data: EMPTY_BYTES,
  };
  const snapBytes = encodeMessage(snap);
  view(snapBytes).setUint32(MESSAGE_HEADER_SIZE_BYTES + 16, CONF_MEMBER_COUNT_MAX + 1);
  assert.equal(decodeError(snapBytes).kind, "oversized");

  const huge = new Uint8Array(MESSAGE_SIZE_BYTES_MAX + 1);
  huge.set(good);
  assert.equal(decodeError(huge).kind, "oversized");
});

Deno.test("writeMessage() asserts on messages no sender may produce", () => {
  const unsafe = emptyMessage("append", 1, 2, 2 ** 53);
  assert.throws(() => encodeMessage(unsafe), AssertionError);
  const negative = emptyMessage("append", -1, 2, 1);
  assert.throws(() => encodeMessage(negative), AssertionError);
  const bigContext = emptyMessage("read_index", 1, 2, 1);
  bigContext.context = new Uint8Array(MESSAGE_CONTEXT_SIZE_BYTES_MAX + 1);
  assert.throws(() => encodeMessage(bigContext), AssertionError);
});

Deno.test("decodeMessage() fuzz: random and mutated bytes only ever raise CodecError, and what decodes re-encodes identically", () => {
  const prng = new Prng(SEED + 3);
  let decoded = 0;
  const attempt = (bytes: Uint8Array, what: string): void => {
    let msg: Message;
    try {
      msg = decodeMessage(bytes);
    } catch (e) {
      if (e instanceof CodecError) return;
      throw new Error(`seed ${SEED + 3} ${what}: ${(e as Error).name} ${(e as Error).message}`);
    }
    decoded++;
    assert.deepEqual(encodeMessage(msg), bytes, `seed ${SEED + 3} ${what}: not canonical`);
  };
  for (let i = 0; i < 4000; i++) {
    // Pure noise, with a plausible version byte half of the time so parsing gets deeper.
    const noise = prng.bytes(prng.nextInt(200));
    if (noise.length > 0 && prng.nextInt(2) === 0) noise[0] = 1;
    if (noise.length > 3 && prng.nextInt(2) === 0) noise[2] = noise[3] = 0;
    attempt(noise, `noise ${i}`);

    // A valid message with a few bytes changed, cut, or extended.
    const bytes = encodeMessage(randomMessage(prng)).slice();
    const flips = 1 + prng.nextInt(4);
    for (let f = 0; f < flips; f++) bytes[prng.nextInt(bytes.length)] = prng.nextU32() & 0xff;
    attempt(bytes, `mutation ${i}`);
    attempt(bytes.subarray(0, prng.nextInt(bytes.length + 1)), `cut ${i}`);
  }
  assert.ok(decoded > 100, `fuzzing should also produce decodable inputs (got ${decoded})`);
});
