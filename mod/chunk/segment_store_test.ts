import assert from "node:assert/strict";
import type { KvEnv } from "../disk/mod.ts";
import { openTestEnv, Prng, quietLogger, SimPool } from "./_testing.ts";
import {
  decodeLabel,
  decodeRecordHeader,
  encodeLabel,
  encodeRecordHeader,
  LABEL_BYTES,
  type ReadRequest,
  RECORD_HEADER_BYTES,
  recordBytesFor,
  SegmentStore,
  type SegmentStoreOptions,
  type Slot,
} from "./segment_store.ts";

const SEGMENT_BYTES = 64 << 10;

async function withEnv(fn: (env: KvEnv, dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-seg-" });
  const env = await openTestEnv(dir);
  try {
    await fn(env, dir);
  } finally {
    await env.close();
    await Deno.remove(dir, { recursive: true });
  }
}

function open(env: KvEnv, pool: SimPool, extra: Partial<SegmentStoreOptions> = {}) {
  return SegmentStore.open({
    env,
    pool: pool.spec.name,
    devices: pool.spec.devices,
    segmentSizeBytes: pool.spec.segmentSizeBytes,
    fullPercent: pool.spec.fullPercent,
    openDevice: pool.open,
    logger: quietLogger().logger,
    ...extra,
  });
}

function simPool(devices = 3, alignmentBytes = 1): SimPool {
  return new SimPool({
    devices,
    durability: { kind: "copies", copies: 1 },
    deviceSizeBytes: 1 << 20,
    segmentSizeBytes: SEGMENT_BYTES,
    alignmentBytes,
  });
}

/** Writes `records` (device, payload) in one batch and commits them live. */
async function writeRecords(
  store: SegmentStore,
  records: { device: number; id: Uint8Array; index: number; payload: Uint8Array }[],
): Promise<Slot[]> {
  const slots = await store.batch(async (batch) => {
    const slots = records.map((r) => {
      const result = batch.reserve(r.device, r.id, r.index, r.payload.length);
      assert.ok(result.ok, "reserve");
      result.slot.payload.set(r.payload);
      return result.slot;
    });
    const failures = await batch.flush();
    assert.equal(failures.size, 0);
    await store.env.transaction((txn) => {
      batch.stageSegments(txn);
      for (const slot of slots) store.stageLive(txn, slot);
    });
    return slots;
  });
  return slots;
}

function requestFor(slot: Slot): ReadRequest {
  return {
    device: slot.device,
    offsetBytes: slot.offsetBytes,
    chunkId: slot.chunkId,
    fragmentIndex: slot.fragmentIndex,
    payloadBytes: slot.payloadBytes,
    payloadCrc: slot.payloadCrc,
  };
}

function records(prng: Prng, devices: number[], count: number) {
  return Array.from({ length: count }, (_, i) => ({
    device: devices[i % devices.length]!,
    id: prng.bytes(32),
    index: i % 6,
    payload: prng.bytes(1 + prng.nextInt(3000)),
  }));
}

Deno.test("encodeRecordHeader() round-trips and any flipped byte is caught", () => {
  const header = new Uint8Array(RECORD_HEADER_BYTES);
  const chunkId = new Prng(1).bytes(32);
  encodeRecordHeader(header, {
    chunkId,
    fragmentIndex: 5,
    payloadBytes: 1234,
    payloadCrc: 0xdeadbeef,
    device: 7,
  });
  assert.deepEqual(decodeRecordHeader(header), {
    chunkId,
    fragmentIndex: 5,
    payloadBytes: 1234,
    payloadCrc: 0xdeadbeef,
    device: 7,
  });
  assert.equal(String.fromCharCode(...header.subarray(0, 4)), "KSFR");
  for (let i = 0; i < RECORD_HEADER_BYTES; i++) {
    const copy = header.slice();
    copy[i]! ^= 0x10;
    assert.equal(decodeRecordHeader(copy), null, `flip at byte ${i} not caught`);
  }
  assert.equal(recordBytesFor(0), 64);
  assert.equal(recordBytesFor(1), 128);
  assert.equal(recordBytesFor(64), 128);
});

Deno.test("encodeLabel() round-trips; blank or damaged labels read as none", () => {
  const label = {
    uuid: new Prng(2).bytes(16),
    sizeBytes: 2 ** 40,
    segmentSizeBytes: 64 << 20,
    device: 300,
    pool: "fast-nvme",
    id: "/dev/nvme0n1",
  };
  const bytes = new Uint8Array(LABEL_BYTES);
  encodeLabel(bytes, label);
  assert.deepEqual(decodeLabel(bytes), label);
  assert.equal(decodeLabel(new Uint8Array(LABEL_BYTES)), null);
  bytes[200]! ^= 1;
  assert.equal(decodeLabel(bytes), null);
});

Deno.test("SegmentStore.batch() writes many records with one submit and one sync per device", async () => {
  await withEnv(async (env) => {
    const pool = simPool(3);
    const store = await open(env, pool);
    const devices = store.devices().map((d) => d.device);
    const before = [0, 1, 2].map((i) => pool.faulty(i).calls);
    const written = records(new Prng(3), devices, 60);
    const slots = await writeRecords(store, written);
    for (let i = 0; i < 3; i++) {
      assert.equal(pool.faulty(i).calls - before[i]!, 2, `device ${i}: one submit + one sync`);
    }
    const outcomes = await store.read(slots.map(requestFor));
    outcomes.forEach((o, i) => {
      assert.ok(o.ok, `record ${i}`);
      assert.deepEqual(o.payload, written[i]!.payload);
    });
    const live = store.devices().reduce((n, d) => n + d.liveBytes, 0);
    assert.equal(live, slots.reduce((n, s) => n + s.recordBytes, 0));
    await store.close();
  });
});

Deno.test("SegmentStore.read() reports corrupt payloads, headers and misplaced records", async () => {
  await withEnv(async (env) => {
    const pool = simPool(1);
    const store = await open(env, pool);
    const device = store.devices()[0]!.device;
    const slots = await writeRecords(store, records(new Prng(4), [device], 4));
    pool.sim(0).flipBits(slots[0]!.offsetBytes + RECORD_HEADER_BYTES + 3, 0x40);
    pool.sim(0).flipBits(slots[1]!.offsetBytes + 20, 0x01);
    const wrongChunk = { ...requestFor(slots[2]!), chunkId: new Uint8Array(32) };
    const wrongCrc = { ...requestFor(slots[3]!), payloadCrc: slots[3]!.payloadCrc ^ 1 };
    const outcomes = await store.read([
      requestFor(slots[0]!),
      requestFor(slots[1]!),
      wrongChunk,
      wrongCrc,
    ]);
    assert.deepEqual(outcomes.map((o) => (o.ok ? "ok" : o.fault)), [
      "checksum",
      "header",
      "mismatch",
      "checksum",
    ]);
    // An I/O error on one record does not hide the others of the same batch.
    pool.faulty(0).failWhen((call) =>
      call.ops.some((op) => op.offsetBytes === slots[3]!.offsetBytes)
    );
    const again = await store.read(slots.slice(2).map(requestFor));
    assert.deepEqual(again.map((o) => (o.ok ? "ok" : o.fault)), ["ok", "io"]);
    await store.close();
  });
});

Deno.test("SegmentStore reopens where it left off: new records never overwrite committed ones", async () => {
  await withEnv(async (env) => {
    const pool = simPool(2);
    let store = await open(env, pool);
    const devices = store.devices().map((d) => d.device);
    const prng = new Prng(5);
    const first = records(prng, devices, 30);
    const firstSlots = await writeRecords(store, first);
    await store.close();
    store = await open(env, pool);
    assert.deepEqual(store.devices().map((d) => d.device), devices, "devices keep their numbers");
    assert.ok(store.devices().every((d) => d.status === "ok"));
    const second = records(prng, devices, 30);
    await writeRecords(store, second);
    const outcomes = await store.read(firstSlots.map(requestFor));
    outcomes.forEach((o, i) => assert.ok(o.ok && o.payload.length === first[i]!.payload.length));
    await store.close();
  });
});

Deno.test("SegmentStore honours O_DIRECT alignment for writes and reads", async () => {
  await withEnv(async (env) => {
    const pool = simPool(2, 4096);
    const store = await open(env, pool);
    const devices = store.devices().map((d) => d.device);
    const written = records(new Prng(6), devices, 20);
    const slots = await writeRecords(store, written);
    const outcomes = await store.read(slots.map(requestFor));
    outcomes.forEach((o, i) =>
      assert.ok(o.ok && o.payload.every((b, j) => b === written[i]!.payload[j]))
    );
    // A second batch starts on a fresh 4 KiB boundary.
    const more = await writeRecords(store, records(new Prng(7), devices, 2));
    for (const slot of more) assert.equal((slot.offsetBytes - 4096) % 64, 0);
    await store.close();
  });
});

Deno.test("SegmentStore treats a blank device at a known path as a replacement", async () => {
  await withEnv(async (env) => {
    const pool = simPool(2);
    let store = await open(env, pool);
    const numbers = store.devices().map((d) => d.device);
    const slots = await writeRecords(store, records(new Prng(8), numbers, 10));
    await store.close();
    pool.wipe(1);
    const { logger, lines } = quietLogger();
    store = await open(env, pool, { logger });
    assert.deepEqual(store.devices().map((d) => d.device), numbers, "same device numbers");
    assert.ok(lines.some((l) => l.includes("treating it as a replacement")));
    const outcomes = await store.read(slots.map(requestFor));
    outcomes.forEach((o, i) => {
      if (slots[i]!.device === numbers[1]) assert.ok(!o.ok && o.fault === "header");
      else assert.ok(o.ok);
    });
    // New writes to the replacement do not land on segments the index still counts.
    const fresh = await writeRecords(store, records(new Prng(9), [numbers[1]!], 3));
    const lastOld = Math.max(
      ...slots.filter((s) => s.device === numbers[1]).map((s) => s.offsetBytes),
    );
    for (const s of fresh) assert.ok(s.offsetBytes > lastOld);
    await store.close();
  });
});

Deno.test("SegmentStore refuses a device that carries another index's label", async () => {
  const pool = simPool(1);
  await withEnv(async (env) => {
    const store = await open(env, pool);
    await store.close();
  });
  await withEnv(async (env) => {
    const { logger, lines } = quietLogger();
    const store = await open(env, pool, { logger });
    const [device] = store.devices();
    assert.equal(device!.device, 0, "a foreign device gets no number");
    assert.equal(device!.status, "offline");
    assert.match(device!.reason, /refusing to overwrite/);
    assert.ok(lines.some((l) => l.includes("refusing to overwrite")));
    await store.close();
  });
});

Deno.test("SegmentStore keeps a device it cannot open offline and reads from it fail as offline", async () => {
  await withEnv(async (env) => {
    const pool = simPool(2);
    let store = await open(env, pool);
    const numbers = store.devices().map((d) => d.device);
    const slots = await writeRecords(store, records(new Prng(10), numbers, 4));
    await store.close();
    pool.failOpen(0);
    store = await open(env, pool);
    const report = store.devices().find((d) => d.device === numbers[0])!;
    assert.equal(report.status, "offline");
    assert.match(report.reason, /injected open failure/);
    assert.equal(store.writable(numbers[0]!), false);
    const outcomes = await store.read(slots.map(requestFor));
    outcomes.forEach((o, i) => {
      if (slots[i]!.device === numbers[0]) assert.ok(!o.ok && o.fault === "offline");
      else assert.ok(o.ok);
    });
    await store.close();
  });
});

Deno.test("SegmentBatch.reserve() says when staging or the device is full", async () => {
  await withEnv(async (env) => {
    const pool = simPool(1);
    const store = await open(env, pool, { stagingBytes: 16 << 10 });
    const device = store.devices()[0]!.device;
    const id = new Uint8Array(32);
    await store.batch(async (batch) => {
      assert.ok(batch.reserve(device, id, 0, 10_000).ok);
      const second = batch.reserve(device, id, 1, 10_000);
      assert.deepEqual(second, { ok: false, why: "staging" });
      await batch.flush();
    });
    // A record larger than staging, alone in its batch, gets a buffer of its own.
    await store.batch(async (batch) => {
      const big = batch.reserve(device, id, 2, 40_000);
      assert.ok(big.ok);
      big.slot.payload.fill(7);
      await batch.flush();
      assert.equal(big.slot.state, "durable");
    });
    // Fill the device: 15 segments of 64 KiB.
    let why: string | null = null;
    for (let i = 0; i < 40 && why === null; i++) {
      await store.batch(async (batch) => {
        const r = batch.reserve(device, id, 3, 40_000);
        if (!r.ok) why = r.why;
        else await batch.flush();
      });
    }
    assert.equal(why, "device");
    await store.close();
  });
});

Deno.test("SegmentStore marks a device failed when its write or sync fails", async () => {
  await withEnv(async (env) => {
    const pool = simPool(2);
    const store = await open(env, pool);
    const numbers = store.devices().map((d) => d.device);
    pool.faulty(1).failWhen((call) => call.kind === "sync", "EIO", { times: 1 });
    await store.batch(async (batch) => {
      const a = batch.reserve(numbers[0]!, new Uint8Array(32), 0, 100);
      const b = batch.reserve(numbers[1]!, new Uint8Array(32), 1, 100);
      assert.ok(a.ok && b.ok);
      const failures = await batch.flush();
      assert.deepEqual([...failures.keys()], [numbers[1]]);
      assert.equal(a.slot.state, "durable");
      assert.equal(b.slot.state, "failed");
    });
    const report = store.devices().find((d) => d.device === numbers[1])!;
    assert.equal(report.status, "failed");
    assert.equal(store.writable(numbers[1]!), false);
    await store.close();
  });
});
