// Tenant keys: the port to a tenant's key service (KEK create, wrap, unwrap, destroy), the
// built-in provider that keeps per-tenant KEKs in the node's key store, and the payload
// helper that encrypts delta payloads (names, chunk lists, attributes) under a per-tenant
// data key wrapped by the tenant's KEK. Destroying the KEK is crypto-shred: every wrapped
// data key, and so every payload, of that tenant stops opening.

import { assert, BoundedLru, type Clock, concatBytes, SystemClock, toHex } from "../base/mod.ts";
import {
  type Aead,
  AEAD_KEY_BYTES,
  AEAD_NONCE_BYTES,
  AEAD_TAG_BYTES,
  AeadError,
  type AeadKey,
  type RandomSource,
  systemRandom,
} from "../crypto/mod.ts";
import type { KvTable } from "../disk/mod.ts";
import { counter, log, type Logger } from "../obs/mod.ts";
import type { LocalKeyStore } from "./system_keys.ts";

/** Longest tenant id, in UTF-8 bytes (it is a key in the store and part of every AAD). */
export const TENANT_ID_BYTES_MAX = 128;
/** Largest key wrap() accepts; tenant KMSs wrap keys, not data. */
export const TENANT_WRAP_PLAINTEXT_BYTES_MAX = 1024;
/** Largest wrapped key a payload may carry (Vault Transit ciphertexts are ~100 bytes). */
export const TENANT_WRAPPED_KEY_BYTES_MAX = 4096;
/** Tenant KEKs InternalTenantKms keeps imported; others are unsealed again on use. */
export const TENANT_KEKS_CACHED_MAX_DEFAULT = 1024;
/** Key-destroyed listeners one TenantKms accepts (one per TenantDataKeys, in practice). */
export const TENANT_KMS_LISTENERS_MAX = 64;
/** Largest delta payload sealTenantPayload() accepts. */
export const TENANT_PAYLOAD_BYTES_MAX = 16 << 20;
/** Tenants whose data keys TenantDataKeys holds in memory (least recently used go first). */
export const TENANT_DATA_KEYS_TENANTS_MAX_DEFAULT = 1024;
/** Unwrapped data keys held per tenant for opening (older payloads' keys). */
export const TENANT_DATA_KEYS_OPEN_KEYS_MAX = 16;
/**
 * Seals one data key performs before a fresh one replaces it: random 96-bit nonces stay
 * far below GCM's 2^32 messages per key.
 */
export const TENANT_DATA_KEY_SEALS_MAX_DEFAULT = 1 << 24;

const encoder = new TextEncoder();
const KEK_RECORD_AAD_PREFIX = encoder.encode("tenant kek\u0000");
const WRAP_AAD_PREFIX = encoder.encode("kiseki tenant wrap v1\u0000");
const PAYLOAD_AAD_PREFIX = encoder.encode("kiseki tenant payload v1\u0000");
const WRAP_VERSION = 1;
const WRAP_HEADER_BYTES = 1 + 4 + AEAD_NONCE_BYTES;
const KEK_STATE_ACTIVE = 1;
const KEK_STATE_DESTROYED = 2;
const KEK_VERSION = 1;
export const TENANT_PAYLOAD_VERSION = 1;

export class TenantKmsError extends Error {
  override name = "TenantKmsError";
  readonly tenantId: string;

  constructor(tenantId: string, message: string) {
    super(message);
    this.tenantId = tenantId;
  }
}

/** The tenant's KEK was destroyed (crypto-shred): nothing it wrapped opens again. */
export class TenantKeyDestroyedError extends TenantKmsError {
  override name = "TenantKeyDestroyedError";

  constructor(tenantId: string) {
    super(tenantId, `tenant ${JSON.stringify(tenantId)} key was destroyed (crypto-shred)`);
  }
}

/** No KEK was ever created for the tenant. */
export class TenantKeyNotFoundError extends TenantKmsError {
  override name = "TenantKeyNotFoundError";

  constructor(tenantId: string) {
    super(tenantId, `tenant ${JSON.stringify(tenantId)} has no key; create it first`);
  }
}

