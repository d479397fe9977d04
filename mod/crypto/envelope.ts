// The chunk envelope: how one chunk's plaintext is encrypted at rest. Each chunk has its own
// data key, DEK = HKDF-SHA256(ikm = system master key of an epoch, salt = chunk id,
// info = "kiseki chunk dek v1"), and is sealed with AES-256-GCM through the Aead port. The
// envelope names the epoch, so a master key rotation only changes what new writes use.
// Pure apart from the injected random source: no I/O, no clocks.
//
// Layout (all integers big-endian), ENVELOPE_HEADER_BYTES = 40:
//
//   offset size  field
//        0    4  magic "KSKC" (4b 53 4b 43)
//        4    1  format version, 1
//        5    1  algorithm id, 1 = AES-256-GCM under the HKDF-SHA256 per-chunk DEK above
//        6    2  reserved, zero (a reader rejects anything else)
//        8    4  key epoch (u32)
//       12   12  nonce
//       24    8  plaintext length (u64; at most AEAD_PLAINTEXT_MAX_BYTES)
//       32    8  ciphertext length (u64) = plaintext length + 16: the bytes that follow
//       40    n  ciphertext || 16-byte tag
//
// Associated data = chunk id (32 bytes) || header (40 bytes): the tag binds the envelope to
// its chunk id (an envelope moved under another id does not open) and authenticates every
// header byte, so a later header field is covered without a format change.
//
// Nonces are 96 random bits per seal. That is safe here because a DEK belongs to one chunk
// id, and the same id seals the same plaintext: a DEK sees a handful of seals (first write,
// re-encryption, repair), nowhere near GCM's 2^32 random-nonce limit per key, and even a
// repeated nonce would seal identical bytes under an identical header, revealing nothing.
// Random (not derived) nonces also keep GCM safe if a client ever presents different bytes
// under one id: a deterministic nonce would then reuse a (key, nonce) pair on two messages.

import { hkdfSync } from "node:crypto";
import { assert } from "../base/mod.ts";
import {
  type Aead,
  AEAD_KEY_BYTES,
  AEAD_NONCE_BYTES,
  AEAD_PLAINTEXT_MAX_BYTES,
  AEAD_TAG_BYTES,
} from "./aead.ts";

export const ENVELOPE_MAGIC: Readonly<Uint8Array> = Uint8Array.of(0x4b, 0x53, 0x4b, 0x43);
export const ENVELOPE_VERSION = 1;
export const ENVELOPE_ALGORITHM_AES_256_GCM_HKDF_SHA256 = 1;
export const ENVELOPE_HEADER_BYTES = 40;
/** Chunk ids are 32 bytes (SHA-256 or HMAC-SHA256); see mod/chunk/chunk_id.ts. */
export const ENVELOPE_CHUNK_ID_BYTES = 32;
export const ENVELOPE_EPOCH_MAX = 0xffff_ffff;
/** HKDF info for chunk DEKs: part of the format, never change within a version. */
export const CHUNK_DEK_INFO = "kiseki chunk dek v1";

const DEK_INFO_BYTES = new TextEncoder().encode(CHUNK_DEK_INFO);
const AAD_BYTES = ENVELOPE_CHUNK_ID_BYTES + ENVELOPE_HEADER_BYTES;

/** Fills `target` with cryptographically strong random bytes. */
export type RandomSource = (target: Uint8Array) => void;

/** getRandomValues() fills at most this much per call. */
const RANDOM_VALUES_BYTES_MAX = 65536;

/** The runtime's CSPRNG (crypto.getRandomValues), for any length. */
export function systemRandom(target: Uint8Array): void {
  for (let at = 0; at < target.length; at += RANDOM_VALUES_BYTES_MAX) {
    crypto.getRandomValues(target.subarray(at, at + RANDOM_VALUES_BYTES_MAX));
  }
}

