// Every environment variable Kiseki reads, parsed and validated in one place. Pure: the
// caller passes the variables in (roles read them with readConfigEnv()), so tests need no
// environment and a bad value is reported as one line naming variable, value and expectation.

export type CacheMode = "pinned" | "organic" | "bypass";
export type LogLevel = "trace" | "debug" | "info" | "warn" | "error";
export type LogFormat = "text" | "json";
export type FfiMode = "auto" | "off";

/** A listen or dial address. `host` is a name, an IPv4 literal or an IPv6 literal without brackets. */
export interface HostPort {
  host: string;
  port: number;
}

export interface RaftPeer {
  id: number;
  addr: HostPort;
}

export interface TlsPaths {
  caPath: string;
  certPath: string;
  keyPath: string;
}

export interface Config {
  /** Data-path gRPC (server listens; clients dial the list). */
  dataAddrs: HostPort[];
  advisoryAddr: HostPort;
  s3Addr: HostPort;
  nfsAddr: HostPort;
  /** A second portmapper listener (port 111) for clients that insist on one; null: none. */
  portmapAddr: HostPort | null;
  metricsAddr: HostPort;
  raftAddr: HostPort;
  dataDir: string;
  bootstrap: boolean;
  nodeId: number;
  raftPeers: RaftPeer[];
  tls: TlsPaths | null;
  /** Without mTLS, serve callers from any address, and allow a multi-node cluster. */
  allowInsecure: boolean;
  /** Where the default tenant's first S3 key is written for the operator (null: nowhere). */
  s3CredentialsFile: string | null;
  cacheMode: CacheMode;
  cacheDir: string;
  cacheL1MaxBytes: number;
  /** Client: a disconnect from every node longer than this wipes the L2 cache. */
  cacheDisconnectWipeMs: number;
  /** Server: bound of the memory cache of chunks read (0 = off). */
  chunkCacheMaxBytes: number;
  /** Server: read rate of background scrub in bytes per second (0 = no background passes). */
  scrubRateBytesPerSecond: number;
  /** Server: from the start of one scrub pass to the start of the next. */
  scrubIntervalMs: number;
  /** Server: how long a node may be unreachable before it is marked down and rebuilt. */
  nodeDownGraceMs: number;
  /** Server: IPv4 networks (CIDR) where nodes added later may be; its sandbox may dial them. */
  peerNetworks: string[];
  /** Server: bound of the chunk bytes all reads hold ahead of their readers. */
  readAheadMaxBytes: number;
  /** Server: open connections the S3 listener keeps at most. */
  s3ConnectionsMax: number;
  cacheL2MaxBytes: number;
  otlpEndpoint: string | null;
  serviceName: string;
  logLevel: LogLevel;
  logFormat: LogFormat;
  /** Shards (one Raft group each) a new cluster starts with. */
  shardCount: number;
  /** KISEKI_POOLS as given: inline JSON or the path of a JSON file; null for the default pool. */
  pools: string | null;
  /** Milliseconds per Raft tick (elections take 10-20 ticks, heartbeats 1). */
  raftTickMs: number;
  /** `off` forces the pure TypeScript twins even where a shim is built. */
  ffiMode: FfiMode;
  /** Directory holding the built shims (`libkiseki_*.so`). */
  ffiDir: string;
}

/** One variable: its name, default, and what it accepts (for errors and docs). */
export interface ConfigVariable {
  name: string;
  default: string;
  expects: string;
  description: string;
}

