// The AEAD port: AES-256-GCM with 96-bit nonces and 128-bit tags, writing into
// caller-provided buffers. Implementations (OpenSSL shim, WebCrypto twin) share the
// argument checks below so they accept and reject exactly the same inputs.

export const AEAD_KEY_BYTES = 32;
export const AEAD_NONCE_BYTES = 12;
export const AEAD_TAG_BYTES = 16;
/** GCM's limit on one message: 2^39 - 256 bits (NIST SP 800-38D, 5.2.1.1). */
export const AEAD_PLAINTEXT_MAX_BYTES = 2 ** 36 - 32;
/** Most items in one sealBatch/openBatch call; bounds the shim's descriptor buffer. */
export const AEAD_BATCH_ITEMS_MAX = 1024;

export type AeadImplementation = "openssl" | "webcrypto";

/** A key imported by one Aead; opaque, and only usable with the Aead that imported it. */
export interface AeadKey {
  readonly implementation: AeadImplementation;
}

export interface AeadSealItem {
  key: AeadKey;
  nonce: Uint8Array;
  plaintext: Uint8Array;
  aad: Uint8Array;
  /** Receives ciphertext || tag; at least plaintext.length + AEAD_TAG_BYTES long. */
  out: Uint8Array;
}

export interface AeadOpenItem {
  key: AeadKey;
  nonce: Uint8Array;
  /** Ciphertext || tag, as written by seal. */
  sealed: Uint8Array;
  aad: Uint8Array;
  /** Receives the plaintext; at least sealed.length - AEAD_TAG_BYTES long. */
  out: Uint8Array;
}

/**
 * Authenticated encryption. Every method validates first: a bad length is a RangeError
 * and nothing is written. `out` may be the input itself (same buffer, same offset) but must
 * not partially overlap it; nonces must never repeat under one key (the caller's duty).
 */
export interface Aead {
  readonly implementation: AeadImplementation;
  /** Why this implementation is the one running (shim path and version, or why not). */
  readonly reason: string;

  /** Imports 32 raw key bytes (copied; later changes to `raw` have no effect). */
  importKey(raw: Uint8Array): Promise<AeadKey>;

  /** Writes ciphertext || tag to the start of `out`; returns plaintext.length + TAG. */
  seal(
    key: AeadKey,
    nonce: Uint8Array,
    plaintext: Uint8Array,
    aad: Uint8Array,
    out: Uint8Array,
  ): Promise<number>;

  /**
   * Verifies and writes the plaintext to the start of `out`; returns its length. Throws
   * AeadError when the input is not authentic (tampered, wrong key, wrong AAD, shorter
   * than a tag); then out[0, sealed.length - TAG) is zero, never unauthenticated text.
   */
  open(
    key: AeadKey,
    nonce: Uint8Array,
    sealed: Uint8Array,
    aad: Uint8Array,
    out: Uint8Array,
  ): Promise<number>;

  /** seal() for up to AEAD_BATCH_ITEMS_MAX items; bytes written per item. */
  sealBatch(items: readonly AeadSealItem[]): Promise<number[]>;

  /**
   * open() for up to AEAD_BATCH_ITEMS_MAX items. Every item is tried; if any fails,
   * throws one AeadError listing the failed indexes (their outputs zeroed, the others
   * hold authenticated plaintext).
   */
  openBatch(items: readonly AeadOpenItem[]): Promise<number[]>;
}

/** Authentication failed: the input was not sealed under this key, nonce and AAD. */
export class AeadError extends Error {
  override name = "AeadError";
  /** For openBatch: indexes of the items that failed, ascending; empty for open(). */
  readonly failed: readonly number[];

  constructor(message: string, failed: readonly number[] = []) {
    super(message);
    this.failed = failed;
  }
}

function where(index: number | undefined): string {
  return index === undefined ? "" : `item ${index}: `;
}

function checkBytes(name: string, value: unknown, index: number | undefined): void {
  if (!(value instanceof Uint8Array)) {
    throw new TypeError(`${where(index)}${name} must be a Uint8Array`);
  }
}

