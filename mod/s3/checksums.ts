// Body checksums of the S3 API: the `x-amz-checksum-*` family (CRC32, CRC32C, CRC64NVME,
// SHA1, SHA256, sent base64), MD5 for ETags and Content-MD5, and a pass-through stream that
// computes them while a body streams and refuses it at the end when a claimed digest does
// not match. Incremental everywhere: no body is ever held whole.

import { createHash, type Hash } from "node:crypto";
import { crc32 as zlibCrc32 } from "node:zlib";
import { assert, crc32c } from "../base/mod.ts";
import type { AsyncStreamDigest, Hashing } from "../crypto/mod.ts";
import { S3Error } from "./errors.ts";

export type ChecksumAlgorithm = "CRC32" | "CRC32C" | "CRC64NVME" | "SHA1" | "SHA256";

export const CHECKSUM_ALGORITHMS: readonly ChecksumAlgorithm[] = Object.freeze([
  "CRC32",
  "CRC32C",
  "CRC64NVME",
  "SHA1",
  "SHA256",
]);

/** Digest length of each algorithm. */
export const CHECKSUM_BYTES: Readonly<Record<ChecksumAlgorithm, number>> = Object.freeze({
  CRC32: 4,
  CRC32C: 4,
  CRC64NVME: 8,
  SHA1: 20,
  SHA256: 32,
});

export const MD5_BYTES = 16;
/**
 * Bytes of a streamed body passed on while their payload SHA-256 still runs off the event
 * loop; past them the stream waits for the hash (they are held until hashed).
 */
export const S3_PAYLOAD_HASH_AHEAD_BYTES_MAX = 8 * 1024 * 1024;

/** An incremental digest: feed with update(), read once with digest(). */
export interface IncrementalHash {
  update(bytes: Uint8Array): void;
  /** The digest of everything fed so far; the hash may not be used afterwards. */
  digest(): Uint8Array;
}

class NodeHash implements IncrementalHash {
  readonly #hash: Hash;
  constructor(algorithm: "md5" | "sha1" | "sha256") {
    this.#hash = createHash(algorithm);
  }
  update(bytes: Uint8Array): void {
    this.#hash.update(bytes);
  }
  digest(): Uint8Array {
    const b = this.#hash.digest();
    return new Uint8Array(b.buffer, b.byteOffset, b.length);
  }
}

