// Starts a mount the way it ships: a `kiseki server` role and a `kiseki-client-fuse` role
// beside it (tests/e2e/_role.ts, the role table's permission flags), on a loopback address
// of the test file's own (127.0.N.1), so files running in parallel never share a port. The
// test's own file calls then go through the kernel, the client (sealing, cache, gRPC
// metadata, client transport) and the server like any program's.

import {
  type RunningRole,
  startRole,
  type TestAddrs,
  testAddrs,
  waitForHttp,
} from "../e2e/_role.ts";
export { fuseMissing, isMounted, lazyUnmount } from "./_mount_in_process.ts";
import { isMounted, lazyUnmount } from "./_mount_in_process.ts";

/** A server role's devices for FUSE tests: room for fio and git, small enough for /tmp. */
const POOL = JSON.stringify({
  name: "default",
  devices: 6,
  deviceSize: "256MiB",
  segmentSize: "4MiB",
});
const SERVER_READY_MS = 90_000;
const MOUNT_READY_MS = 60_000;

export interface RunningServer {
  role: RunningRole;
  addrs: TestAddrs;
  dataDir: string;
  /** The default tenant's first S3 key file (aws-cli's shared credentials format). */
  s3CredentialsFile: string;
  /** The server role's exit code once it stopped, null while it runs. */
  exitCode: number | null;
  /** Starts the server again on the same data dir and addresses (after stop()). */
  restart(): Promise<void>;
  stop(signal?: Deno.Signal): Promise<number>;
}

export interface RunningMount {
  mountpoint: string;
  /** The client role serving the mount. */
  client: RunningRole;
  pid: number;
  /** The server role the client talks to (null when the test passed its own). */
  server: RunningServer;
  /** The client role's log. */
  stderr(): string;
  /** Sends `signal` to the client role and waits for its exit code. */
  stop(signal?: Deno.Signal): Promise<number>;
  /** Unmounts what is left, stops the server (when started here), removes the temp dirs. */
  cleanup(): Promise<void>;
}

/** Starts a server role on 127.0.`hostOctet`.1 with a fresh data dir, ready to serve. */
export async function startServer(
  options: { hostOctet: number; base: string; logLevel?: string },
): Promise<RunningServer> {
  const addrs = testAddrs(options.hostOctet);
  const dataDir = `${options.base}/server`;
  await Deno.mkdir(dataDir, { recursive: true });
  const env = {
    ...addrs,
    KISEKI_DATA_DIR: dataDir,
    KISEKI_POOLS: POOL,
    KISEKI_LOG_LEVEL: options.logLevel ?? "warn",
  };
  const start = async () => {
    const role = startRole("server", env);
    let ready = false;
    const died = role.exited.then((code) => {
      if (!ready) throw new Error(`the server exited ${code}: ${role.stderr().slice(-4000)}`);
    });
    try {
      await Promise.race([
        waitForHttp(`http://${addrs.KISEKI_METRICS_ADDR}/health`, "OK", SERVER_READY_MS),
        died,
      ]);
      ready = true;
    } catch (e) {
      ready = true;
      await role.stop("SIGKILL");
      throw e;
    }
    server.exitCode = null;
    void role.exited.then((code) => {
      if (server.role === role) server.exitCode = code;
    });
    return role;
  };
  const server: RunningServer = {
    role: null as unknown as RunningRole,
    exitCode: null,
    addrs,
    dataDir,
    s3CredentialsFile: `${dataDir}.s3-credentials`,
    async restart() {
      server.role = await start();
    },
    stop: (signal: Deno.Signal = "SIGTERM") => server.role.stop(signal),
  };
  server.role = await start();
  return server;
}

