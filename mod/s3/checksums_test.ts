import assert from "node:assert/strict";
import { Prng } from "../base/mod.ts";
import { defaultShimOptions } from "../../ffi/loader.ts";
import { OpensslHashing } from "../crypto/mod.ts";
import {
  BodyDigestStream,
  CHECKSUM_ALGORITHMS,
  CHECKSUM_BYTES,
  checksumAlgorithmOfHeader,
  checksumHeaderName,
  combineCrcs,
  crc64nvme,
  createChecksum,
  createMd5,
  fromBase64,
  isCombinable,
  parseChecksumAlgorithm,
  parseChecksumValue,
  parseContentMd5,
  S3_PAYLOAD_HASH_AHEAD_BYTES_MAX,
  toBase64,
  toHex,
} from "./checksums.ts";
import { S3Error } from "./errors.ts";

const utf8 = (s: string) => new TextEncoder().encode(s);

function digestHex(algorithm: Parameters<typeof createChecksum>[0], data: Uint8Array): string {
  const h = createChecksum(algorithm);
  h.update(data);
  return toHex(h.digest());
}

/** Bit-at-a-time CRC-64/NVME with BigInt, to check the sliced tables against. */
function crc64nvmeBitwise(bytes: Uint8Array): bigint {
  const poly = 0x9a6c9329ac4bc9b5n;
  const mask = (1n << 64n) - 1n;
  let crc = mask;
  for (const b of bytes) {
    crc ^= BigInt(b);
    for (let k = 0; k < 8; k++) crc = crc & 1n ? (crc >> 1n) ^ poly : crc >> 1n;
  }
  return crc ^ mask;
}

