import assert from "node:assert/strict";
import { createCipheriv, createHash } from "node:crypto";
import { defaultShimOptions } from "../../ffi/loader.ts";
import { missingPart, Prng } from "../base/mod.ts";
import { type Aead, AeadError } from "./aead.ts";
import {
  CHUNK_DEK_INFO,
  deriveChunkDek,
  ENVELOPE_HEADER_BYTES,
  envelopeBytes,
  EnvelopeError,
  openChunk,
  parseEnvelopeHeader,
  sealChunk,
} from "./envelope.ts";
import { OpensslAead } from "./openssl_aead.ts";
import { WebCryptoAead } from "./webcrypto_aead.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const unhex = (h: string) => Uint8Array.from(h.match(/../g) ?? [], (b) => parseInt(b, 16));
const sha256 = (b: Uint8Array) => new Uint8Array(createHash("sha256").update(b).digest());

interface Vector {
  name: string;
  masterKey: string;
  epoch: number;
  chunkId: string;
  nonce: string;
  plaintext: string;
  dek: string;
  envelope: string;
}

const VECTORS: Vector[] = JSON.parse(
  await Deno.readTextFile(new URL("./testdata/envelope_vectors.json", import.meta.url)),
).vectors;

// Both implementations of the Aead port; without a built shim its cases are ignored and
// say why in their names.
const shim = OpensslAead.load(defaultShimOptions());
const IMPLEMENTATIONS: { name: string; create: () => Aead; absent?: string }[] = [
  { name: "webcrypto", create: () => new WebCryptoAead() },
  {
    name: "openssl",
    create: () => {
      if (!shim.ok) throw new Error(shim.reason);
      return shim.aead;
    },
    absent: shim.ok ? undefined : `OpenSSL shim absent: ${shim.reason}`,
  },
];

function implTest(name: string, fn: (aead: Aead) => Promise<void>): void {
  for (const impl of IMPLEMENTATIONS) {
    Deno.test({
      name: `${name} (${impl.name})` + (impl.absent ? ` (ignored: ${impl.absent})` : ""),
      ignore: missingPart(`the ${impl.name} Aead`, impl.absent),
      fn: () => fn(impl.create()),
    });
  }
}

const MASTER = new Prng(1).bytes(32);
const keyFor = (epoch: number) => new Prng(1000 + epoch).bytes(32);

implTest("sealChunk() produces the golden envelope vectors exactly", async (aead) => {
  assert.ok(VECTORS.length >= 4);
  for (const v of VECTORS) {
    const envelope = await sealChunk({
      aead,
      masterKey: unhex(v.masterKey),
      epoch: v.epoch,
      chunkId: unhex(v.chunkId),
      nonce: unhex(v.nonce),
      plaintext: unhex(v.plaintext),
    });
    assert.equal(hex(envelope), v.envelope, v.name);
    const opened = await openChunk({
      aead,
      masterKeyFor: (epoch) => {
        assert.equal(epoch, v.epoch);
        return unhex(v.masterKey);
      },
      chunkId: unhex(v.chunkId),
      envelope: unhex(v.envelope),
    });
    assert.equal(hex(opened), v.plaintext, v.name);
  }
});

Deno.test("envelope vectors agree with an independent HKDF and AES-GCM (WebCrypto, node:crypto)", async () => {
  for (const v of VECTORS) {
    // HKDF through WebCrypto, not node:crypto as deriveChunkDek uses.
    const base = await crypto.subtle.importKey("raw", unhex(v.masterKey), "HKDF", false, [
      "deriveBits",
    ]);
    const dek = new Uint8Array(
      await crypto.subtle.deriveBits(
        {
          name: "HKDF",
          hash: "SHA-256",
          salt: unhex(v.chunkId),
          info: new TextEncoder().encode(CHUNK_DEK_INFO),
        },
        base,
        256,
      ),
    );
    assert.equal(hex(dek), v.dek, v.name);
    assert.equal(hex(deriveChunkDek(unhex(v.masterKey), unhex(v.chunkId))), v.dek);
    // The layout assembled by hand, sealed by node:crypto's AES-256-GCM.
    const plaintext = unhex(v.plaintext);
    const header = new Uint8Array(ENVELOPE_HEADER_BYTES);
    const view = new DataView(header.buffer);
    header.set([0x4b, 0x53, 0x4b, 0x43, 1, 1, 0, 0]);
    view.setUint32(8, v.epoch);
    header.set(unhex(v.nonce), 12);
    view.setBigUint64(24, BigInt(plaintext.length));
    view.setBigUint64(32, BigInt(plaintext.length + 16));
    const cipher = createCipheriv("aes-256-gcm", dek, unhex(v.nonce));
    cipher.setAAD(new Uint8Array([...unhex(v.chunkId), ...header]));
    const body = new Uint8Array([...cipher.update(plaintext), ...cipher.final()]);
    const expected = new Uint8Array([...header, ...body, ...cipher.getAuthTag()]);
    assert.equal(hex(expected), v.envelope, v.name);
  }
});

