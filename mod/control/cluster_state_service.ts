// The cluster-state service: what a node offers on top of the replicated ClusterStateMachine.
// It proposes records through the cluster-state Raft group, reads linearizably (a read index
// before a miss is believed), and opens the sealed secrets with the cluster key. Three
// providers come out of it, each the cluster-wide twin of a node-local one: S3 access keys
// (ClusterCredentials), system key epochs (ClusterSystemKeys, a SystemKeyProvider) and the
// built-in tenant KMS (ClusterTenantKms, a TenantKms), so every node seals and opens alike.

import { assert, type Clock, FreshCall, SystemClock } from "../base/mod.ts";
import {
  type Aead,
  AEAD_KEY_BYTES,
  type AeadKey,
  type RandomSource,
  systemRandom,
} from "../crypto/mod.ts";
import {
  clusterKeyCheck,
  ClusterSealer,
  SYSTEM_KEY_EPOCH_MAX,
  SYSTEM_MASTER_KEY_BYTES,
  type SystemKeyEpoch,
  type SystemKeyProvider,
  tenantIdBytes,
  TenantKeyDestroyedError,
  TenantKeyNotFoundError,
  type TenantKms,
  UnknownEpochError,
  unwrapUnderKek,
  wrapUnderKek,
} from "../keys/mod.ts";
import { log as rootLog, type Logger } from "../obs/mod.ts";
import {
  type ClusterAccessKey,
  type ClusterApplyOutcome,
  type ClusterCreation,
  type ClusterNode,
  type ClusterRecord,
  type ClusterStateMachine,
  encodeClusterRecord,
  type NodeDirectory,
  type NodeState,
} from "./cluster_state.ts";

/** How long a proposal keeps being retried while the group has no leader (an election). */
export const CLUSTER_PROPOSE_RETRY_MS = 10_000;
/** Pause between those retries. */
const RETRY_PAUSE_MS = 100;
/** Unsealed S3 secrets held in memory. */
export const CLUSTER_CREDENTIALS_CACHED_MAX = 4096;
/** Imported tenant KEKs held in memory. */
export const CLUSTER_KEKS_CACHED_MAX = 1024;
/** Listeners of destroyed tenant keys. */
const KEK_LISTENERS_MAX = 64;

/** The group the state travels through (the role adapts the Raft host to it). */
export interface ClusterStateGroup {
  /** Resolves once the command is committed and applied here, with the apply outcome. */
  propose(command: Uint8Array): Promise<{ index: number; result: unknown }>;
  /** Resolves once this node has applied everything committed when it was called. */
  readIndex(): Promise<number>;
}

/** The cluster state cannot answer now (no leader, no cluster key yet); retry later. */
export class ClusterStateUnavailableError extends Error {
  override name = "ClusterStateUnavailableError";
}

/** A request the cluster state refuses (a limit, a conflict); the message says which. */
export class ClusterStateError extends Error {
  override name = "ClusterStateError";
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Bounded map: the oldest entry goes first past `max`. */
function remember<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  while (map.size > max) map.delete(map.keys().next().value as K);
}

export interface ClusterStateServiceOptions {
  stateMachine: ClusterStateMachine;
  aead: Aead;
  nodeId: number;
  random?: RandomSource;
  clock?: Clock;
  logger?: Logger;
}

export class ClusterStateService implements NodeDirectory {
  readonly stateMachine: ClusterStateMachine;
  readonly nodeId: number;
  readonly aead: Aead;
  readonly random: RandomSource;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly credentials: ClusterCredentials;
  readonly systemKeys: ClusterSystemKeys;
  readonly kms: ClusterTenantKms;
  #group: ClusterStateGroup | null = null;
  #sealer: ClusterSealer | null = null;
  #key: Uint8Array | null = null;
  readonly #sync: FreshCall<number>;
  readonly #ready: Promise<void>;
  #markReady!: () => void;
  #closed = false;
  #isReady = false;

  constructor(options: ClusterStateServiceOptions) {
    this.stateMachine = options.stateMachine;
    this.nodeId = options.nodeId;
    this.aead = options.aead;
    this.random = options.random ?? systemRandom;
    this.clock = options.clock ?? new SystemClock();
    this.logger = (options.logger ?? rootLog).child({ component: "cluster-state" });
    this.#ready = new Promise((resolve) => this.#markReady = resolve);
    this.#sync = new FreshCall(() => this.#groupOrThrow().readIndex());
    this.credentials = new ClusterCredentials(this);
    this.systemKeys = new ClusterSystemKeys(this);
    this.kms = new ClusterTenantKms(this);
  }

