// Crypto: the AEAD port (AES-256-GCM) with its OpenSSL shim and WebCrypto twin, and the
// selection between them.
export {
  AEAD_BATCH_ITEMS_MAX,
  AEAD_KEY_BYTES,
  AEAD_NONCE_BYTES,
  AEAD_PLAINTEXT_MAX_BYTES,
  AEAD_TAG_BYTES,
  AeadError,
} from "./aead.ts";
export type { Aead, AeadImplementation, AeadKey, AeadOpenItem, AeadSealItem } from "./aead.ts";
export { OPENSSL_NONBLOCKING_MIN_BYTES_DEFAULT, OpensslAead } from "./openssl_aead.ts";
export type { OpensslAeadLoad, OpensslAeadOptions } from "./openssl_aead.ts";
export { WebCryptoAead } from "./webcrypto_aead.ts";
export { chooseAead, selectAead } from "./select.ts";
export {
  CHUNK_DEK_INFO,
  deriveChunkDek,
  ENVELOPE_ALGORITHM_AES_256_GCM_HKDF_SHA256,
  ENVELOPE_CHUNK_ID_BYTES,
  ENVELOPE_EPOCH_MAX,
  ENVELOPE_HEADER_BYTES,
  ENVELOPE_MAGIC,
  ENVELOPE_VERSION,
  envelopeBytes,
  EnvelopeError,
  openChunk,
  parseEnvelopeHeader,
  sealChunk,
  systemRandom,
} from "./envelope.ts";
export type {
  EnvelopeErrorCode,
  EnvelopeHeader,
  OpenChunkOptions,
  RandomSource,
  SealChunkOptions,
} from "./envelope.ts";
export { NodeHashing, SyncAsyncDigest } from "./hashing.ts";
export type { AsyncStreamDigest, Hashing, StreamDigest } from "./hashing.ts";
export { OpensslHashing } from "./openssl_hashing.ts";
export type { OpensslHashingLoad } from "./openssl_hashing.ts";
