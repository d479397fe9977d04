import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Prng } from "../base/mod.ts";
import {
  CDC_AVG_BYTES_DEFAULT,
  CDC_GEAR,
  CDC_MAX_BYTES_DEFAULT,
  CDC_MIN_BYTES_DEFAULT,
  type CdcOptions,
  cdcParams,
  chunkStream,
  ContentDefinedChunker,
  cutPoints,
  splitChunks,
} from "./cdc.ts";

const KIB = 1024;
const MIB = 1024 * KIB;

/** The definition, one byte at a time, with no streaming: what the fast loop must match. */
function referenceCutPoints(bytes: Uint8Array, options: CdcOptions): number[] {
  const { minBytes, avgBytes, maxBytes, maskS, maskL } = cdcParams(options);
  const cuts: number[] = [];
  let start = 0;
  while (start < bytes.length) {
    const limit = Math.min(start + maxBytes, bytes.length);
    let cut = limit;
    let h = 0;
    for (let j = start + minBytes; j < limit; j++) {
      h = ((h << 1) + CDC_GEAR[bytes[j]!]!) | 0;
      if ((h & (j - start < avgBytes ? maskS : maskL)) === 0) {
        cut = j + 1;
        break;
      }
    }
    cuts.push(cut);
    start = cut;
  }
  return cuts;
}

function random(seed: number, length: number): Uint8Array {
  return new Prng(seed).bytes(length);
}

function pushInPieces(
  bytes: Uint8Array,
  options: CdcOptions,
  pieceBytes: (prng: Prng) => number,
  seed = 1,
): number[] {
  const prng = new Prng(seed);
  const chunker = new ContentDefinedChunker(options);
  const cuts: number[] = [];
  for (let at = 0; at < bytes.length;) {
    const end = Math.min(bytes.length, at + pieceBytes(prng));
    cuts.push(...chunker.push(bytes.subarray(at, end)));
    at = end;
  }
  const last = chunker.finish();
  if (last !== null) cuts.push(last);
  return cuts;
}

function chunkDigests(bytes: Uint8Array, options: CdcOptions): string[] {
  return splitChunks(bytes, options).map((c) => createHash("sha256").update(c).digest("hex"));
}

/** Chunks of `after` whose content does not occur among the chunks of `before`. */
function restoredChunks(before: Uint8Array, after: Uint8Array, options: CdcOptions): number {
  const known = new Set(chunkDigests(before, options));
  return chunkDigests(after, options).filter((d) => !known.has(d)).length;
}

function insertAt(bytes: Uint8Array, at: number, inserted: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes.length + inserted.length);
  out.set(bytes.subarray(0, at));
  out.set(inserted, at);
  out.set(bytes.subarray(at), at + inserted.length);
  return out;
}

Deno.test("ContentDefinedChunker.push() finds the cut points of the byte-at-a-time definition", () => {
  const cases: CdcOptions[] = [
    { avgBytes: 4 * KIB },
    { avgBytes: 1 * KIB, minBytes: 0, maxBytes: 2 * KIB, normalizationLevel: 0 },
    { avgBytes: 8 * KIB, minBytes: 100, maxBytes: 9 * KIB, normalizationLevel: 3 },
    { avgBytes: 256, minBytes: 1, maxBytes: 257, normalizationLevel: 1 },
  ];
  const data = random(7, 2 * MIB + 3);
  for (const options of cases) {
    const expected = referenceCutPoints(data, options);
    assert.ok(expected.length > 100, "enough chunks to compare");
    assert.deepEqual(cutPoints(data, options), expected, JSON.stringify(options));
  }
});

Deno.test("ContentDefinedChunker.push() cuts the same wherever the input is split", () => {
  const options = { avgBytes: 4 * KIB };
  const data = random(11, 1 * MIB + 17);
  const whole = cutPoints(data, options);
  assert.deepEqual(
    pushInPieces(data.subarray(0, 64 * KIB), options, () => 1),
    cutPoints(data.subarray(0, 64 * KIB), options),
  );
  assert.deepEqual(pushInPieces(data, options, () => 2), whole);
  assert.deepEqual(pushInPieces(data, options, () => 4093), whole);
  assert.deepEqual(pushInPieces(data, options, (p) => 1 + p.nextInt(20_000), 3), whole);
  assert.deepEqual(pushInPieces(data, options, (p) => p.nextInt(9), 4), whole, "empty pieces too");
});