  /** Connects the Raft group (once, before anything is proposed). */
  attach(group: ClusterStateGroup): void {
    assert(this.#group === null, "cluster state group attached twice");
    this.#group = group;
  }

  /** The cluster key this node holds, or null before it has one. */
  clusterKey(): Uint8Array | null {
    return this.#key;
  }

  /**
   * Takes the cluster key. Once the cluster was created, the key must match its key check;
   * a mismatch (another cluster's data directory) is an error, never a silent switch.
   */
  async setClusterKey(key: Uint8Array): Promise<void> {
    assert(this.#key === null, "cluster key set twice");
    const creation = this.stateMachine.creation();
    if (creation !== null && creation.keyCheck !== await clusterKeyCheck(key)) {
      throw new ClusterStateError(
        "this node's cluster key is not the cluster's (its data directory belongs to another " +
          "cluster)",
      );
    }
    this.#sealer = await ClusterSealer.create(this.aead, key, this.random);
    this.#key = key.slice();
    this.#checkReady();
  }

  /** Resolves once the cluster exists and this node holds its key. */
  ready(): Promise<void> {
    return this.#ready;
  }

  isReady(): boolean {
    // Once ready, always ready (the creation is never undone, the key never dropped).
    if (!this.#isReady) this.#isReady = this.#key !== null && this.stateMachine.creation() !== null;
    return this.#isReady;
  }

  creation(): ClusterCreation | null {
    return this.stateMachine.creation();
  }

  /** The default tenant's id; only after ready(). */
  defaultTenant(): string {
    const creation = this.stateMachine.creation();
    assert(creation !== null, "defaultTenant() before the cluster exists");
    return creation.defaultTenant;
  }

  /** Membership and state of every node, for placement and status pages. */
  nodes(): ClusterNode[] {
    return this.stateMachine.nodes();
  }

  /** Records a node's address and state (join, down, drain, removal). */
  async setNode(id: number, addr: string, state: NodeState): Promise<void> {
    await this.propose({ type: "node", node: { id, addr, state, sinceMs: this.clock.nowMs() } });
  }

  /**
   * Says this node moved every fragment of its chunks off `node`, in its drain that started
   * at `drainSinceMs` (refused quietly when the drain is over or already reported).
   */
  async reportEvacuated(node: number, drainSinceMs: number): Promise<boolean> {
    const outcome = await this.propose({
      type: "node_evacuated",
      node,
      by: this.nodeId,
      drainSinceMs,
    });
    return outcome.ok;
  }

  /** Nodes that reported draining node `node` evacuated of their chunks. */
  evacuatedBy(node: number): number[] {
    return this.stateMachine.evacuatedBy(node);
  }

  /** Everything committed in the cluster state before this call is applied here after it. */
  async sync(): Promise<void> {
    try {
      await this.#sync.call();
    } catch (e) {
      throw new ClusterStateUnavailableError(
        `the cluster state cannot be read now: ${(e as Error).message}`,
        { cause: e },
      );
    }
    this.#checkReady();
  }

  /**
   * Proposes a record and resolves with its outcome once applied here; retried while the
   * group elects a leader (every record kind is safe to apply twice: the second is refused).
   */
  async propose(record: ClusterRecord): Promise<ClusterApplyOutcome> {
    const command = encodeClusterRecord(record);
    const deadline = this.clock.nowMs() + CLUSTER_PROPOSE_RETRY_MS;
    for (;;) {
      if (this.#closed) throw new ClusterStateUnavailableError("the node is stopping");
      try {
        const { result } = await this.#groupOrThrow().propose(command);
        const outcome = result as ClusterApplyOutcome | undefined;
        this.#checkReady();
        return outcome ?? { ok: false, refused: "the record was not applied" };
      } catch (e) {
        if (e instanceof ClusterStateError || this.clock.nowMs() >= deadline) {
          throw new ClusterStateUnavailableError(
            `the cluster state took no write: ${(e as Error).message}`,
            { cause: e },
          );
        }
        await new Promise((r) => setTimeout(r, RETRY_PAUSE_MS));
      }
    }
  }

  /** Seals a secret of the cluster state for `purpose`; only after the key is set. */
  async seal(plaintext: Uint8Array, purpose: string): Promise<Uint8Array> {
    return await this.#sealerOrThrow().seal(plaintext, purpose);
  }

  async open(sealed: Uint8Array, purpose: string): Promise<Uint8Array> {
    return await this.#sealerOrThrow().open(sealed, purpose);
  }

  /** Waits for ready() within `ms`, else ClusterStateUnavailableError. */
  async readyWithin(ms: number): Promise<void> {
    if (this.isReady()) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        this.#ready,
        new Promise<never>((_, reject) =>
          timer = setTimeout(
            () =>
              reject(
                new ClusterStateUnavailableError(
                  "the cluster state is not ready (no cluster key or no cluster yet)",
                ),
              ),
            ms,
          )
        ),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Fails when the cluster's key check names another key than the one this node holds. */
  async verifyKey(): Promise<void> {
    const creation = this.stateMachine.creation();
    if (creation === null || this.#key === null) return;
    if (creation.keyCheck !== await clusterKeyCheck(this.#key)) {
      throw new ClusterStateError(
        "this node's cluster key is not the cluster's (its data directory belongs to another " +
          "cluster)",
      );
    }
  }

  close(): void {
    this.#closed = true;
    this.#key?.fill(0);
    this.credentials.clear();
  }

  #checkReady(): void {
    if (this.isReady()) this.#markReady();
  }

  #groupOrThrow(): ClusterStateGroup {
    if (this.#group === null) throw new ClusterStateUnavailableError("no cluster state group");
    return this.#group;
  }

  #sealerOrThrow(): ClusterSealer {
    if (this.#sealer === null) {
      throw new ClusterStateUnavailableError("this node does not hold the cluster key yet");
    }
    return this.#sealer;
  }
}

/** How long a request waits for the cluster state to become ready before failing. */
export const CLUSTER_READY_WAIT_MS = 10_000;

// ---- S3 access keys ----------------------------------------------------------------------

export const ACCESS_KEY_ID_PREFIX = "KSKI";
export const ACCESS_KEY_ID_LENGTH = 20;
export const SECRET_ACCESS_KEY_LENGTH = 40;
const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

function secretPurpose(accessKeyId: string, tenantId: string): string {
  return `s3 secret\u0000${accessKeyId}\u0000${tenantId}`;
}

/**
 * S3 access keys as cluster state: any node looks up, creates, lists and revokes the same
 * keys. The secret enters the log sealed under the cluster key; unsealed secrets are cached
 * here (bounded) and dropped on every node when a revoke is applied.
 */
export class ClusterCredentials {
  readonly #state: ClusterStateService;
  readonly #cache = new Map<string, { tenantId: string; secretAccessKey: string }>();

  constructor(state: ClusterStateService) {
    this.#state = state;
    state.stateMachine.onRecord((r) => {
      if (r.type === "access_key_revoke") this.#cache.delete(r.accessKeyId);
    });
  }

  /** The credential of `accessKeyId`, or null when the cluster holds none. */
  async lookup(
    accessKeyId: string,
  ): Promise<{ tenantId: string; secretAccessKey: string } | null> {
    if (accessKeyId.length !== ACCESS_KEY_ID_LENGTH || !/^[A-Z2-7]+$/.test(accessKeyId)) {
      return null;
    }
    const cached = this.#cache.get(accessKeyId);
    if (cached !== undefined) return cached;
    await this.#state.readyWithin(CLUSTER_READY_WAIT_MS);
    let stored = this.#state.stateMachine.accessKey(accessKeyId);
    if (stored === undefined) {
      // A key created through another node a moment ago: believe a miss only after a read
      // index (coalesced with every other lookup in flight).
      await this.#state.sync();
      stored = this.#state.stateMachine.accessKey(accessKeyId);
      if (stored === undefined) return null;
    }
    const secret = await this.#state.open(
      stored.sealedSecret,
      secretPurpose(accessKeyId, stored.tenantId),
    );
    // A revoke may have been applied while the secret was being opened.
    if (this.#state.stateMachine.accessKey(accessKeyId) === undefined) return null;
    const credential = { tenantId: stored.tenantId, secretAccessKey: decoder.decode(secret) };
    remember(this.#cache, accessKeyId, credential, CLUSTER_CREDENTIALS_CACHED_MAX);
    return credential;
  }

  /** A new key for `tenantId`: the only time its secret is shown. */
  async create(
    tenantId: string,
  ): Promise<
    { accessKeyId: string; secretAccessKey: string; tenantId: string; createdAtMs: number }
  > {
    await this.#state.readyWithin(CLUSTER_READY_WAIT_MS);
    return await this.add({
      accessKeyId: this.#newAccessKeyId(),
      secretAccessKey: this.#newSecret(),
      tenantId,
      createdAtMs: this.#state.clock.nowMs(),
    });
  }

  /** Adds a key with a known secret (a new one, or one carried over from a node's store). */
  async add(
    key: { accessKeyId: string; secretAccessKey: string; tenantId: string; createdAtMs: number },
  ): Promise<
    { accessKeyId: string; secretAccessKey: string; tenantId: string; createdAtMs: number }
  > {
    if (!this.#state.stateMachine.hasTenant(key.tenantId)) {
      await this.#state.propose({
        type: "tenant",
        tenantId: key.tenantId,
        name: key.tenantId,
        createdAtMs: key.createdAtMs,
      });
    }
    const sealedSecret = await this.#state.seal(
      encoder.encode(key.secretAccessKey),
      secretPurpose(key.accessKeyId, key.tenantId),
    );
    const outcome = await this.#state.propose({
      type: "access_key",
      key: {
        accessKeyId: key.accessKeyId,
        tenantId: key.tenantId,
        createdAtMs: key.createdAtMs,
        sealedSecret,
      },
    });
    if (!outcome.ok) {
      // A retried proposal that was applied the first time finds its own key: that is success.
      const had = this.#state.stateMachine.accessKey(key.accessKeyId);
      if (had === undefined || had.tenantId !== key.tenantId) {
        throw new ClusterStateError(outcome.refused);
      }
    }
    return key;
  }

  /** The tenant's keys, never their secrets (after a read index: every node lists alike). */
  async list(
    tenantId: string,
  ): Promise<{ accessKeyId: string; tenantId: string; createdAtMs: number }[]> {
    await this.#state.readyWithin(CLUSTER_READY_WAIT_MS);
    await this.#state.sync();
    return this.#state.stateMachine.accessKeys(tenantId).map((k: ClusterAccessKey) => ({
      accessKeyId: k.accessKeyId,
      tenantId: k.tenantId,
      createdAtMs: k.createdAtMs,
    }));
  }

  /** Revokes a key on every node; false when there was none. */
  async revoke(accessKeyId: string): Promise<boolean> {
    await this.#state.readyWithin(CLUSTER_READY_WAIT_MS);
    this.#cache.delete(accessKeyId);
    await this.#state.sync();
    if (this.#state.stateMachine.accessKey(accessKeyId) === undefined) return false;
    const outcome = await this.#state.propose({ type: "access_key_revoke", accessKeyId });
    this.#cache.delete(accessKeyId);
    return outcome.ok || this.#state.stateMachine.accessKey(accessKeyId) === undefined;
  }

  clear(): void {
    this.#cache.clear();
  }

  #newAccessKeyId(): string {
    const bytes = new Uint8Array(ACCESS_KEY_ID_LENGTH - ACCESS_KEY_ID_PREFIX.length);
    this.#state.random(bytes);
    let id = ACCESS_KEY_ID_PREFIX;
    for (const b of bytes) id += BASE32[b & 31];
    return id;
  }

  #newSecret(): string {
    const bytes = new Uint8Array((SECRET_ACCESS_KEY_LENGTH / 4) * 3);
    this.#state.random(bytes);
    let binary = "";
    for (const b of bytes) binary += String.fromCharCode(b);
    return btoa(binary);
  }
}

