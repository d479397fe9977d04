// Entry of kiseki-server: the composition root of a storage node. It reads the
// configuration, prepares the data directory, picks the crypto, erasure-coding and CRC-32C
// implementations (shim or pure twin), proves them with a self-check, and reports ready.

import {
  bytesEqual,
  type Config,
  CONFIG_VARIABLES,
  formatHostPort,
  installCrc32c,
  Prng,
  toHex,
} from "../base/mod.ts";
import { selectCrc32c } from "../../ffi/ec/crc32c.ts";
import { collectProcessMetrics, gauge, log } from "../obs/mod.ts";
import {
  AdminApi,
  adminJson,
  AdminUi,
  clusterViewHandler,
  poolsRoute,
  ReadinessFlag,
  startAdminServer,
} from "../admin/mod.ts";
import { type Aead, selectAead } from "../crypto/mod.ts";
import { type ErasureCodecFactory, selectErasureCodec } from "../ec/mod.ts";
import { loadRoleConfig, VERSION } from "./_run.ts";
import { DataDirError, prepareDataDir } from "./data_dir.ts";
import { type Cluster, startCluster } from "./cluster.ts";
import { clusterView } from "./cluster_view.ts";
import { type EngineStack, evenShardMap, selectHashing, startEngineStack } from "./engine_stack.ts";
import { fromHex, TENANT_ID_BYTES } from "../composition/mod.ts";
import { type GcBackground, loadPoolSpecs } from "../chunk/mod.ts";
import { announceDefaultTenant, startS3Gateway } from "./s3.ts";
import { ClusterStateMachine, ClusterStateService } from "../control/mod.ts";
import { NFS_EXPORTS_API_PREFIX, nfsExportsApi } from "./nfs_exports_api.ts";
import { engineKeysOf, joinClusterState, serveClusterKeyOnPort } from "./cluster_state.ts";
import { clusterReadBarrier } from "./read_barrier.ts";
import { ReadBarrierBackend } from "../s3/mod.ts";
import { type NfsGateway, startNfsGateway } from "../nfs/mod.ts";
import { FileClientRecords } from "./nfs4_client_records.ts";
import {
  type ChunkFabric,
  clustered,
  FRAGMENT_POOL_DURABILITY,
  startChunkFabric,
} from "./chunk_fabric.ts";
import { SCRUB_API_PREFIX, type ScrubService, startScrub } from "./scrub.ts";
import { drainOf, nodesApi, startNodeMembership } from "./node_membership.ts";
import { logErrorMapper, logServiceBinding } from "../log/log_grpc.ts";
import { type GrpcServer, readTlsMaterial, startGrpcServer } from "../transport/mod.ts";
import { type ClientService, startClientService } from "./client_service.ts";

/** How long a member of a cluster waits to reach the cluster state before saying ready. */
const CLUSTER_JOIN_READY_WAIT_MS = 15_000;

const USAGE = `kiseki-server ${VERSION}: storage node (log, chunks, compositions, views, gateways)

Usage: kiseki-server [--help] [--version]

Configuration is read from the environment; with none, a single bootstrapped node runs on
./kiseki-data. Variables:
${
  CONFIG_VARIABLES.map((v) =>
    `  ${v.name.padEnd(28)} ${v.description} (default: ${v.default || "unset"})`
  )
    .join("\n")
}
`;

export async function main(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(USAGE);
    return 0;
  }
  if (args.includes("--version")) {
    console.log(`kiseki-server ${VERSION}`);
    return 0;
  }
  const unknown = args.filter((a) => a !== "--");
  if (unknown.length > 0) {
    console.error(
      `kiseki-server: unknown argument '${
        unknown[0]
      }' (configuration is by environment; see --help)`,
    );
    return 2;
  }
  const config = loadRoleConfig("server");
  if (config === null) return 2;
  const insecure = insecureClusterProblem(config);
  if (insecure !== null) {
    console.error(`kiseki-server: ${insecure}`);
    return 2;
  }
  return await runServer(config);
}

/**
 * Why the node must not start: several nodes without mTLS (their Raft and data-path traffic
 * would be open to anyone on the network) unless KISEKI_ALLOW_INSECURE=true says so. A lone
 * node without TLS serves loopback callers only, so it may start.
 */
export function insecureClusterProblem(config: Config): string | null {
  if (config.tls !== null || config.allowInsecure || config.raftPeers.length <= 1) return null;
  return `KISEKI_RAFT_PEERS names ${config.raftPeers.length} nodes but mTLS is not configured: ` +
    "set KISEKI_CA_PATH, KISEKI_CERT_PATH and KISEKI_KEY_PATH (scripts/gen_certs.sh issues " +
    "them), or KISEKI_ALLOW_INSECURE=true to run the cluster unauthenticated";
}