class Crc32Hash implements IncrementalHash {
  #crc = 0;
  constructor(readonly castagnoli: boolean) {}
  update(bytes: Uint8Array): void {
    this.#crc = this.castagnoli ? crc32c(bytes, this.#crc) : zlibCrc32(bytes, this.#crc);
  }
  digest(): Uint8Array {
    const out = new Uint8Array(4);
    new DataView(out.buffer).setUint32(0, this.#crc >>> 0);
    return out;
  }
}

// CRC-64/NVME: reflected polynomial 0x9A6C9329AC4BC9B5, init and xorout all ones. Values
// are kept as two u32 halves (BigInt would be ten times slower); slicing-by-8 tables.
const CRC64_POLY_HI = 0x9a6c9329;
const CRC64_POLY_LO = 0xac4bc9b5;
const CRC64_SLICES = 8;
const [CRC64_HI, CRC64_LO] = (() => {
  const hi = new Uint32Array(256 * CRC64_SLICES);
  const lo = new Uint32Array(256 * CRC64_SLICES);
  for (let n = 0; n < 256; n++) {
    let h = 0;
    let l = n;
    for (let k = 0; k < 8; k++) {
      const carry = l & 1;
      l = ((l >>> 1) | ((h & 1) << 31)) >>> 0;
      h = h >>> 1;
      if (carry) {
        h = (h ^ CRC64_POLY_HI) >>> 0;
        l = (l ^ CRC64_POLY_LO) >>> 0;
      }
    }
    hi[n] = h;
    lo[n] = l;
  }
  for (let s = 1; s < CRC64_SLICES; s++) {
    for (let n = 0; n < 256; n++) {
      const ph = hi[(s - 1) * 256 + n]!;
      const pl = lo[(s - 1) * 256 + n]!;
      const i = pl & 0xff;
      hi[s * 256 + n] = (hi[i]! ^ (ph >>> 8)) >>> 0;
      lo[s * 256 + n] = (lo[i]! ^ ((pl >>> 8) | (ph << 24))) >>> 0;
    }
  }
  return [hi, lo];
})();

/**
 * CRC-64/NVME of `bytes` continuing from `previous` (the value of an earlier call), as a
 * [high, low] pair of u32 halves. `crc64nvme(utf8("123456789"))` is 0xAE8B14860A799888.
 */
export function crc64nvme(
  bytes: Uint8Array,
  previous: readonly [number, number] = [0, 0],
): [number, number] {
  const th = CRC64_HI;
  const tl = CRC64_LO;
  let h = ~previous[0] >>> 0;
  let l = ~previous[1] >>> 0;
  let i = 0;
  const end8 = bytes.length - (bytes.length % 8);
  for (; i < end8; i += 8) {
    const xl = (l ^ (bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) |
      (bytes[i + 3]! << 24))) >>> 0;
    const xh = (h ^ (bytes[i + 4]! | (bytes[i + 5]! << 8) | (bytes[i + 6]! << 16) |
      (bytes[i + 7]! << 24))) >>> 0;
    const a = 1792 + (xl & 0xff);
    const b = 1536 + ((xl >>> 8) & 0xff);
    const c = 1280 + ((xl >>> 16) & 0xff);
    const d = 1024 + (xl >>> 24);
    const e = 768 + (xh & 0xff);
    const f = 512 + ((xh >>> 8) & 0xff);
    const g = 256 + ((xh >>> 16) & 0xff);
    const k = xh >>> 24;
    h = th[a]! ^ th[b]! ^ th[c]! ^ th[d]! ^ th[e]! ^ th[f]! ^ th[g]! ^ th[k]!;
    l = tl[a]! ^ tl[b]! ^ tl[c]! ^ tl[d]! ^ tl[e]! ^ tl[f]! ^ tl[g]! ^ tl[k]!;
  }
  for (; i < bytes.length; i++) {
    const idx = (l ^ bytes[i]!) & 0xff;
    l = ((l >>> 8) | (h << 24)) ^ tl[idx]!;
    h = (h >>> 8) ^ th[idx]!;
  }
  return [~h >>> 0, ~l >>> 0];
}

