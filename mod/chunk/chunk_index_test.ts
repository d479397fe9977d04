import assert from "node:assert/strict";
import { openTestEnv, Prng } from "./_testing.ts";
import {
  addTenant,
  CHUNK_TENANT_TAGS_MAX,
  type ChunkEntry,
  ChunkIndexCorruptError,
  decodeChunkEntry,
  encodeChunkEntry,
  LmdbChunkIndex,
  tenantTag,
} from "./chunk_index.ts";

function ecEntry(refcount = 1): ChunkEntry {
  return {
    durability: { kind: "ec", k: 4, m: 2 },
    refcount,
    lengthBytes: 2 ** 40 + 17,
    fragmentBytes: 262_144,
    fragments: Array.from({ length: 6 }, (_, i) => ({
      device: 1000 + i,
      offsetBytes: 2 ** 45 + i * 4096,
      payloadCrc: (0xfedcba98 + i) >>> 0,
      lost: i === 3,
    })),
    tenants: [tenantTag("acme"), tenantTag("globex")],
    tenantOverflow: false,
  };
}

Deno.test("encodeChunkEntry() round-trips EC and copies entries with large offsets", () => {
  const ec = ecEntry();
  assert.deepEqual(decodeChunkEntry(encodeChunkEntry(ec)), ec);
  assert.equal(encodeChunkEntry(ec).length, 24 + 6 * 16 + 2 * 8 + 4);
  const copies: ChunkEntry = {
    durability: { kind: "copies", copies: 3 },
    refcount: 0,
    lengthBytes: 0,
    fragmentBytes: 0,
    fragments: [0, 1, 2].map((i) => ({
      device: i + 1,
      offsetBytes: 4096,
      payloadCrc: 0,
      lost: false,
    })),
    tenants: [],
    tenantOverflow: true,
  };
  assert.deepEqual(decodeChunkEntry(encodeChunkEntry(copies)), copies);
});

Deno.test("decodeChunkEntry() refuses damaged values", () => {
  const bytes = encodeChunkEntry(ecEntry());
  for (let i = 0; i < bytes.length; i++) {
    const copy = bytes.slice();
    copy[i]! ^= 0x04;
    assert.throws(() => decodeChunkEntry(copy), ChunkIndexCorruptError, `flip at ${i}`);
  }
  assert.throws(() => decodeChunkEntry(bytes.subarray(0, 20)), ChunkIndexCorruptError);
});

Deno.test("addTenant() keeps a bounded list and then only says there are more", () => {
  const entry = ecEntry();
  entry.tenants = [];
  for (let i = 0; i < CHUNK_TENANT_TAGS_MAX; i++) assert.ok(addTenant(entry, tenantTag(`t${i}`)));
  assert.equal(addTenant(entry, tenantTag("t0")), false);
  assert.equal(entry.tenantOverflow, false);
  assert.ok(addTenant(entry, tenantTag("one-too-many")));
  assert.equal(entry.tenantOverflow, true);
  assert.equal(entry.tenants.length, CHUNK_TENANT_TAGS_MAX);
  assert.equal(tenantTag("acme"), tenantTag("acme"));
  assert.match(tenantTag("acme"), /^[0-9a-f]{16}$/);
});

Deno.test("LmdbChunkIndex keeps the unreferenced queue in step with refcounts", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-index-" });
  const env = await openTestEnv(dir);
  try {
    const index = new LmdbChunkIndex(env);
    const prng = new Prng(1);
    const ids = Array.from({ length: 10 }, () => prng.bytes(32));
    await env.transaction((txn) => {
      for (const id of ids) index.stagePut(txn, id, ecEntry(1));
    });
    assert.equal(index.count(), 10);
    assert.deepEqual(index.unreferenced(null, 100), []);
    const one = ecEntry(1);
    await env.transaction((txn) => {
      index.stagePut(txn, ids[3]!, ecEntry(0), one);
      index.stagePut(txn, ids[7]!, ecEntry(0), one);
    });
    const queued = index.unreferenced(null, 100);
    assert.equal(queued.length, 2);
    await env.transaction((txn) => index.stagePut(txn, ids[3]!, ecEntry(1), ecEntry(0)));
    assert.deepEqual(index.unreferenced(null, 100), [ids[7]]);
    await env.transaction((txn) => index.stageDelete(txn, ids[7]!));
    assert.deepEqual(index.unreferenced(null, 100), []);
    assert.equal(index.get(ids[7]!), undefined);
    // scan() walks in id order from a cursor.
    const sorted = ids.filter((_, i) => i !== 7).map((id) => Array.from(id)).sort((a, b) => {
      for (let i = 0; i < 32; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
      return 0;
    });
    const first = index.scan(null, 4);
    const rest = index.scan(first[3]!.id, 100);
    assert.deepEqual([...first, ...rest].map((c) => Array.from(c.id)), sorted);
    index.getMeta("absent");
    await env.transaction((txn) => index.stageMeta(txn, "cursor", new Uint8Array([1, 2])));
    assert.deepEqual(index.getMeta("cursor"), new Uint8Array([1, 2]));
  } finally {
    await env.close();
    await Deno.remove(dir, { recursive: true });
  }
});
