import assert from "node:assert/strict";
import {
  ConfigError,
  parseByteSize,
  parseConfig,
  parseHostPort,
  parseRaftPeers,
} from "./config.ts";

function problems(env: Record<string, string>): string[] {
  try {
    parseConfig(env);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  throw new Error("expected a ConfigError");
}

Deno.test("parseConfig() with no variables gives the embedded single node", () => {
  const c = parseConfig({});
  assert.deepEqual(c.s3Addr, { host: "0.0.0.0", port: 9000 });
  assert.deepEqual(c.nfsAddr, { host: "0.0.0.0", port: 2049 });
  assert.equal(c.portmapAddr, null);
  assert.deepEqual(c.metricsAddr, { host: "0.0.0.0", port: 9090 });
  assert.deepEqual(c.dataAddrs, [{ host: "0.0.0.0", port: 9100 }]);
  assert.deepEqual(c.advisoryAddr, { host: "0.0.0.0", port: 9101 });
  assert.deepEqual(c.raftAddr, { host: "0.0.0.0", port: 9300 });
  assert.deepEqual(c.bootstrap, true);
  assert.deepEqual(c.nodeId, 1);
  assert.deepEqual(c.raftPeers, []);
  assert.deepEqual(c.tls, null);
  assert.deepEqual(c.cacheMode, "organic");
  assert.deepEqual(c.cacheL1MaxBytes, 1 << 30);
  assert.deepEqual(c.cacheDisconnectWipeMs, 300_000);
  assert.deepEqual(c.logLevel, "info");
  assert.deepEqual(c.logFormat, "text");
  assert.deepEqual(c.serviceName, "kiseki-server");
});

Deno.test("parseConfig() reads the deployment guide's 3-node settings", () => {
  const c = parseConfig({
    KISEKI_NODE_ID: "2",
    KISEKI_RAFT_PEERS: "1=kiseki-node1:9300,2=kiseki-node2:9300,3=kiseki-node3:9300",
    KISEKI_DATA_DIR: "/var/lib/kiseki",
    KISEKI_CA_PATH: "/etc/kiseki/tls/ca.crt",
    KISEKI_CERT_PATH: "/etc/kiseki/tls/server.crt",
    KISEKI_KEY_PATH: "/etc/kiseki/tls/server.key",
    OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger.internal:4317",
    RUST_LOG: "kiseki=debug",
  });
  assert.deepEqual(c.nodeId, 2);
  assert.deepEqual(c.raftPeers.map((p) => p.id), [1, 2, 3]);
  assert.deepEqual(c.raftPeers[2]!.addr, { host: "kiseki-node3", port: 9300 });
  assert.deepEqual(c.bootstrap, false, "with peers, bootstrap is explicit");
  assert.deepEqual(c.tls?.certPath, "/etc/kiseki/tls/server.crt");
  assert.deepEqual(c.otlpEndpoint, "http://jaeger.internal:4317");
  assert.deepEqual(c.logLevel, "debug");
});

Deno.test("parseConfig() names the variable, the value and the expectation", () => {
  const p = problems({ KISEKI_S3_ADDR: "0.0.0.0:99999" });
  assert.deepEqual(p.length, 1);
  assert.match(
    p[0]!,
    /^KISEKI_S3_ADDR="0\.0\.0\.0:99999" is invalid: expected host:port \(port out of range/,
  );
});

Deno.test("parseConfig() reports every bad variable, one line each", () => {
  const p = problems({
    KISEKI_NODE_ID: "zero",
    KISEKI_CACHE_MODE: "sometimes",
    KISEKI_BOOTSTRAP: "maybe",
    KISEKI_CACHE_L1_MAX: "lots",
    KISEKI_LOG_LEVEL: "loud",
    OTEL_EXPORTER_OTLP_ENDPOINT: "jaeger:4317",
  });
  assert.deepEqual(
    p.map((l) => l.split("=")[0]),
    [
      "KISEKI_CACHE_MODE",
      "KISEKI_CACHE_L1_MAX",
      "KISEKI_NODE_ID",
      "KISEKI_BOOTSTRAP",
      "OTEL_EXPORTER_OTLP_ENDPOINT",
      "KISEKI_LOG_LEVEL",
    ].sort((a, b) => p.findIndex((l) => l.startsWith(a)) - p.findIndex((l) => l.startsWith(b))),
  );
  for (const line of p) assert.deepEqual(line.includes("\n"), false);
});

Deno.test("parseConfig() takes a node id missing from the peer list as a joining node, which cannot bootstrap", () => {
  const c = parseConfig({ KISEKI_NODE_ID: "4", KISEKI_RAFT_PEERS: "1=a:9300,2=b:9300" });
  assert.deepEqual(c.raftPeers.map((p) => p.id), [1, 2]);
  assert.equal(c.bootstrap, false);
  const p = problems({
    KISEKI_NODE_ID: "4",
    KISEKI_RAFT_PEERS: "1=a:9300,2=b:9300",
    KISEKI_BOOTSTRAP: "true",
  });
  assert.match(p[0]!, /KISEKI_RAFT_PEERS=.*KISEKI_NODE_ID=4 is not in the list.*cannot bootstrap/);
});

Deno.test("parseConfig() rejects partial TLS settings", () => {
  const p = problems({ KISEKI_CA_PATH: "/ca.crt" });
  assert.match(p[0]!, /KISEKI_CERT_PATH, KISEKI_KEY_PATH must be set too/);
});

Deno.test("parseConfig() reads KISEKI_ALLOW_INSECURE as a boolean, false by default", () => {
  assert.equal(parseConfig({}).allowInsecure, false);
  assert.equal(parseConfig({ KISEKI_ALLOW_INSECURE: "true" }).allowInsecure, true);
  assert.equal(parseConfig({ KISEKI_ALLOW_INSECURE: "false" }).allowInsecure, false);
  assert.deepEqual(problems({ KISEKI_ALLOW_INSECURE: "please" }), [
    'KISEKI_ALLOW_INSECURE="please" is invalid: expected true or false',
  ]);
});

Deno.test("parseConfig() rejects two listeners on one address", () => {
  const p = problems({ KISEKI_S3_ADDR: "0.0.0.0:9090" });
  assert.match(
    p[0]!,
    /KISEKI_METRICS_ADDR=0\.0\.0\.0:9090 is invalid: the same address as KISEKI_S3_ADDR/,
  );
});

Deno.test("parseConfig() applies role defaults under the environment", () => {
  const c = parseConfig({ KISEKI_DATA_ADDR: "0.0.0.0:9501" }, {
    role: "keyserver",
    defaults: { KISEKI_RAFT_ADDR: "0.0.0.0:9400", KISEKI_DATA_ADDR: "0.0.0.0:9401" },
  });
  assert.deepEqual(c.raftAddr.port, 9400);
  assert.deepEqual(c.dataAddrs[0]!.port, 9501);
  assert.deepEqual(c.serviceName, "kiseki-keyserver");
});

Deno.test("parseHostPort() accepts names, IPv4 and bracketed IPv6", () => {
  assert.deepEqual(parseHostPort("node1.example.com:9300"), {
    host: "node1.example.com",
    port: 9300,
  });
  assert.deepEqual(parseHostPort("127.0.0.1:1"), { host: "127.0.0.1", port: 1 });
  assert.deepEqual(parseHostPort("[::1]:9000"), { host: "::1", port: 9000 });
  assert.throws(() => parseHostPort("::1:9000"), /brackets/);
  assert.throws(() => parseHostPort("host"), /missing/);
  assert.throws(() => parseHostPort("host:0"), /range/);
  assert.throws(() => parseHostPort("ho st:80"), /bad host/);
});

Deno.test("parseRaftPeers() rejects duplicate ids and malformed items", () => {
  assert.throws(() => parseRaftPeers("1=a:1,1=b:2"), /appears twice/);
  assert.throws(() => parseRaftPeers("a:1"), /not id=host:port/);
  assert.throws(() => parseRaftPeers("0=a:1"), /node id/);
});

Deno.test("parseByteSize() understands binary suffixes", () => {
  assert.deepEqual(parseByteSize("1073741824"), 1073741824);
  assert.deepEqual(parseByteSize("512MiB"), 512 * 1024 * 1024);
  assert.deepEqual(parseByteSize("1GiB"), 1 << 30);
  assert.deepEqual(parseByteSize("2G"), 2 * 2 ** 30);
  assert.deepEqual(parseByteSize("1.5KiB"), 1536);
  assert.throws(() => parseByteSize("-1"));
  assert.throws(() => parseByteSize("1 parsec"));
});

Deno.test("parseConfig() reads the scrub rate and interval, and refuses bad ones", () => {
  const defaults = parseConfig({});
  assert.equal(defaults.scrubRateBytesPerSecond, 16 << 20);
  assert.equal(defaults.scrubIntervalMs, 86_400_000);
  const set = parseConfig({ KISEKI_SCRUB_RATE: "0", KISEKI_SCRUB_INTERVAL_S: "3600" });
  assert.equal(set.scrubRateBytesPerSecond, 0);
  assert.equal(set.scrubIntervalMs, 3_600_000);
  assert.deepEqual(problems({ KISEKI_SCRUB_RATE: "fast", KISEKI_SCRUB_INTERVAL_S: "5" }).sort(), [
    'KISEKI_SCRUB_INTERVAL_S="5" is invalid: expected an integer 60..31536000',
    'KISEKI_SCRUB_RATE="fast" is invalid: expected a byte count per second (e.g. 16MiB; 0 turns background scrub off) (not a byte count)',
  ]);
});

Deno.test("parseConfig() reads KISEKI_NODE_DOWN_GRACE as a duration, and refuses bad ones", () => {
  assert.equal(parseConfig({}).nodeDownGraceMs, 600_000);
  assert.equal(parseConfig({ KISEKI_NODE_DOWN_GRACE: "90s" }).nodeDownGraceMs, 90_000);
  assert.equal(parseConfig({ KISEKI_NODE_DOWN_GRACE: "2h" }).nodeDownGraceMs, 7_200_000);
  for (const value of ["0s", "10", "5 m", "31d", "-1m"]) {
    assert.deepEqual(problems({ KISEKI_NODE_DOWN_GRACE: value }), [
      `KISEKI_NODE_DOWN_GRACE=${
        JSON.stringify(value)
      } is invalid: expected a duration of 1s..30d: a number with s, m, h or d (e.g. 10m, 90s)`,
    ]);
  }
});

Deno.test("parseConfig() reads the S3 connection cap and the read-ahead budget, and refuses bad ones", () => {
  const c = parseConfig({});
  assert.equal(c.s3ConnectionsMax, 1024);
  assert.equal(c.readAheadMaxBytes, 256 * 2 ** 20);
  const set = parseConfig({ KISEKI_S3_CONNECTIONS_MAX: "64", KISEKI_READ_AHEAD_MAX: "1GiB" });
  assert.equal(set.s3ConnectionsMax, 64);
  assert.equal(set.readAheadMaxBytes, 2 ** 30);
  const bad = problems({ KISEKI_S3_CONNECTIONS_MAX: "0", KISEKI_READ_AHEAD_MAX: "1MiB" });
  assert.equal(bad.length, 2);
  assert.ok(bad.some((p) => /^KISEKI_READ_AHEAD_MAX="1MiB" is invalid: .*below 16MiB/.test(p)));
  assert.ok(bad.some((p) => /^KISEKI_S3_CONNECTIONS_MAX="0" is invalid/.test(p)));
});

Deno.test("parseConfig() keeps the S3 credentials file out of the data dir", () => {
  assert.equal(parseConfig({}).s3CredentialsFile, null);
  assert.equal(
    parseConfig({ KISEKI_DATA_DIR: "/var/lib/kiseki", KISEKI_S3_CREDENTIALS_FILE: "/root/k.ini" })
      .s3CredentialsFile,
    "/root/k.ini",
  );
  for (const inside of ["/var/lib/kiseki/config/s3-credentials", "/var/lib/kiseki"]) {
    assert.throws(
      () =>
        parseConfig({ KISEKI_DATA_DIR: "/var/lib/kiseki/", KISEKI_S3_CREDENTIALS_FILE: inside }),
      (e: unknown) =>
        e instanceof ConfigError &&
        /KISEKI_S3_CREDENTIALS_FILE=.* is invalid: expected a file path outside KISEKI_DATA_DIR/
          .test(e.message),
    );
  }
});

Deno.test("parseConfig() reads KISEKI_PORTMAP_ADDR and refuses it on another listener's address", () => {
  assert.deepEqual(parseConfig({ KISEKI_PORTMAP_ADDR: "0.0.0.0:111" }).portmapAddr, {
    host: "0.0.0.0",
    port: 111,
  });
  assert.match(
    problems({ KISEKI_PORTMAP_ADDR: "nope" })[0]!,
    /^KISEKI_PORTMAP_ADDR="nope" is invalid/,
  );
  assert.match(
    problems({ KISEKI_PORTMAP_ADDR: "0.0.0.0:2049" })[0]!,
    /KISEKI_PORTMAP_ADDR=0.0.0.0:2049 is invalid: the same address as KISEKI_NFS_ADDR/,
  );
});

Deno.test("parseConfig() reads KISEKI_CACHE_DISCONNECT_WIPE_S and refuses zero", () => {
  assert.deepEqual(
    parseConfig({ KISEKI_CACHE_DISCONNECT_WIPE_S: "60" }).cacheDisconnectWipeMs,
    60_000,
  );
  assert.throws(
    () => parseConfig({ KISEKI_CACHE_DISCONNECT_WIPE_S: "0" }),
    /KISEKI_CACHE_DISCONNECT_WIPE_S/,
  );
  assert.throws(
    () => parseConfig({ KISEKI_CACHE_DISCONNECT_WIPE_S: "5m" }),
    /KISEKI_CACHE_DISCONNECT_WIPE_S/,
  );
});
