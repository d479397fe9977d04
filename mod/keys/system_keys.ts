// System master keys by epoch: the port the chunk path asks for "the key of epoch N", and
// the node-local provider that keeps epochs sealed in $KISEKI_DATA_DIR/keys/. Rotation
// starts a new epoch for new writes; every older epoch stays readable, because envelopes
// name the epoch they were sealed under.
//
// LocalKeyStore is the keys/ directory: one lmdb environment (system epochs, tenant KEKs)
// whose secrets are sealed with AES-256-GCM under a node key-encryption key in
// keys/node.kek (mode 0600, created on first start). That KEK protects against offline
// copies of the epoch store only (a backup, a stolen data.mdb without node.kek): anyone who
// can read node.kek on the node can unseal everything. It is a stand-in: the key server
// (kiseki-keyserver, Raft-replicated, served over mTLS) replaces it as the source of system
// keys, and a tenant's own KMS replaces the built-in tenant provider.

import { openKeyedEnv } from "./key_file.ts";
import { assert, type Clock, concatBytes, SystemClock } from "../base/mod.ts";
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
import type { KvEnv, KvPageKeys, KvTable } from "../disk/mod.ts";
import { gauge, log, type Logger } from "../obs/mod.ts";

export const SYSTEM_MASTER_KEY_BYTES = AEAD_KEY_BYTES;
/** Epochs a provider holds; at one rotation a day this lasts eleven years. */
export const SYSTEM_KEY_EPOCHS_MAX = 4096;
/** Epoch numbers are u32 (the envelope stores four bytes); the first is 1. */
export const SYSTEM_KEY_EPOCH_MAX = 0xffff_ffff;
export const NODE_KEK_FILE = "node.kek";
/** The keys environment holds a few KiB per epoch and tenant; lmdb grows the map past this. */
export const KEY_STORE_MAP_SIZE_BYTES_DEFAULT = 16 << 20;

const RECORD_VERSION = 1;
const RECORD_OVERHEAD_BYTES = 1 + AEAD_NONCE_BYTES + AEAD_TAG_BYTES;
const encoder = new TextEncoder();
const STORE_AAD_PREFIX = encoder.encode("kiseki key store v1\u0000");
const KEK_CHECK_KEY = encoder.encode("kek_check");
const KEK_CHECK_PLAINTEXT = encoder.encode("kiseki node kek check v1");
const EPOCH_AAD_PREFIX = encoder.encode("system epoch\u0000");

/** The key store cannot be used: missing or mismatched node KEK, damaged record, limit hit. */
export class KeyStoreError extends Error {
  override name = "KeyStoreError";
}

/** A master key was asked for an epoch this provider does not hold. */
export class UnknownEpochError extends Error {
  override name = "UnknownEpochError";
  readonly epoch: number;

  constructor(epoch: number) {
    super(`system key epoch ${epoch} is not known`);
    this.epoch = epoch;
  }
}

export interface SystemKeyEpoch {
  epoch: number;
  createdAtMs: number;
  /** The epoch new writes use. */
  current: boolean;
}

/**
 * Source of system master keys. Implementations: LocalSealedKeyProvider (node-local), and
 * later the key server client. Keys returned are copies the caller may zero.
 */
export interface SystemKeyProvider {
  /** The epoch new writes seal under. */
  currentEpoch(): Promise<number>;
  /** The 32-byte master key of `epoch`; UnknownEpochError if there is none. */
  masterKey(epoch: number): Promise<Uint8Array>;
  /** Makes a new epoch current (durably, before resolving) and returns it. */
  rotate(): Promise<number>;
  /** Every readable epoch, ascending. */
  epochs(): Promise<SystemKeyEpoch[]>;
}

export interface LocalKeyStoreOptions {
  /** The keys directory, normally $KISEKI_DATA_DIR/keys (created 0700 if missing). */
  dir: string;
  /** Seals records under the node KEK. */
  aead: Aead;
  /** Source of the node KEK and of nonces; default systemRandom. */
  random?: RandomSource;
  mapSizeBytes?: number;
  logger?: Logger;
}

/**
 * The keys directory: an lmdb environment plus the node KEK that seals its secrets. One
 * per process; the system key provider and the built-in tenant KMS share it.
 */
export class LocalKeyStore {
  readonly dir: string;
  readonly env: KvEnv;
  readonly aead: Aead;
  readonly random: RandomSource;
  /**
   * Page keys of the node's other lmdb environments (raft/, views/, chunks/index/), each
   * sealed under the node KEK beside its environment.
   */
  readonly pageKeys: KvPageKeys;
  readonly #kek: AeadKey;
  #closed = false;

