// The role table: for every binary, its entry module and the Deno permission flags it runs
// with. `scripts/compile.ts` bakes these flags into each binary and `scripts/kiseki` and the
// tests start roles with them, so the sandbox that ships is the sandbox that is tested.

import {
  type Config,
  CONFIG_VARIABLE_NAMES,
  type ConfigEnv,
  formatHostPort,
  type HostPort,
  parseConfig,
} from "../base/mod.ts";
import { LMDB_ENV_VARS, LMDB_SYS_PERMISSIONS } from "../disk/lmdb.ts";
import { parsePoolSpecs } from "../chunk/pool.ts";
import { CLIENT_TRANSPORT_PORT_OFFSET } from "../transport/client_wire.ts";

export type RoleName = "server" | "keyserver" | "client-fuse" | "control" | "admin" | "client";

export interface RoleSpec {
  name: RoleName;
  /** Installed binary name. */
  binary: string;
  /** Entry module relative to the project root; compile builds the binary from it. */
  entry: string;
  summary: string;
  /** False while the role only explains itself and exits 2. */
  built: boolean;
  /** Whether the role may load FFI shims (native code can do anything: only where speed needs it). */
  ffi: boolean;
  /** Defaults that differ from the server's (ports, data dir). */
  defaults: Readonly<Record<string, string>>;
}

export const ROLE_TABLE: Readonly<Record<RoleName, RoleSpec>> = {
  server: {
    name: "server",
    binary: "kiseki-server",
    entry: "mod/role/server.ts",
    summary: "storage node: log, chunks, compositions, views, S3 + NFS gateways, metrics",
    built: true,
    ffi: true,
    defaults: {},
  },
  keyserver: {
    name: "keyserver",
    binary: "kiseki-keyserver",
    entry: "mod/role/keyserver.ts",
    summary: "system key manager, its own Raft group",
    built: false,
    ffi: false,
    defaults: {
      KISEKI_RAFT_ADDR: "0.0.0.0:9400",
      KISEKI_DATA_ADDR: "0.0.0.0:9401",
      KISEKI_METRICS_ADDR: "0.0.0.0:9490",
      KISEKI_DATA_DIR: "kiseki-keys",
    },
  },
  "client-fuse": {
    name: "client-fuse",
    binary: "kiseki-client-fuse",
    entry: "mod/role/client_fuse.ts",
    summary: "FUSE mount on compute nodes with client-side encryption and caching",
    built: true,
    ffi: true,
    // Metrics on loopback: a compute node's scraper is let in by setting the address.
    defaults: { KISEKI_DATA_ADDR: "127.0.0.1:9100", KISEKI_METRICS_ADDR: "127.0.0.1:9190" },
  },
  control: {
    name: "control",
    binary: "kiseki-control",
    entry: "mod/role/control.ts",
    summary: "control plane: tenants, namespaces, quotas, IAM, policy, federation",
    built: false,
    ffi: false,
    defaults: {
      KISEKI_DATA_ADDR: "0.0.0.0:9500",
      KISEKI_RAFT_ADDR: "0.0.0.0:9501",
      KISEKI_METRICS_ADDR: "0.0.0.0:9590",
      KISEKI_DATA_DIR: "kiseki-control",
    },
  },
  admin: {
    name: "admin",
    binary: "kiseki-admin",
    entry: "mod/role/admin.ts",
    summary: "operator CLI against any node",
    built: true,
    ffi: false,
    defaults: { KISEKI_METRICS_ADDR: "127.0.0.1:9090", KISEKI_DATA_ADDR: "127.0.0.1:9100" },
  },
  client: {
    name: "client",
    binary: "kiseki-client",
    entry: "mod/role/client.ts",
    summary: "native client CLI: staging, cache control",
    built: true,
    ffi: false,
    defaults: { KISEKI_DATA_ADDR: "127.0.0.1:9100" },
  },
};

/** npm packages of a source checkout (native addons load from here under `deno run`). */
export const SOURCE_NODE_MODULES_DIR: string =
  new URL("../../node_modules", import.meta.url).pathname;