// ---- system key epochs ---------------------------------------------------------------------

function epochPurpose(epoch: number): string {
  return `system epoch\u0000${epoch}`;
}

/**
 * System key epochs as cluster state: every node seals chunks under the same current epoch
 * and opens every epoch, whichever node wrote it. rotate() proposes the next epoch; two
 * rotations racing leave one new epoch (the state machine takes only current + 1).
 */
export class ClusterSystemKeys implements SystemKeyProvider {
  readonly #state: ClusterStateService;
  readonly #opened = new Map<number, Uint8Array>();

  constructor(state: ClusterStateService) {
    this.#state = state;
  }

  async currentEpoch(): Promise<number> {
    await this.#state.readyWithin(CLUSTER_READY_WAIT_MS);
    const epoch = this.#state.stateMachine.currentEpoch();
    if (epoch === 0) throw new UnknownEpochError(0);
    return epoch;
  }

  async masterKey(epoch: number): Promise<Uint8Array> {
    const opened = this.#opened.get(epoch);
    if (opened !== undefined) return opened.slice();
    await this.#state.readyWithin(CLUSTER_READY_WAIT_MS);
    let stored = this.#state.stateMachine.keyEpoch(epoch);
    if (stored === undefined) {
      await this.#state.sync();
      stored = this.#state.stateMachine.keyEpoch(epoch);
      if (stored === undefined) throw new UnknownEpochError(epoch);
    }
    const key = await this.#state.open(stored.sealedKey, epochPurpose(epoch));
    assert(key.length === SYSTEM_MASTER_KEY_BYTES, "system master key length");
    // Epochs are few (SYSTEM_KEY_EPOCHS_MAX bounds them) and every one stays readable.
    this.#opened.set(epoch, key);
    return key.slice();
  }

