import assert from "node:assert/strict";
import { ROLE_NAMES, ROLE_TABLE, roleConfig, roleFlags } from "./table.ts";

const flag = (flags: string[], name: string): string[] | undefined => {
  const f = flags.find((x) => x === name || x.startsWith(`${name}=`));
  if (f === undefined) return undefined;
  return f.includes("=") ? f.slice(name.length + 1).split(",") : [];
};

Deno.test("roleFlags() scopes the server to its listeners, peers, data dir and shims", () => {
  const config = roleConfig("server", {
    KISEKI_NODE_ID: "1",
    KISEKI_RAFT_PEERS: "1=node1:9300,2=node2:9300,3=10.0.0.3:9300",
    KISEKI_DATA_DIR: "/var/lib/kiseki",
    OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger.internal:4317",
    KISEKI_PEER_NETWORKS: "10.0.1.0/24",
  });
  const flags = roleFlags("server", config, {
    cwd: "/",
    ffiDir: "/usr/local/lib/kiseki",
    nodeModulesDir: "/usr/local/lib/kiseki/node_modules",
    protoDir: "/usr/local/lib/kiseki/proto",
  });
  const net = flag(flags, "--allow-net")!;
  for (
    const a of [
      "0.0.0.0:9000",
      "0.0.0.0:2049",
      "0.0.0.0:9090",
      "0.0.0.0:9100",
      "0.0.0.0:9101",
      "0.0.0.0:9300",
    ]
  ) {
    assert.ok(net.includes(a), `listens on ${a}`);
  }
  for (
    const a of [
      "node2:9300",
      "10.0.0.3:9300",
      "node2:9100",
      "node2:9090",
      "jaeger.internal:4317",
      "10.0.1.0/24",
    ]
  ) {
    assert.ok(net.includes(a), `dials ${a}`);
  }
  assert.ok(!net.includes("node1:9300"), "does not dial itself");
  assert.deepEqual(flag(flags, "--allow-write"), ["/var/lib/kiseki"]);
  // Shims, and the native addon of the lmdb store (the Raft log).
  assert.deepEqual(flag(flags, "--allow-ffi"), [
    "/usr/local/lib/kiseki/node_modules",
    "/usr/local/lib/kiseki",
  ]);
  // lmdb-js's prebuild selection, and statfs for the pool that grows with its filesystem.
  assert.deepEqual(flag(flags, "--allow-sys"), [
    "cpus",
    "networkInterfaces",
    "hostname",
    "statfs",
  ]);
  assert.ok(flag(flags, "--allow-read")!.includes("/var/lib/kiseki"));
  assert.ok(flag(flags, "--allow-env")!.includes("KISEKI_S3_ADDR"));
  assert.ok(!flags.includes("--allow-all") && !flags.includes("-A"));
  assert.equal(flag(flags, "--allow-run"), undefined);
});

Deno.test("roleFlags() never grants FFI to the key server, control plane or admin CLI", () => {
  for (const role of ROLE_NAMES) {
    const flags = roleFlags(role, roleConfig(role, {}), {
      cwd: "/srv",
      ffiDir: "/usr/local/lib/kiseki",
      nodeModulesDir: "/usr/local/lib/kiseki/node_modules",
      protoDir: "/usr/local/lib/kiseki/proto",
    });
    assert.equal(flag(flags, "--allow-ffi") !== undefined, ROLE_TABLE[role].ffi, role);
    assert.ok(flags.includes("--no-prompt"), role);
  }
  assert.deepEqual(ROLE_NAMES.filter((r) => ROLE_TABLE[r].ffi), ["server", "client-fuse"]);
});

Deno.test("roleFlags() resolves relative data dirs against the given cwd", () => {
  const flags = roleFlags("keyserver", roleConfig("keyserver", {}), {
    cwd: "/srv/",
    ffiDir: "x",
    nodeModulesDir: "/nm",
    protoDir: "/usr/local/lib/kiseki/proto",
  });
  assert.deepEqual(flag(flags, "--allow-write"), ["/srv/kiseki-keys"]);
  assert.ok(flag(flags, "--allow-net")!.includes("0.0.0.0:9400"));
  assert.ok(!flag(flags, "--allow-net")!.includes("0.0.0.0:9000"));
});

Deno.test("roleFlags() grants the server its inline pool devices outside the data dir", () => {
  const config = roleConfig("server", {
    KISEKI_DATA_DIR: "/var/lib/kiseki",
    KISEKI_POOLS: JSON.stringify([{
      name: "bulk-ssd",
      durability: "copies:2",
      deviceSize: "1GiB",
      devices: ["/srv/ssd0.dev", "/srv/ssd1.dev"],
    }]),
  });
  const flags = roleFlags("server", config, {
    cwd: "/",
    ffiDir: "/usr/local/lib/kiseki",
    nodeModulesDir: "/nm",
    protoDir: "/proto",
  });
  assert.deepEqual(flag(flags, "--allow-write"), [
    "/var/lib/kiseki",
    "/srv/ssd0.dev",
    "/srv/ssd1.dev",
  ]);
});
