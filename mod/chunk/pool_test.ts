import assert from "node:assert/strict";
import {
  defaultDurability,
  defaultPoolSpecs,
  formatDurability,
  fragmentCount,
  loadPoolSpecs,
  parseDurability,
  parsePoolSpecs,
  POOL_DEVICE_SIZE_BYTES_DEFAULT,
  POOL_FULL_PERCENT_DEFAULT,
  POOL_SEGMENT_SIZE_BYTES_DEFAULT,
  PoolSpecError,
  toleratedLosses,
} from "./pool.ts";

const CONTEXT = { dataDir: "/var/lib/kiseki/" };

function rejects(text: string, pattern: RegExp): void {
  assert.throws(
    () => parsePoolSpecs(text, CONTEXT),
    (e: unknown) => e instanceof PoolSpecError && pattern.test(e.message),
    `expected ${pattern} for ${text}`,
  );
}

Deno.test("defaultPoolSpecs() is six sparse device files with EC 4+2", () => {
  const [pool] = defaultPoolSpecs(CONTEXT);
  assert.equal(pool!.name, "default");
  assert.equal(pool!.devices.length, 6);
  assert.deepEqual(pool!.durability, { kind: "ec", k: 4, m: 2 });
  assert.equal(pool!.durabilitySource, "default");
  assert.equal(pool!.fullPercent, POOL_FULL_PERCENT_DEFAULT);
  assert.equal(pool!.segmentSizeBytes, POOL_SEGMENT_SIZE_BYTES_DEFAULT);
  assert.deepEqual(pool!.devices[2], {
    id: "default-2",
    path: "/var/lib/kiseki/chunks/devices/default-2.dev",
    node: "local",
    sizeBytes: POOL_DEVICE_SIZE_BYTES_DEFAULT,
    weight: 4,
  });
});

Deno.test("defaultDurability() follows the cluster-size rule, a lone node's within its devices", () => {
  assert.deepEqual(defaultDurability(6, 1), { kind: "ec", k: 4, m: 2 });
  assert.deepEqual(defaultDurability(12, 1), { kind: "ec", k: 4, m: 2 });
  assert.deepEqual(defaultDurability(5, 1), { kind: "copies", copies: 2 });
  assert.deepEqual(defaultDurability(1, 1), { kind: "copies", copies: 1 });
  assert.deepEqual(defaultDurability(8, 2), { kind: "copies", copies: 2 });
  assert.deepEqual(defaultDurability(8, 3), { kind: "copies", copies: 3 });
  assert.deepEqual(defaultDurability(2, 4), { kind: "copies", copies: 3 });
  assert.deepEqual(defaultDurability(1, 6), { kind: "ec", k: 4, m: 2 });
  assert.deepEqual(defaultDurability(6, 6), { kind: "ec", k: 4, m: 2 });
});

Deno.test("parseDurability() reads ec:K+M and copies:N and round-trips", () => {
  for (const text of ["ec:4+2", "ec:8+3", "copies:3", "copies:1"]) {
    assert.equal(formatDurability(parseDurability(text)), text);
  }
  assert.equal(fragmentCount(parseDurability("ec:8+3")), 11);
  assert.equal(toleratedLosses(parseDurability("ec:8+3")), 3);
  assert.equal(toleratedLosses(parseDurability("copies:3")), 2);
  for (const bad of ["ec:4", "ec:0+2", "ec:30+3", "copies:0", "copies:9", "raid5", "EC:4+2"]) {
    assert.throws(() => parseDurability(bad), PoolSpecError, bad);
  }
});

