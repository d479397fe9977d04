// How a storage node comes into the cluster state: the bootstrap node (KISEKI_BOOTSTRAP, or
// a lone voter) creates the cluster key and, exactly once, the cluster itself (the default
// tenant, the first system key epoch; or, for a data directory from before cluster state,
// its own epochs, tenant KEKs, default tenant and S3 keys, so that its data keeps opening).
// Every other node learns the state from the log and gets the cluster key from a peer over
// the node transport (PeerClusterKeySource; the key server takes this over later).

import { type Config, formatHostPort, type HostPort, toHex } from "../base/mod.ts";
import type { Aead } from "../crypto/mod.ts";
import {
  CLUSTER_KEY_BYTES,
  clusterKeyCheck,
  type ClusterKeySource,
  InternalTenantKms,
  loadLocalClusterKey,
  type LocalKeyStore,
  LocalSealedKeyProvider,
  PeerClusterKeySource,
  saveLocalClusterKey,
  serveClusterKey,
  SYSTEM_KEY_EPOCHS_MAX,
} from "../keys/mod.ts";
import type { Logger } from "../obs/mod.ts";
import {
  CLUSTER_ACCESS_KEYS_PER_TENANT_MAX,
  CLUSTER_TENANT_KEKS_MAX,
  type ClusterStateService,
  ClusterStateUnavailableError,
} from "../control/mod.ts";
import { CompositionError } from "../composition/mod.ts";
import type { EngineKeys } from "./engine_stack.ts";
import { LocalCredentialStore } from "../s3/mod.ts";
import type { TcpRaftTransport, TlsMaterial } from "../transport/mod.ts";

/** Pause between reads of the cluster state while waiting for its leader or its creation. */
const WAIT_POLL_MS = 200;

export interface JoinClusterStateOptions {
  config: Config;
  state: ClusterStateService;
  keyStore: LocalKeyStore;
  aead: Aead;
  transport: TcpRaftTransport;
  tls: TlsMaterial | null;
  /** Whether this node creates the cluster (KISEKI_BOOTSTRAP, or a lone voter). */
  bootstrap: boolean;
  logger: Logger;
  signal: AbortSignal;
  /** Where a node without the key gets it (default: its peers, over the Raft port). */
  keySource?: ClusterKeySource;
}

/**
 * The engine's keys from the cluster state. A cluster state that cannot answer now (an
 * election in its group) is the engine's "unavailable": S3 answers 503 SlowDown, the views
 * retry, never an internal error.
 */
export function engineKeysOf(state: ClusterStateService): EngineKeys {
  const transient = async <T>(call: () => Promise<T>): Promise<T> => {
    try {
      return await call();
    } catch (e) {
      if (e instanceof ClusterStateUnavailableError) {
        throw new CompositionError("unavailable", e.message);
      }
      throw e;
    }
  };
  const keys = state.systemKeys;
  const kms = state.kms;
  return {
    systemKeys: {
      currentEpoch: () => transient(() => keys.currentEpoch()),
      masterKey: (epoch) => transient(() => keys.masterKey(epoch)),
      rotate: () => transient(() => keys.rotate()),
      epochs: () => transient(() => keys.epochs()),
    },
    kms: {
      provider: kms.provider,
      createKey: (tenant) => transient(() => kms.createKey(tenant)),
      wrap: (tenant, key) => transient(() => kms.wrap(tenant, key)),
      unwrap: (tenant, wrapped) => transient(() => kms.unwrap(tenant, wrapped)),
      destroyKey: (tenant) => transient(() => kms.destroyKey(tenant)),
      onKeyDestroyed: (listener) => kms.onKeyDestroyed(listener),
      destroyedTenants: (max) => kms.destroyedTenants(max),
    },
  };
}