/** Same buffer, overlapping ranges, different starts: GCM cannot run in such a layout. */
function partiallyOverlaps(a: Uint8Array, b: Uint8Array): boolean {
  if (a.buffer !== b.buffer || a.length === 0 || b.length === 0) return false;
  if (a.byteOffset === b.byteOffset) return false;
  return a.byteOffset < b.byteOffset + b.length && b.byteOffset < a.byteOffset + a.length;
}

export function checkKeyBytes(raw: Uint8Array): void {
  checkBytes("key", raw, undefined);
  if (raw.length !== AEAD_KEY_BYTES) {
    throw new RangeError(`key must be ${AEAD_KEY_BYTES} bytes, got ${raw.length}`);
  }
}

function checkCommon(nonce: Uint8Array, aad: Uint8Array, index: number | undefined): void {
  checkBytes("nonce", nonce, index);
  checkBytes("aad", aad, index);
  if (nonce.length !== AEAD_NONCE_BYTES) {
    throw new RangeError(
      `${where(index)}nonce must be ${AEAD_NONCE_BYTES} bytes, got ${nonce.length}`,
    );
  }
}

/** Throws RangeError/TypeError for any seal argument an implementation must not see. */
export function checkSealArgs(
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
  out: Uint8Array,
  index?: number,
): void {
  checkCommon(nonce, aad, index);
  checkBytes("plaintext", plaintext, index);
  checkBytes("out", out, index);
  if (plaintext.length > AEAD_PLAINTEXT_MAX_BYTES) {
    throw new RangeError(
      `${where(index)}plaintext of ${plaintext.length} bytes exceeds the GCM limit ` +
        `${AEAD_PLAINTEXT_MAX_BYTES}`,
    );
  }
  const need = plaintext.length + AEAD_TAG_BYTES;
  if (out.length < need) {
    throw new RangeError(`${where(index)}out holds ${out.length} bytes, seal needs ${need}`);
  }
  if (partiallyOverlaps(plaintext, out.subarray(0, need))) {
    throw new RangeError(`${where(index)}out partially overlaps plaintext`);
  }
}

/**
 * Throws RangeError/TypeError for a bad open argument. Returns the plaintext length, or
 * -1 when `sealed` is shorter than a tag: not a usage error but input that cannot be
 * authentic, which the caller reports as an AeadError.
 */
export function checkOpenArgs(
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad: Uint8Array,
  out: Uint8Array,
  index?: number,
): number {
  checkCommon(nonce, aad, index);
  checkBytes("sealed", sealed, index);
  checkBytes("out", out, index);
  if (sealed.length < AEAD_TAG_BYTES) return -1;
  const length = sealed.length - AEAD_TAG_BYTES;
  if (length > AEAD_PLAINTEXT_MAX_BYTES) {
    throw new RangeError(`${where(index)}sealed input exceeds the GCM limit`);
  }
  if (out.length < length) {
    throw new RangeError(`${where(index)}out holds ${out.length} bytes, open needs ${length}`);
  }
  if (partiallyOverlaps(sealed, out.subarray(0, length))) {
    throw new RangeError(`${where(index)}out partially overlaps sealed input`);
  }
  return length;
}

/** The error open() throws for input shorter than a tag. */
export function truncatedError(length: number): AeadError {
  return new AeadError(
    `sealed input of ${length} bytes is shorter than the ${AEAD_TAG_BYTES}-byte tag`,
  );
}

/** The error openBatch() throws when the items at `failed` did not authenticate. */
export function batchError(failed: readonly number[], count: number): AeadError {
  const shown = failed.slice(0, 8).join(", ") + (failed.length > 8 ? ", ..." : "");
  return new AeadError(
    `authentication failed for ${failed.length} of ${count} items (${shown})`,
    failed,
  );
}

/** Throws RangeError when a batch is larger than AEAD_BATCH_ITEMS_MAX. */
export function checkBatchSize(count: number): void {
  if (count > AEAD_BATCH_ITEMS_MAX) {
    throw new RangeError(`batch of ${count} items exceeds ${AEAD_BATCH_ITEMS_MAX}`);
  }
}