/** The wrapped bytes were not wrapped by this tenant's KEK (or were altered). */
export class TenantUnwrapError extends TenantKmsError {
  override name = "TenantUnwrapError";
}

/** Bytes that are not a tenant payload (authentication failures are AeadError). */
export class TenantPayloadError extends Error {
  override name = "TenantPayloadError";
}

/**
 * A tenant's key service. Implementations: InternalTenantKms (built in), and a Vault
 * Transit client. Keys never leave the service: callers hand it small keys to wrap.
 */
export interface TenantKms {
  /** "internal", "vault-transit", ... for logs and the admin UI. */
  readonly provider: string;
  /** Creates the tenant's KEK; a no-op if it exists; TenantKeyDestroyedError if shredded. */
  createKey(tenantId: string): Promise<void>;
  /** Encrypts a small key under the tenant's KEK, bound to the tenant id. */
  wrap(tenantId: string, plaintextKey: Uint8Array): Promise<Uint8Array>;
  /**
   * Reverses wrap(). TenantKeyDestroyedError after destroyKey(), TenantKeyNotFoundError
   * with no key, TenantUnwrapError for bytes this tenant's KEK did not wrap.
   */
  unwrap(tenantId: string, wrapped: Uint8Array): Promise<Uint8Array>;
  /** Destroys the tenant's KEK for good (crypto-shred); durable when it resolves. */
  destroyKey(tenantId: string): Promise<void>;
  /**
   * Calls `listener` after a key is destroyed through this instance, so holders of
   * derived keys drop them. Returns the unsubscribe function.
   */
  onKeyDestroyed(listener: (tenantId: string) => void): () => void;
}

/** Checks a tenant id and returns its UTF-8 bytes. */
export function tenantIdBytes(tenantId: string): Uint8Array {
  if (typeof tenantId !== "string" || tenantId.length === 0) {
    throw new TenantKmsError(String(tenantId), "tenant id must be a non-empty string");
  }
  // deno-lint-ignore no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(tenantId)) {
    throw new TenantKmsError(tenantId, "tenant id must not contain control characters");
  }
  const bytes = encoder.encode(tenantId);
  if (bytes.length > TENANT_ID_BYTES_MAX) {
    throw new TenantKmsError(
      tenantId,
      `tenant id of ${bytes.length} bytes exceeds ${TENANT_ID_BYTES_MAX}`,
    );
  }
  return bytes;
}

function u16(n: number): Uint8Array {
  return Uint8Array.of(n >>> 8, n & 0xff);
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

function u64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  const view = new DataView(b.buffer);
  view.setUint32(0, Math.floor(n / 0x1_0000_0000));
  view.setUint32(4, n >>> 0);
  return b;
}

/**
 * Wraps a small key under a tenant KEK (the built-in KMS's format, shared by the node-local
 * and the cluster-wide provider so that one opens what the other wrapped):
 * [version u8][KEK version u32][nonce] then ciphertext and tag, bound to the tenant id.
 */
export async function wrapUnderKek(
  aead: Aead,
  key: AeadKey,
  tenantIdUtf8: Uint8Array,
  plaintextKey: Uint8Array,
  random: RandomSource,
): Promise<Uint8Array> {
  if (
    !(plaintextKey instanceof Uint8Array) || plaintextKey.length === 0 ||
    plaintextKey.length > TENANT_WRAP_PLAINTEXT_BYTES_MAX
  ) {
    throw new RangeError(
      `wrap() takes 1..${TENANT_WRAP_PLAINTEXT_BYTES_MAX} bytes, got ${plaintextKey?.length}`,
    );
  }
  const wrapped = new Uint8Array(WRAP_HEADER_BYTES + plaintextKey.length + AEAD_TAG_BYTES);
  wrapped[0] = WRAP_VERSION;
  wrapped.set(u32(KEK_VERSION), 1);
  const nonce = wrapped.subarray(5, WRAP_HEADER_BYTES);
  random(nonce);
  await aead.seal(
    key,
    nonce,
    plaintextKey,
    concatBytes(WRAP_AAD_PREFIX, wrapped.subarray(0, 5), tenantIdUtf8),
    wrapped.subarray(WRAP_HEADER_BYTES),
  );
  return wrapped;
}