export const CONFIG_VARIABLES: readonly ConfigVariable[] = [
  {
    name: "KISEKI_DATA_ADDR",
    default: "0.0.0.0:9100",
    expects: "host:port, or a comma-separated list of host:port for clients",
    description: "data-path gRPC listener (server) or the nodes to dial (clients)",
  },
  {
    name: "KISEKI_ADVISORY_ADDR",
    default: "0.0.0.0:9101",
    expects: "host:port",
    description: "workflow advisory gRPC listener",
  },
  {
    name: "KISEKI_S3_ADDR",
    default: "0.0.0.0:9000",
    expects: "host:port",
    description: "S3 gateway",
  },
  {
    name: "KISEKI_NFS_ADDR",
    default: "0.0.0.0:2049",
    expects: "host:port",
    description: "NFS gateway",
  },
  {
    name: "KISEKI_PORTMAP_ADDR",
    default: "",
    expects: "host:port",
    description: "a portmapper listener (port 111) besides the one on KISEKI_NFS_ADDR",
  },
  {
    name: "KISEKI_METRICS_ADDR",
    default: "0.0.0.0:9090",
    expects: "host:port",
    description: "/health, /metrics and the dashboard",
  },
  {
    name: "KISEKI_RAFT_ADDR",
    default: "0.0.0.0:9300",
    expects: "host:port",
    description: "Raft and chunk fabric listener",
  },
  {
    name: "KISEKI_DATA_DIR",
    default: "kiseki-data",
    expects: "a directory path",
    description: "node state: raft/, keys/, chunks/, small/, config/",
  },
  {
    name: "KISEKI_BOOTSTRAP",
    default: "true when KISEKI_RAFT_PEERS is empty, else false",
    expects: "true or false",
    description: "create the initial shard on first start",
  },
  {
    name: "KISEKI_NODE_ID",
    default: "1",
    expects: "an integer 1..65535",
    description: "this node's id",
  },
  {
    name: "KISEKI_RAFT_PEERS",
    default: "",
    expects: "id=host:port[,id=host:port...] with unique ids",
    description: "every voter, identical on all nodes",
  },
  { name: "KISEKI_CA_PATH", default: "", expects: "a file path", description: "cluster CA (mTLS)" },
  {
    name: "KISEKI_CERT_PATH",
    default: "",
    expects: "a file path",
    description: "this node's cert",
  },
  { name: "KISEKI_KEY_PATH", default: "", expects: "a file path", description: "this node's key" },
  {
    name: "KISEKI_S3_CREDENTIALS_FILE",
    default: "",
    expects: "a file path outside KISEKI_DATA_DIR",
    description: "where the bootstrap node writes the default tenant's first S3 key for " +
      "aws-cli, once, 0600 (unset: not written; kiseki admin s3-credentials create)",
  },
  {
    name: "KISEKI_ALLOW_INSECURE",
    default: "false",
    expects: "true or false",
    description: "without mTLS: serve non-loopback gRPC callers and run multi-node (unsafe)",
  },
  {
    name: "KISEKI_CACHE_MODE",
    default: "organic",
    expects: "pinned, organic or bypass",
    description: "client cache policy",
  },
  {
    name: "KISEKI_CACHE_DIR",
    default: "/var/cache/kiseki",
    expects: "a directory path",
    description: "client L2 cache",
  },
  {
    name: "KISEKI_CACHE_L1_MAX",
    default: "1073741824",
    expects: "a byte count (e.g. 1073741824, 512MiB, 1GiB)",
    description: "client memory cache bound",
  },
  {
    name: "KISEKI_CACHE_L2_MAX",
    default: "107374182400",
    expects: "a byte count (e.g. 100GiB)",
    description: "client disk cache bound",
  },
  {
    name: "KISEKI_CACHE_DISCONNECT_WIPE_S",
    default: "300",
    expects: "an integer 1..604800",
    description: "seconds without reaching any node after which the client wipes its L2 cache",
  },
  {
    name: "KISEKI_CHUNK_CACHE_MAX",
    default: "268435456",
    expects: "a byte count (e.g. 256MiB; 0 turns the cache off)",
    description: "server memory cache of read chunks",
  },
  {
    name: "KISEKI_SCRUB_RATE",
    default: "16MiB",
    expects: "a byte count per second (e.g. 16MiB; 0 turns background scrub off)",
    description: "read rate of background scrub (verify and repair every fragment)",
  },
  {
    name: "KISEKI_SCRUB_INTERVAL_S",
    default: "86400",
    expects: "an integer 60..31536000",
    description: "seconds from the start of one scrub pass to the start of the next",
  },
  {
    name: "KISEKI_NODE_DOWN_GRACE",
    default: "10m",
    expects: "a duration of 1s..30d: a number with s, m, h or d (e.g. 10m, 90s)",
    description: "a node unreachable this long is marked down and its fragments rebuilt elsewhere",
  },
  {
    name: "KISEKI_PEER_NETWORKS",
    default: "",
    expects: "comma-separated IPv4 networks in CIDR form (e.g. 10.0.0.0/24)",
    description:
      "where nodes added later (kiseki admin node add) may be: the server's sandbox lets it " +
      "dial them, besides the nodes in KISEKI_RAFT_PEERS",
  },
  {
    name: "KISEKI_READ_AHEAD_MAX",
    default: "268435456",
    expects: "a byte count of at least 16MiB (e.g. 256MiB)",
    description: "server memory for chunks fetched ahead of readers, shared by all reads",
  },
  {
    name: "KISEKI_S3_CONNECTIONS_MAX",
    default: "1024",
    expects: "an integer 1..1000000",
    description: "open S3 connections; past it new ones are answered 503 SlowDown",
  },
  {
    name: "OTEL_EXPORTER_OTLP_ENDPOINT",
    default: "",
    expects: "an http(s):// URL",
    description: "OTLP trace collector",
  },
  {
    name: "OTEL_SERVICE_NAME",
    default: "kiseki-<role>",
    expects: "a non-empty name",
    description: "service name on traces",
  },
  {
    name: "KISEKI_LOG_LEVEL",
    default: "info",
    expects: "trace, debug, info, warn or error",
    description: "log level (RUST_LOG=kiseki=<level> is accepted too)",
  },
  {
    name: "KISEKI_LOG_FORMAT",
    default: "text",
    expects: "text or json",
    description: "log format",
  },
  {
    name: "KISEKI_SHARDS",
    default: "4",
    expects: "an integer 1..1024",
    description: "shards (Raft groups) of a new cluster; identical on all nodes",
  },
  {
    name: "KISEKI_POOLS",
    default: "one pool of 6 device files under $KISEKI_DATA_DIR/chunks/devices",
    expects: "inline JSON pool list, or the path of a JSON file",
    description: "device pools and their durability (EC k+m or N copies)",
  },
  {
    name: "KISEKI_RAFT_TICK_MS",
    default: "100",
    expects: "an integer 10..10000",
    description: "Raft tick; elections after 10-20 ticks, identical on all nodes",
  },
  {
    name: "KISEKI_FFI",
    default: "auto",
    expects: "auto or off",
    description: "off forces the pure TypeScript twins",
  },
  {
    name: "KISEKI_FFI_DIR",
    default: "the shims beside the binary, else ffi/build",
    expects: "a directory path",
    description: "where libkiseki_*.so are found",
  },
  {
    name: "RUST_LOG",
    default: "",
    expects: "kiseki=<level> or <level>",
    description: "log level in the deployment guide's units (KISEKI_LOG_LEVEL wins)",
  },
];