Deno.test("ContentDefinedChunker.push() honours minBytes and maxBytes on any content", () => {
  const options = { minBytes: 2 * KIB, avgBytes: 8 * KIB, maxBytes: 16 * KIB };
  const inputs = [
    random(5, 4 * MIB),
    new Uint8Array(1 * MIB), // all zero: the hash settles on one value
    new Uint8Array(1 * MIB).fill(0xff),
    Uint8Array.from({ length: 1 * MIB }, (_, i) => i % 251), // periodic
  ];
  for (const input of inputs) {
    const chunks = splitChunks(input, options);
    assert.equal(chunks.reduce((n, c) => n + c.length, 0), input.length);
    chunks.forEach((c, i) => {
      assert.ok(c.length <= options.maxBytes, `chunk ${i} of ${c.length} bytes > max`);
      if (i < chunks.length - 1) {
        assert.ok(c.length >= options.minBytes, `chunk ${i} of ${c.length} bytes < min`);
      }
    });
  }
  // Constant input has no boundaries of its own: every chunk is cut at maxBytes, or at the
  // first hashed byte, depending only on the table; either way lengths are one value.
  const zeros = splitChunks(new Uint8Array(1 * MIB), options).slice(0, -1);
  assert.equal(new Set(zeros.map((c) => c.length)).size, 1);
});

Deno.test("ContentDefinedChunker.push() averages near avgBytes on random data", () => {
  for (const avgBytes of [4 * KIB, 64 * KIB]) {
    const data = random(avgBytes, 512 * avgBytes);
    const count = cutPoints(data, { avgBytes }).length;
    const mean = data.length / count;
    assert.ok(mean > 0.8 * avgBytes && mean < 1.5 * avgBytes, `mean ${mean} for ${avgBytes}`);
  }
});

Deno.test("cutPoints() is deterministic: pinned gear table and boundaries", () => {
  // These values are part of the chunk format: if they change, existing data no longer
  // deduplicates against new writes. Change them only with a format version.
  const gearDigest = createHash("sha256").update(new Uint8Array(CDC_GEAR.buffer)).digest("hex");
  assert.equal(gearDigest, GEAR_SHA256);
  const cuts = cutPoints(random(42, 256 * KIB), { avgBytes: 4 * KIB });
  assert.deepEqual(cuts.slice(0, 8), PINNED_CUTS_FIRST_8);
  assert.equal(cuts.length, PINNED_CUTS_COUNT);
  assert.deepEqual(cutPoints(random(42, 256 * KIB), { avgBytes: 4 * KIB }), cuts);
});

Deno.test("cutPoints() re-stores at most 3 chunks after an insert in a 64 MiB object", () => {
  const options = { avgBytes: 1 * MIB };
  const original = random(64, 64 * MIB);
  const prng = new Prng(65);
  for (const at of [32 * MIB + 12_345, 5 * MIB, 60 * MIB + 1]) {
    const edited = insertAt(original, at, prng.bytes(1 + prng.nextInt(4096)));
    const restored = restoredChunks(original, edited, options);
    assert.ok(restored >= 1 && restored <= 3, `insert at ${at}: ${restored} chunks re-stored`);
  }
});

Deno.test("cutPoints() re-stores only chunks near a deletion or an overwrite", () => {
  const options = { avgBytes: 64 * KIB };
  const original = random(66, 16 * MIB);
  const deleted = new Uint8Array(original.length - 1000);
  deleted.set(original.subarray(0, 8 * MIB));
  deleted.set(original.subarray(8 * MIB + 1000), 8 * MIB);
  const deletedRestored = restoredChunks(original, deleted, options);
  assert.ok(deletedRestored <= 3, `deletion: ${deletedRestored} chunks re-stored`);
  const overwritten = original.slice();
  overwritten.fill(0x5a, 3 * MIB, 3 * MIB + 100);
  const overwrittenRestored = restoredChunks(original, overwritten, options);
  assert.ok(
    overwrittenRestored >= 1 && overwrittenRestored <= 3,
    `overwrite: ${overwrittenRestored}`,
  );
});