/** Reverses wrapUnderKek(); TenantUnwrapError for bytes this KEK did not wrap. */
export async function unwrapUnderKek(
  aead: Aead,
  key: AeadKey,
  tenantId: string,
  tenantIdUtf8: Uint8Array,
  wrapped: Uint8Array,
): Promise<Uint8Array> {
  if (
    !(wrapped instanceof Uint8Array) || wrapped.length < WRAP_HEADER_BYTES + AEAD_TAG_BYTES ||
    wrapped[0] !== WRAP_VERSION ||
    new DataView(wrapped.buffer, wrapped.byteOffset + 1, 4).getUint32(0) !== KEK_VERSION
  ) {
    throw new TenantUnwrapError(tenantId, "wrapped key is malformed or of an unknown version");
  }
  const out = new Uint8Array(wrapped.length - WRAP_HEADER_BYTES - AEAD_TAG_BYTES);
  try {
    await aead.open(
      key,
      wrapped.subarray(5, WRAP_HEADER_BYTES),
      wrapped.subarray(WRAP_HEADER_BYTES),
      concatBytes(WRAP_AAD_PREFIX, wrapped.subarray(0, 5), tenantIdUtf8),
      out,
    );
  } catch (e) {
    if (e instanceof AeadError) {
      throw new TenantUnwrapError(
        tenantId,
        `wrapped key was not wrapped by tenant ${JSON.stringify(tenantId)}'s key`,
      );
    }
    throw e;
  }
  return out;
}

/** The base LRU bounded by entry count only: get() refreshes, set() evicts the oldest past `max`. */
class LruMap<K, V> extends BoundedLru<V, K> {
  constructor(max: number) {
    assert(Number.isInteger(max) && max >= 1, "LruMap max >= 1");
    super(max, Infinity);
  }

  override set(key: K, value: V): void {
    super.set(key, value, 0);
  }
}

const tenantKeysCreated = counter({
  name: "kiseki_keys_tenant_keys_created_total",
  help: "Tenant KEKs created by the built-in tenant KMS",
});
const tenantKeysDestroyed = counter({
  name: "kiseki_keys_tenant_keys_destroyed_total",
  help: "Tenant KEKs destroyed (crypto-shred) by the built-in tenant KMS",
});

export interface InternalTenantKmsOptions {
  /** The node's key store; KEKs are sealed under its node KEK in table tenant_keks. */
  store: LocalKeyStore;
  clock?: Clock;
  logger?: Logger;
  keksCachedMax?: number;
}

type CachedKek = { state: "active"; key: AeadKey } | { state: "destroyed" };

/**
 * The built-in tenant KMS: one random 256-bit KEK per tenant, sealed under the node KEK
 * in the key store, wrapping with AES-256-GCM and the tenant id as associated data.
 * Destroying a KEK replaces its record with a tombstone, so it can never be recreated.
 *
 * Limits: the KEKs live on this node only (until the key server holds them), and LMDB is
 * copy-on-write, so a destroyed KEK's old sealed record lingers in free pages of data.mdb
 * until the key store is rekeyed (a tenant shred does it: the store is copied under a fresh
 * page key and the old file's key destroyed). Blocks the file system itself freed are out
 * of reach of both; a tenant who needs shredding that survives disk forensics below the file
 * system uses an external KMS.
 */
export class InternalTenantKms implements TenantKms {
  readonly provider = "internal";
  readonly #store: LocalKeyStore;
  readonly #table: KvTable;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #cache: LruMap<string, CachedKek>;
  readonly #listeners = new Set<(tenantId: string) => void>();
  #writing: Promise<unknown> = Promise.resolve();

  constructor(options: InternalTenantKmsOptions) {
    this.#store = options.store;
    this.#table = options.store.table("tenant_keks");
    this.#clock = options.clock ?? new SystemClock();
    this.#logger = options.logger ?? log;
    this.#cache = new LruMap(options.keksCachedMax ?? TENANT_KEKS_CACHED_MAX_DEFAULT);
  }