export const CONFIG_VARIABLE_NAMES: readonly string[] = CONFIG_VARIABLES.map((v) => v.name);

export type ConfigEnv = Readonly<Record<string, string | undefined>>;

/** A rejected configuration: one line per bad variable. */
export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(readonly problems: string[]) {
    super(problems.join("\n"));
  }
}

export interface ParseConfigOptions {
  /** Role being configured; names the default OTEL service. */
  role?: string;
  /** Default for KISEKI_FFI_DIR (the composition root knows where shims live). */
  ffiDirDefault?: string;
  /** Role-specific defaults that replace the built-in ones (e.g. the key server's 9400). */
  defaults?: Readonly<Record<string, string>>;
}

/** Parses and validates the environment. Throws ConfigError listing every bad variable. */
export function parseConfig(env: ConfigEnv, options: ParseConfigOptions = {}): Config {
  const problems: string[] = [];
  const raw = (name: string): string | undefined => {
    const value = env[name] ?? options.defaults?.[name];
    return value === undefined || value.trim() === "" ? undefined : value.trim();
  };
  const bad = (name: string, value: string, why?: string): void => {
    const spec = CONFIG_VARIABLES.find((v) => v.name === name);
    problems.push(
      `${name}=${JSON.stringify(value)} is invalid: expected ${spec?.expects ?? "a valid value"}` +
        (why ? ` (${why})` : ""),
    );
  };
  const addr = (name: string, fallback: string): HostPort => {
    const value = raw(name) ?? fallback;
    try {
      return parseHostPort(value);
    } catch (e) {
      bad(name, value, (e as Error).message);
      return parseHostPort(fallback);
    }
  };
  const oneOf = <T extends string>(name: string, allowed: readonly T[], fallback: T): T => {
    const value = raw(name);
    if (value === undefined) return fallback;
    const lower = value.toLowerCase() as T;
    if (allowed.includes(lower)) return lower;
    bad(name, value);
    return fallback;
  };
  const bytes = (name: string, fallback: number): number => {
    const value = raw(name);
    if (value === undefined) return fallback;
    try {
      return parseByteSize(value);
    } catch (e) {
      bad(name, value, (e as Error).message);
      return fallback;
    }
  };

  const dataAddrRaw = raw("KISEKI_DATA_ADDR") ?? "0.0.0.0:9100";
  const dataAddrs: HostPort[] = [];
  for (const part of dataAddrRaw.split(",")) {
    try {
      dataAddrs.push(parseHostPort(part.trim()));
    } catch (e) {
      bad("KISEKI_DATA_ADDR", dataAddrRaw, (e as Error).message);
      break;
    }
  }
  if (dataAddrs.length === 0) dataAddrs.push(parseHostPort("0.0.0.0:9100"));

  let nodeId = 1;
  const nodeIdRaw = raw("KISEKI_NODE_ID");
  if (nodeIdRaw !== undefined) {
    if (/^[0-9]+$/.test(nodeIdRaw) && +nodeIdRaw >= 1 && +nodeIdRaw <= 65535) nodeId = +nodeIdRaw;
    else bad("KISEKI_NODE_ID", nodeIdRaw);
  }

  let raftPeers: RaftPeer[] = [];
  const peersRaw = raw("KISEKI_RAFT_PEERS");
  if (peersRaw !== undefined) {
    try {
      raftPeers = parseRaftPeers(peersRaw);
      // A node not in the list joins a running cluster (its members are the list) once
      // `kiseki admin node add` adds it; it cannot be the one that creates the cluster.
      if (!raftPeers.some((p) => p.id === nodeId) && raw("KISEKI_BOOTSTRAP") === "true") {
        bad(
          "KISEKI_RAFT_PEERS",
          peersRaw,
          `KISEKI_NODE_ID=${nodeId} is not in the list, so it joins a running cluster and ` +
            `cannot bootstrap one (KISEKI_BOOTSTRAP=true)`,
        );
      }
    } catch (e) {
      bad("KISEKI_RAFT_PEERS", peersRaw, (e as Error).message);
    }
  }

  let bootstrap = raftPeers.length === 0;
  const bootstrapRaw = raw("KISEKI_BOOTSTRAP");
  if (bootstrapRaw !== undefined) {
    const b = parseBool(bootstrapRaw);
    if (b === null) bad("KISEKI_BOOTSTRAP", bootstrapRaw);
    else bootstrap = b;
  }

  const caPath = raw("KISEKI_CA_PATH");
  const certPath = raw("KISEKI_CERT_PATH");
  const keyPath = raw("KISEKI_KEY_PATH");
  let tls: TlsPaths | null = null;
  const tlsSet = [caPath, certPath, keyPath].filter((v) => v !== undefined).length;
  if (tlsSet === 3) tls = { caPath: caPath!, certPath: certPath!, keyPath: keyPath! };
  else if (tlsSet > 0) {
    const missing = [
      ["KISEKI_CA_PATH", caPath],
      ["KISEKI_CERT_PATH", certPath],
      ["KISEKI_KEY_PATH", keyPath],
    ].filter(([, v]) => v === undefined).map(([n]) => n);
    problems.push(
      `${
        missing.join(", ")
      } must be set too: mTLS needs KISEKI_CA_PATH, KISEKI_CERT_PATH and KISEKI_KEY_PATH together`,
    );
  }

  // The operator's copy of the first S3 key is a secret in clear: never under the data dir,
  // where nothing tenant-readable or secret is kept in clear.
  const s3CredentialsFile = raw("KISEKI_S3_CREDENTIALS_FILE") || null;
  if (s3CredentialsFile !== null) {
    const dir = (raw("KISEKI_DATA_DIR") ?? "kiseki-data").replace(/\/+$/, "");
    const file = s3CredentialsFile.replace(/\/+$/, "");
    if (file === dir || file.startsWith(`${dir}/`) || file.endsWith("/")) {
      problems.push(
        `KISEKI_S3_CREDENTIALS_FILE=${s3CredentialsFile} is invalid: expected a file path outside ` +
          `KISEKI_DATA_DIR (nothing under the data directory holds a secret in clear)`,
      );
    }
  }

  let allowInsecure = false;
  const insecureRaw = raw("KISEKI_ALLOW_INSECURE");
  if (insecureRaw !== undefined) {
    const b = parseBool(insecureRaw);
    if (b === null) bad("KISEKI_ALLOW_INSECURE", insecureRaw);
    else allowInsecure = b;
  }

  let otlpEndpoint: string | null = null;
  const otlpRaw = raw("OTEL_EXPORTER_OTLP_ENDPOINT");
  if (otlpRaw !== undefined) {
    try {
      const url = new URL(otlpRaw);
      if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error("not http(s)");
      otlpEndpoint = otlpRaw;
    } catch {
      bad("OTEL_EXPORTER_OTLP_ENDPOINT", otlpRaw);
    }
  }

  let logLevel: LogLevel = "info";
  const levels: readonly LogLevel[] = ["trace", "debug", "info", "warn", "error"];
  const levelRaw = raw("KISEKI_LOG_LEVEL");
  const rustLog = raw("RUST_LOG");
  if (levelRaw !== undefined) logLevel = oneOf("KISEKI_LOG_LEVEL", levels, "info");
  else if (rustLog !== undefined) {
    // The deployment guide's units say RUST_LOG=kiseki=info; take the kiseki directive.
    const directive = rustLog.split(",").map((d) => d.trim()).find((d) =>
      d.startsWith("kiseki=") || !d.includes("=")
    );
    const level = directive?.replace(/^kiseki=/, "").toLowerCase();
    if (level !== undefined && (levels as readonly string[]).includes(level)) {
      logLevel = level as LogLevel;
    } else if (directive !== undefined) bad("RUST_LOG", rustLog);
  }

  let shardCount = 4;
  const shardsRaw = raw("KISEKI_SHARDS");
  if (shardsRaw !== undefined) {
    if (/^[0-9]+$/.test(shardsRaw) && +shardsRaw >= 1 && +shardsRaw <= 1024) {
      shardCount = +shardsRaw;
    } else bad("KISEKI_SHARDS", shardsRaw);
  }

  let raftTickMs = 100;
  const tickRaw = raw("KISEKI_RAFT_TICK_MS");
  if (tickRaw !== undefined) {
    if (/^[0-9]+$/.test(tickRaw) && +tickRaw >= 10 && +tickRaw <= 10_000) raftTickMs = +tickRaw;
    else bad("KISEKI_RAFT_TICK_MS", tickRaw);
  }

  let scrubIntervalMs = 86_400_000;
  const scrubIntervalRaw = raw("KISEKI_SCRUB_INTERVAL_S");
  if (scrubIntervalRaw !== undefined) {
    if (
      /^[0-9]+$/.test(scrubIntervalRaw) && +scrubIntervalRaw >= 60 &&
      +scrubIntervalRaw <= 31_536_000
    ) {
      scrubIntervalMs = +scrubIntervalRaw * 1000;
    } else bad("KISEKI_SCRUB_INTERVAL_S", scrubIntervalRaw);
  }
  let cacheDisconnectWipeMs = 300_000;
  const wipeRaw = raw("KISEKI_CACHE_DISCONNECT_WIPE_S");
  if (wipeRaw !== undefined) {
    if (/^[0-9]+$/.test(wipeRaw) && +wipeRaw >= 1 && +wipeRaw <= 604_800) {
      cacheDisconnectWipeMs = +wipeRaw * 1000;
    } else bad("KISEKI_CACHE_DISCONNECT_WIPE_S", wipeRaw);
  }
  let nodeDownGraceMs = 600_000;
  const graceRaw = raw("KISEKI_NODE_DOWN_GRACE");
  if (graceRaw !== undefined) {
    const m = /^([0-9]{1,9})(s|m|h|d)$/.exec(graceRaw);
    const unitMs = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
    const ms = m === null ? NaN : +m[1]! * unitMs[m[2] as keyof typeof unitMs];
    if (ms >= 1000 && ms <= 30 * 86_400_000) nodeDownGraceMs = ms;
    else bad("KISEKI_NODE_DOWN_GRACE", graceRaw);
  }
  const peerNetworks: string[] = [];
  const networksRaw = raw("KISEKI_PEER_NETWORKS");
  if (networksRaw !== undefined && networksRaw.trim() !== "") {
    for (const part of networksRaw.split(",").map((p) => p.trim())) {
      const m = /^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\/([0-9]{1,2})$/.exec(part);
      if (m === null || m.slice(1, 5).some((o) => +o > 255) || +m[5]! < 8 || +m[5]! > 32) {
        bad("KISEKI_PEER_NETWORKS", networksRaw, `${part} is not an IPv4 network a.b.c.d/8..32`);
        break;
      }
      peerNetworks.push(part);
    }
  }
  let s3ConnectionsMax = 1024;
  const connectionsRaw = raw("KISEKI_S3_CONNECTIONS_MAX");
  if (connectionsRaw !== undefined) {
    if (/^[0-9]{1,7}$/.test(connectionsRaw) && +connectionsRaw >= 1 && +connectionsRaw <= 1e6) {
      s3ConnectionsMax = +connectionsRaw;
    } else bad("KISEKI_S3_CONNECTIONS_MAX", connectionsRaw);
  }
  const readAheadMaxBytes = bytes("KISEKI_READ_AHEAD_MAX", 256 * 2 ** 20);
  if (readAheadMaxBytes < 16 * 2 ** 20) {
    bad("KISEKI_READ_AHEAD_MAX", raw("KISEKI_READ_AHEAD_MAX")!, "below 16MiB");
  }

  const dataDir = raw("KISEKI_DATA_DIR") ?? "kiseki-data";
  const config: Config = {
    dataAddrs,
    advisoryAddr: addr("KISEKI_ADVISORY_ADDR", "0.0.0.0:9101"),
    s3Addr: addr("KISEKI_S3_ADDR", "0.0.0.0:9000"),
    nfsAddr: addr("KISEKI_NFS_ADDR", "0.0.0.0:2049"),
    portmapAddr: raw("KISEKI_PORTMAP_ADDR") === undefined
      ? null
      : addr("KISEKI_PORTMAP_ADDR", "0.0.0.0:111"),
    metricsAddr: addr("KISEKI_METRICS_ADDR", "0.0.0.0:9090"),
    raftAddr: addr("KISEKI_RAFT_ADDR", "0.0.0.0:9300"),
    dataDir,
    bootstrap,
    nodeId,
    raftPeers,
    tls,
    allowInsecure,
    s3CredentialsFile,
    cacheMode: oneOf<CacheMode>("KISEKI_CACHE_MODE", ["pinned", "organic", "bypass"], "organic"),
    cacheDir: raw("KISEKI_CACHE_DIR") ?? "/var/cache/kiseki",
    cacheL1MaxBytes: bytes("KISEKI_CACHE_L1_MAX", 1 << 30),
    cacheL2MaxBytes: bytes("KISEKI_CACHE_L2_MAX", 100 * 2 ** 30),
    cacheDisconnectWipeMs,
    chunkCacheMaxBytes: bytes("KISEKI_CHUNK_CACHE_MAX", 256 * 2 ** 20),
    scrubRateBytesPerSecond: bytes("KISEKI_SCRUB_RATE", 16 * 2 ** 20),
    scrubIntervalMs,
    nodeDownGraceMs,
    peerNetworks,
    readAheadMaxBytes,
    s3ConnectionsMax,
    otlpEndpoint,
    serviceName: raw("OTEL_SERVICE_NAME") ?? `kiseki-${options.role ?? "server"}`,
    logLevel,
    logFormat: oneOf<LogFormat>("KISEKI_LOG_FORMAT", ["text", "json"], "text"),
    shardCount,
    pools: raw("KISEKI_POOLS") ?? null,
    raftTickMs,
    ffiMode: oneOf<FfiMode>("KISEKI_FFI", ["auto", "off"], "auto"),
    ffiDir: raw("KISEKI_FFI_DIR") ?? options.ffiDirDefault ?? "ffi/build",
  };

  const listeners: [string, HostPort][] = [
    ["KISEKI_S3_ADDR", config.s3Addr],
    ["KISEKI_NFS_ADDR", config.nfsAddr],
    ...(config.portmapAddr
      ? [["KISEKI_PORTMAP_ADDR", config.portmapAddr] as [string, HostPort]]
      : []),
    ["KISEKI_METRICS_ADDR", config.metricsAddr],
    ["KISEKI_ADVISORY_ADDR", config.advisoryAddr],
    ["KISEKI_RAFT_ADDR", config.raftAddr],
  ];
  if (config.dataAddrs.length === 1) listeners.push(["KISEKI_DATA_ADDR", config.dataAddrs[0]!]);
  const seen = new Map<string, string>();
  for (const [name, a] of listeners) {
    const key = `${a.host}:${a.port}`;
    const other = seen.get(key);
    if (other !== undefined) {
      problems.push(`${name}=${formatHostPort(a)} is invalid: the same address as ${other}`);
    }
    seen.set(key, name);
  }

  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}