/** gRPC definitions of a source checkout. */
export const SOURCE_PROTO_DIR: string = new URL("../../proto", import.meta.url).pathname;
/** Where an installation keeps the native addons its binaries load. */
export const INSTALLED_NODE_MODULES_DIR = "/usr/local/lib/kiseki/node_modules";

export const ROLE_NAMES: readonly RoleName[] = Object.keys(ROLE_TABLE) as RoleName[];

export function isRoleName(value: string): value is RoleName {
  return Object.hasOwn(ROLE_TABLE, value);
}

export interface RoleFlagsOptions {
  /** Absolute directory relative paths resolve against (the caller's cwd). */
  cwd: string;
  /** Where the role's FFI shims are (absolute). */
  ffiDir: string;
  /**
   * The npm packages directory (absolute): native addons (lmdb) load from there, so roles
   * that keep state get FFI and read access to it and nothing more.
   */
  nodeModulesDir: string;
  /** The gRPC service definitions (absolute). */
  protoDir: string;
}

/** Parses the configuration for a role with the role's own defaults. */
export function roleConfig(role: RoleName, env: ConfigEnv, ffiDirDefault?: string): Config {
  return parseConfig(env, { role, defaults: ROLE_TABLE[role].defaults, ffiDirDefault });
}

/**
 * The Deno permission flags for a role under a configuration: network scoped to the role's
 * listeners and peers, files to its own directories, FFI to its shims, environment to
 * Kiseki's variables. Anything not listed is refused by the runtime.
 */
/** Where a node whose data path is at `data` serves the framed client transport. */
function clientTransportOf(data: HostPort): HostPort {
  return { host: data.host, port: data.port === 0 ? 0 : data.port + CLIENT_TRANSPORT_PORT_OFFSET };
}