  async createKey(tenantId: string): Promise<void> {
    const id = tenantIdBytes(tenantId);
    await this.#serialize(async () => {
      const state = await this.#load(tenantId, id);
      if (state?.state === "active") return;
      if (state?.state === "destroyed") throw new TenantKeyDestroyedError(tenantId);
      const plain = new Uint8Array(8 + 4 + AEAD_KEY_BYTES);
      plain.set(u64(this.#clock.nowMs()), 0);
      plain.set(u32(KEK_VERSION), 8);
      const kek = plain.subarray(12);
      this.#store.random(kek);
      const sealed = await this.#store.seal(plain, concatBytes(KEK_RECORD_AAD_PREFIX, id));
      const key = await this.#store.aead.importKey(kek);
      plain.fill(0);
      await this.#store.env.transaction((txn) =>
        txn.put(this.#table, id, concatBytes(Uint8Array.of(KEK_STATE_ACTIVE), sealed))
      );
      this.#cache.set(tenantId, { state: "active", key });
      tenantKeysCreated.inc();
      this.#logger.info("tenant key created", { tenant: tenantId, provider: this.provider });
    });
  }

  async wrap(tenantId: string, plaintextKey: Uint8Array): Promise<Uint8Array> {
    const id = tenantIdBytes(tenantId);
    const key = await this.#activeKey(tenantId, id);
    return await wrapUnderKek(this.#store.aead, key, id, plaintextKey, this.#store.random);
  }

  async unwrap(tenantId: string, wrapped: Uint8Array): Promise<Uint8Array> {
    const id = tenantIdBytes(tenantId);
    const key = await this.#activeKey(tenantId, id);
    return await unwrapUnderKek(this.#store.aead, key, tenantId, id, wrapped);
  }

  /**
   * Every KEK this node holds, unsealed (live ones with their key bytes), at most `max`: for
   * moving a node's built-in KMS into the cluster state once. The caller zeroes the keys.
   */
  async exportKeks(
    max: number,
  ): Promise<{ tenant: string; createdAtMs: number; kek: Uint8Array | null }[]> {
    const out: { tenant: string; createdAtMs: number; kek: Uint8Array | null }[] = [];
    for (const { key, value } of [...this.#table.range()].slice(0, max)) {
      const tenant = new TextDecoder().decode(key);
      if (value[0] === KEK_STATE_DESTROYED) {
        out.push({ tenant, createdAtMs: 0, kek: null });
        continue;
      }
      const plain = await this.#store.unseal(
        value.subarray(1),
        concatBytes(KEK_RECORD_AAD_PREFIX, key),
      );
      assert(plain.length === 12 + AEAD_KEY_BYTES, "tenant key record length");
      const view = new DataView(plain.buffer);
      out.push({
        tenant,
        createdAtMs: view.getUint32(0) * 0x1_0000_0000 + view.getUint32(4),
        kek: plain.slice(12),
      });
      plain.fill(0);
    }
    return out;
  }

  /**
   * Tenants whose KEK this node destroyed (tombstones), at most `max` of them: the engine
   * checks at start that each one's shred finished.
   */
  destroyedTenants(max: number): string[] {
    const out: string[] = [];
    for (const { key, value } of this.#table.range()) {
      if (out.length >= max) break;
      if (value[0] === KEK_STATE_DESTROYED) out.push(new TextDecoder().decode(key));
    }
    return out;
  }

  async destroyKey(tenantId: string): Promise<void> {
    const id = tenantIdBytes(tenantId);
    await this.#serialize(async () => {
      const state = await this.#load(tenantId, id);
      if (state === undefined) throw new TenantKeyNotFoundError(tenantId);
      if (state.state === "destroyed") return;
      // Fail closed while the tombstone commits: nothing unwraps under this KEK any more.
      this.#cache.set(tenantId, { state: "destroyed" });
      try {
        await this.#store.env.transaction((txn) =>
          txn.put(
            this.#table,
            id,
            concatBytes(Uint8Array.of(KEK_STATE_DESTROYED), u64(this.#clock.nowMs())),
          )
        );
      } catch (e) {
        this.#cache.delete(tenantId);
        throw e;
      }
      tenantKeysDestroyed.inc();
      this.#logger.info("tenant key destroyed", { tenant: tenantId, provider: this.provider });
      for (const listener of this.#listeners) {
        try {
          listener(tenantId);
        } catch (e) {
          this.#logger.error("tenant key-destroyed listener failed", {
            tenant: tenantId,
            error: (e as Error).message,
          });
        }
      }
    });
  }

  onKeyDestroyed(listener: (tenantId: string) => void): () => void {
    assert(this.#listeners.size < TENANT_KMS_LISTENERS_MAX, "too many key-destroyed listeners");
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  /** Runs mutations one at a time, so create and destroy of one tenant cannot interleave. */
  #serialize(fn: () => Promise<void>): Promise<void> {
    const next = this.#writing.then(fn);
    this.#writing = next.catch(() => {});
    return next;
  }

  async #activeKey(tenantId: string, id: Uint8Array): Promise<AeadKey> {
    const state = await this.#load(tenantId, id);
    if (state === undefined) throw new TenantKeyNotFoundError(tenantId);
    if (state.state === "destroyed") throw new TenantKeyDestroyedError(tenantId);
    return state.key;
  }

  /** The tenant's KEK state, from the cache or unsealed from the store; undefined if none. */
  async #load(tenantId: string, id: Uint8Array): Promise<CachedKek | undefined> {
    const cached = this.#cache.get(tenantId);
    if (cached !== undefined) return cached;
    const record = this.#table.getSync(id);
    if (record === undefined) return undefined;
    let state: CachedKek;
    if (record[0] === KEK_STATE_DESTROYED) {
      state = { state: "destroyed" };
    } else {
      assert(record[0] === KEK_STATE_ACTIVE, `tenant key record state ${record[0]}`);
      const plain = await this.#store.unseal(
        record.subarray(1),
        concatBytes(KEK_RECORD_AAD_PREFIX, id),
      );
      assert(plain.length === 12 + AEAD_KEY_BYTES, "tenant key record length");
      const key = await this.#store.aead.importKey(plain.subarray(12));
      plain.fill(0);
      state = { state: "active", key };
    }
    // A destroy that completed while this load awaited wins.
    const raced = this.#cache.get(tenantId);
    if (raced !== undefined) return raced;
    this.#cache.set(tenantId, state);
    return state;
  }
}

