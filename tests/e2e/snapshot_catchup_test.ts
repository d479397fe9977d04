// Catch-up by snapshot with real parts in one process: three nodes, each with its lmdb Raft
// log, TCP Raft transport, views and composition service, as the server wires them (log
// compaction shortened). Node 3 is stopped; while it is gone the others overwrite keys until
// their logs no longer reach back to where node 3 stopped. Node 3 comes back and must catch
// up by a snapshot streamed over the Raft port: its views then hold every key as the leader
// has it, and later writes reach it through the log. (A node whose data is wiped has lost
// its vote and its log, which Raft cannot tell from a lie: it comes back as a new member,
// removed and added again, and then catches up the same way.)

import assert from "node:assert/strict";
import type { Config } from "../../mod/base/mod.ts";
import {
  AeadPayloadCipher,
  CompositionError,
  CompositionService,
  type NamespaceRef,
  namespaceRoutingKey,
  utf8,
} from "../../mod/composition/mod.ts";
import { chooseAead } from "../../mod/crypto/mod.ts";
import type { KvEnv } from "../../mod/disk/mod.ts";
import { SealedPageKeys } from "../../mod/keys/mod.ts";
import { createLogger, type Logger } from "../../mod/obs/mod.ts";
import { shardForKey } from "../../mod/log/mod.ts";
import { type Cluster, startCluster } from "../../mod/role/cluster.ts";
import { openViewEnv, ViewStore } from "../../mod/view/mod.ts";
import { evenShardMap, quietLogger, tenant, TenantKeys } from "../../mod/view/test_stack.ts";
import { defaultShimOptions } from "../../ffi/loader.ts";

const HOST = "127.44.11";
const RAFT_PORT = 29300;
const SHARDS = 2;
const KEYS = 40;
const SNAPSHOT_ENTRIES = 64;
const MARGIN_ENTRIES = 32;
const DEADLINE_MS = 30_000;

interface Node {
  id: number;
  dir: string;
  cluster: Cluster;
  views: ViewStore;
  viewEnv: KvEnv;
  service: CompositionService;
  close(): Promise<void>;
}

const logger = Deno.env.get("KISEKI_TEST_LOG")
  ? createLogger({ level: "info", format: "text", sink: { write: (l) => console.error(l) } })
  : quietLogger;
const aead = chooseAead(defaultShimOptions());
const keys = new TenantKeys();
const cipher = new AeadPayloadCipher({ aead, keyFor: keys.keyFor });
const shardMap = evenShardMap(SHARDS);
const peers = [1, 2, 3].map((id) => ({ id, addr: { host: `${HOST}.${id}`, port: RAFT_PORT } }));

async function startNode(id: number, dir: string, log: Logger = logger): Promise<Node> {
  const pageKeys = new SealedPageKeys({
    aead,
    kek: await aead.importKey(new Uint8Array(32).fill(id)),
    random: (b) => crypto.getRandomValues(b),
  });
  const viewEnv = await openViewEnv({ dataDir: dir, pageKeys, mapSizeBytes: 64 << 20 });
  const views = await ViewStore.open({ env: viewEnv, cipher, logger });
  const config = {
    nodeId: id,
    raftAddr: peers[id - 1]!.addr,
    raftPeers: peers,
    dataDir: dir,
    tls: null,
    allowInsecure: false,
    shardCount: SHARDS,
    bootstrap: id === 1,
  } as unknown as Config;
  const cluster = await startCluster({
    config,
    log,
    tickMs: 20,
    pageKeys,
    compaction: {
      snapshotEntries: SNAPSHOT_ENTRIES,
      marginEntries: MARGIN_ENTRIES,
      intervalMs: 50,
    },
    onShard: (shardId, sm) => {
      views.attach(shardId, sm);
      sm.addDurablePart(
        views.snapshotPart(
          shardId,
          (ns) => shardForKey(shardMap, namespaceRoutingKey(ns)) === shardId,
        ),
      );
    },
  });
  views.start(cluster.deltaLog);
  const service = new CompositionService({
    committer: cluster.deltaLog,
    cipher,
    shardMap: () => shardMap,
    views,
  });
  return {
    id,
    dir,
    cluster,
    views,
    viewEnv,
    service,
    async close() {
      await views.close();
      await cluster.close();
      await viewEnv.close();
    },
  };
}

