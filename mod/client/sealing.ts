// Client-side sealing: the chunk envelope of mod/crypto/envelope.ts, written and opened on
// the compute node with the per-chunk data key the node handed out (the client never holds
// a system master key, so it cannot open chunks it was not given keys for). Byte for byte
// the server's format: the same header, AAD (chunk id || header), nonce rule and AEAD, so a
// chunk sealed here opens with openChunk() on a node and the other way round.

import {
  type Aead,
  AEAD_KEY_BYTES,
  AEAD_NONCE_BYTES,
  AEAD_TAG_BYTES,
  ENVELOPE_ALGORITHM_AES_256_GCM_HKDF_SHA256,
  ENVELOPE_CHUNK_ID_BYTES,
  ENVELOPE_HEADER_BYTES,
  ENVELOPE_MAGIC,
  ENVELOPE_VERSION,
  envelopeBytes,
  parseEnvelopeHeader,
  systemRandom,
} from "../crypto/mod.ts";

export interface SealWithKeyOptions {
  aead: Aead;
  /** The chunk's data key (HKDF of the epoch's master key and the chunk id), 32 bytes. */
  dataKey: Uint8Array;
  epoch: number;
  chunkId: Uint8Array;
  plaintext: Uint8Array;
  /** Tests only: a fixed nonce (normally 96 random bits, as the server draws them). */
  nonce?: Uint8Array;
}

function check(name: string, bytes: Uint8Array, length: number): void {
  if (!(bytes instanceof Uint8Array) || bytes.length !== length) {
    throw new RangeError(`${name} must be ${length} bytes`);
  }
}

function associatedData(chunkId: Uint8Array, envelope: Uint8Array): Uint8Array {
  const aad = new Uint8Array(ENVELOPE_CHUNK_ID_BYTES + ENVELOPE_HEADER_BYTES);
  aad.set(chunkId);
  aad.set(envelope.subarray(0, ENVELOPE_HEADER_BYTES), ENVELOPE_CHUNK_ID_BYTES);
  return aad;
}

/** Seals one chunk into a fresh envelope. */
export async function sealWithKey(options: SealWithKeyOptions): Promise<Uint8Array> {
  const { aead, dataKey, epoch, chunkId, plaintext } = options;
  check("dataKey", dataKey, AEAD_KEY_BYTES);
  check("chunkId", chunkId, ENVELOPE_CHUNK_ID_BYTES);
  if (!Number.isInteger(epoch) || epoch < 0 || epoch > 0xffff_ffff) {
    throw new RangeError(`epoch must be a u32, got ${epoch}`);
  }
  const nonce = options.nonce ?? new Uint8Array(AEAD_NONCE_BYTES);
  if (options.nonce === undefined) systemRandom(nonce);
  check("nonce", nonce, AEAD_NONCE_BYTES);
  const out = new Uint8Array(envelopeBytes(plaintext.length));
  out.set(ENVELOPE_MAGIC, 0);
  out[4] = ENVELOPE_VERSION;
  out[5] = ENVELOPE_ALGORITHM_AES_256_GCM_HKDF_SHA256;
  const view = new DataView(out.buffer, 0, ENVELOPE_HEADER_BYTES);
  view.setUint32(8, epoch);
  out.set(nonce, 12);
  writeU64(view, 24, plaintext.length);
  writeU64(view, 32, plaintext.length + AEAD_TAG_BYTES);
  const key = await aead.importKey(dataKey);
  await aead.seal(
    key,
    nonce,
    plaintext,
    associatedData(chunkId, out),
    out.subarray(ENVELOPE_HEADER_BYTES),
  );
  return out;
}

/** The epoch an envelope was sealed under (whose data key opens it). */
export function envelopeEpoch(envelope: Uint8Array): number {
  return parseEnvelopeHeader(envelope).epoch;
}

/** Opens an envelope with its chunk's data key; AeadError when it is not that chunk's. */
export async function openWithKey(options: {
  aead: Aead;
  dataKey: Uint8Array;
  chunkId: Uint8Array;
  envelope: Uint8Array;
}): Promise<Uint8Array> {
  const { aead, dataKey, chunkId, envelope } = options;
  check("dataKey", dataKey, AEAD_KEY_BYTES);
  check("chunkId", chunkId, ENVELOPE_CHUNK_ID_BYTES);
  const header = parseEnvelopeHeader(envelope);
  const out = new Uint8Array(header.plaintextBytes);
  const key = await aead.importKey(dataKey);
  await aead.open(
    key,
    header.nonce.slice(),
    envelope.subarray(ENVELOPE_HEADER_BYTES),
    associatedData(chunkId, envelope),
    out,
  );
  return out;
}

function writeU64(view: DataView, offset: number, value: number): void {
  view.setUint32(offset, Math.floor(value / 0x1_0000_0000));
  view.setUint32(offset + 4, value >>> 0);
}
