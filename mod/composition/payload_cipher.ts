// The PayloadCipher port: seals a delta payload under its tenant's key before it enters the
// log, and opens it when a view folds it. The role wires it to the tenant KMS; this file
// also holds AeadPayloadCipher, AES-256-GCM over the crypto port with one key per tenant.

import { assert } from "../base/mod.ts";
import {
  type Aead,
  AEAD_NONCE_BYTES,
  AEAD_TAG_BYTES,
  AeadError,
  type AeadKey,
} from "../crypto/mod.ts";
import { concatBytes, toHex, utf8 } from "./bytes.ts";
import { PAYLOAD_CIPHER_OVERHEAD_BYTES_MAX } from "./codec.ts";
import { TENANT_ID_BYTES } from "./namespace.ts";

/**
 * Seals and opens payloads under a tenant's key. `seal` may add at most
 * PAYLOAD_CIPHER_OVERHEAD_BYTES_MAX bytes. `open` rejects with PayloadUnreadableError when
 * the payload can never be opened (not authentic, or the tenant's key is destroyed:
 * crypto-shred); any other rejection means "not now" (KMS unreachable) and is retried.
 */
export interface PayloadCipher {
  seal(tenantId: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array>;
  open(tenantId: Uint8Array, sealed: Uint8Array): Promise<Uint8Array>;
}

/** A payload that will never open: tampered, sealed under another key, or its key is gone. */
export class PayloadUnreadableError extends Error {
  override name = "PayloadUnreadableError";
}

/** Where AeadPayloadCipher gets a tenant's 32-byte key; undefined: destroyed (shredded). */
export type TenantKeySource = (tenantId: Uint8Array) => Promise<Uint8Array | undefined>;

export interface AeadPayloadCipherOptions {
  aead: Aead;
  keyFor: TenantKeySource;
  /** Fills its argument with random bytes (nonces); defaults to crypto.getRandomValues. */
  random?: (bytes: Uint8Array) => Uint8Array;
}

const SEALED_VERSION = 1;
const SEALED_HEADER_BYTES = 1 + AEAD_NONCE_BYTES;
const AAD_DOMAIN = utf8("kiseki/delta-payload/v1\u0000");
/** Imported tenant keys kept; a node serves far fewer tenants at once. */
export const AEAD_PAYLOAD_KEYS_CACHED_MAX = 4096;

/**
 * AES-256-GCM: version u8 (1) | nonce [12] | ciphertext || tag. The AAD binds the tenant id,
 * so a payload moved under another tenant's header does not open. Random 96-bit nonces.
 */
export class AeadPayloadCipher implements PayloadCipher {
  readonly #aead: Aead;
  readonly #keyFor: TenantKeySource;
  readonly #random: (bytes: Uint8Array) => Uint8Array;
  readonly #keys = new Map<string, AeadKey>();

  constructor(options: AeadPayloadCipherOptions) {
    this.#aead = options.aead;
    this.#keyFor = options.keyFor;
    this.#random = options.random ?? ((b) => crypto.getRandomValues(b));
  }

  /** Forgets a cached key (after the tenant's key was destroyed or rotated). */
  forget(tenantId: Uint8Array): void {
    this.#keys.delete(toHex(tenantId));
  }

  async #key(tenantId: Uint8Array): Promise<AeadKey | undefined> {
    if (tenantId.length !== TENANT_ID_BYTES) {
      throw new PayloadUnreadableError(`tenant id is ${tenantId.length} bytes`);
    }
    const id = toHex(tenantId);
    const cached = this.#keys.get(id);
    if (cached !== undefined) return cached;
    const raw = await this.#keyFor(tenantId);
    if (raw === undefined) return undefined;
    const key = await this.#aead.importKey(raw);
    if (this.#keys.size >= AEAD_PAYLOAD_KEYS_CACHED_MAX) {
      this.#keys.delete(this.#keys.keys().next().value!);
    }
    this.#keys.set(id, key);
    return key;
  }

  async seal(tenantId: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
    const key = await this.#key(tenantId);
    if (key === undefined) {
      throw new PayloadUnreadableError(`tenant ${toHex(tenantId)} has no key (destroyed)`);
    }
    const out = new Uint8Array(SEALED_HEADER_BYTES + plaintext.length + AEAD_TAG_BYTES);
    out[0] = SEALED_VERSION;
    const nonce = this.#random(out.subarray(1, SEALED_HEADER_BYTES));
    await this.#aead.seal(
      key,
      nonce,
      plaintext,
      concatBytes(AAD_DOMAIN, tenantId),
      out.subarray(SEALED_HEADER_BYTES),
    );
    return out;
  }

  async open(tenantId: Uint8Array, sealed: Uint8Array): Promise<Uint8Array> {
    if (sealed.length < SEALED_HEADER_BYTES + AEAD_TAG_BYTES || sealed[0] !== SEALED_VERSION) {
      throw new PayloadUnreadableError("sealed payload is too short or of an unknown version");
    }
    const key = await this.#key(tenantId);
    if (key === undefined) {
      throw new PayloadUnreadableError(`tenant ${toHex(tenantId)} has no key (destroyed)`);
    }
    const body = sealed.subarray(SEALED_HEADER_BYTES);
    const out = new Uint8Array(body.length - AEAD_TAG_BYTES);
    try {
      await this.#aead.open(
        key,
        sealed.subarray(1, SEALED_HEADER_BYTES),
        body,
        concatBytes(AAD_DOMAIN, tenantId),
        out,
      );
    } catch (e) {
      if (e instanceof AeadError) throw new PayloadUnreadableError(e.message);
      throw e;
    }
    return out;
  }
}

// The format's overhead must stay within what the port promises.
assert(
  SEALED_HEADER_BYTES + AEAD_TAG_BYTES <= PAYLOAD_CIPHER_OVERHEAD_BYTES_MAX,
  "AeadPayloadCipher overhead exceeds PAYLOAD_CIPHER_OVERHEAD_BYTES_MAX",
);