  async rotate(): Promise<number> {
    await this.#state.readyWithin(CLUSTER_READY_WAIT_MS);
    await this.#state.sync();
    const previous = this.#state.stateMachine.currentEpoch();
    if (previous >= SYSTEM_KEY_EPOCH_MAX) {
      throw new ClusterStateError(`system key epoch ${previous} is the last u32 epoch`);
    }
    await this.addEpoch(previous + 1, this.#state.clock.nowMs(), null);
    return this.#state.stateMachine.currentEpoch();
  }

  /** Proposes epoch `epoch` with `key` (random when null); refused quietly if it exists. */
  async addEpoch(epoch: number, createdAtMs: number, key: Uint8Array | null): Promise<boolean> {
    const master = key ?? new Uint8Array(SYSTEM_MASTER_KEY_BYTES);
    if (key === null) this.#state.random(master);
    const sealedKey = await this.#state.seal(master, epochPurpose(epoch));
    if (key === null) master.fill(0);
    const outcome = await this.#state.propose({
      type: "key_epoch",
      epoch: { epoch, createdAtMs, sealedKey },
    });
    if (outcome.ok) this.#state.logger.info("system key epoch created", { epoch });
    return outcome.ok;
  }

  async epochs(): Promise<SystemKeyEpoch[]> {
    await this.#state.readyWithin(CLUSTER_READY_WAIT_MS);
    const current = this.#state.stateMachine.currentEpoch();
    return this.#state.stateMachine.keyEpochs().map((e) => ({
      epoch: e.epoch,
      createdAtMs: e.createdAtMs,
      current: e.epoch === current,
    }));
  }
}