/** A port nothing listens on at `host` now (the kernel's pick; the config takes no 0). */
function freePort(host: string): number {
  const l = Deno.listen({ hostname: host, port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/**
 * Starts a client-fuse role mounting on `mountpoint` against the nodes in `dataAddr` (the
 * KISEKI_DATA_ADDR list); resolves once mounted.
 */
export async function startClient(
  options: {
    dataAddr: string;
    mountpoint: string;
    cacheDir: string;
    logLevel?: string;
    /** Where /metrics is served (default: the first data host, a port free there now). */
    metricsAddr?: string;
  },
): Promise<RunningRole> {
  await Deno.mkdir(options.cacheDir, { recursive: true });
  const dataHost = options.dataAddr.split(",")[0]!.replace(/:\d+$/, "");
  const client = startRole("client-fuse", {
    KISEKI_DATA_ADDR: options.dataAddr,
    KISEKI_METRICS_ADDR: options.metricsAddr ?? `${dataHost}:${freePort(dataHost)}`,
    KISEKI_CACHE_DIR: options.cacheDir,
    KISEKI_LOG_LEVEL: options.logLevel ?? Deno.env.get("KISEKI_FUSE_TEST_LOG_LEVEL") ?? "warn",
  }, ["--mountpoint", options.mountpoint]);
  const deadline = Date.now() + MOUNT_READY_MS;
  let exited: number | null = null;
  void client.exited.then((c) => exited = c);
  while (!(await isMounted(options.mountpoint))) {
    if (exited !== null || Date.now() > deadline) {
      await client.stop("SIGKILL");
      await lazyUnmount(options.mountpoint);
      throw new Error(`the mount did not come up (exit ${exited}):\n${client.stderr()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  // The root answers once the client serves the kernel (mount(2) returns before INIT).
  await Deno.stat(options.mountpoint);
  return client;
}

/**
 * A server role and a client-fuse role mounting its default tenant. `hostOctet` is the test
 * file's own (127.0.N.1); a test that wants a second mount of the same server passes `server`.
 */
export async function startMount(
  options: { hostOctet: number; server?: RunningServer; logLevel?: string; metricsAddr?: string },
): Promise<RunningMount> {
  const base = await Deno.makeTempDir({ prefix: "kiseki-fuse-" });
  const mountpoint = `${base}/mnt`;
  await Deno.mkdir(mountpoint);
  const ownServer = options.server === undefined;
  let server: RunningServer;
  try {
    server = options.server ?? await startServer({ hostOctet: options.hostOctet, base });
  } catch (e) {
    await Deno.remove(base, { recursive: true }).catch(() => {});
    throw e;
  }
  let client: RunningRole;
  try {
    client = await startClient({
      dataAddr: server.addrs.KISEKI_DATA_ADDR,
      mountpoint,
      cacheDir: `${base}/cache`,
      logLevel: options.logLevel,
      metricsAddr: options.metricsAddr,
    });
  } catch (e) {
    if (ownServer) await server.stop("SIGKILL");
    await Deno.remove(base, { recursive: true }).catch(() => {});
    throw e;
  }
  const mount: RunningMount = {
    mountpoint,
    client,
    pid: client.pid,
    server,
    stderr: () => mount.client.stderr(),
    stop: (signal: Deno.Signal = "SIGTERM") => mount.client.stop(signal),
    async cleanup() {
      await mount.client.stop("SIGKILL");
      await lazyUnmount(mountpoint);
      if (ownServer) await server.stop("SIGKILL");
      await Deno.remove(base, { recursive: true }).catch(() => {});
    },
  };
  return mount;
}

/** The client's log without the lookups of absent names (tools probe for many), last lines. */
export function mountLogTail(m: RunningMount, chars = 6000): string {
  const client = m.stderr().split("\n").filter((l) =>
    !/op=(LOOKUP .*errno=2|GETXATTR .*errno=61) /.test(l)
  ).join("\n").slice(-chars);
  const server = m.server.role;
  const state = m.server.exitCode === null ? "running" : `exited ${m.server.exitCode}`;
  return `${client}\nserver log (${state}):\n${server.stderr().slice(-chars / 2)}`;
}