class Crc64NvmeHash implements IncrementalHash {
  #crc: [number, number] = [0, 0];
  update(bytes: Uint8Array): void {
    this.#crc = crc64nvme(bytes, this.#crc);
  }
  digest(): Uint8Array {
    const out = new Uint8Array(8);
    const view = new DataView(out.buffer);
    view.setUint32(0, this.#crc[0]);
    view.setUint32(4, this.#crc[1]);
    return out;
  }
}

/** A fresh incremental hash for `algorithm`. */
export function createChecksum(algorithm: ChecksumAlgorithm): IncrementalHash {
  switch (algorithm) {
    case "CRC32":
      return new Crc32Hash(false);
    case "CRC32C":
      return new Crc32Hash(true);
    case "CRC64NVME":
      return new Crc64NvmeHash();
    case "SHA1":
      return new NodeHash("sha1");
    case "SHA256":
      return new NodeHash("sha256");
  }
}

/** The reflected polynomials and widths of the CRCs S3 can combine (all init = xorout = ~0). */
const CRC_SHAPES: Partial<Record<ChecksumAlgorithm, { poly: bigint; width: number }>> = {
  CRC32: { poly: 0xedb88320n, width: 32 },
  CRC32C: { poly: 0x82f63b78n, width: 32 },
  CRC64NVME: { poly: 0x9a6c9329ac4bc9b5n, width: 64 },
};

/** Whether `algorithm`'s value of a whole can be made from its parts' (a CRC). */
export function isCombinable(algorithm: ChecksumAlgorithm): boolean {
  return CRC_SHAPES[algorithm] !== undefined;
}

/** a * b modulo the polynomial, both in reflected form (zlib's multmodp, any width). */
function multModP(a: bigint, b: bigint, poly: bigint, width: number): bigint {
  let p = 0n;
  for (let m = 1n << BigInt(width - 1); m !== 0n; m >>= 1n) {
    if (a & m) p ^= b;
    b = b & 1n ? (b >> 1n) ^ poly : b >> 1n;
  }
  return p;
}

/** x^e modulo the polynomial, reflected, by squaring. */
function xPowModP(e: bigint, poly: bigint, width: number): bigint {
  let result = 1n << BigInt(width - 1); // x^0
  let base = 1n << BigInt(width - 2); // x^1
  for (; e > 0n; e >>= 1n) {
    if (e & 1n) result = multModP(result, base, poly, width);
    base = multModP(base, base, poly, width);
  }
  return result;
}

/**
 * The CRC of parts laid end to end, from each part's CRC (big-endian bytes, as S3 sends
 * them) and size: crc(A || B) = crc(A) * x^(8 |B|) + crc(B) modulo the polynomial, which holds
 * for CRCs whose init and xorout are both all ones (zlib's crc32_combine). So a multipart
 * object's FULL_OBJECT checksum is checked without reading it back.
 */
export function combineCrcs(
  algorithm: ChecksumAlgorithm,
  parts: ReadonlyArray<{ crc: Uint8Array; sizeBytes: number }>,
): Uint8Array {
  const shape = CRC_SHAPES[algorithm];
  if (shape === undefined) throw new RangeError(`${algorithm} is not a CRC`);
  const bytes = shape.width / 8;
  let crc = 0n; // the CRC of nothing
  for (const part of parts) {
    if (part.crc.length !== bytes) throw new RangeError(`a ${algorithm} is ${bytes} bytes`);
    let value = 0n;
    for (const b of part.crc) value = (value << 8n) | BigInt(b);
    const shift = xPowModP(8n * BigInt(part.sizeBytes), shape.poly, shape.width);
    crc = multModP(shift, crc, shape.poly, shape.width) ^ value;
  }
  const out = new Uint8Array(bytes);
  for (let i = bytes - 1; i >= 0; i--) {
    out[i] = Number(crc & 0xffn);
    crc >>= 8n;
  }
  return out;
}

/** A fresh incremental MD5 (ETags, Content-MD5). */
export function createMd5(): IncrementalHash {
  return new NodeHash("md5");
}

/** The header that carries `algorithm`'s value: `x-amz-checksum-crc64nvme`. */
export function checksumHeaderName(algorithm: ChecksumAlgorithm): string {
  return `x-amz-checksum-${algorithm.toLowerCase()}`;
}

/**
 * The algorithm a client names (x-amz-checksum-algorithm, x-amz-sdk-checksum-algorithm,
 * any case) or InvalidRequest.
 */
export function parseChecksumAlgorithm(name: string): ChecksumAlgorithm {
  const upper = name.trim().toUpperCase();
  const found = CHECKSUM_ALGORITHMS.find((a) => a === upper);
  if (found === undefined) {
    throw new S3Error(
      "InvalidRequest",
      `Checksum algorithm ${JSON.stringify(name)} is not supported; use one of ` +
        `${CHECKSUM_ALGORITHMS.join(", ")}`,
    );
  }
  return found;
}

/** The algorithm of an `x-amz-checksum-*` header name, or null for any other name. */
export function checksumAlgorithmOfHeader(headerName: string): ChecksumAlgorithm | null {
  const lower = headerName.toLowerCase();
  return CHECKSUM_ALGORITHMS.find((a) => checksumHeaderName(a) === lower) ?? null;
}

export function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]!);
  return btoa(binary);
}

export function toHex(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i++) out += bytes[i]!.toString(16).padStart(2, "0");
  return out;
}