// ---- tenant KMS ------------------------------------------------------------------------------

function kekPurpose(tenant: string): string {
  return `tenant kek\u0000${tenant}`;
}

/**
 * The built-in tenant KMS as cluster state: one KEK per tenant, created once (the first
 * proposal applied wins), sealed under the cluster key in the log; wrapping as the node-local
 * InternalTenantKms does, so keys it wrapped still open. Destroying a KEK is a record: every
 * node forgets the key and tells its listeners when it applies it.
 */
export class ClusterTenantKms implements TenantKms {
  readonly provider = "internal";
  readonly #state: ClusterStateService;
  readonly #keys = new Map<string, AeadKey>();
  readonly #listeners = new Set<(tenantId: string) => void>();

  constructor(state: ClusterStateService) {
    this.#state = state;
    state.stateMachine.onRecord((r) => {
      if (r.type !== "tenant_kek_destroy") return;
      this.#keys.delete(r.tenant);
      for (const listener of this.#listeners) {
        try {
          listener(r.tenant);
        } catch (e) {
          state.logger.error("tenant key-destroyed listener failed", {
            tenant: r.tenant,
            error: (e as Error).message,
          });
        }
      }
    });
  }

  async createKey(tenantId: string): Promise<void> {
    tenantIdBytes(tenantId);
    await this.#state.readyWithin(CLUSTER_READY_WAIT_MS);
    if (this.#state.stateMachine.tenantKek(tenantId) === undefined) await this.#state.sync();
    const had = this.#state.stateMachine.tenantKek(tenantId);
    if (had?.state === "active") return;
    if (had?.state === "destroyed") throw new TenantKeyDestroyedError(tenantId);
    const kek = new Uint8Array(AEAD_KEY_BYTES);
    this.#state.random(kek);
    await this.addKek(tenantId, this.#state.clock.nowMs(), kek);
    kek.fill(0);
    const now = this.#state.stateMachine.tenantKek(tenantId);
    if (now?.state === "destroyed") throw new TenantKeyDestroyedError(tenantId);
    assert(now?.state === "active", "a tenant KEK proposal left no key");
  }

  /** Proposes `kek` as the tenant's KEK; whichever proposal is applied first wins. */
  async addKek(tenantId: string, createdAtMs: number, kek: Uint8Array): Promise<void> {
    const sealedKek = await this.#state.seal(kek, kekPurpose(tenantId));
    const outcome = await this.#state.propose({
      type: "tenant_kek",
      tenant: tenantId,
      createdAtMs,
      sealedKek,
    });
    if (outcome.ok) this.#state.logger.info("tenant key created", { tenant: tenantId });
  }

