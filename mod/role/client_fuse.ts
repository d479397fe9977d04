// Entry of kiseki-client-fuse: a tenant's namespace mounted on a compute node. The cluster
// client (mod/client) discovers the cluster from KISEKI_DATA_ADDR, seals chunks here before
// they leave the node and fails over between nodes; reads go through the L1/L2 chunk cache
// (KISEKI_CACHE_*); the FUSE mount (mod/fuse) serves the kernel until SIGTERM or SIGINT
// unmounts it. Without TLS a loopback client acts for the cluster's default tenant.
// KISEKI_METRICS_ADDR serves /metrics (cache hits and misses, the client's own counters) and
// /health (OK once mounted), as the server does; on loopback unless the operator opens it.

import { type AdminServer, ReadinessFlag, startAdminServer } from "../admin/mod.ts";
import { formatHostPort } from "../base/mod.ts";
import { createChunkCache } from "../client/cache/mod.ts";
import { type ClusterClient, connectClusterClient } from "../client/mod.ts";
import { selectAead } from "../crypto/mod.ts";
import { mountKiseki } from "../fuse/mod.ts";
import { collectProcessMetrics, log } from "../obs/mod.ts";
import { readTlsMaterial } from "../transport/mod.ts";
import { EXIT_USAGE, loadRoleConfig, VERSION } from "./_run.ts";
import { ROLE_TABLE } from "./table.ts";

const USAGE = `${ROLE_TABLE["client-fuse"].binary}: ${ROLE_TABLE["client-fuse"].summary}

usage: kiseki-client-fuse --mountpoint DIR

Mounts the tenant's buckets as top-level directories of DIR (keys with "/" are paths; the
same objects S3 and NFS serve). The cluster is reached through KISEKI_DATA_ADDR (a list of
host:9100); the tenant is the one named in the client certificate (KISEKI_CA_PATH,
KISEKI_CERT_PATH, KISEKI_KEY_PATH), or the default tenant for a loopback client without TLS.
The cache is KISEKI_CACHE_MODE (pinned|organic|bypass), KISEKI_CACHE_DIR, KISEKI_CACHE_L1_MAX,
KISEKI_CACHE_L2_MAX. Metrics and /health are served on KISEKI_METRICS_ADDR (default
127.0.0.1:9190). SIGTERM or SIGINT unmounts; a mount left by a killed client is cleared
by umount -l.`;

/** How long start-up tries the cluster before it gives up (a node still starting). */
const CONNECT_DEADLINE_MS = 30_000;
const CONNECT_RETRY_MS = 500;

function parseArgs(args: string[]): { mountpoint: string } | string {
  let mountpoint: string | null = null;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--") continue;
    if (a === "--mountpoint") {
      const v = args[++i];
      if (v === undefined || v === "") return "--mountpoint needs a directory";
      mountpoint = v;
    } else if (a.startsWith("--mountpoint=")) mountpoint = a.slice("--mountpoint=".length);
    else return `unknown argument '${a}'`;
  }
  if (mountpoint === null) return "--mountpoint DIR is required";
  return { mountpoint };
}

export async function main(args: string[]): Promise<number> {
  const binary = ROLE_TABLE["client-fuse"].binary;
  if (args.includes("--help") || args.includes("-h")) {
    console.log(USAGE);
    return 0;
  }
  if (args.includes("--version")) {
    console.log(`${binary} ${VERSION}`);
    return 0;
  }
  const parsed = parseArgs(args);
  if (typeof parsed === "string") {
    console.error(`${binary}: ${parsed} (see --help)`);
    return EXIT_USAGE;
  }
  const config = loadRoleConfig("client-fuse");
  if (config === null) return EXIT_USAGE;
  const logger = log.child({ role: "client-fuse" });
  collectProcessMetrics();
  const readiness = new ReadinessFlag();
  const stopMetrics = new AbortController();
  let metrics: AdminServer;
  try {
    metrics = startAdminServer({
      addr: config.metricsAddr,
      readiness,
      signal: stopMetrics.signal,
    });
  } catch (e) {
    console.error(
      `${binary}: cannot listen on KISEKI_METRICS_ADDR=${formatHostPort(config.metricsAddr)}: ${
        (e as Error).message
      }`,
    );
    return 1;
  }
  logger.info("metrics listening", { addr: formatHostPort(metrics.addr) });
  readiness.set(false, "connecting to the cluster");
  const aead = selectAead({ ffiDir: config.ffiDir, ffiMode: config.ffiMode });
  const cache = await createChunkCache({
    mode: config.cacheMode,
    dir: config.cacheDir,
    l1MaxBytes: config.cacheL1MaxBytes,
    l2MaxBytes: config.cacheL2MaxBytes,
    disconnectWipeMs: config.cacheDisconnectWipeMs,
    logger,
  });
  let client: ClusterClient | null = null;
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  Deno.addSignalListener("SIGTERM", onSignal);
  Deno.addSignalListener("SIGINT", onSignal);
  try {
    const tls = config.tls ? await readTlsMaterial(config.tls) : null;
    const deadline = Date.now() + CONNECT_DEADLINE_MS;
    for (;;) {
      try {
        client = await connectClusterClient({
          addrs: config.dataAddrs,
          tls,
          logger,
          cache: cache.cache,
          aead,
        });
        break;
      } catch (e) {
        if (stop.signal.aborted || Date.now() > deadline) {
          console.error(
            `${binary}: cannot reach the cluster at KISEKI_DATA_ADDR=${
              config.dataAddrs.map(formatHostPort).join(",")
            }: ${(e as Error).message}`,
          );
          return 1;
        }
        await new Promise((r) => setTimeout(r, CONNECT_RETRY_MS));
      }
    }
    cache.disconnect?.connected();
    if (stop.signal.aborted) return 0;
    const mount = await mountKiseki({
      mountpoint: parsed.mountpoint,
      backend: client.backend,
      readers: client,
      tenantId: client.tenantId,
      logger,
      // The role's own listeners below unmount; the mount's would race them.
      handleSignals: false,
    });
    readiness.set(true, "mounted");
    logger.info("mounted", {
      mountpoint: parsed.mountpoint,
      node: client.node === null ? "none" : formatHostPort(client.node),
      cache: config.cacheMode,
    });
    stop.signal.addEventListener("abort", () => {
      logger.info("signal received: unmounting");
      void mount.unmount();
    });
    if (stop.signal.aborted) void mount.unmount();
    await mount.closed;
    return 0;
  } catch (e) {
    logger.error("client-fuse failed", { error: e as Error });
    return 1;
  } finally {
    Deno.removeSignalListener("SIGTERM", onSignal);
    Deno.removeSignalListener("SIGINT", onSignal);
    stopMetrics.abort();
    await metrics.finished.catch(() => {});
    await client?.close().catch(() => {});
    await cache.close().catch(() => {});
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
