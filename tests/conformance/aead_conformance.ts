// The shared AEAD conformance suite: every implementation of the Aead port registers the
// same cases through `aeadConformance()`, so the OpenSSL shim and the WebCrypto twin
// accept, produce and reject exactly the same bytes.

import assert from "node:assert/strict";
import { missingPart, Prng } from "../../mod/base/mod.ts";
import {
  type Aead,
  AEAD_BATCH_ITEMS_MAX,
  AEAD_KEY_BYTES,
  AEAD_NONCE_BYTES,
  AEAD_TAG_BYTES,
  AeadError,
  type AeadImplementation,
  type AeadKey,
  type AeadSealItem,
} from "../../mod/crypto/mod.ts";

export interface AeadSubject {
  /** Shown in every test name, e.g. "openssl" or "openssl, all nonblocking". */
  name: string;
  /** The `implementation` the Aead must report. */
  implementation: AeadImplementation;
  /** Returns the implementation under test; called once per test. */
  create: () => Aead;
  /** Another implementation to exchange sealed data with; absent when unavailable. */
  peer?: { name: string; create: () => Aead } | { name: string; absent: string };
  /** When set, every case is registered ignored and its name says why. */
  absent?: string;
}

/** McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 13-16 (AES-256). */
export const GCM_VECTORS: readonly {
  name: string;
  key: string;
  iv: string;
  plaintext: string;
  aad: string;
  ciphertext: string;
  tag: string;
}[] = [
  {
    name: "test case 13 (empty plaintext, empty AAD)",
    key: "00".repeat(32),
    iv: "00".repeat(12),
    plaintext: "",
    aad: "",
    ciphertext: "",
    tag: "530f8afbc74536b9a963b4f1c4cb738b",
  },
  {
    name: "test case 14 (one zero block)",
    key: "00".repeat(32),
    iv: "00".repeat(12),
    plaintext: "00".repeat(16),
    aad: "",
    ciphertext: "cea7403d4d606b6e074ec5d3baf39d18",
    tag: "d0d1c8a799996bf0265b98b5d48ab919",
  },
  {
    name: "test case 15 (four blocks, no AAD)",
    key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
    iv: "cafebabefacedbaddecaf888",
    plaintext: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" +
      "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
    aad: "",
    ciphertext: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa" +
      "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
    tag: "b094dac5d93471bdec1a502270e3cc6c",
  },
  {
    name: "test case 16 (60 bytes with AAD)",
    key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
    iv: "cafebabefacedbaddecaf888",
    plaintext: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" +
      "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
    aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
    ciphertext: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa" +
      "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
    tag: "76fc6ece0f4e1768cddf8853bb2d551b",
  },
];

/** Test cases 17 and 18 use 64- and 480-bit IVs, which a 96-bit-nonce port must refuse. */
const NON_96_BIT_IVS = [
  "cafebabefacedbad",
  "9313225df88406e555909c5aff5269aa6a7a9538534f7da1e4c303d2a318a728" +
  "c3c0c95156809539fcf0e2429a6b525416aedbf5a0de6a57a637b39b",
];

/** Bigger than OpensslAead's default nonblocking threshold (2 MiB), so that path runs too. */
const LARGE_BYTES = 3 * 1024 * 1024 + 5;
const MIB = 1024 * 1024;

export function hex(text: string): Uint8Array {
  assert.equal(text.length % 2, 0, "hex string of whole bytes");
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A nonce that is unique per (seed, counter), as a caller's counter scheme would give. */
function nonceFor(counter: number): Uint8Array {
  const nonce = new Uint8Array(AEAD_NONCE_BYTES);
  new DataView(nonce.buffer).setUint32(8, counter);
  return nonce;
}

/**
 * Byte equality that reports the first difference: assert.deepEqual would try to render
 * a diff of megabyte arrays, which takes minutes when an implementation is wrong.
 */
export function assertBytes(actual: Uint8Array, expected: Uint8Array, what = "bytes"): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) {
      assert.fail(`${what}: byte ${i} is ${actual[i]}, expected ${expected[i]}`);
    }
  }
}

function assertAllZero(bytes: Uint8Array, what: string): void {
  const at = bytes.findIndex((b) => b !== 0);
  assert.equal(at, -1, `${what}: byte ${at} is ${bytes[at]}, expected zero`);
}