Deno.test("cdcParams() defaults are 256 KiB / 1 MiB / 4 MiB and bad options are RangeErrors", () => {
  const p = cdcParams();
  assert.equal(p.minBytes, CDC_MIN_BYTES_DEFAULT);
  assert.equal(p.avgBytes, CDC_AVG_BYTES_DEFAULT);
  assert.equal(p.maxBytes, CDC_MAX_BYTES_DEFAULT);
  assert.deepEqual([p.minBytes, p.avgBytes, p.maxBytes], [256 * KIB, 1 * MIB, 4 * MIB]);
  assert.deepEqual(
    [cdcParams({ avgBytes: 64 * KIB }).minBytes, cdcParams({ avgBytes: 64 * KIB }).maxBytes],
    [16 * KIB, 256 * KIB],
  );
  // maskS is harder than maskL by two bits each way at level 2, and never uses bit 31.
  assert.equal(p.maskS, 0x7ffffe00);
  assert.equal(p.maskL, 0x7fffe000);
  for (
    const bad of [
      { avgBytes: 3000 },
      { avgBytes: 128 },
      { avgBytes: 1 << 27 },
      { avgBytes: 4096, minBytes: 4096 },
      { avgBytes: 4096, minBytes: -1 },
      { avgBytes: 4096, maxBytes: 4096 },
      { avgBytes: 4096, maxBytes: 1 << 29 },
      { normalizationLevel: 4 },
      { minBytes: 1.5 },
    ]
  ) {
    assert.throws(() => new ContentDefinedChunker(bad), RangeError, JSON.stringify(bad));
  }
});

Deno.test("ContentDefinedChunker.finish() ends the last chunk and reset() starts over", () => {
  const chunker = new ContentDefinedChunker({ avgBytes: 4 * KIB });
  assert.equal(chunker.finish(), null, "nothing pushed");
  assert.deepEqual(chunker.push(new Uint8Array(10)), []);
  assert.equal(chunker.pendingBytes, 10);
  assert.equal(chunker.finish(), 10);
  assert.equal(chunker.finish(), null);
  const data = random(9, 100 * KIB);
  const first = chunker.push(data);
  assert.ok(first.every((c) => c > 10), "offsets continue across finish()");
  chunker.reset();
  assert.equal(chunker.offset, 0);
  assert.deepEqual(chunker.push(data), cutPoints(data, { avgBytes: 4 * KIB }).slice(0, -1));
});

Deno.test("chunkStream() yields the chunks of splitChunks() however the stream is cut", async () => {
  const options = { avgBytes: 8 * KIB };
  const data = random(21, 3 * MIB + 5);
  const expected = splitChunks(data, options);
  const prng = new Prng(22);
  const pieces: Uint8Array[] = [];
  for (let at = 0; at < data.length;) {
    const end = Math.min(data.length, at + prng.nextInt(50_000));
    pieces.push(data.subarray(at, end));
    at = end;
  }
  const buffer = new Uint8Array(cdcParams(options).maxBytes);
  let index = 0;
  let offset = 0;
  let viaBuffer = 0;
  for await (const chunk of chunkStream(pieces, { ...options, buffer })) {
    assert.equal(chunk.offset, offset);
    assert.deepEqual(chunk.bytes, expected[index], `chunk ${index}`);
    if (chunk.bytes.buffer === buffer.buffer) viaBuffer++;
    offset += chunk.bytes.length;
    index++;
  }
  assert.equal(index, expected.length);
  assert.ok(viaBuffer > 0 && viaBuffer < index, "spanning chunks assembled, others zero-copy");
});

Deno.test("chunkStream() handles empty streams, one-byte pieces and a short buffer", async () => {
  const none = [];
  for await (const c of chunkStream([])) none.push(c);
  assert.equal(none.length, 0);
  const data = random(23, 20 * KIB);
  const options = { avgBytes: 1 * KIB };
  const bytes = Array.from(data, (b) => Uint8Array.of(b));
  const got: number[] = [];
  for await (const c of chunkStream(bytes, options)) got.push(c.offset + c.bytes.length);
  assert.deepEqual(got, cutPoints(data, options));
  await assert.rejects(async () => {
    for await (const _ of chunkStream([data], { ...options, buffer: new Uint8Array(10) })) {
      // never reached
    }
  }, RangeError);
});

const GEAR_SHA256 = "69d556925c0a63de940aae26e8e730aec1aec44d91897a4913246277571cdba2";
const PINNED_CUTS_FIRST_8 = [8515, 13008, 21302, 26170, 29422, 30657, 33575, 38086];
const PINNED_CUTS_COUNT = 58;
