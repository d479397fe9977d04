// Page keys of the node's lmdb environments: one random key per environment, sealed with
// AES-256-GCM under a key-encryption key (the node KEK, or a store's own key) and kept in
// `<env>/page.key` (0600), so the key moves with its environment and a rekey swaps both.
//
// What this protects: a copy of the data directory without the KEK file (a backup, a disk
// taken from a node whose keys/node.kek is kept elsewhere or destroyed) shows no page of any
// environment in clear; and a destroyed page key (rekey) leaves the old pages unreadable to
// anyone, since no copy of it is kept. What it does not: whoever can read node.kek on the
// node can unseal every page key, as for the key store itself (until the key server holds
// the node's keys).

import { assert } from "../base/mod.ts";
import {
  type Aead,
  AEAD_NONCE_BYTES,
  AEAD_TAG_BYTES,
  AeadError,
  type AeadKey,
  type RandomSource,
} from "../crypto/mod.ts";
import { KV_PAGE_KEY_BYTES, type KvPageKeys } from "../disk/mod.ts";
import { readKeyFile, writeKeyFile } from "./key_file.ts";

/** The file in an environment's directory that holds its sealed page key. */
export const PAGE_KEY_FILE = "page.key";
const VERSION = 1;
const SEALED_BYTES = 1 + AEAD_NONCE_BYTES + KV_PAGE_KEY_BYTES + AEAD_TAG_BYTES;
const AAD = new TextEncoder().encode("kiseki lmdb page key v1");

/** A page key file is missing, damaged or sealed under another KEK. */
export class PageKeyError extends Error {
  override name = "PageKeyError";
}

export interface SealedPageKeysOptions {
  aead: Aead;
  /** The key-encryption key the page keys are sealed under. */
  kek: AeadKey;
  random: RandomSource;
}

/** KvPageKeys that seal each environment's page key under a KEK, in `<env>/page.key`. */
export class SealedPageKeys implements KvPageKeys {
  readonly keyFile = PAGE_KEY_FILE;
  readonly #aead: Aead;
  readonly #kek: AeadKey;
  readonly #random: RandomSource;

  constructor(options: SealedPageKeysOptions) {
    this.#aead = options.aead;
    this.#kek = options.kek;
    this.#random = options.random;
  }

  async keyFor(dir: string): Promise<Uint8Array> {
    const path = `${dir}/${PAGE_KEY_FILE}`;
    const sealed = await readKeyFile(path, SEALED_BYTES, (m) => new PageKeyError(m));
    if (sealed !== null) return await this.#unseal(sealed, path);
    const key = new Uint8Array(KV_PAGE_KEY_BYTES);
    this.#random(key);
    await this.store(dir, key);
    return key;
  }

  async store(dir: string, key: Uint8Array): Promise<void> {
    assert(key.length === KV_PAGE_KEY_BYTES, "page key length");
    const sealed = new Uint8Array(SEALED_BYTES);
    sealed[0] = VERSION;
    const nonce = sealed.subarray(1, 1 + AEAD_NONCE_BYTES);
    this.#random(nonce);
    await this.#aead.seal(this.#kek, nonce, key, AAD, sealed.subarray(1 + AEAD_NONCE_BYTES));
    await writeKeyFile(dir, `${dir}/${PAGE_KEY_FILE}`, sealed, (m) => new PageKeyError(m));
  }

  async destroy(dir: string): Promise<void> {
    const path = `${dir}/${PAGE_KEY_FILE}`;
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { write: true });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return;
      throw e;
    }
    // Overwritten in place before the unlink, so the sealed key does not linger in the file's
    // blocks (on file systems that write in place).
    try {
      const size = (await file.stat()).size;
      const zeros = new Uint8Array(size);
      let done = 0;
      while (done < size) done += await file.write(zeros.subarray(done));
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.remove(path);
  }

  async #unseal(sealed: Uint8Array, path: string): Promise<Uint8Array> {
    if (sealed[0] !== VERSION) {
      throw new PageKeyError(`${path}: unknown page key format ${sealed[0]}`);
    }
    const key = new Uint8Array(KV_PAGE_KEY_BYTES);
    try {
      await this.#aead.open(
        this.#kek,
        sealed.subarray(1, 1 + AEAD_NONCE_BYTES),
        sealed.subarray(1 + AEAD_NONCE_BYTES),
        AAD,
        key,
      );
    } catch (e) {
      if (e instanceof AeadError) {
        throw new PageKeyError(
          `${path} does not open under this node's key: the environment was copied from ` +
            `another node, or the key file was replaced`,
        );
      }
      throw e;
    }
    return key;
  }
}