Deno.test("parsePoolSpecs() reads the documented example", () => {
  const pools = parsePoolSpecs(
    JSON.stringify([
      {
        name: "fast-nvme",
        durability: "ec:4+2",
        deviceSize: "64GiB",
        devices: ["/dev/n0", "/dev/n1", "/dev/n2", "/dev/n3", "/dev/n4", "/dev/n5"],
      },
      { name: "bulk-ssd", devices: 3, deviceSize: "8GiB", fullPercent: 85 },
      {
        name: "cold-hdd",
        durability: "copies:2",
        segmentSize: "128MiB",
        devices: [
          { path: "/srv/hdd0.dev", id: "hdd0", node: "n1", weight: 2, size: "1TiB" },
          { path: "/srv/hdd1.dev", node: "n2" },
        ],
      },
    ]),
    { ...CONTEXT, nodeId: "n0" },
  );
  assert.deepEqual(pools.map((p) => p.name), ["fast-nvme", "bulk-ssd", "cold-hdd"]);
  assert.equal(pools[0]!.devices[0]!.sizeBytes, 64 * 1024 ** 3);
  assert.equal(pools[0]!.devices[0]!.id, "/dev/n0");
  assert.equal(pools[0]!.devices[0]!.node, "n0");
  assert.deepEqual(pools[1]!.durability, { kind: "copies", copies: 2 });
  assert.equal(pools[1]!.fullPercent, 85);
  assert.equal(pools[1]!.devices[1]!.path, "/var/lib/kiseki/chunks/devices/bulk-ssd-1.dev");
  assert.deepEqual(pools[2]!.devices[0], {
    id: "hdd0",
    path: "/srv/hdd0.dev",
    node: "n1",
    sizeBytes: 1024 ** 4,
    weight: 2,
  });
  assert.equal(pools[2]!.segmentSizeBytes, 128 << 20);
  // A single object is a one-pool list.
  assert.equal(parsePoolSpecs(`{"name": "default", "devices": 2}`, CONTEXT).length, 1);
});

Deno.test("parsePoolSpecs() names the field at fault", () => {
  rejects("not json", /not valid JSON/);
  rejects("[]", /1\.\.16 pools/);
  rejects(`[{"name": "Fast"}]`, /\[0\]\.name/);
  rejects(`[{"name": "a", "devices": 3, "durability": "ec:4+2"}]`, /ec:4\+2 puts 6 .* has 3/);
  rejects(`[{"name": "a", "devices": 0}]`, /devices: count 0/);
  rejects(`[{"name": "a", "devices": ["rel/path"]}]`, /devices\[0\]\.path/);
  rejects(`[{"name": "a", "deviceSize": "12345"}]`, /deviceSize: 12345 bytes must be/);
  rejects(`[{"name": "a", "deviceSize": "lots"}]`, /deviceSize: "lots"/);
  rejects(`[{"name": "a", "fullPercent": 120}]`, /fullPercent/);
  rejects(`[{"name": "a", "colour": "red"}]`, /unknown field "colour"/);
  rejects(`[{"name": "a", "durability": "raid6"}]`, /\.durability: durability "raid6"/);
  rejects(`[{"name": "a"}, {"name": "a"}]`, /repeated/);
  rejects(`[{"name": "a", "devices": ["/d0"]}, {"name": "b", "devices": ["/d0"]}]`, /listed in/);
  rejects(`[{"name": "a", "deviceSize": "64KiB"}]`, /cannot hold two/);
  rejects(
    `[{"name": "a", "devices": [{"path": "/a", "id": "x"}, {"path": "/b", "id": "x"}]}]`,
    /id x/,
  );
});

Deno.test("loadPoolSpecs() takes inline JSON, a file, or nothing", async () => {
  assert.equal((await loadPoolSpecs(undefined, CONTEXT))[0]!.name, "default");
  assert.equal((await loadPoolSpecs("  ", CONTEXT))[0]!.name, "default");
  const inline = await loadPoolSpecs(`[{"name": "bulk-ssd", "devices": 2}]`, CONTEXT);
  assert.equal(inline[0]!.name, "bulk-ssd");
  const files = new Map([["/etc/pools.json", `{"name": "cold-hdd", "devices": 1}`]]);
  const read = (path: string) => {
    const text = files.get(path);
    return text === undefined ? Promise.reject(new Error("No such file")) : Promise.resolve(text);
  };
  assert.equal((await loadPoolSpecs("@/etc/pools.json", CONTEXT, read))[0]!.name, "cold-hdd");
  assert.equal((await loadPoolSpecs("/etc/pools.json", CONTEXT, read))[0]!.name, "cold-hdd");
  await assert.rejects(
    loadPoolSpecs("@/nope.json", CONTEXT, read),
    (e: unknown) => e instanceof PoolSpecError && /cannot read \/nope\.json/.test(e.message),
  );
});