/** Parses `host:port`, `[v6]:port`. */
export function parseHostPort(value: string): HostPort {
  let host: string;
  let portText: string;
  const v6 = /^\[([0-9a-fA-F:.]+)\]:([0-9]+)$/.exec(value);
  if (v6) {
    host = v6[1]!;
    portText = v6[2]!;
  } else {
    const i = value.lastIndexOf(":");
    if (i <= 0) throw new Error("missing host or port");
    host = value.slice(0, i);
    portText = value.slice(i + 1);
    if (host.includes(":")) throw new Error("IPv6 hosts need brackets: [::1]:9000");
    if (!/^[A-Za-z0-9.-]+$/.test(host) || host.length > 253) throw new Error("bad host");
  }
  if (!/^[0-9]{1,5}$/.test(portText)) throw new Error("bad port");
  const port = Number(portText);
  if (port < 1 || port > 65535) throw new Error("port out of range 1..65535");
  return { host, port };
}

export function formatHostPort(a: HostPort): string {
  return a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** Parses `1=host:9300,2=host:9300`. */
export function parseRaftPeers(value: string): RaftPeer[] {
  const peers: RaftPeer[] = [];
  for (const item of value.split(",").map((s) => s.trim()).filter((s) => s.length > 0)) {
    const eq = item.indexOf("=");
    if (eq <= 0) throw new Error(`'${item}' is not id=host:port`);
    const idText = item.slice(0, eq);
    if (!/^[0-9]+$/.test(idText) || +idText < 1 || +idText > 65535) {
      throw new Error(`'${idText}' is not a node id 1..65535`);
    }
    const id = +idText;
    if (peers.some((p) => p.id === id)) throw new Error(`node id ${id} appears twice`);
    peers.push({ id, addr: parseHostPort(item.slice(eq + 1)) });
  }
  if (peers.length === 0) throw new Error("no peers");
  return peers;
}

/** Parses byte counts: `1048576`, `512KiB`, `1GiB`, `2G` (binary multiples), `1.5TiB`. */
export function parseByteSize(value: string): number {
  const m = /^([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)(i?B?)$/i.exec(value.trim());
  if (!m) throw new Error("not a byte count");
  const exponent = m[2] === "" ? 0 : "KMGTP".indexOf(m[2]!.toUpperCase()) + 1;
  const bytes = Number(m[1]) * 1024 ** exponent;
  if (!Number.isSafeInteger(Math.round(bytes))) throw new Error("too large");
  return Math.round(bytes);
}

function parseBool(value: string): boolean | null {
  switch (value.toLowerCase()) {
    case "true":
    case "1":
    case "yes":
    case "on":
      return true;
    case "false":
    case "0":
    case "no":
    case "off":
      return false;
    default:
      return null;
  }
}