/** Serves the cluster key to joining members on this node's Raft port. */
export function serveClusterKeyOnPort(options: {
  config: Config;
  state: ClusterStateService;
  transport: TcpRaftTransport;
  /** Members added after start-up (not in KISEKI_RAFT_PEERS): their Raft address. */
  memberAddr?: (id: number) => HostPort | undefined;
  logger: Logger;
}): void {
  const members = new Map(options.config.raftPeers.map((p) => [p.id, p.addr]));
  serveClusterKey({
    transport: options.transport,
    nodeId: options.config.nodeId,
    key: () => options.state.clusterKey(),
    memberAddr: (id) => members.get(id) ?? options.memberAddr?.(id),
    tls: options.config.tls !== null,
    logger: options.logger,
  });
}

/**
 * Brings this node's cluster state to ready: holding the cluster key, with the cluster
 * created (by this node if it is the bootstrap node and nobody did before). Resolves once
 * ready; rejects when the signal aborts or the key is another cluster's.
 */
export async function joinClusterState(options: JoinClusterStateOptions): Promise<void> {
  const { state, keyStore, logger } = options;
  let key = await loadLocalClusterKey(keyStore);
  if (options.bootstrap) {
    if (key === null) {
      key = new Uint8Array(CLUSTER_KEY_BYTES);
      crypto.getRandomValues(key);
      // Kept before anything is sealed under it: a crash after this finds the same key.
      await saveLocalClusterKey(keyStore, key);
      logger.info("cluster key created");
    }
    await state.setClusterKey(key);
    await syncUntil(options, () => true);
    if (state.creation() === null) await createCluster(options, key);
    else await state.verifyKey();
    await dropLocalLeftovers(options);
  } else {
    // The creation record names the key (its check); wait for it before asking for the key.
    await syncUntil(options, () => state.creation() !== null);
    if (key === null) {
      const keyCheck = state.creation()!.keyCheck;
      const source = options.keySource ?? new PeerClusterKeySource({
        nodeId: options.config.nodeId,
        peers: options.config.raftPeers.filter((p) => p.id !== options.config.nodeId),
        tls: options.tls,
        logger,
        verify: async (k) => (await clusterKeyCheck(k)) === keyCheck,
      });
      key = await source.fetch(options.signal);
      await saveLocalClusterKey(keyStore, key);
    }
    await state.setClusterKey(key);
  }
  await state.ready();
  const self = state.nodes().find((n) => n.id === options.config.nodeId);
  const addr = formatHostPort(options.transport.addr);
  if (self === undefined || self.state === "down" || self.addr !== addr) {
    await state.setNode(options.config.nodeId, addr, "up");
  }
  logger.info("cluster state ready", {
    defaultTenant: state.defaultTenant(),
    epoch: state.stateMachine.currentEpoch(),
    nodes: state.nodes().length,
  });
}

/** Reads the cluster state linearizably until `done()` holds (waiting out elections). */
async function syncUntil(options: JoinClusterStateOptions, done: () => boolean): Promise<void> {
  for (let attempt = 0;; attempt++) {
    if (options.signal.aborted) throw new Error("stopped while joining the cluster state");
    try {
      await options.state.sync();
      if (done()) return;
    } catch (e) {
      if (attempt % 50 === 49) {
        options.logger.info("waiting for the cluster state", { error: (e as Error).message });
      }
    }
    await new Promise((r) => setTimeout(r, WAIT_POLL_MS));
  }
}

/**
 * Creates the cluster, once: whatever this node kept in its own key store and credential
 * store before cluster state (a data directory of an earlier release) is carried over with
 * the same bytes, so its chunks, payloads and S3 keys keep working; a fresh node starts
 * with a random default tenant and epoch 1. The creation record goes last: a crash part
 * way finds no cluster and carries over again (every record is refused the second time).
 */