async function seal(
  aead: Aead,
  key: AeadKey,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Promise<Uint8Array> {
  const out = new Uint8Array(plaintext.length + AEAD_TAG_BYTES);
  assert.equal(await aead.seal(key, nonce, plaintext, aad, out), out.length);
  return out;
}

async function open(
  aead: Aead,
  key: AeadKey,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad: Uint8Array,
): Promise<Uint8Array> {
  const out = new Uint8Array(sealed.length - AEAD_TAG_BYTES);
  assert.equal(await aead.open(key, nonce, sealed, aad, out), out.length);
  return out;
}

/** Opening must fail with AeadError and leave zeros, never plaintext, where it would write. */
async function assertRejectedOpen(
  aead: Aead,
  key: AeadKey,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad: Uint8Array,
  what: string,
): Promise<void> {
  const length = Math.max(sealed.length - AEAD_TAG_BYTES, 0);
  const out = new Uint8Array(length + 8).fill(0xa5);
  await assert.rejects(aead.open(key, nonce, sealed, aad, out), AeadError, what);
  assertAllZero(out.subarray(0, length), `${what}: output after failure`);
  assert.ok(out.subarray(length).every((b) => b === 0xa5), `${what}: wrote past the plaintext`);
}

/** Registers the conformance cases for `subject` with Deno.test. */
export function aeadConformance(subject: AeadSubject): void {
  const prefix = subject.absent === undefined
    ? `Aead conformance [${subject.name}]`
    : `Aead conformance [${subject.name}] (ignored: ${subject.absent})`;
  const test = (name: string, fn: (aead: Aead) => Promise<void>): void => {
    Deno.test({
      name: `${prefix}: ${name}`,
      ignore: missingPart(`Aead[${subject.name}]`, subject.absent),
      fn: () => fn(subject.create()),
    });
  };

  test("reports its implementation name", async (aead) => {
    assert.equal(aead.implementation, subject.implementation);
    assert.ok(aead.reason.length > 0);
    await Promise.resolve();
  });

  for (const v of GCM_VECTORS) {
    test(`GCM ${v.name} seals and opens byte-exactly`, async (aead) => {
      const key = await aead.importKey(hex(v.key));
      const plaintext = hex(v.plaintext);
      const expected = v.ciphertext + v.tag;
      // One spare byte after the sealed text shows nothing is written beyond it.
      const out = new Uint8Array(plaintext.length + AEAD_TAG_BYTES + 1).fill(0xee);
      const written = await aead.seal(key, hex(v.iv), plaintext, hex(v.aad), out);
      assert.equal(written, plaintext.length + AEAD_TAG_BYTES);
      assert.equal(toHex(out.subarray(0, written)), expected);
      assert.equal(out[written], 0xee);
      const opened = await open(aead, key, hex(v.iv), hex(expected), hex(v.aad));
      assert.equal(toHex(opened), v.plaintext);
    });
  }

  test("GCM test cases 17 and 18 (IVs not 96 bits) are refused with RangeError", async (aead) => {
    const key = await aead.importKey(hex(GCM_VECTORS[3].key));
    for (const iv of NON_96_BIT_IVS) {
      const out = new Uint8Array(64 + AEAD_TAG_BYTES);
      await assert.rejects(
        aead.seal(key, hex(iv), new Uint8Array(64), new Uint8Array(0), out),
        RangeError,
      );
      assertAllZero(out, "output after a refused seal");
    }
  });

  test("round trips seeded random sizes from 0 to 1 MiB", async (aead) => {
    const prng = new Prng(0xae4d);
    const key = await aead.importKey(prng.bytes(AEAD_KEY_BYTES));
    const sizes = [0, 1, 15, 16, 17, 4095, 4096, 65536, MIB];
    for (let i = 0; i < 12; i++) sizes.push(prng.nextInt(MIB + 1));
    let counter = 0;
    for (const size of sizes) {
      const plaintext = prng.bytes(size);
      const aad = prng.bytes(prng.nextInt(65));
      const nonce = nonceFor(counter++);
      const sealed = await seal(aead, key, nonce, plaintext, aad);
      if (size >= 16) assert.notDeepEqual(sealed.subarray(0, 16), plaintext.subarray(0, 16));
      assertBytes(await open(aead, key, nonce, sealed, aad), plaintext, `size ${size}`);
    }
  });

  test("round trips a message above the nonblocking threshold", async (aead) => {
    const prng = new Prng(7);
    const key = await aead.importKey(prng.bytes(AEAD_KEY_BYTES));
    const plaintext = prng.bytes(LARGE_BYTES);
    const aad = prng.bytes(40);
    const sealed = await seal(aead, key, nonceFor(1), plaintext, aad);
    assertBytes(await open(aead, key, nonceFor(1), sealed, aad), plaintext);
    sealed[LARGE_BYTES >> 1] ^= 0x10;
    await assertRejectedOpen(aead, key, nonceFor(1), sealed, aad, "large tampered");
  });

  test("seals and opens in place (out is the input)", async (aead) => {
    const prng = new Prng(11);
    const key = await aead.importKey(prng.bytes(AEAD_KEY_BYTES));
    for (const size of [0, 100, 70000, LARGE_BYTES]) {
      const plaintext = prng.bytes(size);
      const buffer = new Uint8Array(size + AEAD_TAG_BYTES);
      buffer.set(plaintext);
      const reference = await seal(aead, key, nonceFor(size), plaintext, new Uint8Array(0));
      await aead.seal(key, nonceFor(size), buffer.subarray(0, size), new Uint8Array(0), buffer);
      assertBytes(buffer, reference, `in-place seal of ${size}`);
      await aead.open(key, nonceFor(size), buffer, new Uint8Array(0), buffer);
      assertBytes(buffer.subarray(0, size), plaintext, `in-place open of ${size}`);
    }
  });

  test("a flipped bit in ciphertext or tag fails with AeadError", async (aead) => {
    const prng = new Prng(21);
    const key = await aead.importKey(prng.bytes(AEAD_KEY_BYTES));
    const plaintext = prng.bytes(1000);
    const aad = prng.bytes(13);
    const sealed = await seal(aead, key, nonceFor(0), plaintext, aad);
    for (const at of [0, 517, 999, 1000, 1015]) {
      for (const bit of [0x01, 0x80]) {
        const bad = sealed.slice();
        bad[at] ^= bit;
        const what = `${at < 1000 ? "ciphertext" : "tag"} byte ${at} bit ${bit}`;
        await assertRejectedOpen(aead, key, nonceFor(0), bad, aad, what);
      }
    }
  });

  test("a wrong key, nonce or AAD fails with AeadError", async (aead) => {
    const prng = new Prng(31);
    const raw = prng.bytes(AEAD_KEY_BYTES);
    const key = await aead.importKey(raw);
    const plaintext = prng.bytes(300);
    const aad = prng.bytes(20);
    const sealed = await seal(aead, key, nonceFor(5), plaintext, aad);
    const otherRaw = raw.slice();
    otherRaw[31] ^= 1;
    const other = await aead.importKey(otherRaw);
    await assertRejectedOpen(aead, other, nonceFor(5), sealed, aad, "wrong key");
    await assertRejectedOpen(aead, key, nonceFor(6), sealed, aad, "wrong nonce");
    const badAad = aad.slice();
    badAad[0] ^= 1;
    await assertRejectedOpen(aead, key, nonceFor(5), sealed, badAad, "changed AAD");
    await assertRejectedOpen(aead, key, nonceFor(5), sealed, new Uint8Array(0), "missing AAD");
    await assertRejectedOpen(aead, key, nonceFor(5), sealed, prng.bytes(21), "longer AAD");
    // The right inputs still open: a failure leaves no state behind.
    assertBytes(await open(aead, key, nonceFor(5), sealed, aad), plaintext);
  });

  test("empty plaintext with empty AAD seals to a bare tag", async (aead) => {
    const key = await aead.importKey(new Uint8Array(AEAD_KEY_BYTES).fill(9));
    const out = new Uint8Array(AEAD_TAG_BYTES);
    assert.equal(
      await aead.seal(key, nonceFor(1), new Uint8Array(0), new Uint8Array(0), out),
      AEAD_TAG_BYTES,
    );
    assert.equal(await aead.open(key, nonceFor(1), out, new Uint8Array(0), new Uint8Array(0)), 0);
    out[3] ^= 4;
    await assertRejectedOpen(aead, key, nonceFor(1), out, new Uint8Array(0), "bad bare tag");
  });

  test("input shorter than a tag, or cut short, fails with AeadError", async (aead) => {
    const key = await aead.importKey(new Uint8Array(AEAD_KEY_BYTES).fill(3));
    const sealed = await seal(aead, key, nonceFor(2), new Uint8Array(50), new Uint8Array(0));
    for (const length of [0, 1, AEAD_TAG_BYTES - 1]) {
      await assert.rejects(
        aead.open(key, nonceFor(2), sealed.subarray(0, length), new Uint8Array(0), sealed.slice()),
        AeadError,
      );
    }
    await assertRejectedOpen(
      aead,
      key,
      nonceFor(2),
      sealed.subarray(0, sealed.length - 1),
      new Uint8Array(0),
      "one byte cut",
    );
  });

  test("bad lengths fail with RangeError and write nothing", async (aead) => {
    const key = await aead.importKey(new Uint8Array(AEAD_KEY_BYTES));
    await assert.rejects(aead.importKey(new Uint8Array(16)), RangeError);
    await assert.rejects(aead.importKey(new Uint8Array(33)), RangeError);
    const plaintext = new Uint8Array(100).fill(1);
    const none = new Uint8Array(0);
    const small = new Uint8Array(plaintext.length + AEAD_TAG_BYTES - 1);
    await assert.rejects(aead.seal(key, nonceFor(0), plaintext, none, small), RangeError);
    assertAllZero(small, "seal output after RangeError");
    for (const nonceLength of [0, 8, 11, 13, 16]) {
      await assert.rejects(
        aead.seal(key, new Uint8Array(nonceLength), plaintext, none, new Uint8Array(200)),
        RangeError,
        `nonce of ${nonceLength} bytes`,
      );
    }
    const sealed = await seal(aead, key, nonceFor(0), plaintext, none);
    const short = new Uint8Array(plaintext.length - 1);
    await assert.rejects(aead.open(key, nonceFor(0), sealed, none, short), RangeError);
    assertAllZero(short, "open output after RangeError");
    await assert.rejects(
      aead.open(key, new Uint8Array(16), sealed, none, new Uint8Array(100)),
      RangeError,
    );
  });

  test("out partially overlapping the input fails with RangeError", async (aead) => {
    const key = await aead.importKey(new Uint8Array(AEAD_KEY_BYTES));
    const buffer = new Uint8Array(200);
    const none = new Uint8Array(0);
    await assert.rejects(
      aead.seal(key, nonceFor(0), buffer.subarray(0, 64), none, buffer.subarray(8)),
      RangeError,
    );
    await assert.rejects(
      aead.seal(key, nonceFor(0), buffer.subarray(8, 72), none, buffer.subarray(0)),
      RangeError,
    );
    // Adjacent, not overlapping: allowed.
    await aead.seal(key, nonceFor(0), buffer.subarray(0, 64), none, buffer.subarray(64));
  });

  test("importKey copies the raw key", async (aead) => {
    const raw = new Uint8Array(AEAD_KEY_BYTES).fill(7);
    const key = await aead.importKey(raw);
    const before = await seal(aead, key, nonceFor(0), new Uint8Array(32), new Uint8Array(0));
    raw.fill(8);
    const after = await seal(aead, key, nonceFor(0), new Uint8Array(32), new Uint8Array(0));
    assertBytes(after, before);
    assert.ok(!JSON.stringify(key).includes("7,7,7"), "a key does not expose its bytes");
  });

  test("a key imported by another Aead is refused", async (aead) => {
    const foreign = await subject.create().importKey(new Uint8Array(AEAD_KEY_BYTES));
    const mine = await aead.importKey(new Uint8Array(AEAD_KEY_BYTES));
    const out = new Uint8Array(AEAD_TAG_BYTES);
    const none = new Uint8Array(0);
    assert.notEqual(foreign, mine);
    await assert.rejects(aead.seal(foreign, nonceFor(0), none, none, out), TypeError);
    const fake = { implementation: aead.implementation } as AeadKey;
    await assert.rejects(aead.seal(fake, nonceFor(0), none, none, out), TypeError);
  });

  test("views of a SharedArrayBuffer work like any other", async (aead) => {
    const prng = new Prng(41);
    const raw = prng.bytes(AEAD_KEY_BYTES);
    const key = await aead.importKey(raw);
    const shared = new Uint8Array(new SharedArrayBuffer(4096));
    const plaintext = shared.subarray(0, 1000);
    prng.fill(plaintext);
    const nonce = shared.subarray(1024, 1024 + AEAD_NONCE_BYTES);
    nonce.set(nonceFor(77));
    const aad = shared.subarray(1100, 1120);
    const out = shared.subarray(2048, 2048 + 1016);
    await aead.seal(key, nonce, plaintext, aad, out);
    assertBytes(out, await seal(aead, key, nonceFor(77), plaintext.slice(), aad.slice()));
    const back = new Uint8Array(1000);
    await aead.open(key, nonce, out, aad, back);
    assertBytes(back, plaintext.slice());
  });

  test("sealBatch and openBatch equal single calls", async (aead) => {
    const prng = new Prng(51);
    const keys = [
      await aead.importKey(prng.bytes(AEAD_KEY_BYTES)),
      await aead.importKey(prng.bytes(AEAD_KEY_BYTES)),
    ];
    // Many small items in one ArrayBuffer (the usual layout), a few in their own.
    const arena = new Uint8Array(64 * 1024);
    prng.fill(arena);
    const items: AeadSealItem[] = [];
    for (let i = 0; i < 96; i++) {
      const size = i % 7 === 0 ? 0 : prng.nextInt(600);
      const at = prng.nextInt(arena.length - size);
      items.push({
        key: keys[i % 3 === 0 ? 1 : 0],
        nonce: nonceFor(i),
        plaintext: i % 5 === 0 ? prng.bytes(size) : arena.subarray(at, at + size),
        aad: i % 2 === 0 ? new Uint8Array(0) : prng.bytes(prng.nextInt(30) + 1),
        out: new Uint8Array(size + AEAD_TAG_BYTES),
      });
    }
    const written = await aead.sealBatch(items);
    assert.deepEqual(written, items.map((it) => it.plaintext.length + AEAD_TAG_BYTES));
    for (const it of items) {
      assertBytes(it.out, await seal(aead, it.key, it.nonce, it.plaintext, it.aad));
    }
    const opens = items.map((it) => ({
      key: it.key,
      nonce: it.nonce,
      sealed: it.out,
      aad: it.aad,
      out: new Uint8Array(it.plaintext.length),
    }));
    assert.deepEqual(await aead.openBatch(opens), items.map((it) => it.plaintext.length));
    opens.forEach((o, i) => assertBytes(o.out, items[i].plaintext, `item ${i}`));
    assert.deepEqual(await aead.sealBatch([]), []);
    assert.deepEqual(await aead.openBatch([]), []);
  });

  test("openBatch names every failed item, zeroes them and keeps the rest", async (aead) => {
    const prng = new Prng(61);
    const key = await aead.importKey(prng.bytes(AEAD_KEY_BYTES));
    const plaintexts = Array.from({ length: 10 }, (_, i) => prng.bytes(100 + i));
    const sealed = await Promise.all(
      plaintexts.map((p, i) => seal(aead, key, nonceFor(i), p, new Uint8Array(0))),
    );
    sealed[3][5] ^= 1;
    sealed[7] = sealed[7].subarray(0, 10); // shorter than a tag
    const outs = plaintexts.map((p) => new Uint8Array(p.length).fill(0xa5));
    const error = await aead.openBatch(sealed.map((s, i) => ({
      key,
      nonce: nonceFor(i),
      sealed: s,
      aad: new Uint8Array(0),
      out: outs[i],
    }))).then(() => null, (e: unknown) => e);
    assert.ok(error instanceof AeadError, `expected AeadError, got ${error}`);
    assert.deepEqual(error.failed, [3, 7]);
    assertAllZero(outs[3], "failed item output");
    for (const i of [0, 1, 2, 4, 5, 6, 8, 9]) assertBytes(outs[i], plaintexts[i]);
  });

  test("a batch above the nonblocking threshold equals single calls", async (aead) => {
    const prng = new Prng(71);
    const key = await aead.importKey(prng.bytes(AEAD_KEY_BYTES));
    const items = Array.from({ length: 5 }, (_, i) => {
      const plaintext = prng.bytes(MIB - i);
      return {
        key,
        nonce: nonceFor(i),
        plaintext,
        aad: prng.bytes(i),
        out: new Uint8Array(plaintext.length + AEAD_TAG_BYTES),
      };
    });
    await aead.sealBatch(items);
    for (const it of items) {
      assertBytes(it.out, await seal(aead, it.key, it.nonce, it.plaintext, it.aad));
    }
    items[2].out[100] ^= 2;
    const opens = items.map((it) => ({
      key,
      nonce: it.nonce,
      sealed: it.out,
      aad: it.aad,
      out: new Uint8Array(it.plaintext.length),
    }));
    const error = await aead.openBatch(opens).then(() => null, (e: unknown) => e);
    assert.ok(error instanceof AeadError);
    assert.deepEqual(error.failed, [2]);
    assertAllZero(opens[2].out, "failed large item");
    assertBytes(opens[4].out, items[4].plaintext);
  });

  test("batches validate every item first and cap their size", async (aead) => {
    const key = await aead.importKey(new Uint8Array(AEAD_KEY_BYTES));
    const good = {
      key,
      nonce: nonceFor(0),
      plaintext: new Uint8Array(4),
      aad: new Uint8Array(0),
      out: new Uint8Array(20).fill(0xa5),
    };
    const bad = { ...good, nonce: new Uint8Array(4), out: new Uint8Array(20) };
    await assert.rejects(aead.sealBatch([good, bad]), /item 1: nonce/);
    assert.ok(good.out.every((b) => b === 0xa5), "nothing sealed before validation ended");
    const tooMany = Array.from({ length: AEAD_BATCH_ITEMS_MAX + 1 }, () => good);
    await assert.rejects(aead.sealBatch(tooMany), RangeError);
  });

  test("concurrent small and large calls under several keys stay correct", async (aead) => {
    const prng = new Prng(81);
    // More keys than any reasonable context cache, interleaved, so entries get evicted.
    const raws = Array.from({ length: 12 }, () => prng.bytes(AEAD_KEY_BYTES));
    const keys = await Promise.all(raws.map((r) => aead.importKey(r)));
    const jobs = Array.from({ length: 40 }, (_, i) => ({
      key: keys[(i * 5) % keys.length],
      nonce: nonceFor(i),
      plaintext: prng.bytes(i % 13 === 0 ? LARGE_BYTES - i : prng.nextInt(5000)),
      aad: prng.bytes(i % 4),
    }));
    const sealed = await Promise.all(
      jobs.map((j) => seal(aead, j.key, j.nonce, j.plaintext, j.aad)),
    );
    const opened = await Promise.all(
      jobs.map((j, i) => open(aead, j.key, j.nonce, sealed[i], j.aad)),
    );
    opened.forEach((p, i) => assertBytes(p, jobs[i].plaintext, `job ${i}`));
    // Each job's ciphertext depends only on its own key: seal again one by one.
    for (let i = 0; i < jobs.length; i += 7) {
      const j = jobs[i];
      assertBytes(sealed[i], await seal(aead, j.key, j.nonce, j.plaintext, j.aad));
    }
  });

  const peer = subject.peer;
  const peerAbsent = peer === undefined
    ? "no peer implementation given"
    : "absent" in peer
    ? peer.absent
    : undefined;
  const peerName = peer?.name ?? "peer";
  Deno.test({
    name: `${prefix}: data sealed here opens under ${peerName} and vice versa` +
      (peerAbsent !== undefined && subject.absent === undefined ? ` (ignored: ${peerAbsent})` : ""),
    ignore: missingPart(`Aead[${subject.name}]`, subject.absent) ||
      (peer === undefined || missingPart(`Aead[${peerName}]`, peerAbsent)),
    fn: async () => {
      assert.ok(peer !== undefined && "create" in peer);
      const aead = subject.create();
      const other = peer.create();
      const prng = new Prng(91);
      const raw = prng.bytes(AEAD_KEY_BYTES);
      const mine = await aead.importKey(raw);
      const theirs = await other.importKey(raw);
      let counter = 0;
      for (const size of [0, 1, 16, 1000, 65536, MIB + 3, LARGE_BYTES]) {
        const plaintext = prng.bytes(size);
        const aad = prng.bytes(size % 50);
        const n1 = nonceFor(counter++);
        const fromMine = await seal(aead, mine, n1, plaintext, aad);
        assertBytes(await open(other, theirs, n1, fromMine, aad), plaintext);
        const n2 = nonceFor(counter++);
        const fromTheirs = await seal(other, theirs, n2, plaintext, aad);
        assertBytes(await open(aead, mine, n2, fromTheirs, aad), plaintext);
        assertBytes(fromMine, await seal(other, theirs, n1, plaintext, aad), `size ${size}`);
        fromTheirs[size === 0 ? 0 : size - 1] ^= 1;
        await assertRejectedOpen(aead, mine, n2, fromTheirs, aad, `peer-sealed ${size} tampered`);
      }
    },
  });
}