/** Strict base64 (padded, canonical alphabet) to bytes, or null. */
export function fromBase64(text: string): Uint8Array | null {
  if (text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return null;
  let binary: string;
  try {
    binary = atob(text);
  } catch {
    return null;
  }
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** The bytes of an `x-amz-checksum-<algorithm>` value, or InvalidRequest as AWS says it. */
export function parseChecksumValue(algorithm: ChecksumAlgorithm, value: string): Uint8Array {
  const bytes = fromBase64(value.trim());
  if (bytes === null || bytes.length !== CHECKSUM_BYTES[algorithm]) {
    throw new S3Error(
      "InvalidRequest",
      `Value for ${checksumHeaderName(algorithm)} header is invalid.`,
    );
  }
  return bytes;
}

/** The 16 bytes of a Content-MD5 header, or InvalidDigest. */
export function parseContentMd5(value: string): Uint8Array {
  const bytes = fromBase64(value.trim());
  if (bytes === null || bytes.length !== MD5_BYTES) {
    throw new S3Error("InvalidDigest");
  }
  return bytes;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

export interface BodyDigestOptions {
  /** Bytes the body must have (Content-Length or x-amz-decoded-content-length). */
  expectedSizeBytes?: number;
  /** Hex SHA-256 the client signed (x-amz-content-sha256): XAmzContentSHA256Mismatch. */
  expectedSha256Hex?: string;
  /** Content-MD5 bytes: BadDigest. */
  expectedMd5?: Uint8Array;
  /** Compute MD5 even without expectedMd5 (the engine computes ETags itself). */
  computeMd5?: boolean;
  /** Checksums to compute; with a value, checked at the end (BadDigest). */
  checksums?: ReadonlyArray<{ algorithm: ChecksumAlgorithm; expected?: Uint8Array }>;
  /**
   * Hashing that runs off the event loop: a streamed body's payload SHA-256 goes there
   * (BodyDigestStream only; the pieces must not change until hashed, as body pieces from
   * the socket never do).
   */
  hashing?: Hashing;
}

export interface BodyDigests {
  sizeBytes: number;
  /** Null unless computeMd5 or expectedMd5 asked for it. */
  md5: Uint8Array | null;
  /** Base64 values of the requested checksums, by algorithm. */
  checksums: Partial<Record<ChecksumAlgorithm, string>>;
}

/**
 * Computes MD5 (when asked) and the requested checksums over a body fed in pieces, and
 * throws the S3 error AWS sends when the body is longer than announced (update), short
 * (IncompleteBody), or differs from a claimed digest (finish).
 */
export class BodyDigester {
  readonly #options: BodyDigestOptions;
  readonly #md5: ReturnType<typeof createMd5> | null;
  readonly #sha256: ReturnType<typeof createChecksum> | null;
  /** The payload SHA-256 off the event loop, in place of #sha256 (see updateAsync). */
  readonly #sha256Async: AsyncStreamDigest | null;
  readonly #checksums: {
    algorithm: ChecksumAlgorithm;
    expected?: Uint8Array;
    hash: ReturnType<typeof createChecksum> | null;
  }[];
  #size = 0;

  constructor(options: BodyDigestOptions = {}) {
    this.#options = options;
    this.#md5 = options.computeMd5 || options.expectedMd5 !== undefined ? createMd5() : null;
    const offLoop = options.expectedSha256Hex !== undefined && options.hashing?.offLoop === true;
    this.#sha256Async = offLoop ? options.hashing!.sha256Async() : null;
    const sha256 = options.expectedSha256Hex === undefined || offLoop
      ? null
      : createChecksum("SHA256");
    this.#sha256 = sha256;
    this.#checksums = (options.checksums ?? []).map((c) => ({
      ...c,
      hash: c.algorithm === "SHA256" && (sha256 !== null || offLoop)
        ? null
        : createChecksum(c.algorithm),
    }));
  }

  /**
   * update(), with the payload SHA-256 (when off the loop) queued on another thread: the
   * promise settles once `chunk` is hashed (it must not change before), null when nothing
   * was queued.
   */
  updateAsync(chunk: Uint8Array): Promise<void> | null {
    this.update(chunk);
    return this.#sha256Async?.update(chunk) ?? null;
  }

  /** finish(), after the payload SHA-256 queued off the loop has ended. */
  async finishAsync(): Promise<BodyDigests> {
    if (this.#sha256Async === null) return this.finish();
    try {
      this.#checkSize();
    } catch (e) {
      await this.#sha256Async.dispose();
      throw e;
    }
    return this.#finish(await this.#sha256Async.digest());
  }

  /** Ends the payload SHA-256 queued off the loop without a digest (a failed body). */
  async abandon(): Promise<void> {
    await this.#sha256Async?.dispose();
  }

  update(chunk: Uint8Array): void {
    this.#size += chunk.length;
    const expectedSize = this.#options.expectedSizeBytes;
    if (expectedSize !== undefined && this.#size > expectedSize) {
      throw new S3Error(
        "InvalidRequest",
        `The body is longer than the ${expectedSize} bytes the request announced`,
      );
    }
    this.#md5?.update(chunk);
    this.#sha256?.update(chunk);
    for (const c of this.#checksums) c.hash?.update(chunk);
  }

  finish(): BodyDigests {
    assert(this.#sha256Async === null, "a digester hashing off the loop ends with finishAsync()");
    this.#checkSize();
    return this.#finish(this.#sha256?.digest());
  }

  #checkSize(): void {
    const expectedSize = this.#options.expectedSizeBytes;
    if (expectedSize !== undefined && this.#size !== expectedSize) {
      throw new S3Error(
        "IncompleteBody",
        `The body ended after ${this.#size} of the ${expectedSize} bytes the request announced`,
      );
    }
  }

  #finish(sha256Digest: Uint8Array | undefined): BodyDigests {
    const options = this.#options;
    const md5Digest = this.#md5?.digest() ?? null;
    if (
      sha256Digest !== undefined && toHex(sha256Digest) !== options.expectedSha256Hex!.toLowerCase()
    ) {
      throw new S3Error("XAmzContentSHA256Mismatch");
    }
    if (options.expectedMd5 !== undefined && !equalBytes(md5Digest!, options.expectedMd5)) {
      throw new S3Error("BadDigest");
    }
    const values: Partial<Record<ChecksumAlgorithm, string>> = {};
    for (const c of this.#checksums) {
      const digest = c.hash === null ? sha256Digest! : c.hash.digest();
      if (c.expected !== undefined && !equalBytes(digest, c.expected)) {
        throw new S3Error(
          "BadDigest",
          `The ${c.algorithm} you specified did not match the calculated checksum.`,
        );
      }
      values[c.algorithm] = toBase64(digest);
    }
    return { sizeBytes: this.#size, md5: md5Digest, checksums: values };
  }
}

/**
 * A pass-through stream that runs a BodyDigester over what passes and errors with its S3
 * error. Its consumer must treat a stream error as "nothing was written". `digests`
 * resolves once the body ended and verified.
 */
export class BodyDigestStream extends TransformStream<Uint8Array, Uint8Array> {
  readonly digests: Promise<BodyDigests>;

  constructor(options: BodyDigestOptions = {}) {
    const digester = new BodyDigester(options);
    /** Payload hash updates still running off the loop, oldest first, with their sizes. */
    const hashing: { done: Promise<void>; bytes: number }[] = [];
    let hashingBytes = 0;
    let resolve!: (d: BodyDigests) => void;
    let reject!: (e: unknown) => void;
    const digests = new Promise<BodyDigests>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    // Nobody may be listening when the body fails; the stream error is what reports it.
    digests.catch(() => {});
    const abandon = (e: unknown) => {
      reject(e);
      void digester.abandon().catch(() => {});
      throw e;
    };
    super({
      async transform(chunk, controller) {
        let done: Promise<void> | null;
        try {
          done = digester.updateAsync(chunk);
        } catch (e) {
          abandon(e);
          return;
        }
        if (done !== null) {
          // The piece goes on while it is hashed; past the bound the stream waits, so a body
          // never holds more than S3_PAYLOAD_HASH_AHEAD_BYTES_MAX of pieces for its hash.
          // A failed update fails the digest too (finishAsync); this one need not be heard.
          done.catch(() => {});
          hashing.push({ done, bytes: chunk.length });
          hashingBytes += chunk.length;
          while (hashingBytes > S3_PAYLOAD_HASH_AHEAD_BYTES_MAX) {
            const oldest = hashing.shift()!;
            hashingBytes -= oldest.bytes;
            await oldest.done.catch(abandon);
          }
        }
        controller.enqueue(chunk);
      },
      flush() {
        return digester.finishAsync().then(resolve, abandon);
      },
      cancel(reason) {
        reject(reason);
        return digester.abandon();
      },
    });
    this.digests = digests;
  }
}