implTest("openChunk() opens what sealChunk() sealed, across epochs and sizes", async (aead) => {
  const prng = new Prng(2);
  for (const size of [0, 1, 15, 16, 17, 4096, 65_537, 1 << 20]) {
    const plaintext = prng.bytes(size);
    const chunkId = sha256(plaintext);
    const epoch = prng.nextInt(10);
    const envelope = await sealChunk({
      aead,
      masterKey: keyFor(epoch),
      epoch,
      chunkId,
      plaintext,
    });
    assert.equal(envelope.length, envelopeBytes(size));
    const header = parseEnvelopeHeader(envelope);
    assert.equal(header.epoch, epoch);
    assert.equal(header.plaintextBytes, size);
    assert.equal(header.ciphertextBytes, size + 16);
    const opened = await openChunk({ aead, masterKeyFor: keyFor, chunkId, envelope });
    assert.deepEqual(opened, plaintext, `size ${size}`);
  }
});

implTest("sealChunk() draws a fresh nonce per seal from the injected source", async (aead) => {
  const plaintext = new Uint8Array(100).fill(1);
  const chunkId = sha256(plaintext);
  const a = await sealChunk({ aead, masterKey: MASTER, epoch: 1, chunkId, plaintext });
  const b = await sealChunk({ aead, masterKey: MASTER, epoch: 1, chunkId, plaintext });
  assert.notDeepEqual(parseEnvelopeHeader(a).nonce, parseEnvelopeHeader(b).nonce);
  assert.notDeepEqual(a, b);
  let calls = 0;
  const fixed = await sealChunk({
    aead,
    masterKey: MASTER,
    epoch: 1,
    chunkId,
    plaintext,
    random: (target) => {
      calls++;
      target.fill(0x77);
    },
  });
  assert.equal(calls, 1);
  assert.deepEqual(parseEnvelopeHeader(fixed).nonce, new Uint8Array(12).fill(0x77));
});

implTest("sealChunk() and openChunk() work in place in one caller buffer", async (aead) => {
  const size = 50_000;
  const buffer = new Uint8Array(envelopeBytes(size) + 100); // e.g. from a BufferPool
  const plaintext = new Prng(3).bytes(size);
  buffer.set(plaintext, ENVELOPE_HEADER_BYTES);
  const chunkId = sha256(plaintext);
  const envelope = await sealChunk({
    aead,
    masterKey: MASTER,
    epoch: 3,
    chunkId,
    plaintext: buffer.subarray(ENVELOPE_HEADER_BYTES, ENVELOPE_HEADER_BYTES + size),
    out: buffer,
  });
  assert.equal(envelope.buffer, buffer.buffer);
  assert.equal(envelope.length, envelopeBytes(size));
  const copy = envelope.slice();
  const opened = await openChunk({
    aead,
    masterKeyFor: () => MASTER,
    chunkId,
    envelope,
    out: envelope.subarray(ENVELOPE_HEADER_BYTES),
  });
  assert.equal(opened.buffer, buffer.buffer);
  assert.deepEqual(opened, plaintext);
  // Same bytes as a seal into a fresh array with the same nonce.
  const fresh = await sealChunk({
    aead,
    masterKey: MASTER,
    epoch: 3,
    chunkId,
    plaintext,
    nonce: parseEnvelopeHeader(copy).nonce,
  });
  assert.deepEqual(fresh, copy);
});

implTest("sealChunk() rejects bad arguments before writing anything", async (aead) => {
  const plaintext = new Uint8Array(10);
  const chunkId = sha256(plaintext);
  const base = { aead, masterKey: MASTER, epoch: 1, chunkId, plaintext };
  const out = new Uint8Array(envelopeBytes(10));
  for (
    const bad of [
      { masterKey: new Uint8Array(31) },
      { chunkId: new Uint8Array(31) },
      { epoch: -1 },
      { epoch: 2 ** 32 },
      { epoch: 1.5 },
      { nonce: new Uint8Array(11) },
      { out: new Uint8Array(envelopeBytes(10) - 1) },
      { plaintext: out.subarray(0, 10), out }, // overlaps the header
    ]
  ) {
    await assert.rejects(sealChunk({ ...base, ...bad }), RangeError, JSON.stringify(bad));
  }
  assert.deepEqual(out, new Uint8Array(out.length), "nothing written");
});

implTest(
  "openChunk() rejects a wrong chunk id, master key or epoch with AeadError",
  async (aead) => {
    const plaintext = new Prng(4).bytes(1000);
    const chunkId = sha256(plaintext);
    const envelope = await sealChunk({ aead, masterKey: keyFor(5), epoch: 5, chunkId, plaintext });
    const other = sha256(new Uint8Array(1));
    await assert.rejects(
      openChunk({ aead, masterKeyFor: keyFor, chunkId: other, envelope }),
      AeadError,
    );
    await assert.rejects(
      openChunk({ aead, masterKeyFor: () => keyFor(6), chunkId, envelope }),
      AeadError,
    );
    const renumbered = envelope.slice();
    renumbered[11] = 6; // epoch 6: its key opens nothing sealed under epoch 5
    await assert.rejects(
      openChunk({ aead, masterKeyFor: keyFor, chunkId, envelope: renumbered }),
      AeadError,
    );
    // A failed open leaves no unauthenticated plaintext in the caller's buffer.
    const out = new Uint8Array(1000).fill(9);
    await assert.rejects(
      openChunk({ aead, masterKeyFor: () => keyFor(6), chunkId, envelope, out }),
      AeadError,
    );
    assert.deepEqual(out, new Uint8Array(1000));
  },
);