export interface TenantDataKeysOptions {
  kms: TenantKms;
  /** Encrypts payloads under the data keys. */
  aead: Aead;
  /** Source of data keys and nonces; default systemRandom. */
  random?: RandomSource;
  tenantsCachedMax?: number;
  sealsPerKeyMax?: number;
}

interface SealKey {
  key: AeadKey;
  /** version | wrapped length | wrapped data key: the start of every payload sealed with it. */
  prefix: Uint8Array;
  seals: number;
}

interface TenantEntry {
  seal: Promise<SealKey> | null;
  /** Unwrapped data keys by the hex of their wrapped form. */
  open: LruMap<string, AeadKey>;
}

const hexOf = toHex;

/**
 * Per-tenant data keys for delta payloads, held in memory within named bounds. A data key
 * is 32 random bytes wrapped by the tenant's KEK; each payload carries its wrapped data
 * key, so any node that can reach the tenant's KMS can open it. Keys of a tenant are
 * dropped when its KEK is destroyed through the same TenantKms (onKeyDestroyed); a shred
 * done elsewhere reaches this cache through forget().
 */
export class TenantDataKeys {
  readonly kms: TenantKms;
  readonly aead: Aead;
  readonly random: RandomSource;
  readonly sealsPerKeyMax: number;
  readonly #tenants: LruMap<string, TenantEntry>;
  readonly #unsubscribe: () => void;
  /** Bumped on every destroy: a key fetched across a destroy is used once, not cached. */
  #destroys = 0;