export function roleFlags(role: RoleName, config: Config, options: RoleFlagsOptions): string[] {
  const abs = (
    p: string,
  ): string => (p.startsWith("/") ? p : `${options.cwd.replace(/\/+$/, "")}/${p}`);
  const net = new Set<string>();
  const read = new Set<string>();
  const write = new Set<string>();
  const listen = (a: HostPort): void => void net.add(formatHostPort(a));
  const dial = (a: HostPort): void => void net.add(formatHostPort(a));
  const tlsFiles = config.tls ? [config.tls.caPath, config.tls.certPath, config.tls.keyPath] : [];
  let unrestrictedNet = false;
  const ffi = new Set<string>();
  const sys = new Set<string>();
  const env = new Set<string>(CONFIG_VARIABLE_NAMES);
  const run = new Set<string>();
  let unrestrictedFfi = false;
  const useLmdb = (): void => {
    ffi.add(abs(options.nodeModulesDir));
    read.add(abs(options.nodeModulesDir));
    for (const s of LMDB_SYS_PERMISSIONS) sys.add(s);
    for (const v of LMDB_ENV_VARS) env.add(v);
  };

  // Process metrics read the process's own /proc entries.
  read.add("/proc/self");
  for (const f of tlsFiles) read.add(abs(f));

  switch (role) {
    case "server": {
      for (
        const a of [
          config.s3Addr,
          config.nfsAddr,
          config.metricsAddr,
          config.advisoryAddr,
          config.raftAddr,
        ]
      ) {
        listen(a);
      }
      if (config.portmapAddr) listen(config.portmapAddr);
      listen(config.dataAddrs[0]!);
      listen(clientTransportOf(config.dataAddrs[0]!));
      for (const peer of config.raftPeers) {
        if (peer.id === config.nodeId) continue;
        dial(peer.addr);
        // Data path and dashboard scrape peers on the same ports this node uses.
        dial({ host: peer.addr.host, port: config.dataAddrs[0]!.port });
        dial({ host: peer.addr.host, port: config.metricsAddr.port });
      }
      // Nodes added later (kiseki admin node add) are dialled where the cluster state says;
      // the operator names the networks they may be on (a sandbox is fixed at start).
      for (const network of config.peerNetworks) net.add(network);
      read.add(abs(config.dataDir));
      write.add(abs(config.dataDir));
      // The operator's copy of the default tenant's first S3 key (outside the data dir).
      if (config.s3CredentialsFile !== null) {
        read.add(abs(config.s3CredentialsFile));
        write.add(abs(config.s3CredentialsFile));
      }
      useLmdb();
      // A pool that grows with its filesystem asks statfs(2) for the room left.
      sys.add("statfs");
      // Devices of pools given inline may live outside the data dir (raw disks, other mounts);
      // a pools file is read at start, and its devices must be under the data dir.
      if (config.pools !== null) {
        const spec = config.pools.trim();
        if (spec.startsWith("[") || spec.startsWith("{")) {
          for (const pool of parsePoolSpecs(spec, { dataDir: abs(config.dataDir) })) {
            for (const device of pool.devices) {
              read.add(abs(device.path));
              write.add(abs(device.path));
            }
          }
        } else read.add(abs(spec.replace(/^@/, "")));
      }
      // gRPC loads the service definitions from proto/ and reads its GRPC_* settings.
      read.add(abs(options.protoDir));
      env.add("GRPC_*");
      break;
    }
    case "keyserver":
    case "control": {
      listen(config.raftAddr);
      listen(config.dataAddrs[0]!);
      listen(config.metricsAddr);
      for (const peer of config.raftPeers) if (peer.id !== config.nodeId) dial(peer.addr);
      read.add(abs(config.dataDir));
      write.add(abs(config.dataDir));
      break;
    }
    case "client-fuse":
    case "client": {
      for (const a of config.dataAddrs) {
        dial(a);
        dial(clientTransportOf(a));
      }
      read.add(abs(config.cacheDir));
      write.add(abs(config.cacheDir));
      if (role === "client-fuse") {
        listen(config.metricsAddr);
        read.add("/dev/fuse");
        write.add("/dev/fuse");
        // open(2), mount(2), umount2(2) and the device's reads and writes go through libc,
        // and replies are gathered by writev(2) from pointers to the reply's pieces, which
        // the runtime allows only under an unscoped FFI grant (UnsafePointer.of); a client
        // not running as root mounts through fusermount3.
        unrestrictedFfi = true;
        sys.add("uid");
        run.add("fusermount3");
      }
      // gRPC loads the service definitions from proto/ and reads its GRPC_* settings.
      read.add(abs(options.protoDir));
      env.add("GRPC_*");
      break;
    }
    case "admin":
      // The operator names any node on the command line; the CLI only dials out, and reads
      // the local node's admin token for its operator API.
      unrestrictedNet = true;
      read.add(`${abs(config.dataDir)}/config/admin-token`);
      break;
  }
  if (config.otlpEndpoint) {
    const url = new URL(config.otlpEndpoint);
    dial({
      host: url.hostname.replace(/^\[|\]$/g, ""),
      port: Number(url.port || (url.protocol === "https:" ? 443 : 80)),
    });
  }

  const flags: string[] = [];
  flags.push(unrestrictedNet ? "--allow-net" : `--allow-net=${[...net].join(",")}`);
  flags.push(`--allow-read=${[...read].join(",")}`);
  if (write.size > 0) flags.push(`--allow-write=${[...write].join(",")}`);
  if (ROLE_TABLE[role].ffi) {
    ffi.add(abs(options.ffiDir));
    read.add(abs(options.ffiDir));
  }
  flags[1] = `--allow-read=${[...read].join(",")}`;
  if (unrestrictedFfi) flags.push("--allow-ffi");
  else if (ffi.size > 0) flags.push(`--allow-ffi=${[...ffi].join(",")}`);
  if (sys.size > 0) flags.push(`--allow-sys=${[...sys].join(",")}`);
  if (run.size > 0) flags.push(`--allow-run=${[...run].join(",")}`);
  flags.push(`--allow-env=${[...env].join(",")}`);
  flags.push("--no-prompt");
  return flags;
}