  private constructor(
    dir: string,
    env: KvEnv,
    aead: Aead,
    random: RandomSource,
    kek: AeadKey,
    pageKeys: KvPageKeys,
  ) {
    this.dir = dir;
    this.env = env;
    this.aead = aead;
    this.random = random;
    this.#kek = kek;
    this.pageKeys = pageKeys;
  }

  /** Opens (creating on first start) the keys environment and the node KEK. */
  static async open(options: LocalKeyStoreOptions): Promise<LocalKeyStore> {
    const dir = options.dir.replace(/\/+$/, "");
    const random = options.random ?? systemRandom;
    const logger = options.logger ?? log;
    const { env, meta, check, kek, keyPath: kekPath, pageKeys } = await openKeyedEnv({
      dir,
      keyFile: NODE_KEK_FILE,
      mapSizeBytes: options.mapSizeBytes ?? KEY_STORE_MAP_SIZE_BYTES_DEFAULT,
      checkKey: KEK_CHECK_KEY,
      aead: options.aead,
      random,
      logger,
      makeError: (m) => new KeyStoreError(m),
      createdMessage: "node key-encryption key created",
      holds: "keys",
    });
    try {
      const store = new LocalKeyStore(dir, env, options.aead, random, kek, pageKeys);
      if (check === undefined) {
        // First start, or a crash between writing node.kek and this commit.
        const sealed = await store.seal(KEK_CHECK_PLAINTEXT, KEK_CHECK_KEY);
        await env.transaction((txn) => txn.put(meta, KEK_CHECK_KEY, sealed));
      } else {
        try {
          await store.unseal(check, KEK_CHECK_KEY);
        } catch {
          throw new KeyStoreError(
            `${kekPath} does not open the keys in ${dir}: the file was replaced, or the ` +
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

  /** A table of the keys environment. */
  table(name: string): KvTable {
    this.#assertOpen();
    return this.env.table(name);
  }

  /** Seals `plaintext` under the node KEK, bound to `aad` (a record's identity). */
  async seal(plaintext: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
    this.#assertOpen();
    const record = new Uint8Array(RECORD_OVERHEAD_BYTES + plaintext.length);
    record[0] = RECORD_VERSION;
    const nonce = record.subarray(1, 1 + AEAD_NONCE_BYTES);
    this.random(nonce);
    await this.aead.seal(
      this.#kek,
      nonce,
      plaintext,
      concatBytes(STORE_AAD_PREFIX, aad),
      record.subarray(1 + AEAD_NONCE_BYTES),
    );
    return record;
  }

  /** Opens a record sealed by seal() with the same `aad`; KeyStoreError if it does not. */
  async unseal(record: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
    this.#assertOpen();
    if (record.length < RECORD_OVERHEAD_BYTES || record[0] !== RECORD_VERSION) {
      throw new KeyStoreError(`sealed key record is malformed (${record.length} bytes)`);
    }
    const out = new Uint8Array(record.length - RECORD_OVERHEAD_BYTES);
    try {
      await this.aead.open(
        this.#kek,
        record.subarray(1, 1 + AEAD_NONCE_BYTES),
        record.subarray(1 + AEAD_NONCE_BYTES),
        concatBytes(STORE_AAD_PREFIX, aad),
        out,
      );
    } catch (e) {
      if (e instanceof AeadError) {
        throw new KeyStoreError("sealed key record does not open under the node KEK");
      }
      throw e;
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.env.close();
  }

  #assertOpen(): void {
    assert(!this.#closed, `key store ${this.dir} is closed`);
  }
}

const currentEpochGauge = gauge({
  name: "kiseki_keys_current_epoch",
  help: "The system key epoch new chunk writes are sealed under",
});

function epochKey(epoch: number): Uint8Array {
  const key = new Uint8Array(4);
  new DataView(key.buffer).setUint32(0, epoch);
  return key;
}

export interface LocalSealedKeyProviderOptions {
  store: LocalKeyStore;
  clock?: Clock;
  logger?: Logger;
}

interface HeldEpoch {
  key: Uint8Array;
  createdAtMs: number;
}

/**
 * System key epochs kept in the node's key store, each master key sealed under the node
 * KEK. Every epoch is unsealed once at open and held in memory (they are few); rotate()
 * commits the new epoch durably before it becomes current.
 */
export class LocalSealedKeyProvider implements SystemKeyProvider {
  readonly #store: LocalKeyStore;
  readonly #table: KvTable;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #epochs = new Map<number, HeldEpoch>();
  #current = 0;
  #rotating: Promise<unknown> = Promise.resolve();
  #closed = false;

  private constructor(options: LocalSealedKeyProviderOptions) {
    this.#store = options.store;
    this.#table = options.store.table("system_epochs");
    this.#clock = options.clock ?? new SystemClock();
    this.#logger = options.logger ?? log;
  }

  /** Loads the epochs, creating epoch 1 on first start. */
  static async open(options: LocalSealedKeyProviderOptions): Promise<LocalSealedKeyProvider> {
    const provider = new LocalSealedKeyProvider(options);
    await provider.#load();
    if (provider.#current === 0) await provider.#create(1);
    currentEpochGauge.set({}, provider.#current);
    return provider;
  }

  currentEpoch(): Promise<number> {
    this.#assertOpen();
    return Promise.resolve(this.#current);
  }

  masterKey(epoch: number): Promise<Uint8Array> {
    this.#assertOpen();
    const held = this.#epochs.get(epoch);
    if (held === undefined) return Promise.reject(new UnknownEpochError(epoch));
    return Promise.resolve(held.key.slice());
  }

  rotate(): Promise<number> {
    this.#assertOpen();
    const next = this.#rotating.then(async () => {
      const previous = this.#current;
      if (previous >= SYSTEM_KEY_EPOCH_MAX) {
        throw new KeyStoreError(`system key epoch ${previous} is the last u32 epoch`);
      }
      if (this.#epochs.size >= SYSTEM_KEY_EPOCHS_MAX) {
        throw new KeyStoreError(
          `the key store holds ${SYSTEM_KEY_EPOCHS_MAX} epochs (SYSTEM_KEY_EPOCHS_MAX); ` +
            `retire old epochs before rotating`,
        );
      }
      await this.#create(previous + 1);
      currentEpochGauge.set({}, this.#current);
      this.#logger.info("system key epoch rotated", { epoch: this.#current, previous });
      return this.#current;
    });
    this.#rotating = next.catch(() => {});
    return next;
  }

  epochs(): Promise<SystemKeyEpoch[]> {
    this.#assertOpen();
    return Promise.resolve(
      [...this.#epochs.entries()]
        .sort(([a], [b]) => a - b)
        .map(([epoch, held]) => ({
          epoch,
          createdAtMs: held.createdAtMs,
          current: epoch === this.#current,
        })),
    );
  }

  /** Zeroes the keys held in memory; the store stays open (it is the caller's). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const held of this.#epochs.values()) held.key.fill(0);
    this.#epochs.clear();
  }

  async #load(): Promise<void> {
    // Collected first: a range iterator must not be held across an await.
    for (const { key, value } of [...this.#table.range()]) {
      if (key.length !== 4) throw new KeyStoreError("system epoch table has a malformed key");
      const epoch = new DataView(key.buffer, key.byteOffset, 4).getUint32(0);
      if (this.#epochs.size >= SYSTEM_KEY_EPOCHS_MAX) {
        throw new KeyStoreError(`the key store holds more than ${SYSTEM_KEY_EPOCHS_MAX} epochs`);
      }
      const plain = await this.#store.unseal(value, concatBytes(EPOCH_AAD_PREFIX, key));
      if (plain.length !== 8 + SYSTEM_MASTER_KEY_BYTES) {
        throw new KeyStoreError(`system epoch ${epoch} record has ${plain.length} bytes`);
      }
      const view = new DataView(plain.buffer);
      this.#epochs.set(epoch, {
        createdAtMs: view.getUint32(0) * 0x1_0000_0000 + view.getUint32(4),
        key: plain.slice(8),
      });
      plain.fill(0);
      this.#current = Math.max(this.#current, epoch);
    }
  }

  async #create(epoch: number): Promise<void> {
    const createdAtMs = this.#clock.nowMs();
    const plain = new Uint8Array(8 + SYSTEM_MASTER_KEY_BYTES);
    const view = new DataView(plain.buffer);
    view.setUint32(0, Math.floor(createdAtMs / 0x1_0000_0000));
    view.setUint32(4, createdAtMs >>> 0);
    const key = plain.subarray(8);
    this.#store.random(key);
    const id = epochKey(epoch);
    const sealed = await this.#store.seal(plain, concatBytes(EPOCH_AAD_PREFIX, id));
    // Durable before current: a crash after this commit finds the epoch on restart, and no
    // chunk is ever sealed under an epoch the store could lose.
    await this.#store.env.transaction((txn) => txn.put(this.#table, id, sealed));
    this.#epochs.set(epoch, { key: key.slice(), createdAtMs });
    plain.fill(0);
    this.#current = epoch;
    if (epoch === 1) this.#logger.info("system key epoch created", { epoch });
  }

  #assertOpen(): void {
    assert(!this.#closed, "LocalSealedKeyProvider is closed");
  }
}
