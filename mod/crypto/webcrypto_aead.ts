// The pure twin of the AEAD port: AES-256-GCM through the runtime's WebCrypto. Always
// available, so Kiseki runs without the OpenSSL shim; slower, because every call copies
// its result out of a fresh ArrayBuffer and crosses into the runtime asynchronously.

import { assert } from "../base/mod.ts";
import {
  type Aead,
  AEAD_TAG_BYTES,
  AeadError,
  type AeadKey,
  type AeadOpenItem,
  type AeadSealItem,
  batchError,
  checkBatchSize,
  checkKeyBytes,
  checkOpenArgs,
  checkSealArgs,
  truncatedError,
} from "./aead.ts";

const TAG_BITS = AEAD_TAG_BYTES * 8;

/** WebCrypto refuses views of a SharedArrayBuffer; those are copied first. */
function unshared(view: Uint8Array): Uint8Array<ArrayBuffer> {
  return view.buffer instanceof ArrayBuffer
    ? view as Uint8Array<ArrayBuffer>
    : new Uint8Array(view) as Uint8Array<ArrayBuffer>;
}

export class WebCryptoAead implements Aead {
  readonly implementation = "webcrypto" as const;
  readonly reason: string;
  // Keys are plain frozen tokens; the CryptoKey stays here, so a key only works with the
  // Aead that imported it and never prints its material.
  readonly #keys = new WeakMap<AeadKey, CryptoKey>();

  constructor(reason = "WebCrypto twin chosen directly") {
    this.reason = reason;
  }

  async importKey(raw: Uint8Array): Promise<AeadKey> {
    checkKeyBytes(raw);
    const cryptoKey = await crypto.subtle.importKey(
      "raw",
      unshared(raw).slice(),
      { name: "AES-GCM" },
      false,
      ["encrypt", "decrypt"],
    );
    const key: AeadKey = Object.freeze({ implementation: "webcrypto" as const });
    this.#keys.set(key, cryptoKey);
    return key;
  }

  async seal(
    key: AeadKey,
    nonce: Uint8Array,
    plaintext: Uint8Array,
    aad: Uint8Array,
    out: Uint8Array,
  ): Promise<number> {
    checkSealArgs(nonce, plaintext, aad, out);
    return await this.#seal(this.#cryptoKey(key), nonce, plaintext, aad, out);
  }

  async open(
    key: AeadKey,
    nonce: Uint8Array,
    sealed: Uint8Array,
    aad: Uint8Array,
    out: Uint8Array,
  ): Promise<number> {
    const length = checkOpenArgs(nonce, sealed, aad, out);
    const cryptoKey = this.#cryptoKey(key);
    if (length < 0) throw truncatedError(sealed.length);
    if (!(await this.#open(cryptoKey, nonce, sealed, aad, out, length))) {
      throw new AeadError("authentication failed: wrong key, nonce or AAD, or altered data");
    }
    return length;
  }

  async sealBatch(items: readonly AeadSealItem[]): Promise<number[]> {
    checkBatchSize(items.length);
    const keys = items.map((item, i) => {
      checkSealArgs(item.nonce, item.plaintext, item.aad, item.out, i);
      return this.#cryptoKey(item.key);
    });
    return await Promise.all(
      items.map((item, i) => this.#seal(keys[i], item.nonce, item.plaintext, item.aad, item.out)),
    );
  }

  async openBatch(items: readonly AeadOpenItem[]): Promise<number[]> {
    checkBatchSize(items.length);
    const lengths = items.map((item, i) =>
      checkOpenArgs(item.nonce, item.sealed, item.aad, item.out, i)
    );
    const keys = items.map((item) => this.#cryptoKey(item.key));
    const ok = await Promise.all(
      items.map((item, i) =>
        lengths[i] >= 0 &&
        this.#open(keys[i], item.nonce, item.sealed, item.aad, item.out, lengths[i])
      ),
    );
    const failed = ok.flatMap((good, i) => (good ? [] : [i]));
    if (failed.length > 0) throw batchError(failed, items.length);
    return lengths;
  }

  #cryptoKey(key: AeadKey): CryptoKey {
    const cryptoKey = this.#keys.get(key);
    if (cryptoKey === undefined) {
      throw new TypeError(`key was not imported by this WebCryptoAead (${key?.implementation})`);
    }
    return cryptoKey;
  }

  async #seal(
    cryptoKey: CryptoKey,
    nonce: Uint8Array,
    plaintext: Uint8Array,
    aad: Uint8Array,
    out: Uint8Array,
  ): Promise<number> {
    const sealed = new Uint8Array(
      await crypto.subtle.encrypt(
        {
          name: "AES-GCM",
          iv: unshared(nonce),
          additionalData: unshared(aad),
          tagLength: TAG_BITS,
        },
        cryptoKey,
        unshared(plaintext),
      ),
    );
    assert(sealed.length === plaintext.length + AEAD_TAG_BYTES, "AES-GCM output length");
    out.set(sealed);
    return sealed.length;
  }

  /** True when authentic (plaintext written); false after zeroing out[0, length). */
  async #open(
    cryptoKey: CryptoKey,
    nonce: Uint8Array,
    sealed: Uint8Array,
    aad: Uint8Array,
    out: Uint8Array,
    length: number,
  ): Promise<boolean> {
    let plain: ArrayBuffer;
    try {
      plain = await crypto.subtle.decrypt(
        {
          name: "AES-GCM",
          iv: unshared(nonce),
          additionalData: unshared(aad),
          tagLength: TAG_BITS,
        },
        cryptoKey,
        unshared(sealed),
      );
    } catch (e) {
      // WebCrypto reports a tag mismatch as OperationError and nothing else after our checks.
      if (e instanceof DOMException && e.name === "OperationError") {
        out.fill(0, 0, length);
        return false;
      }
      throw e;
    }
    assert(plain.byteLength === length, "AES-GCM plaintext length");
    out.set(new Uint8Array(plain));
    return true;
  }
}