  constructor(options: TenantDataKeysOptions) {
    this.kms = options.kms;
    this.aead = options.aead;
    this.random = options.random ?? systemRandom;
    this.sealsPerKeyMax = options.sealsPerKeyMax ?? TENANT_DATA_KEY_SEALS_MAX_DEFAULT;
    assert(
      Number.isInteger(this.sealsPerKeyMax) && this.sealsPerKeyMax >= 1 &&
        this.sealsPerKeyMax <= 2 ** 32,
      "sealsPerKeyMax in [1, 2^32]",
    );
    this.#tenants = new LruMap(options.tenantsCachedMax ?? TENANT_DATA_KEYS_TENANTS_MAX_DEFAULT);
    this.#unsubscribe = this.kms.onKeyDestroyed((tenantId) => this.forget(tenantId));
  }

  /** Drops every key held for the tenant (after a crypto-shred announced elsewhere). */
  forget(tenantId: string): void {
    this.#destroys++;
    this.#tenants.delete(tenantId);
  }

  /** Drops all keys and stops listening to the KMS. */
  close(): void {
    this.#unsubscribe();
    this.#tenants.clear();
  }

  /** See sealTenantPayload(). */
  async seal(tenantId: string, plaintext: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
    const id = tenantIdBytes(tenantId);
    if (!(plaintext instanceof Uint8Array) || plaintext.length > TENANT_PAYLOAD_BYTES_MAX) {
      throw new RangeError(
        `tenant payload must be a Uint8Array of at most ${TENANT_PAYLOAD_BYTES_MAX} bytes`,
      );
    }
    const { key, prefix } = await this.#sealKey(tenantId);
    const sealed = new Uint8Array(
      prefix.length + AEAD_NONCE_BYTES + plaintext.length + AEAD_TAG_BYTES,
    );
    sealed.set(prefix);
    const nonce = sealed.subarray(prefix.length, prefix.length + AEAD_NONCE_BYTES);
    this.random(nonce);
    await this.aead.seal(
      key,
      nonce,
      plaintext,
      payloadAad(id, prefix, aad),
      sealed.subarray(prefix.length + AEAD_NONCE_BYTES),
    );
    return sealed;
  }

  /** See openTenantPayload(). */
  async open(tenantId: string, sealed: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
    const id = tenantIdBytes(tenantId);
    if (!(sealed instanceof Uint8Array) || sealed.length < 3) {
      throw new TenantPayloadError("tenant payload is truncated");
    }
    if (sealed[0] !== TENANT_PAYLOAD_VERSION) {
      throw new TenantPayloadError(`tenant payload version ${sealed[0]} is not supported`);
    }
    const wrappedBytes = (sealed[1]! << 8) | sealed[2]!;
    const prefixBytes = 3 + wrappedBytes;
    if (wrappedBytes === 0 || sealed.length < prefixBytes + AEAD_NONCE_BYTES + AEAD_TAG_BYTES) {
      throw new TenantPayloadError(`tenant payload of ${sealed.length} bytes is truncated`);
    }
    const prefix = sealed.subarray(0, prefixBytes);
    const key = await this.#openKey(tenantId, sealed.subarray(3, prefixBytes));
    const body = sealed.subarray(prefixBytes + AEAD_NONCE_BYTES);
    const out = new Uint8Array(body.length - AEAD_TAG_BYTES);
    await this.aead.open(
      key,
      sealed.subarray(prefixBytes, prefixBytes + AEAD_NONCE_BYTES),
      body,
      payloadAad(id, prefix, aad),
      out,
    );
    return out;
  }

  /**
   * Resolves when seal() could seal for the tenant now, without sealing: its data key is
   * held (dropped on a destroy), or is fetched from the KMS as seal() would, failing as
   * seal() fails (TenantKeyDestroyedError after a crypto-shred). A check per request costs
   * a lookup, not an AEAD seal.
   */
  async ready(tenantId: string): Promise<void> {
    tenantIdBytes(tenantId);
    const entry = this.#entry(tenantId);
    await (entry.seal ?? this.#startSealKey(tenantId, entry));
  }

  #startSealKey(tenantId: string, entry: TenantEntry): Promise<SealKey> {
    const pending = this.#newSealKey(tenantId, entry);
    entry.seal = pending;
    // A failure (say, the tenant key was destroyed) must not stick to the entry.
    pending.catch(() => {
      if (entry.seal === pending) entry.seal = null;
    });
    return pending;
  }