  async wrap(tenantId: string, plaintextKey: Uint8Array): Promise<Uint8Array> {
    const id = tenantIdBytes(tenantId);
    const key = await this.#activeKey(tenantId);
    return await wrapUnderKek(this.#state.aead, key, id, plaintextKey, this.#state.random);
  }

  async unwrap(tenantId: string, wrapped: Uint8Array): Promise<Uint8Array> {
    const id = tenantIdBytes(tenantId);
    const key = await this.#activeKey(tenantId);
    return await unwrapUnderKek(this.#state.aead, key, tenantId, id, wrapped);
  }

  async destroyKey(tenantId: string): Promise<void> {
    tenantIdBytes(tenantId);
    await this.#state.readyWithin(CLUSTER_READY_WAIT_MS);
    await this.#state.sync();
    const had = this.#state.stateMachine.tenantKek(tenantId);
    if (had === undefined) throw new TenantKeyNotFoundError(tenantId);
    if (had.state === "destroyed") return;
    // Fail closed at once on this node; the record does it on every node.
    this.#keys.delete(tenantId);
    await this.#state.propose({
      type: "tenant_kek_destroy",
      tenant: tenantId,
      atMs: this.#state.clock.nowMs(),
    });
    if (this.#state.stateMachine.tenantKek(tenantId)?.state !== "destroyed") {
      throw new ClusterStateError(`tenant ${tenantId}'s key was not destroyed`);
    }
  }

  onKeyDestroyed(listener: (tenantId: string) => void): () => void {
    assert(this.#listeners.size < KEK_LISTENERS_MAX, "too many key-destroyed listeners");
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  /** Tenants whose KEK the cluster destroyed, at most `max` (finishing interrupted shreds). */
  destroyedTenants(max: number): string[] {
    return this.#state.stateMachine.destroyedTenants(max);
  }

  async #activeKey(tenantId: string): Promise<AeadKey> {
    const cached = this.#keys.get(tenantId);
    if (cached !== undefined && this.#state.stateMachine.tenantKek(tenantId)?.state === "active") {
      return cached;
    }
    await this.#state.readyWithin(CLUSTER_READY_WAIT_MS);
    let kek = this.#state.stateMachine.tenantKek(tenantId);
    if (kek === undefined) {
      // The KEK record commits before any payload it wraps is proposed, but on another
      // node the two groups apply independently: a miss is believed only after a read index.
      await this.#state.sync();
      kek = this.#state.stateMachine.tenantKek(tenantId);
    }
    if (kek === undefined) throw new TenantKeyNotFoundError(tenantId);
    if (kek.state === "destroyed") throw new TenantKeyDestroyedError(tenantId);
    const raw = await this.#state.open(kek.sealedKek, kekPurpose(tenantId));
    const key = await this.#state.aead.importKey(raw);
    raw.fill(0);
    if (this.#state.stateMachine.tenantKek(tenantId)?.state !== "active") {
      throw new TenantKeyDestroyedError(tenantId);
    }
    remember(this.#keys, tenantId, key, CLUSTER_KEKS_CACHED_MAX);
    return key;
  }
}