export type EnvelopeErrorCode =
  | "truncated"
  | "magic"
  | "version"
  | "algorithm"
  | "reserved"
  | "length";

/** Bytes that are not a well-formed envelope (authentication failures are AeadError). */
export class EnvelopeError extends Error {
  override name = "EnvelopeError";
  readonly code: EnvelopeErrorCode;

  constructor(code: EnvelopeErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

export interface EnvelopeHeader {
  version: number;
  algorithm: number;
  epoch: number;
  /** A view of the envelope's nonce bytes. */
  nonce: Uint8Array;
  plaintextBytes: number;
  ciphertextBytes: number;
}

/** Envelope size for a plaintext of `plaintextBytes`. */
export function envelopeBytes(plaintextBytes: number): number {
  return ENVELOPE_HEADER_BYTES + plaintextBytes + AEAD_TAG_BYTES;
}

function checkBytes(name: string, value: unknown, length?: number): void {
  if (!(value instanceof Uint8Array)) throw new TypeError(`${name} must be a Uint8Array`);
  if (length !== undefined && value.length !== length) {
    throw new RangeError(`${name} must be ${length} bytes, got ${value.length}`);
  }
}

/** The per-chunk DEK: HKDF-SHA256(masterKey, salt = chunkId, info = CHUNK_DEK_INFO), 32 bytes. */
export function deriveChunkDek(masterKey: Uint8Array, chunkId: Uint8Array): Uint8Array {
  checkBytes("masterKey", masterKey, AEAD_KEY_BYTES);
  checkBytes("chunkId", chunkId, ENVELOPE_CHUNK_ID_BYTES);
  return new Uint8Array(hkdfSync("sha256", masterKey, chunkId, DEK_INFO_BYTES, AEAD_KEY_BYTES));
}

function readU64(view: DataView, offset: number): number {
  const hi = view.getUint32(offset);
  const lo = view.getUint32(offset + 4);
  // Anything past 2^53 is far beyond the GCM limit; report it as such, not as NaN.
  return hi > 0x1f_ffff ? Number.MAX_SAFE_INTEGER : hi * 0x1_0000_0000 + lo;
}

function writeU64(view: DataView, offset: number, value: number): void {
  view.setUint32(offset, Math.floor(value / 0x1_0000_0000));
  view.setUint32(offset + 4, value >>> 0);
}

/** Parses and checks the header of a whole envelope; EnvelopeError for anything malformed. */
export function parseEnvelopeHeader(envelope: Uint8Array): EnvelopeHeader {
  checkBytes("envelope", envelope);
  if (envelope.length < ENVELOPE_HEADER_BYTES) {
    throw new EnvelopeError(
      "truncated",
      `envelope of ${envelope.length} bytes is shorter than its ${ENVELOPE_HEADER_BYTES}-byte header`,
    );
  }
  for (let i = 0; i < ENVELOPE_MAGIC.length; i++) {
    if (envelope[i] !== ENVELOPE_MAGIC[i]) {
      throw new EnvelopeError("magic", "not a chunk envelope (bad magic)");
    }
  }
  const view = new DataView(envelope.buffer, envelope.byteOffset, ENVELOPE_HEADER_BYTES);
  const version = envelope[4]!;
  if (version !== ENVELOPE_VERSION) {
    throw new EnvelopeError(
      "version",
      `envelope format version ${version} is not supported (this build reads ${ENVELOPE_VERSION})`,
    );
  }
  const algorithm = envelope[5]!;
  if (algorithm !== ENVELOPE_ALGORITHM_AES_256_GCM_HKDF_SHA256) {
    throw new EnvelopeError("algorithm", `envelope algorithm ${algorithm} is not supported`);
  }
  if (view.getUint16(6) !== 0) {
    throw new EnvelopeError("reserved", "envelope reserved bytes are not zero");
  }
  const plaintextBytes = readU64(view, 24);
  const ciphertextBytes = readU64(view, 32);
  if (plaintextBytes > AEAD_PLAINTEXT_MAX_BYTES) {
    throw new EnvelopeError("length", `envelope plaintext length ${plaintextBytes} exceeds GCM's`);
  }
  if (ciphertextBytes !== plaintextBytes + AEAD_TAG_BYTES) {
    throw new EnvelopeError(
      "length",
      `envelope ciphertext length ${ciphertextBytes} is not plaintext length ` +
        `${plaintextBytes} + ${AEAD_TAG_BYTES}`,
    );
  }
  if (envelope.length !== ENVELOPE_HEADER_BYTES + ciphertextBytes) {
    throw new EnvelopeError(
      envelope.length < ENVELOPE_HEADER_BYTES + ciphertextBytes ? "truncated" : "length",
      `envelope of ${envelope.length} bytes does not match its header ` +
        `(${ENVELOPE_HEADER_BYTES} + ${ciphertextBytes})`,
    );
  }
  return {
    version,
    algorithm,
    epoch: view.getUint32(8),
    nonce: envelope.subarray(12, 12 + AEAD_NONCE_BYTES),
    plaintextBytes,
    ciphertextBytes,
  };
}

function associatedData(chunkId: Uint8Array, header: Uint8Array): Uint8Array {
  const aad = new Uint8Array(AAD_BYTES);
  aad.set(chunkId);
  aad.set(header.subarray(0, ENVELOPE_HEADER_BYTES), ENVELOPE_CHUNK_ID_BYTES);
  return aad;
}

async function importDek(aead: Aead, masterKey: Uint8Array, chunkId: Uint8Array) {
  const dek = deriveChunkDek(masterKey, chunkId);
  try {
    return await aead.importKey(dek);
  } finally {
    dek.fill(0); // importKey copied it
  }
}

function overlaps(a: Uint8Array, b: Uint8Array): boolean {
  if (a.buffer !== b.buffer || a.length === 0 || b.length === 0) return false;
  return a.byteOffset < b.byteOffset + b.length && b.byteOffset < a.byteOffset + a.length;
}

export interface SealChunkOptions {
  aead: Aead;
  /** The system master key of `epoch` (32 bytes). */
  masterKey: Uint8Array;
  epoch: number;
  chunkId: Uint8Array;
  plaintext: Uint8Array;
  /** A fixed nonce, for golden vectors and tests only; normally drawn from `random`. */
  nonce?: Uint8Array;
  /** Source of the nonce; default systemRandom. */
  random?: RandomSource;
  /**
   * Receives the envelope (at least envelopeBytes(plaintext.length) long), e.g. a pooled
   * buffer. The plaintext may already sit at out[ENVELOPE_HEADER_BYTES..] (sealed in place)
   * but must not otherwise overlap it. Default: a fresh array.
   */
  out?: Uint8Array;
}

/** Seals one chunk; returns the envelope (a view of `out` when given). */
export async function sealChunk(options: SealChunkOptions): Promise<Uint8Array> {
  const { aead, masterKey, epoch, chunkId, plaintext } = options;
  checkBytes("masterKey", masterKey, AEAD_KEY_BYTES);
  checkBytes("chunkId", chunkId, ENVELOPE_CHUNK_ID_BYTES);
  checkBytes("plaintext", plaintext);
  if (!Number.isInteger(epoch) || epoch < 0 || epoch > ENVELOPE_EPOCH_MAX) {
    throw new RangeError(`epoch must be a u32, got ${epoch}`);
  }
  if (plaintext.length > AEAD_PLAINTEXT_MAX_BYTES) {
    throw new RangeError(`plaintext of ${plaintext.length} bytes exceeds the GCM limit`);
  }
  const total = envelopeBytes(plaintext.length);
  let out: Uint8Array;
  if (options.out === undefined) {
    out = new Uint8Array(total);
  } else {
    checkBytes("out", options.out);
    if (options.out.length < total) {
      throw new RangeError(`out holds ${options.out.length} bytes, the envelope needs ${total}`);
    }
    out = options.out.subarray(0, total);
    const body = out.subarray(ENVELOPE_HEADER_BYTES);
    const inPlace = plaintext.buffer === body.buffer && plaintext.byteOffset === body.byteOffset;
    if (!inPlace && overlaps(plaintext, out)) {
      throw new RangeError("out overlaps plaintext other than at the envelope body");
    }
  }
  let nonce = options.nonce;
  if (nonce === undefined) {
    nonce = new Uint8Array(AEAD_NONCE_BYTES);
    (options.random ?? systemRandom)(nonce);
  } else {
    checkBytes("nonce", nonce, AEAD_NONCE_BYTES);
  }
  const key = await importDek(aead, masterKey, chunkId);

  out.set(ENVELOPE_MAGIC, 0);
  out[4] = ENVELOPE_VERSION;
  out[5] = ENVELOPE_ALGORITHM_AES_256_GCM_HKDF_SHA256;
  const view = new DataView(out.buffer, out.byteOffset, ENVELOPE_HEADER_BYTES);
  view.setUint16(6, 0);
  view.setUint32(8, epoch);
  out.set(nonce, 12);
  writeU64(view, 24, plaintext.length);
  writeU64(view, 32, plaintext.length + AEAD_TAG_BYTES);
  const written = await aead.seal(
    key,
    out.subarray(12, 12 + AEAD_NONCE_BYTES),
    plaintext,
    associatedData(chunkId, out),
    out.subarray(ENVELOPE_HEADER_BYTES),
  );
  assert(written === plaintext.length + AEAD_TAG_BYTES, "Aead.seal wrote plaintext + tag");
  return out;
}

export interface OpenChunkOptions {
  aead: Aead;
  /**
   * The system master key of an epoch (the one the envelope names), e.g.
   * `(epoch) => provider.masterKey(epoch)`; may look it up remotely.
   */
  masterKeyFor: (epoch: number) => Uint8Array | Promise<Uint8Array>;
  /** The id the chunk is stored under; an envelope sealed under another id does not open. */
  chunkId: Uint8Array;
  envelope: Uint8Array;
  /**
   * Receives the plaintext (at least the envelope's plaintext length). May be
   * envelope.subarray(ENVELOPE_HEADER_BYTES) to decrypt in place. Default: a fresh array.
   */
  out?: Uint8Array;
}

/**
 * Checks and decrypts one envelope; returns the plaintext (a view of `out` when given).
 * EnvelopeError when malformed, AeadError when not authentic (tampered, wrong chunk id,
 * wrong master key).
 */
export async function openChunk(options: OpenChunkOptions): Promise<Uint8Array> {
  const { aead, chunkId, envelope } = options;
  checkBytes("chunkId", chunkId, ENVELOPE_CHUNK_ID_BYTES);
  const header = parseEnvelopeHeader(envelope);
  let out: Uint8Array;
  if (options.out === undefined) {
    out = new Uint8Array(header.plaintextBytes);
  } else {
    checkBytes("out", options.out);
    if (options.out.length < header.plaintextBytes) {
      throw new RangeError(
        `out holds ${options.out.length} bytes, the plaintext needs ${header.plaintextBytes}`,
      );
    }
    out = options.out.subarray(0, header.plaintextBytes);
  }
  const masterKey = await options.masterKeyFor(header.epoch);
  checkBytes("masterKey", masterKey, AEAD_KEY_BYTES);
  const key = await importDek(aead, masterKey, chunkId);
  // The nonce and AAD are copied out first: an in-place open overwrites the ciphertext only,
  // but copies keep the header independent of whatever `out` is.
  const nonce = header.nonce.slice();
  await aead.open(
    key,
    nonce,
    envelope.subarray(ENVELOPE_HEADER_BYTES),
    associatedData(chunkId, envelope),
    out,
  );
  return out;
}