async function createCluster(options: JoinClusterStateOptions, key: Uint8Array): Promise<void> {
  const { state, keyStore, config, logger } = options;
  const now = state.clock.nowMs();
  const tenantFile = `${config.dataDir}/config/default-tenant`;
  let defaultTenant: string;
  try {
    defaultTenant = (await Deno.readTextFile(tenantFile)).trim();
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    defaultTenant = toHex(crypto.getRandomValues(new Uint8Array(16)));
    await Deno.writeTextFile(tenantFile, defaultTenant + "\n", { mode: 0o640 });
  }

  let carried = 0;
  if (firstKey(keyStore, "system_epochs")) {
    const local = await LocalSealedKeyProvider.open({ store: keyStore, logger });
    try {
      for (const e of (await local.epochs()).slice(0, SYSTEM_KEY_EPOCHS_MAX)) {
        const master = await local.masterKey(e.epoch);
        await state.systemKeys.addEpoch(e.epoch, e.createdAtMs, master);
        master.fill(0);
        carried++;
      }
    } finally {
      local.close();
    }
  }
  if (state.stateMachine.currentEpoch() === 0) await state.systemKeys.addEpoch(1, now, null);

  if (firstKey(keyStore, "tenant_keks")) {
    const local = new InternalTenantKms({ store: keyStore, logger });
    for (const k of await local.exportKeks(CLUSTER_TENANT_KEKS_MAX)) {
      const kek = k.kek ?? crypto.getRandomValues(new Uint8Array(CLUSTER_KEY_BYTES));
      await state.kms.addKek(k.tenant, k.createdAtMs, kek);
      kek.fill(0);
      if (k.kek === null) await state.kms.destroyKey(k.tenant).catch(() => {});
      carried++;
    }
  }

  const s3Dir = `${config.dataDir}/keys/s3`;
  if (await exists(s3Dir)) {
    const local = await LocalCredentialStore.open({ dir: s3Dir, aead: options.aead, logger });
    try {
      for (const k of await local.exportAll(CLUSTER_ACCESS_KEYS_PER_TENANT_MAX * 16)) {
        await state.credentials.add(k);
        carried++;
      }
    } finally {
      await local.close();
    }
  }

  const outcome = await state.propose({
    type: "create",
    creation: {
      clusterUid: toHex(crypto.getRandomValues(new Uint8Array(16))),
      keyCheck: await clusterKeyCheck(key),
      defaultTenant,
      bootstrapNode: config.nodeId,
      createdAtMs: now,
    },
  });
  if (!outcome.ok) await state.verifyKey();
  logger.info("cluster created", {
    defaultTenant: state.defaultTenant(),
    carriedOver: carried,
  });
}

/**
 * After the cluster exists, the bootstrap node's own copies of what it carried over are
 * removed: the cluster state is their one home, and a tenant KEK left behind in the node's
 * store would survive a crypto-shred of the cluster's copy.
 */
async function dropLocalLeftovers(options: JoinClusterStateOptions): Promise<void> {
  const { keyStore } = options;
  for (const name of ["tenant_keks", "system_epochs"]) {
    if (!firstKey(keyStore, name)) continue;
    const table = keyStore.table(name);
    const keys = [...table.range()].map((e) => e.key);
    await keyStore.env.transaction((txn) => {
      for (const k of keys) txn.delete(table, k);
    });
    options.logger.info("node-local keys moved into the cluster state", {
      table: name,
      records: keys.length,
    });
  }
  const s3Dir = `${options.config.dataDir}/keys/s3`;
  if (await exists(s3Dir)) {
    const local = await LocalCredentialStore.open({
      dir: s3Dir,
      aead: options.aead,
      logger: options.logger,
    });
    try {
      for (const k of await local.exportAll(CLUSTER_ACCESS_KEYS_PER_TENANT_MAX * 16)) {
        await local.revoke(k.accessKeyId);
      }
    } finally {
      await local.close();
    }
  }
}

function firstKey(keyStore: LocalKeyStore, table: string): boolean {
  for (const _ of keyStore.table(table).range({ limit: 1 })) return true;
  return false;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}
