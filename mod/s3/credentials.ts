// S3 access keys: the CredentialStore port the gateway asks "whose key is this, and what is
// its secret", and LocalCredentialStore, the node-local implementation: an lmdb environment
// whose secrets are sealed with AES-256-GCM under a key file beside it (mode 0600). The key
// file protects offline copies of the store (a backup, a copied data.mdb); whoever can read
// it on the node can unseal the secrets, as with the node KEK of mod/keys.

import { openKeyedEnv } from "../keys/mod.ts";
import { assert, type Clock, concatBytes, SystemClock } from "../base/mod.ts";
import {
  type Aead,
  AEAD_NONCE_BYTES,
  AEAD_TAG_BYTES,
  type AeadKey,
  type RandomSource,
  systemRandom,
} from "../crypto/mod.ts";
import type { KvEnv, KvTable } from "../disk/mod.ts";
import { log, type Logger } from "../obs/mod.ts";

/** What a lookup yields: the tenant a key belongs to and the secret it signs with. */
export interface Credential {
  tenantId: string;
  secretAccessKey: string;
}

/** The access-key port of the S3 gateway. */
export interface CredentialStore {
  /** The credential of `accessKeyId`, or null when there is none (or it was revoked). */
  lookup(accessKeyId: string): Promise<Credential | null>;
}

/** A key as listed: never its secret. */
export interface AccessKeyInfo {
  accessKeyId: string;
  tenantId: string;
  createdAtMs: number;
}

/** A new key: the only time its secret is shown. */
export interface NewAccessKey {
  accessKeyId: string;
  secretAccessKey: string;
  tenantId: string;
  createdAtMs: number;
}

export const ACCESS_KEY_ID_LENGTH = 20;
export const SECRET_ACCESS_KEY_LENGTH = 40;
/** Kiseki's key ids look like AWS's (AKIA + 16 base32) with their own prefix. */
export const ACCESS_KEY_ID_PREFIX = "KSKI";
/** Keys one tenant may hold at once. */
export const ACCESS_KEYS_PER_TENANT_MAX = 100;
/** Longest tenant id, in UTF-8 bytes. */
export const TENANT_ID_BYTES_MAX = 256;
/** Unsealed credentials kept in memory, so a request costs no AEAD open. */
export const CREDENTIALS_CACHED_MAX = 4096;
export const CREDENTIALS_KEY_FILE = "s3_credentials.kek";
export const CREDENTIAL_STORE_MAP_SIZE_BYTES_DEFAULT = 4 << 20;

const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const RECORD_VERSION = 1;
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const AAD_PREFIX = encoder.encode("kiseki s3 credential v1\u0000");
const CHECK_KEY = encoder.encode("key_check");
const CHECK_PLAINTEXT = encoder.encode("kiseki s3 credential key check v1");

/** The store cannot be used: missing or mismatched key file, damaged record, limit hit. */
export class CredentialStoreError extends Error {
  override name = "CredentialStoreError";
}

export interface LocalCredentialStoreOptions {
  /** Directory of the store, e.g. $KISEKI_DATA_DIR/keys/s3 (created 0700 if missing). */
  dir: string;
  aead: Aead;
  random?: RandomSource;
  clock?: Clock;
  mapSizeBytes?: number;
  logger?: Logger;
}

/** Whether `id` has the shape of a Kiseki access key id (any other cannot exist). */
export function isAccessKeyId(id: string): boolean {
  return id.length === ACCESS_KEY_ID_LENGTH && /^[A-Z2-7]+$/.test(id);
}

function checkTenantId(tenantId: string): void {
  const bytes = encoder.encode(tenantId).length;
  if (bytes === 0 || bytes > TENANT_ID_BYTES_MAX || tenantId.includes("\u0000")) {
    throw new CredentialStoreError(
      `tenant id must be 1 to ${TENANT_ID_BYTES_MAX} bytes without NUL`,
    );
  }
}