async function runServer(config: Config): Promise<number> {
  const logger = log.child({ node: config.nodeId });
  const readiness = new ReadinessFlag();
  collectProcessMetrics();
  const ready = gauge({ name: "kiseki_node_ready", help: "1 when the node answers OK on /health" });
  ready.set({}, 0);

  const stop = new AbortController();
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    Deno.addSignalListener(signal, () => {
      logger.info("stopping", { signal });
      readiness.set(false, "stopping");
      stop.abort();
    });
  }

  // The health endpoint comes up first so that orchestration sees 503 while starting.
  let admin;
  const api = new AdminApi();
  const ui = new AdminUi();
  let cluster: Cluster | undefined;
  let grpcServer: GrpcServer | undefined;
  let stack: EngineStack | undefined;
  let s3: { close(): Promise<void> } | undefined;
  let nfs: NfsGateway | undefined;
  let gc: GcBackground | undefined;
  let scrub: ScrubService | undefined;
  let clientService: ClientService | undefined;
  let membership: { stop(): Promise<void> } | undefined;
  try {
    admin = startAdminServer({
      addr: config.metricsAddr,
      readiness,
      api,
      ui,
      signal: stop.signal,
    });
  } catch (e) {
    logger.error(`cannot listen on KISEKI_METRICS_ADDR=${formatHostPort(config.metricsAddr)}`, {
      error: e,
    });
    return 1;
  }

  try {
    readiness.set(false, "preparing data directory");
    const { identity, created } = await prepareDataDir(config, VERSION);
    logger.info(created ? "data directory created" : "data directory opened", {
      dir: config.dataDir,
      createdAt: identity.createdAt,
    });

    readiness.set(false, "checking crypto and erasure coding");
    const shim = { ffiDir: config.ffiDir, ffiMode: config.ffiMode };
    const aead = selectAead(shim);
    const ec = selectErasureCodec(shim);
    await selfCheck(aead, ec);
    // Installed before the engine writes or verifies a record; both agree bit for bit.
    const crc = selectCrc32c(shim);
    installCrc32c(crc.impl, crc.name, crc.reason);
    logger.info("crc32c implementation", { impl: crc.name, reason: crc.reason });
    gauge<"impl">({
      name: "kiseki_crc32c_implementation",
      help: "1 for the CRC-32C implementation in use (isa-l or typescript)",
      labelNames: ["impl"],
    }).set({ impl: crc.name }, 1);

    gauge({
      name: "kiseki_node_info",
      help: "Static facts about this node (value is always 1)",
      labelNames: ["version", "node_id", "aead", "ec", "bootstrap"],
    }).set({
      version: VERSION,
      node_id: String(config.nodeId),
      aead: aead.implementation,
      ec: ec.implementation,
      bootstrap: String(config.bootstrap),
    }, 1);

    readiness.set(false, "starting the metadata plane and the engine");
    // Tenants, S3 keys, system key epochs and tenant KEKs are cluster state, the same on
    // every node (see mod/control/cluster_state.ts).
    const clusterStateMachine = new ClusterStateMachine();
    const clusterState = new ClusterStateService({
      stateMachine: clusterStateMachine,
      aead,
      nodeId: config.nodeId,
      logger,
    });
    const pools = await loadPoolSpecs(config.pools ?? undefined, {
      dataDir: config.dataDir,
      nodes: Math.max(1, config.raftPeers.length),
    });
    if (pools.length > 1) {
      logger.warn("KISEKI_POOLS names several pools; this release stores into the first only", {
        pool: pools[0]!.name,
        ignored: pools.slice(1).map((p) => p.name).join(","),
      });
    }
    // In a cluster the node's pool keeps fragments; the pool's durability spans the nodes.
    const pool = pools[0]!;
    let fabric: ChunkFabric | undefined;
    stack = await startEngineStack({
      dataDir: config.dataDir,
      shim,
      aead,
      codecs: ec,
      pool: clustered(config) ? { ...pool, durability: FRAGMENT_POOL_DURABILITY } : pool,
      clusterChunks: clustered(config)
        ? async (local) =>
          fabric = await startChunkFabric({
            config,
            transport: cluster!.transport,
            local,
            codecs: ec,
            durability: pool.durability,
            nodes: () => clusterState.nodes(),
            logger,
          })
        : undefined,
      shardCount: config.shardCount,
      logger,
      engine: {
        chunkCacheBytes: config.chunkCacheMaxBytes,
        readAheadBytesMax: config.readAheadMaxBytes,
      },
      keys: () => Promise.resolve(engineKeysOf(clusterState)),
      metadata: async (onShard, pageKeys) => {
        cluster = await startCluster({
          config,
          log: logger,
          tickMs: config.raftTickMs,
          onShard,
          pageKeys,
          clusterStateMachine,
        });
        const c = cluster;
        clusterState.attach(c.clusterState);
        serveClusterKeyOnPort({
          config,
          state: clusterState,
          transport: c.transport,
          memberAddr: (id) => c.memberAddress(id),
          logger,
        });
        return {
          deltaLog: c.deltaLog,
          stateMachines: c.stateMachines,
          shardMap: evenShardMap(config.shardCount),
          close: () => c.close(),
        };
      },
    });
    readiness.set(false, "joining the cluster state (cluster key, tenants, keys)");
    const lone = config.raftPeers.length <= 1;
    const bootstrap = config.bootstrap || lone;
    const joined = joinClusterState({
      config,
      state: clusterState,
      keyStore: stack.keyStore,
      aead,
      transport: cluster!.transport,
      tls: config.tls ? await readTlsMaterial(config.tls) : null,
      bootstrap,
      logger,
      signal: stop.signal,
    }).then(() =>
      announceDefaultTenant(
        config,
        clusterState.credentials,
        clusterState.defaultTenant(),
        bootstrap,
        logger,
      )
    );
    joined.catch((e) => {
      if (!stop.signal.aborted) logger.error("joining the cluster state failed", { error: e });
    });
    // A lone node joins at once. A member of a cluster waits a while for the others; past
    // that it is ready for what needs no cluster state (the data path), and S3 answers 503
    // SlowDown until the cluster state is reached.
    if (lone) await joined;
    else await Promise.race([joined, delay(CLUSTER_JOIN_READY_WAIT_MS, stop.signal)]);
    // A lone node's views already hold every acknowledged write; others pass a barrier.
    const gatewayBackend = lone ? stack.engine : new ReadBarrierBackend(
      stack.engine,
      clusterReadBarrier({
        deltaLog: cluster!.deltaLog,
        views: stack.views,
        shardMap: stack.metadata.shardMap,
      }),
    );
    const s3Endpoint = startS3Gateway({
      config,
      backend: gatewayBackend,
      credentials: clusterState.credentials,
      defaultTenant: () => clusterState.isReady() ? clusterState.defaultTenant() : null,
      log: logger,
      signal: stop.signal,
      hashing: selectHashing(shim, logger),
    });
    s3 = s3Endpoint;
    // NFS serves the default tenant's buckets (one namespace with S3) to loopback clients,
    // through the same read barrier as S3. The default tenant comes with the cluster state.
    const engineStore = stack.chunkStore;
    const startNfs = (tenant: string) => {
      nfs = startNfsGateway({
        backend: gatewayBackend,
        tenantId: fromHex(tenant, TENANT_ID_BYTES)!,
        exports: () => clusterState.stateMachine.nfsExports(),
        addr: config.nfsAddr,
        portmapAddr: config.portmapAddr,
        logger,
        nfs4ClientRecords: new FileClientRecords(`${config.dataDir}/config/nfs4-clients`),
        space: () => {
          const report = (fabric?.store ?? engineStore).poolReport();
          return {
            totalBytes: report.capacityBytes,
            freeBytes: Math.max(0, report.capacityBytes - report.usedBytes),
          };
        },
      });
      logger.info("NFS gateway listening", {
        addr: formatHostPort(config.nfsAddr),
        portmap: config.portmapAddr ? formatHostPort(config.portmapAddr) : "on the NFS port",
      });
    };
    if (clusterState.isReady()) startNfs(clusterState.defaultTenant());
    else {
      logger.warn("the NFS gateway starts once the cluster state is reached");
      joined.then(() => {
        if (!stop.signal.aborted) startNfs(clusterState.defaultTenant());
      }, () => {});
    }
    api.mount("/api/v1/s3-credentials", s3Endpoint.api);
    api.mount(NFS_EXPORTS_API_PREFIX, nfsExportsApi(clusterState));
    const engineStack = stack;
    // Shreds this node runs itself; a tenant KEK destroyed through another node makes this
    // node drop the tenant's view records too (the KEK itself is gone cluster-wide).
    const shredding = new Set<string>();
    clusterState.kms.onKeyDestroyed((tenant) => {
      if (shredding.has(tenant) || !/^[0-9a-f]{32}$/.test(tenant)) return;
      shredding.add(tenant);
      engineStack.shredTenant(fromHex(tenant, TENANT_ID_BYTES)!)
        .catch((e) =>
          logger.error("dropping a tenant shredded elsewhere failed", { tenant, error: e })
        )
        .finally(() => shredding.delete(tenant));
    });
    api.mount("/api/v1/tenants", (req, url) =>
      tenantsApi(req, url, {
        defaultTenant: () => clusterState.isReady() ? clusterState.defaultTenant() : null,
        shred: async (tenant) => {
          shredding.add(tenant);
          try {
            // No new request of the tenant gets in while its keys and records go.
            const revoked = await s3Endpoint.revokeTenant(tenant);
            const shred = await engineStack.shredTenant(fromHex(tenant, TENANT_ID_BYTES)!);
            return { ...shred, accessKeysRevoked: revoked.length };
          } finally {
            shredding.delete(tenant);
          }
        },
      }));
    api.setToken(await adminToken(config.dataDir));
    // The native client's metadata (gRPC) and sealed chunk bytes (framed transport).
    clientService = await startClientService({
      config,
      engine: stack.engine,
      backend: gatewayBackend,
      systemKeys: stack.systemKeys,
      aead: stack.aead,
      dedup: stack.dedup,
      defaultTenant: () => clusterState.isReady() ? clusterState.defaultTenant() : null,
      directory: () => clusterState.isReady() ? clusterState : null,
      tls: config.tls ? await readTlsMaterial(config.tls) : null,
      logger,
    });
    grpcServer = await startGrpcServer({
      addr: config.dataAddrs[0]!,
      services: [logServiceBinding(cluster!.deltaLog, config.nodeId), clientService.binding],
      tls: config.tls ? await readTlsMaterial(config.tls) : null,
      plaintextCallers: config.allowInsecure ? "any" : "loopback",
      errorMappers: [logErrorMapper, clientService.errorMapper],
      logger,
    });

    // Background scrub: verifies and repairs every fragment at KISEKI_SCRUB_RATE.
    scrub = startScrub({ config, store: stack.chunkStore, logger });
    api.mount(SCRUB_API_PREFIX, scrub.api);

    gc = stack.gc.start({ logger });
    const chunkStore = stack.chunkStore;
    const gcStats = gc.stats;
    api.mount(
      "/api/v1/pools",
      poolsRoute(() => [{
        report: () => (fabric?.store ?? chunkStore).poolReport(),
        gc: () => gcStats,
      }]),
    );
    const metadataPlane = cluster!;
    // Membership: peers away past KISEKI_NODE_DOWN_GRACE are recorded down (by the leader of
    // the cluster state), drains are reported, `kiseki admin node` is served.
    membership = startNodeMembership({
      state: clusterState,
      cluster: metadataPlane,
      store: () => fabric?.store,
      graceMs: config.nodeDownGraceMs,
      logger,
      onPeerAddress: (id, addr) => fabric?.setPeer(id, addr),
    });
    const linkOf = (id: number) =>
      id === config.nodeId
        ? null
        : metadataPlane.transport.peerLinks().find((p) => p.id === id)?.link ?? "never";
    const nodesOptions = {
      state: clusterState,
      configured: config.raftPeers.map((p) => p.id),
      durability: pool.durability,
      store: () => fabric?.store,
      link: linkOf,
      logger,
      raft: metadataPlane,
      canDial: (addr: { host: string; port: number }) =>
        Deno.permissions.querySync({ name: "net", host: `${addr.host}:${addr.port}` }).state ===
          "granted",
    };
    api.mount("/api/v1/nodes", (req, url) => nodesApi(req, url, nodesOptions));
    ui.mount(
      "/ui/api/cluster",
      clusterViewHandler(() =>
        clusterView({
          cluster: metadataPlane,
          localPools: () => [(fabric?.store ?? chunkStore).poolReport()],
          drain: (id) => drainOf(nodesOptions, id),
          // What the cluster decided (down, draining, removed); a node recorded up is shown
          // as this node's transport finds it (reachable or not).
          clusterState: (id) => {
            const recorded = clusterState.nodes().find((n) => n.id === id)?.state;
            return recorded === undefined || recorded === "up" ? null : recorded;
          },
          // Degraded chunks are those this node wrote with less than full redundancy; the
          // repairer works through them in the background.
          chunks: fabric === undefined ? undefined : () => ({
            degraded: fabric!.store.degradedCount(),
            repairing: fabric!.store.repairingCount(),
            rebalance: fabric!.store.rebalanceProgress(),
          }),
        })
      ),
    );
    readiness.set(true, "ready");
    ready.set({}, 1);
    logger.info("node ready", {
      metrics: formatHostPort(admin.addr),
      bootstrap: config.bootstrap,
      peers: config.raftPeers.length,
    });
  } catch (e) {
    if (e instanceof DataDirError) logger.error(e.message);
    else logger.error("start-up failed", { error: e });
    await membership?.stop();
    await scrub?.stop();
    await nfs?.close();
    await s3?.close();
    await gc?.stop();
    await grpcServer?.close(0);
    await clientService?.close();
    if (stack !== undefined) await stack.close();
    else await cluster?.close();
    await admin.shutdown();
    return 1;
  }

  await admin.finished;
  await nfs?.close();
  await s3.close();
  await gc.stop();
  await grpcServer.close();
  await clientService.close();
  await scrub?.stop();
  await membership?.stop();
  // The engine stack closes the metadata plane it was given.
  await stack.close();
  logger.info("stopped");
  return 0;
}