async function until(what: string, check: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + DEADLINE_MS;
  for (;;) {
    try {
      if (await check()) return;
    } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Overwrites every key once. A write refused as unavailable (an election after a node left,
 * slow on a loaded machine) is sent again, as a client would; it was never acknowledged.
 */
async function putRound(service: CompositionService, ns: NamespaceRef, round: number) {
  for (let k = 0; k < KEYS; k += 8) {
    await Promise.all(
      Array.from({ length: Math.min(8, KEYS - k) }, async (_, j) => {
        const key = `k${k + j}`;
        const body = utf8(`${key}@${round}`);
        const deadline = Date.now() + DEADLINE_MS;
        for (;;) {
          try {
            return await service.put(ns, key, {
              inline: body,
              size: body.length,
              etag: `r${round}`,
            });
          } catch (e) {
            if (!(e instanceof CompositionError && e.code === "unavailable")) throw e;
            if (Date.now() > deadline) throw e;
          }
        }
      }),
    );
  }
}

function contentOf(node: Node, ns: NamespaceRef, key: string): string {
  const c = node.service.get(ns, key);
  assert(c.content.kind === "inline");
  return new TextDecoder().decode(c.content.bytes);
}

Deno.test("a node back after the log moved past it catches up by a snapshot streamed over the Raft port", async () => {
  const dirs = await Promise.all([1, 2, 3].map(() => Deno.makeTempDir({ prefix: "kiseki-snap-" })));
  const nodes: (Node | null)[] = [];
  try {
    for (const id of [1, 2, 3]) nodes.push(await startNode(id, dirs[id - 1]!));
    const [n1, , n3] = nodes as Node[];
    const ns = n1!.service.ref(tenant(1), "catchup");
    await until("a leader and the namespace", async () => {
      await n1!.service.createNamespace(tenant(1), "catchup", "bucket");
      return true;
    });
    const shardId = shardForKey(shardMap, namespaceRoutingKey(ns.id));
    await putRound(n1!.service, ns, 0);
    await until(
      "node 3 folds round 0",
      () => contentOf(n3!, ns, `k${KEYS - 1}`) === `k${KEYS - 1}@0`,
    );

    // Node 3 goes away.
    const stoppedAt = n3!.cluster.host.logBounds(shardId).lastIndex;
    await n3!.close();
    nodes[2] = null;

    // Enough overwrites that the others' logs start past everything node 3 ever had.
    let round = 1;
    for (; round <= 12; round++) await putRound(n1!.service, ns, round);
    const lastRound = round - 1;
    await until(
      "the others' logs to start past node 3's",
      () =>
        [nodes[0]!, nodes[1]!].every((n) =>
          n.cluster.host.logBounds(shardId).firstIndex > stoppedAt + 1
        ),
    );

    const back = await startNode(3, dirs[2]!);
    nodes[2] = back;
    await until("node 3 to install a snapshot and hold the last round", () => {
      if (back.cluster.snapshots.stats().received < 1) return false;
      for (let k = 0; k < KEYS; k++) {
        if (contentOf(back, ns, `k${k}`) !== `k${k}@${lastRound}`) return false;
      }
      return true;
    });
    const bounds = back.cluster.host.logBounds(shardId);
    assert(bounds.firstIndex > stoppedAt, `node 3's log starts at ${bounds.firstIndex}`);
    // The sender counts a stream once it reads node 3's answer, which node 3 writes after
    // it has counted the install: wait for that answer to arrive.
    await until(
      "a leader to count the snapshot as sent",
      () => nodes.reduce((n, node) => n + (node?.cluster.snapshots.stats().sent ?? 0), 0) >= 1,
    );
    // Everything of the namespace came across, listing included (reads are refused, never
    // half-answered, while a later snapshot is being installed).
    await until("node 3 to list every key", () => {
      return back.service.list(ns, { maxKeys: 1000 }).keyCount === KEYS;
    });

    // After the snapshot, the log carries on as usual.
    await putRound(n1!.service, ns, lastRound + 1);
    await until("node 3 to fold a write after the snapshot", () => {
      return contentOf(back, ns, `k${KEYS - 1}`) === `k${KEYS - 1}@${lastRound + 1}`;
    });
  } finally {
    for (const n of nodes) await n?.close();
    for (const d of dirs) await Deno.remove(d, { recursive: true }).catch(() => {});
  }
});

Deno.test("a node whose data was wiped says once, per shard, that it must be removed and added again; the others go on", async () => {
  const dirs = await Promise.all([1, 2, 3].map(() => Deno.makeTempDir({ prefix: "kiseki-wipe-" })));
  const nodes: (Node | null)[] = [];
  try {
    for (const id of [1, 2, 3]) nodes.push(await startNode(id, dirs[id - 1]!));
    const ns = nodes[0]!.service.ref(tenant(1), "wiped");
    await until("a leader and the namespace", async () => {
      await nodes[0]!.service.createNamespace(tenant(1), "wiped", "bucket");
      return true;
    });
    await putRound(nodes[0]!.service, ns, 0);
    const shardId = shardForKey(shardMap, namespaceRoutingKey(ns.id));
    await until(
      "node 3 to hold round 0",
      () => nodes[2]!.cluster.host.logBounds(shardId).lastIndex > KEYS,
    );
    await nodes[2]!.close();
    nodes[2] = null;
    await Deno.remove(dirs[2]!, { recursive: true });
    await Deno.mkdir(dirs[2]!);

    const lines: string[] = [];
    const capture = createLogger({
      level: "info",
      format: "text",
      sink: { write: (l) => lines.push(l) },
    });
    nodes[2] = await startNode(3, dirs[2]!, capture);
    const lost = () => lines.filter((l) => l.includes("lacks entries it acknowledged"));
    // The others go on: writes still commit on the majority, and the leaders' messages to
    // node 3 (these appends, or heartbeats) show it the gap.
    await putRound(nodes[0]!.service, ns, 1);
    await until("node 3 to report its lost log", () => lost().length > 0);
    await new Promise((r) => setTimeout(r, 500));
    // Which shards report depends on which leaders have sent to node 3 since (timing); each
    // that does says it once, however many messages it gets.
    const perShard = new Map<string, number>();
    for (const l of lost()) {
      const shard = /shard=(\d+)/.exec(l)?.[1] ?? "?";
      perShard.set(shard, (perShard.get(shard) ?? 0) + 1);
    }
    assert.ok(perShard.size > 0 && !perShard.has("?"), `reports: ${lost().join(" | ")}`);
    for (const [shard, n] of perShard) assert.equal(n, 1, `shard ${shard} said once`);
    assert.match(lost()[0]!, /remove the node from the cluster and add it again/);
  } finally {
    for (const n of nodes) await n?.close();
    for (const d of dirs) await Deno.remove(d, { recursive: true }).catch(() => {});
  }
});