// Record: version u8 | createdAtMs f64 | tenant length u16 | tenant | nonce | sealed secret.
interface StoredKey {
  tenantId: string;
  createdAtMs: number;
  nonce: Uint8Array;
  sealed: Uint8Array;
}

function encodeRecord(r: StoredKey): Uint8Array {
  const tenant = encoder.encode(r.tenantId);
  const out = new Uint8Array(1 + 8 + 2 + tenant.length + r.nonce.length + r.sealed.length);
  const view = new DataView(out.buffer);
  out[0] = RECORD_VERSION;
  view.setFloat64(1, r.createdAtMs);
  view.setUint16(9, tenant.length);
  out.set(tenant, 11);
  out.set(r.nonce, 11 + tenant.length);
  out.set(r.sealed, 11 + tenant.length + r.nonce.length);
  return out;
}

function decodeRecord(bytes: Uint8Array): StoredKey {
  if (bytes.length < 11 || bytes[0] !== RECORD_VERSION) {
    throw new CredentialStoreError("access key record is malformed");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const tenantLength = view.getUint16(9);
  const nonceAt = 11 + tenantLength;
  if (bytes.length < nonceAt + AEAD_NONCE_BYTES + AEAD_TAG_BYTES) {
    throw new CredentialStoreError("access key record is truncated");
  }
  return {
    tenantId: decoder.decode(bytes.subarray(11, nonceAt)),
    createdAtMs: view.getFloat64(1),
    nonce: bytes.slice(nonceAt, nonceAt + AEAD_NONCE_BYTES),
    sealed: bytes.slice(nonceAt + AEAD_NONCE_BYTES),
  };
}

function tenantIndexKey(tenantId: string, accessKeyId: string): Uint8Array {
  return encoder.encode(`${tenantId}\u0000${accessKeyId}`);
}

/**
 * Access keys kept on this node. Secrets are sealed in the store and unsealed on first use
 * into a bounded cache; revoke() drops the cached copy before it returns.
 */
export class LocalCredentialStore implements CredentialStore {
  readonly dir: string;
  readonly #env: KvEnv;
  readonly #keys: KvTable;
  readonly #byTenant: KvTable;
  readonly #aead: Aead;
  readonly #kek: AeadKey;
  readonly #random: RandomSource;
  readonly #clock: Clock;
  readonly #cache = new Map<string, Credential>();
  #writes: Promise<unknown> = Promise.resolve();
  #closed = false;

  private constructor(
    dir: string,
    env: KvEnv,
    aead: Aead,
    kek: AeadKey,
    random: RandomSource,
    clock: Clock,
  ) {
    this.dir = dir;
    this.#env = env;
    this.#keys = env.table("s3_access_keys");
    this.#byTenant = env.table("s3_access_keys_by_tenant");
    this.#aead = aead;
    this.#kek = kek;
    this.#random = random;
    this.#clock = clock;
  }

  /** Opens (creating on first start) the store and its key file. */
  static async open(options: LocalCredentialStoreOptions): Promise<LocalCredentialStore> {
    const dir = options.dir.replace(/\/+$/, "");
    const random = options.random ?? systemRandom;
    const logger = options.logger ?? log;
    const { env, meta, check, kek, keyPath } = await openKeyedEnv({
      dir,
      keyFile: CREDENTIALS_KEY_FILE,
      mapSizeBytes: options.mapSizeBytes ?? CREDENTIAL_STORE_MAP_SIZE_BYTES_DEFAULT,
      checkKey: CHECK_KEY,
      aead: options.aead,
      random,
      logger,
      makeError: (m) => new CredentialStoreError(m),
      createdMessage: "s3 credential key created",
      holds: "secrets",
    });
    try {
      const store = new LocalCredentialStore(
        dir,
        env,
        options.aead,
        kek,
        random,
        options.clock ?? new SystemClock(),
      );
      if (check === undefined) {
        const nonce = new Uint8Array(AEAD_NONCE_BYTES);
        random(nonce);
        const sealed = await store.#seal(CHECK_PLAINTEXT, nonce, CHECK_KEY);
        await env.transaction((txn) => txn.put(meta, CHECK_KEY, concatBytes(nonce, sealed)));
      } else {
        const opened = await store.#open(
          check.subarray(0, AEAD_NONCE_BYTES),
          check.subarray(AEAD_NONCE_BYTES),
          CHECK_KEY,
        );
        if (opened === null) {
          throw new CredentialStoreError(
            `${keyPath} does not open the secrets in ${dir}: the file was replaced, or the ` +
              `store was copied from another node`,
          );
        }
      }
      return store;
    } catch (e) {
      await env.close();
      throw e;
    }
  }

  /** Creates a key for `tenantId`. The secret is returned here and never again. */
  async create(tenantId: string): Promise<NewAccessKey> {
    this.#assertOpen();
    checkTenantId(tenantId);
    return await this.#serialize(async () => {
      if (this.#countTenant(tenantId) >= ACCESS_KEYS_PER_TENANT_MAX) {
        throw new CredentialStoreError(
          `tenant ${tenantId} holds ${ACCESS_KEYS_PER_TENANT_MAX} access keys ` +
            `(ACCESS_KEYS_PER_TENANT_MAX); revoke one first`,
        );
      }
      let accessKeyId: string;
      do {
        accessKeyId = this.#newAccessKeyId();
      } while (this.#keys.getSync(encoder.encode(accessKeyId)) !== undefined);
      const secretAccessKey = this.#newSecret();
      const nonce = new Uint8Array(AEAD_NONCE_BYTES);
      this.#random(nonce);
      const sealed = await this.#seal(
        encoder.encode(secretAccessKey),
        nonce,
        this.#aad(accessKeyId, tenantId),
      );
      const createdAtMs = this.#clock.nowMs();
      const record = encodeRecord({ tenantId, createdAtMs, nonce, sealed });
      await this.#env.transaction((txn) => {
        txn.put(this.#keys, encoder.encode(accessKeyId), record);
        txn.put(this.#byTenant, tenantIndexKey(tenantId, accessKeyId), new Uint8Array(0));
      });
      return { accessKeyId, secretAccessKey, tenantId, createdAtMs };
    });
  }

  /** The tenant's keys, by id. */
  // deno-lint-ignore require-await
  async list(tenantId: string): Promise<AccessKeyInfo[]> {
    this.#assertOpen();
    checkTenantId(tenantId);
    const out: AccessKeyInfo[] = [];
    for (const id of this.#tenantKeyIds(tenantId)) {
      const record = this.#keys.getSync(encoder.encode(id));
      if (record === undefined) continue;
      const stored = decodeRecord(record);
      out.push({ accessKeyId: id, tenantId: stored.tenantId, createdAtMs: stored.createdAtMs });
    }
    return out;
  }

  /** Removes a key; false when there was none. Requests signed with it fail from now on. */
  revoke(accessKeyId: string): Promise<boolean> {
    this.#assertOpen();
    return this.#serialize(async () => {
      const id = encoder.encode(accessKeyId);
      const record = this.#keys.getSync(id);
      this.#cache.delete(accessKeyId);
      if (record === undefined) return false;
      const { tenantId } = decodeRecord(record);
      await this.#env.transaction((txn) => {
        txn.delete(this.#keys, id);
        txn.delete(this.#byTenant, tenantIndexKey(tenantId, accessKeyId));
      });
      this.#cache.delete(accessKeyId);
      return true;
    });
  }

  async lookup(accessKeyId: string): Promise<Credential | null> {
    this.#assertOpen();
    if (!isAccessKeyId(accessKeyId)) return null;
    const cached = this.#cache.get(accessKeyId);
    if (cached !== undefined) return cached;
    const record = this.#keys.getSync(encoder.encode(accessKeyId));
    if (record === undefined) return null;
    const stored = decodeRecord(record);
    const secret = await this.#open(
      stored.nonce,
      stored.sealed,
      this.#aad(accessKeyId, stored.tenantId),
    );
    if (secret === null) {
      throw new CredentialStoreError(`the secret of ${accessKeyId} does not open`);
    }
    // A revoke may have run while the secret was being opened.
    if (this.#keys.getSync(encoder.encode(accessKeyId)) === undefined) return null;
    const credential = { tenantId: stored.tenantId, secretAccessKey: decoder.decode(secret) };
    if (this.#cache.size >= CREDENTIALS_CACHED_MAX) {
      this.#cache.delete(this.#cache.keys().next().value!);
    }
    this.#cache.set(accessKeyId, credential);
    return credential;
  }

  /**
   * Every key of every tenant with its secret, at most `max`: for moving a node's keys into
   * the cluster-wide store once. Secrets leave only through here and create().
   */
  async exportAll(max: number): Promise<NewAccessKey[]> {
    this.#assertOpen();
    const out: NewAccessKey[] = [];
    for (const { key, value } of [...this.#keys.range()].slice(0, max)) {
      const accessKeyId = decoder.decode(key);
      const stored = decodeRecord(value);
      const secret = await this.#open(
        stored.nonce,
        stored.sealed,
        this.#aad(accessKeyId, stored.tenantId),
      );
      if (secret === null) {
        throw new CredentialStoreError(`the secret of ${accessKeyId} does not open`);
      }
      out.push({
        accessKeyId,
        secretAccessKey: decoder.decode(secret),
        tenantId: stored.tenantId,
        createdAtMs: stored.createdAtMs,
      });
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#writes.catch(() => {});
    this.#cache.clear();
    await this.#env.close();
  }

  #serialize<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#writes.then(fn);
    this.#writes = next.catch(() => {});
    return next;
  }

  #tenantKeyIds(tenantId: string): string[] {
    const start = encoder.encode(`${tenantId}\u0000`);
    const end = encoder.encode(`${tenantId}\u0001`);
    const ids: string[] = [];
    for (
      const { key } of this.#byTenant.range({ start, end, limit: ACCESS_KEYS_PER_TENANT_MAX + 1 })
    ) {
      ids.push(decoder.decode(key.subarray(start.length)));
    }
    return ids;
  }

  #countTenant(tenantId: string): number {
    return this.#tenantKeyIds(tenantId).length;
  }

  #newAccessKeyId(): string {
    const bytes = new Uint8Array(ACCESS_KEY_ID_LENGTH - ACCESS_KEY_ID_PREFIX.length);
    this.#random(bytes);
    let id = ACCESS_KEY_ID_PREFIX;
    for (const b of bytes) id += BASE32[b & 31];
    assert(isAccessKeyId(id), "generated access key id has the wrong shape");
    return id;
  }

  #newSecret(): string {
    const bytes = new Uint8Array((SECRET_ACCESS_KEY_LENGTH / 4) * 3);
    this.#random(bytes);
    let binary = "";
    for (const b of bytes) binary += String.fromCharCode(b);
    const secret = btoa(binary);
    assert(secret.length === SECRET_ACCESS_KEY_LENGTH, "generated secret has the wrong length");
    return secret;
  }

  #aad(accessKeyId: string, tenantId: string): Uint8Array {
    return concatBytes(AAD_PREFIX, encoder.encode(`${accessKeyId}\u0000${tenantId}`));
  }

  async #seal(plaintext: Uint8Array, nonce: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
    const out = new Uint8Array(plaintext.length + AEAD_TAG_BYTES);
    await this.#aead.seal(this.#kek, nonce, plaintext, aad, out);
    return out;
  }

  async #open(nonce: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Promise<Uint8Array | null> {
    if (sealed.length < AEAD_TAG_BYTES) return null;
    const out = new Uint8Array(sealed.length - AEAD_TAG_BYTES);
    try {
      await this.#aead.open(this.#kek, nonce, sealed, aad, out);
    } catch {
      return null;
    }
    return out;
  }

  #assertOpen(): void {
    assert(!this.#closed, `credential store ${this.dir} is closed`);
  }
}