Deno.test("parseEnvelopeHeader() names what is wrong with a malformed envelope", async () => {
  const aead = new WebCryptoAead();
  const plaintext = new Uint8Array(20);
  const good = await sealChunk({
    aead,
    masterKey: MASTER,
    epoch: 1,
    chunkId: sha256(plaintext),
    plaintext,
  });
  const mutate = (f: (b: Uint8Array) => Uint8Array | void) => {
    const b = good.slice();
    return f(b) ?? b;
  };
  const cases: [string, Uint8Array][] = [
    ["truncated", good.subarray(0, 39)],
    ["truncated", new Uint8Array(0)],
    ["truncated", good.subarray(0, good.length - 1)],
    ["magic", mutate((b) => void (b[0] = 0x4a))],
    ["version", mutate((b) => void (b[4] = 2))],
    ["version", mutate((b) => void (b[4] = 0))],
    ["algorithm", mutate((b) => void (b[5] = 2))],
    ["reserved", mutate((b) => void (b[7] = 1))],
    ["length", mutate((b) => void (b[31] = 21))], // plaintext length != ciphertext - 16
    ["length", mutate((b) => void (b[24] = 0xff))], // beyond 2^53
    ["length", mutate((b) => void (b[26] = 0x40))], // beyond the GCM limit
    ["length", new Uint8Array([...good, 0])], // trailing byte
  ];
  for (const [code, bytes] of cases) {
    assert.throws(
      () => parseEnvelopeHeader(bytes),
      (e: unknown) => e instanceof EnvelopeError && e.code === code,
      `${code}: ${hex(bytes.subarray(0, 40))}`,
    );
    await assert.rejects(
      openChunk({ aead, masterKeyFor: () => MASTER, chunkId: sha256(plaintext), envelope: bytes }),
      (e: unknown) => e instanceof EnvelopeError && e.code === code,
    );
  }
});

implTest(
  "openChunk() fuzz: mutated envelopes only ever throw EnvelopeError or AeadError",
  async (aead) => {
    const prng = new Prng(5);
    const originals: { chunkId: Uint8Array; envelope: Uint8Array }[] = [];
    for (const size of [0, 1, 33, 700]) {
      const plaintext = prng.bytes(size);
      const chunkId = sha256(plaintext);
      originals.push({
        chunkId,
        envelope: await sealChunk({ aead, masterKey: keyFor(2), epoch: 2, chunkId, plaintext }),
      });
    }
    const counts = { EnvelopeError: 0, AeadError: 0 };
    const iterations = 1500;
    for (let i = 0; i < iterations; i++) {
      const { chunkId, envelope } = originals[prng.nextInt(originals.length)]!;
      let bytes = envelope.slice();
      const kind = prng.nextInt(6);
      if (kind === 0) bytes[prng.nextInt(bytes.length)]! ^= 1 << prng.nextInt(8);
      else if (kind === 1) bytes[prng.nextInt(Math.min(bytes.length, 40))] = prng.nextInt(256);
      else if (kind === 2) bytes = bytes.subarray(0, prng.nextInt(bytes.length));
      else if (kind === 3) bytes = new Uint8Array([...bytes, ...prng.bytes(1 + prng.nextInt(40))]);
      else if (kind === 4) {
        // Lengths rewritten consistently with each other, so parsing gets to the Aead.
        const view = new DataView(bytes.buffer);
        const n = prng.nextInt(bytes.length);
        view.setBigUint64(24, BigInt(n));
        view.setBigUint64(32, BigInt(n + 16));
        bytes = bytes.subarray(0, Math.min(bytes.length, 40 + n + 16));
      } else {
        for (let j = 0; j < 1 + prng.nextInt(8); j++) {
          bytes[prng.nextInt(bytes.length)] = prng.nextInt(256);
        }
      }
      if (bytes.length === envelope.length && bytes.every((b, j) => b === envelope[j])) continue;
      try {
        await openChunk({ aead, masterKeyFor: keyFor, chunkId, envelope: bytes });
        assert.fail(`mutation ${i} (kind ${kind}) opened: ${hex(bytes)}`);
      } catch (e) {
        if (e instanceof EnvelopeError) counts.EnvelopeError++;
        else if (e instanceof AeadError) counts.AeadError++;
        else throw e;
      }
    }
    assert.ok(counts.EnvelopeError > 100 && counts.AeadError > 100, JSON.stringify(counts));
  },
);