/**
 * POST /api/v1/tenants/<tenant>/shred   body {"confirm": "<tenant>"}
 * Crypto-shreds a tenant (32 hex digits or `default`): revokes its access keys, destroys its
 * KEK, drops its views, gives back its chunk references and rekeys the node's environments.
 * Irreversible, so the body must repeat the tenant id.
 */
async function tenantsApi(
  req: Request,
  url: URL,
  options: {
    defaultTenant: () => string | null;
    shred: (tenant: string) => Promise<Record<string, unknown>>;
  },
): Promise<Response> {
  const match = /^\/api\/v1\/tenants\/([^/]+)\/shred$/.exec(url.pathname);
  if (match === null || req.method !== "POST") {
    return adminJson(405, {
      error: "method_not_allowed",
      message: `${req.method} ${url.pathname}`,
    });
  }
  const given = decodeURIComponent(match[1]!);
  const tenant = given === "default" ? options.defaultTenant() ?? "" : given.toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(tenant)) {
    return adminJson(400, {
      error: "invalid_argument",
      message: `tenant '${given}' is not 32 hex digits or 'default'`,
    });
  }
  let confirm: unknown;
  try {
    confirm = ((await req.json()) as { confirm?: unknown }).confirm;
  } catch {
    confirm = undefined;
  }
  if (confirm !== given && confirm !== tenant) {
    return adminJson(400, {
      error: "confirmation_required",
      message: `shredding is irreversible: send {"confirm": "${given}"} to shred tenant ${tenant}`,
    });
  }
  try {
    return adminJson(200, await options.shred(tenant));
  } catch (e) {
    log.error("tenant shred failed", { tenant, error: e });
    return adminJson(500, { error: "internal", message: (e as Error).message });
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

/** The bearer token of the operator API: config/admin-token, created 0600 on first start. */
async function adminToken(dataDir: string): Promise<string> {
  const path = `${dataDir}/config/admin-token`;
  try {
    return (await Deno.readTextFile(path)).trim();
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const token = toHex(crypto.getRandomValues(new Uint8Array(32)));
  await Deno.writeTextFile(path, token + "\n", { mode: 0o600, createNew: true });
  return token;
}

/** Proves the selected implementations on this machine before the node says it is ready. */
async function selfCheck(aead: Aead, ecFactory: ErasureCodecFactory): Promise<void> {
  const prng = new Prng(0x6b69_7365);
  const key = await aead.importKey(prng.bytes(32));
  const nonce = prng.bytes(12);
  const plain = prng.bytes(4096);
  const sealed = new Uint8Array(plain.length + 16);
  const opened = new Uint8Array(plain.length);
  await aead.seal(key, nonce, plain, new Uint8Array(0), sealed);
  await aead.open(key, nonce, sealed, new Uint8Array(0), opened);
  if (!bytesEqual(plain, opened)) throw new Error(`${aead.implementation} AEAD self-check failed`);

  const codec = ecFactory.create({ k: 4, m: 2 });
  const fragmentBytes = 1024;
  const fragments = ecFactory.allocateFragments(6, fragmentBytes);
  for (const f of fragments.slice(0, 4)) prng.fill(f);
  codec.encode(fragments.slice(0, 4), fragments.slice(4));
  // Lose one data and one parity fragment; rebuild both from the other four.
  const damaged = fragments.map((f, i) => (i === 1 || i === 4 ? null : f));
  const rebuilt = new Map([[1, new Uint8Array(fragmentBytes)], [4, new Uint8Array(fragmentBytes)]]);
  codec.reconstruct(damaged, rebuilt);
  if (!bytesEqual(rebuilt.get(1)!, fragments[1]!) || !bytesEqual(rebuilt.get(4)!, fragments[4]!)) {
    throw new Error(`${ecFactory.implementation} erasure-coding self-check failed`);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
