// The cluster key: 32 random bytes, created once by the bootstrap node, that seal the
// secrets of the replicated cluster state (S3 secrets, system key epochs, built-in tenant
// KEKs) before they enter the Raft log. Each node keeps its copy in its key store, sealed
// under its node KEK; a joining node gets it only from a peer over the authenticated node
// transport (cluster_key_exchange.ts), or later from the key server. The ClusterKeySource
// port is that seam.

import { concatBytes, toHex } from "../base/mod.ts";
import {
  type Aead,
  AEAD_KEY_BYTES,
  AEAD_NONCE_BYTES,
  AEAD_TAG_BYTES,
  AeadError,
  type AeadKey,
  type RandomSource,
} from "../crypto/mod.ts";
import type { LocalKeyStore } from "./system_keys.ts";

export const CLUSTER_KEY_BYTES = AEAD_KEY_BYTES;
const SEALED_VERSION = 1;
const SEALED_OVERHEAD_BYTES = 1 + AEAD_NONCE_BYTES + AEAD_TAG_BYTES;
const encoder = new TextEncoder();
const SEAL_AAD_PREFIX = encoder.encode("kiseki cluster state v1\u0000");
const CHECK_LABEL = encoder.encode("kiseki cluster key check v1");
const LOCAL_TABLE = "cluster";
const LOCAL_KEY = encoder.encode("cluster_key");
const LOCAL_AAD = encoder.encode("cluster key\u0000");

/** A sealed value did not open under the cluster key (altered, or another cluster's). */
export class ClusterKeyError extends Error {
  override name = "ClusterKeyError";
}

/** Where a node without the cluster key gets it (peers today; the key server later). */
export interface ClusterKeySource {
  /** The cluster key; keeps trying until `signal` aborts. */
  fetch(signal: AbortSignal): Promise<Uint8Array>;
}

/** Hex of HMAC-SHA256(key, label), 16 bytes: names the key in the log without revealing it. */
export async function clusterKeyCheck(key: Uint8Array): Promise<string> {
  const hmac = await crypto.subtle.importKey(
    "raw",
    new Uint8Array(key),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", hmac, CHECK_LABEL));
  return toHex(mac.subarray(0, 16));
}

/** Seals and opens cluster-state secrets under the cluster key, each bound to its purpose. */
export class ClusterSealer {
  readonly #aead: Aead;
  readonly #key: AeadKey;
  readonly #random: RandomSource;

  private constructor(aead: Aead, key: AeadKey, random: RandomSource) {
    this.#aead = aead;
    this.#key = key;
    this.#random = random;
  }

  static async create(
    aead: Aead,
    clusterKey: Uint8Array,
    random: RandomSource,
  ): Promise<ClusterSealer> {
    if (clusterKey.length !== CLUSTER_KEY_BYTES) {
      throw new ClusterKeyError(`cluster key is ${clusterKey.length} bytes`);
    }
    return new ClusterSealer(aead, await aead.importKey(clusterKey), random);
  }

  /** `plaintext` sealed, bound to `purpose` (e.g. "s3 secret\0<key id>\0<tenant>"). */
  async seal(plaintext: Uint8Array, purpose: string): Promise<Uint8Array> {
    const out = new Uint8Array(SEALED_OVERHEAD_BYTES + plaintext.length);
    out[0] = SEALED_VERSION;
    const nonce = out.subarray(1, 1 + AEAD_NONCE_BYTES);
    this.#random(nonce);
    await this.#aead.seal(
      this.#key,
      nonce,
      plaintext,
      concatBytes(SEAL_AAD_PREFIX, encoder.encode(purpose)),
      out.subarray(1 + AEAD_NONCE_BYTES),
    );
    return out;
  }

  /** Reverses seal() for the same purpose; ClusterKeyError when it does not open. */
  async open(sealed: Uint8Array, purpose: string): Promise<Uint8Array> {
    if (sealed.length < SEALED_OVERHEAD_BYTES || sealed[0] !== SEALED_VERSION) {
      throw new ClusterKeyError(`sealed cluster value is malformed (${sealed.length} bytes)`);
    }
    const out = new Uint8Array(sealed.length - SEALED_OVERHEAD_BYTES);
    try {
      await this.#aead.open(
        this.#key,
        sealed.subarray(1, 1 + AEAD_NONCE_BYTES),
        sealed.subarray(1 + AEAD_NONCE_BYTES),
        concatBytes(SEAL_AAD_PREFIX, encoder.encode(purpose)),
        out,
      );
    } catch (e) {
      if (e instanceof AeadError) {
        throw new ClusterKeyError(
          `a ${purpose.split("\u0000")[0]} does not open under the cluster key`,
        );
      }
      throw e;
    }
    return out;
  }
}

/** The node's copy of the cluster key from its key store (sealed under the node KEK), if any. */
export async function loadLocalClusterKey(store: LocalKeyStore): Promise<Uint8Array | null> {
  const sealed = store.table(LOCAL_TABLE).getSync(LOCAL_KEY);
  if (sealed === undefined) return null;
  const key = await store.unseal(sealed, LOCAL_AAD);
  if (key.length !== CLUSTER_KEY_BYTES) {
    throw new ClusterKeyError(`the stored cluster key has ${key.length} bytes`);
  }
  return key;
}

/** Keeps the cluster key in the node's key store, sealed under the node KEK (durable). */
export async function saveLocalClusterKey(store: LocalKeyStore, key: Uint8Array): Promise<void> {
  const sealed = await store.seal(key, LOCAL_AAD);
  const table = store.table(LOCAL_TABLE);
  await store.env.transaction((txn) => txn.put(table, LOCAL_KEY, sealed));
}
