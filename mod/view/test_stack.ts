// For tests of this folder and of mod/composition: one real node in-process. lmdb Raft log,
// one single-voter Raft group per shard on the multi-group host, ShardStateMachine and
// DeltaLog as the server wires them, the view store attached before the host applies
// anything, AES-256-GCM payload sealing with one key per tenant, and the service on top.

import {
  AeadPayloadCipher,
  CompositionService,
  namespaceRoutingKey,
  type PayloadCipher,
  toHex,
} from "../composition/mod.ts";
import { chooseAead } from "../crypto/mod.ts";
import type { KvEnv } from "../disk/mod.ts";
import { type DeltaLog, shardForKey, type ShardMap, type ShardStateMachine } from "../log/mod.ts";
import { createLogger, type Logger } from "../obs/mod.ts";
import { evenShardMap, startLocalMetadataPlane } from "../role/engine_stack.ts";
import type { RaftHost } from "../raft/host.ts";
import { defaultShimOptions } from "../../ffi/loader.ts";
import { SealedPageKeys } from "../keys/mod.ts";
import { openViewEnv, ViewStore, type ViewStoreOptions } from "./view_store.ts";

/** Per-tenant random 32-byte keys that outlive a node restart; destroy() shreds one. */
export class TenantKeys {
  readonly #keys = new Map<string, Uint8Array | null>();

  keyFor = (tenantId: Uint8Array): Promise<Uint8Array | undefined> => {
    const id = toHex(tenantId);
    let key = this.#keys.get(id);
    if (key === undefined) {
      key = crypto.getRandomValues(new Uint8Array(32));
      this.#keys.set(id, key);
    }
    return Promise.resolve(key ?? undefined);
  };

  destroy(tenantId: Uint8Array): void {
    this.#keys.set(toHex(tenantId), null);
  }
}

export interface SingleNodeOptions {
  /** Reuse a data directory (a restart); a fresh temporary one otherwise. */
  dir?: string;
  shardCount?: number;
  keys?: TenantKeys;
  /** Attach the views only after the host has applied the log (tests the catch-up path). */
  attachLate?: boolean;
  outcomeWaitMs?: number;
  logger?: Logger;
  /** Wraps the payload cipher the node uses (counting, failure injection). */
  wrapCipher?: (cipher: PayloadCipher) => PayloadCipher;
  /** Wraps the view environment (counting transactions). */
  wrapViewEnv?: (env: KvEnv) => KvEnv;
  viewOptions?: Pick<ViewStoreOptions, "queueDeltasMax" | "batchDeltasMax">;
  /** Page-encrypt the view and raft environments (keys sealed under a random test KEK). */
  pageKeys?: boolean;
  /** The view environment's commits reach lmdb one by one, not by checkpoints (openViewEnv). */
  viewEnvDeferred?: boolean;
}

export interface SingleNode {
  dir: string;
  keys: TenantKeys;
  host: RaftHost;
  deltaLog: DeltaLog;
  stateMachines: Map<number, ShardStateMachine>;
  views: ViewStore;
  viewEnv: KvEnv;
  service: CompositionService;
  cipher: PayloadCipher;
  /** The AES-GCM cipher under any wrapper (forget() after a shred). */
  aeadCipher: AeadPayloadCipher;
  shardMap: ShardMap;
  close(): Promise<void>;
}

export const quietLogger: Logger = createLogger({
  level: "error",
  format: "text",
  sink: { write: () => {} },
});

export { evenShardMap };

export async function startSingleNode(options: SingleNodeOptions = {}): Promise<SingleNode> {
  const dir = options.dir ?? await Deno.makeTempDir({ prefix: "kiseki-view-" });
  const shardCount = options.shardCount ?? 2;
  const keys = options.keys ?? new TenantKeys();
  const logger = options.logger ?? quietLogger;
  const aead = chooseAead(defaultShimOptions());
  const pageKeys = options.pageKeys
    ? new SealedPageKeys({
      aead,
      kek: await aead.importKey(crypto.getRandomValues(new Uint8Array(32))),
      random: (b) => crypto.getRandomValues(b),
    })
    : null;
  const viewEnv = await openViewEnv({
    dataDir: dir,
    pageKeys,
    mapSizeBytes: 64 << 20,
    ...(options.viewEnvDeferred === false ? { deferred: false } : {}),
  });
  const aeadCipher = new AeadPayloadCipher({
    aead,
    keyFor: keys.keyFor,
  });
  const cipher = options.wrapCipher?.(aeadCipher) ?? aeadCipher;
  const views = await ViewStore.open({
    env: options.wrapViewEnv?.(viewEnv) ?? viewEnv,
    cipher,
    logger,
    ...options.viewOptions,
  });
  const shardMap = evenShardMap(shardCount);
  // As the engine stack wires them: the log is kept until the views hold it.
  const attach = (shardId: number, sm: ShardStateMachine) => {
    views.attach(shardId, sm);
    sm.addDurablePart(
      views.snapshotPart(
        shardId,
        (ns) => shardForKey(shardMap, namespaceRoutingKey(ns)) === shardId,
      ),
    );
  };
  const plane = await startLocalMetadataPlane({
    dataDir: dir,
    pageKeys,
    shardCount,
    logger,
    raftMapBytes: 64 << 20,
    onShard: options.attachLate ? undefined : (shardId, sm) => attach(shardId, sm),
  });
  const { host, deltaLog, stateMachines } = plane;
  if (options.attachLate) {
    // Let the host replay its log first, then attach: the views must catch up by reading.
    for (const [shardId, sm] of stateMachines) {
      await deltaLog.read(shardId, sm.lastApplied + 1, 1, true);
    }
    for (const [shardId, sm] of stateMachines) attach(shardId, sm);
  }
  views.start(deltaLog);
  const service = new CompositionService({
    committer: deltaLog,
    cipher,
    shardMap: () => shardMap,
    views,
    outcomeWaitMs: options.outcomeWaitMs,
  });
  let closed = false;
  return {
    dir,
    keys,
    host,
    deltaLog,
    stateMachines,
    views,
    viewEnv,
    service,
    cipher,
    aeadCipher,
    shardMap,
    async close() {
      if (closed) return;
      closed = true;
      await views.close();
      await plane.close();
      await viewEnv.close();
    },
  };
}

/** Starts a node in a fresh directory, runs `fn`, closes the node and removes the directory. */
export async function withSingleNode(
  fn: (node: SingleNode) => Promise<void>,
  options: Omit<SingleNodeOptions, "dir"> = {},
): Promise<void> {
  const node = await startSingleNode(options);
  try {
    await fn(node);
  } finally {
    await node.close();
    await Deno.remove(node.dir, { recursive: true });
  }
}

/** A 16-byte tenant id from a small number. */
export function tenant(n: number): Uint8Array {
  const id = new Uint8Array(16);
  id[15] = n;
  id[0] = 0x7e;
  return id;
}