  /** The data key new payloads of the tenant are sealed under (created on first use). */
  async #sealKey(tenantId: string): Promise<SealKey> {
    const entry = this.#entry(tenantId);
    for (;;) {
      if (entry.seal === null) this.#startSealKey(tenantId, entry);
      const current = entry.seal!;
      const sealKey = await current;
      if (sealKey.seals < this.sealsPerKeyMax) {
        sealKey.seals++;
        return sealKey;
      }
      if (entry.seal === current) entry.seal = null; // used up: the next pass makes a new one
    }
  }

  /** The data key a payload's wrapped key unwraps to, from the cache or the KMS. */
  async #openKey(tenantId: string, wrapped: Uint8Array): Promise<AeadKey> {
    const destroys = this.#destroys;
    const hex = hexOf(wrapped);
    const cached = this.#tenants.get(tenantId)?.open.get(hex);
    if (cached !== undefined) return cached;
    const raw = await this.kms.unwrap(tenantId, wrapped);
    try {
      if (raw.length !== AEAD_KEY_BYTES) {
        throw new TenantPayloadError(`wrapped data key unwraps to ${raw.length} bytes`);
      }
      const key = await this.aead.importKey(raw);
      // Not cached if a destroy happened meanwhile (this call raced it; later ones must not).
      if (destroys === this.#destroys) this.#entry(tenantId).open.set(hex, key);
      return key;
    } finally {
      raw.fill(0);
    }
  }

  #entry(tenantId: string): TenantEntry {
    let entry = this.#tenants.get(tenantId);
    if (entry === undefined) {
      entry = { seal: null, open: new LruMap(TENANT_DATA_KEYS_OPEN_KEYS_MAX) };
      this.#tenants.set(tenantId, entry);
    }
    return entry;
  }

  async #newSealKey(tenantId: string, entry: TenantEntry): Promise<SealKey> {
    const raw = new Uint8Array(AEAD_KEY_BYTES);
    this.random(raw);
    try {
      const wrapped = await this.kms.wrap(tenantId, raw);
      if (wrapped.length > TENANT_WRAPPED_KEY_BYTES_MAX) {
        throw new TenantPayloadError(
          `the KMS wrapped a data key into ${wrapped.length} bytes, more than ` +
            `${TENANT_WRAPPED_KEY_BYTES_MAX}`,
        );
      }
      const key = await this.aead.importKey(raw);
      const prefix = concatBytes(
        Uint8Array.of(TENANT_PAYLOAD_VERSION),
        u16(wrapped.length),
        wrapped,
      );
      entry.open.set(hexOf(wrapped), key); // a forget() meanwhile left `entry` orphaned
      return { key, prefix, seals: 0 };
    } finally {
      raw.fill(0);
    }
  }
}

function payloadAad(tenantId: Uint8Array, prefix: Uint8Array, aad: Uint8Array): Uint8Array {
  return concatBytes(PAYLOAD_AAD_PREFIX, u16(tenantId.length), tenantId, prefix, aad);
}

/**
 * Encrypts a delta payload for a tenant. Layout: version (1) | wrapped data key length
 * (u16) | wrapped data key | nonce (12) | ciphertext || tag. The AAD binds the tenant id,
 * the version and wrapped key, and the caller's `aad` (e.g. the delta's shard and key).
 */
export function sealTenantPayload(
  keys: TenantDataKeys,
  tenantId: string,
  plaintext: Uint8Array,
  aad: Uint8Array = new Uint8Array(0),
): Promise<Uint8Array> {
  return keys.seal(tenantId, plaintext, aad);
}

/**
 * Decrypts a payload sealed by sealTenantPayload() for the same tenant and `aad`.
 * TenantPayloadError when malformed; the KMS's errors when the data key does not unwrap
 * (TenantKeyDestroyedError after a shred, TenantUnwrapError for another tenant's payload);
 * AeadError when the payload was altered.
 */
export function openTenantPayload(
  keys: TenantDataKeys,
  tenantId: string,
  sealed: Uint8Array,
  aad: Uint8Array = new Uint8Array(0),
): Promise<Uint8Array> {
  return keys.open(tenantId, sealed, aad);
}