Deno.test("createChecksum() gives the standard check values for 123456789", () => {
  const check = utf8("123456789");
  assert.equal(digestHex("CRC32", check), "cbf43926");
  assert.equal(digestHex("CRC32C", check), "e3069283");
  assert.equal(digestHex("CRC64NVME", check), "ae8b14860a799888");
  assert.equal(digestHex("SHA1", utf8("abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
  assert.equal(
    digestHex("SHA256", utf8("abc")),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
  for (const algorithm of CHECKSUM_ALGORITHMS) {
    const h = createChecksum(algorithm);
    h.update(check);
    assert.equal(h.digest().length, CHECKSUM_BYTES[algorithm], algorithm);
  }
});

Deno.test("crc64nvme() agrees with a bitwise reference at every length and offset", () => {
  const data = new Prng(3).bytes(200);
  for (let start = 0; start < 9; start++) {
    for (let length = 0; start + length <= data.length; length += 1 + (length >> 3)) {
      const slice = data.subarray(start, start + length);
      const [hi, lo] = crc64nvme(slice);
      assert.equal((BigInt(hi) << 32n) | BigInt(lo), crc64nvmeBitwise(slice), `${start}+${length}`);
    }
  }
});

Deno.test("createChecksum() gives the same digest however the input is split", () => {
  const prng = new Prng(5);
  const data = prng.bytes(5000);
  for (const algorithm of CHECKSUM_ALGORITHMS) {
    const whole = digestHex(algorithm, data);
    for (let trial = 0; trial < 5; trial++) {
      const h = createChecksum(algorithm);
      let at = 0;
      while (at < data.length) {
        const n = Math.min(data.length - at, prng.nextInt(700));
        h.update(data.subarray(at, at + n));
        at += n;
      }
      assert.equal(toHex(h.digest()), whole, algorithm);
    }
  }
});

Deno.test("createMd5() gives the MD5 of the empty string and of abc", () => {
  const empty = createMd5();
  assert.equal(toHex(empty.digest()), "d41d8cd98f00b204e9800998ecf8427e");
  const abc = createMd5();
  abc.update(utf8("a"));
  abc.update(utf8("bc"));
  assert.equal(toHex(abc.digest()), "900150983cd24fb0d6963f7d28e17f72");
});

Deno.test("parseChecksumAlgorithm() accepts any case and refuses unknown names", () => {
  assert.equal(parseChecksumAlgorithm("crc64nvme"), "CRC64NVME");
  assert.equal(parseChecksumAlgorithm(" Sha256 "), "SHA256");
  assert.throws(() => parseChecksumAlgorithm("md5"), (e: S3Error) => e.code === "InvalidRequest");
  assert.equal(checksumHeaderName("CRC32C"), "x-amz-checksum-crc32c");
  assert.equal(checksumAlgorithmOfHeader("X-Amz-Checksum-CRC32"), "CRC32");
  assert.equal(checksumAlgorithmOfHeader("x-amz-checksum-type"), null);
});

Deno.test("parseChecksumValue() and parseContentMd5() check base64 and length", () => {
  assert.deepEqual(parseChecksumValue("CRC32", "y/Q5Jg=="), Uint8Array.of(0xcb, 0xf4, 0x39, 0x26));
  for (const bad of ["y/Q5Jg", "y/Q5Jg==AA", "AAAAAAAA", "!!!!", ""]) {
    assert.throws(
      () => parseChecksumValue("CRC32", bad),
      (e: S3Error) =>
        e.code === "InvalidRequest" && e.message.includes("x-amz-checksum-crc32 header"),
      bad,
    );
  }
  assert.equal(
    toHex(parseContentMd5("1B2M2Y8AsgTpgAmY7PhCfg==")),
    "d41d8cd98f00b204e9800998ecf8427e",
  );
  assert.throws(
    () => parseContentMd5("1B2M2Y8AsgTpgAmY7PhC"),
    (e: S3Error) => e.code === "InvalidDigest",
  );
  assert.throws(() => parseContentMd5("AAAA"), (e: S3Error) => e.code === "InvalidDigest");
  assert.equal(fromBase64("a b="), null);
});

async function pump(stream: BodyDigestStream, parts: Uint8Array[]): Promise<Uint8Array> {
  const source = ReadableStream.from(parts);
  const out: Uint8Array[] = [];
  for await (const chunk of source.pipeThrough(stream)) out.push(chunk);
  const result = new Uint8Array(out.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of out) {
    result.set(c, at);
    at += c.length;
  }
  return result;
}

async function rejectsCode(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof S3Error && e.code === code);
}

Deno.test("BodyDigestStream passes the body through and reports its digests", async () => {
  const body = utf8("123456789");
  const sha = digestHex("SHA256", body);
  const stream = new BodyDigestStream({
    computeMd5: true,
    expectedSizeBytes: 9,
    expectedSha256Hex: sha.toUpperCase(),
    expectedMd5: parseContentMd5("JfnnlDI7RTiF9RgfG2JNCw=="),
    checksums: [
      { algorithm: "CRC32", expected: parseChecksumValue("CRC32", "y/Q5Jg==") },
      { algorithm: "CRC64NVME" },
      { algorithm: "SHA256" },
    ],
  });
  assert.deepEqual(await pump(stream, [body.subarray(0, 4), body.subarray(4)]), body);
  const digests = await stream.digests;
  assert.equal(digests.sizeBytes, 9);
  assert.equal(toHex(digests.md5!), "25f9e794323b453885f5181f1b624d0b");
  const noMd5 = new BodyDigestStream();
  await pump(noMd5, [body]);
  assert.equal((await noMd5.digests).md5, null);
  assert.equal(digests.checksums.CRC32, "y/Q5Jg==");
  assert.equal(
    digests.checksums.CRC64NVME,
    toBase64(Uint8Array.of(0xae, 0x8b, 0x14, 0x86, 0x0a, 0x79, 0x98, 0x88)),
  );
  assert.equal(digests.checksums.SHA256, toBase64(fromHex(sha)));
});

function fromHex(hex: string): Uint8Array {
  return Uint8Array.from(
    { length: hex.length / 2 },
    (_, i) => parseInt(hex.slice(2 * i, 2 * i + 2), 16),
  );
}

Deno.test("BodyDigestStream refuses a body that differs from what was claimed", async () => {
  const body = utf8("123456789");
  await rejectsCode(
    pump(new BodyDigestStream({ expectedSizeBytes: 10 }), [body]),
    "IncompleteBody",
  );
  await rejectsCode(pump(new BodyDigestStream({ expectedSizeBytes: 8 }), [body]), "InvalidRequest");
  await rejectsCode(
    pump(new BodyDigestStream({ expectedSha256Hex: "00".repeat(32) }), [body]),
    "XAmzContentSHA256Mismatch",
  );
  await rejectsCode(
    pump(new BodyDigestStream({ expectedMd5: new Uint8Array(16) }), [body]),
    "BadDigest",
  );
  const wrongCrc = new BodyDigestStream({
    checksums: [{ algorithm: "CRC32C", expected: new Uint8Array(4) }],
  });
  await rejectsCode(pump(wrongCrc, [body]), "BadDigest");
  await rejectsCode(wrongCrc.digests, "BadDigest");
});

Deno.test("combineCrcs() gives the CRC of the parts laid end to end", () => {
  let seed = 7;
  const bytes = (n: number) =>
    Uint8Array.from({ length: n }, () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24);
  for (const algorithm of ["CRC32", "CRC32C", "CRC64NVME"] as const) {
    assert.ok(isCombinable(algorithm));
    const parts = [bytes(1000), bytes(0), bytes(1), bytes(70_000)];
    const whole = createChecksum(algorithm);
    const each = parts.map((p) => {
      whole.update(p);
      const h = createChecksum(algorithm);
      h.update(p);
      return { crc: h.digest(), sizeBytes: p.length };
    });
    assert.deepEqual(combineCrcs(algorithm, each), whole.digest(), algorithm);
    assert.deepEqual(combineCrcs(algorithm, each.slice(0, 1)), each[0]!.crc, algorithm);
  }
  assert.ok(!isCombinable("SHA256"));
  assert.throws(() => combineCrcs("SHA1", []), RangeError);
});

const offLoop = OpensslHashing.load(defaultShimOptions());

Deno.test({
  name: "BodyDigestStream checks the payload SHA-256 off the event loop, past its ahead bound",
  ignore: !offLoop.ok,
  fn: async () => {
    if (!offLoop.ok) return;
    const hashing = offLoop.hashing;
    // More than S3_PAYLOAD_HASH_AHEAD_BYTES_MAX in 1 MiB pieces: the stream waits on its hash.
    const piece = 1 << 20;
    const count = S3_PAYLOAD_HASH_AHEAD_BYTES_MAX / piece + 5;
    const prng = new Prng(77);
    const parts = Array.from({ length: count }, () => prng.bytes(piece));
    const whole = new Uint8Array(piece * count);
    parts.forEach((p, i) => whole.set(p, i * piece));
    const sha = digestHex("SHA256", whole);
    const stream = new BodyDigestStream({
      expectedSizeBytes: whole.length,
      expectedSha256Hex: sha,
      checksums: [{ algorithm: "SHA256" }],
      hashing,
    });
    assert.deepEqual(await pump(stream, parts), whole);
    const digests = await stream.digests;
    assert.equal(digests.checksums.SHA256, toBase64(fromHex(sha)));
    // A mismatch, a short body and a long one fail the stream as on the loop.
    await rejectsCode(
      pump(new BodyDigestStream({ expectedSha256Hex: "00".repeat(32), hashing }), parts),
      "XAmzContentSHA256Mismatch",
    );
    await rejectsCode(
      pump(
        new BodyDigestStream({
          expectedSizeBytes: whole.length + 1,
          expectedSha256Hex: sha,
          hashing,
        }),
        parts,
      ),
      "IncompleteBody",
    );
    await rejectsCode(
      pump(new BodyDigestStream({ expectedSizeBytes: 5, expectedSha256Hex: sha, hashing }), parts),
      "InvalidRequest",
    );
  },
});
