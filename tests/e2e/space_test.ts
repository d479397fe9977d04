// Deleted space comes back, and full is a clear answer: a real `kiseki server` on a small
// pool (six 4 MiB device files, 256 KiB segments, EC 4+2) driven by the AWS SDK for
// JavaScript. A write/overwrite/delete loop moves ten times the pool's capacity without one
// refused write; after the deletes, used bytes come back to live bytes (within a segment per
// device); a pool filled on purpose answers 507 InsufficientStorage (never 500), keeps
// serving reads, and takes writes again by itself once objects are deleted.

import assert from "node:assert/strict";
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  PutObjectCommand,
  S3Client,
  // deno-lint-ignore no-import-prefix
} from "npm:@aws-sdk/client-s3@3.1175.0";
import { Prng } from "../../mod/base/mod.ts";
import { flagsFor, readS3Credentials, ROOT, run, startRole, type TestAddrs } from "./_role.ts";

const KIB = 1024;
const MIB = 1024 * KIB;
const SEGMENT_BYTES = 256 * KIB;
const DEVICES = 6;
const POOL = JSON.stringify({
  name: "default",
  devices: DEVICES,
  deviceSize: "4MiB",
  segmentSize: "256KiB",
});
/** The loop moves this many times the pool's raw capacity in object bytes. */
const CAPACITY_MULTIPLE = 10;
const WORKERS = 4;
/** Keys each worker overwrites in turn; every round of them is then deleted. */
const KEYS_PER_WORKER = 2;
/** Bounds on the loop whatever the pool's size: requests and wall time. */
const LOOP_PUTS_MAX = 20_000;
const LOOP_MS_MAX = 50_000;
/** How long used bytes may take to come back after the deletes (the bar is a minute). */
const RECLAIM_MS_MAX = 60_000;
const FILL_OBJECT_BYTES = 512 * KIB;

/** Six free loopback ports for the server's listeners (port 0, then released). */
function freeAddrs(): TestAddrs {
  const names: (keyof TestAddrs)[] = [
    "KISEKI_S3_ADDR",
    "KISEKI_NFS_ADDR",
    "KISEKI_METRICS_ADDR",
    "KISEKI_DATA_ADDR",
    "KISEKI_ADVISORY_ADDR",
    "KISEKI_RAFT_ADDR",
  ];
  const listeners = names.map(() => Deno.listen({ hostname: "127.0.0.1", port: 0 }));
  const addrs = Object.fromEntries(
    names.map((n, i) => [n, `127.0.0.1:${(listeners[i]!.addr as Deno.NetAddr).port}`]),
  ) as unknown as TestAddrs;
  for (const l of listeners) l.close();
  return addrs;
}

async function waitHealthy(metricsAddr: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    try {
      const r = await fetch(`http://${metricsAddr}/health`, { signal: AbortSignal.timeout(1000) });
      last = `${r.status} ${await r.text()}`;
      if (r.status === 200) return;
    } catch (e) {
      last = (e as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`server not healthy within ${timeoutMs} ms (last: ${last})`);
}

interface PoolGauges {
  capacity: number;
  used: number;
  live: number;
}

async function poolGauges(metricsAddr: string): Promise<PoolGauges> {
  const text = await (await fetch(`http://${metricsAddr}/metrics`)).text();
  const value = (name: string) => {
    const line = text.split("\n").find((l) => l.startsWith(`${name}{pool="default"}`));
    assert.ok(line !== undefined, `${name} is exported for the default pool`);
    return Number(line.split(" ").at(-1));
  };
  return {
    capacity: value("kiseki_pool_capacity_bytes"),
    used: value("kiseki_pool_used_bytes"),
    live: value("kiseki_pool_live_bytes"),
  };
}

/** What an S3 call answered: 200, or the error's status and code. */
async function attempt(
  fn: () => Promise<{ $metadata: { httpStatusCode?: number } }>,
): Promise<{ status: number; code: string }> {
  try {
    const out = await fn();
    return { status: out.$metadata.httpStatusCode ?? 0, code: "" };
  } catch (e) {
    const err = e as { name?: string; Code?: string; $metadata?: { httpStatusCode?: number } };
    return { status: err.$metadata?.httpStatusCode ?? 0, code: err.Code ?? err.name ?? String(e) };
  }
}

Deno.test("a small pool survives a write/delete loop of 10x its capacity, and full is 507 until space is freed", async (t) => {
  const dataDir = await Deno.makeTempDir({ prefix: "kiseki-e2e-space-" });
  const env = { ...freeAddrs(), KISEKI_DATA_DIR: dataDir, KISEKI_POOLS: POOL };
  const server = startRole("server", env);
  let s3: S3Client | null = null;
  try {
    await waitHealthy(env.KISEKI_METRICS_ADDR, 60_000);
    s3 = new S3Client({
      endpoint: `http://${env.KISEKI_S3_ADDR}`,
      region: "us-east-1",
      forcePathStyle: true,
      credentials: await readS3Credentials(`${dataDir}.s3-credentials`),
      // Every answer is seen as sent: a 507 must not hide behind the SDK's retries.
      maxAttempts: 1,
    });
    const client = s3;
    const metrics = env.KISEKI_METRICS_ADDR;
    await client.send(new CreateBucketCommand({ Bucket: "space" }));
    const put = (key: string, body: Uint8Array) =>
      attempt(() => client.send(new PutObjectCommand({ Bucket: "space", Key: key, Body: body })));
    const del = (key: string) =>
      attempt(() => client.send(new DeleteObjectCommand({ Bucket: "space", Key: key })));
    const { capacity } = await poolGauges(metrics);
    assert.equal(capacity, DEVICES * 15 * SEGMENT_BYTES, "4 MiB devices hold 15 segments each");

    await t.step(
      "a write/overwrite/delete loop moves 10x the capacity without a refusal",
      async () => {
        const target = CAPACITY_MULTIPLE * capacity;
        let moved = 0;
        let puts = 0;
        const failures: string[] = [];
        const started = Date.now();
        await Promise.all(Array.from({ length: WORKERS }, async (_, w) => {
          const prng = new Prng(0x5ace + w);
          for (let round = 0; moved < target; round++) {
            if (puts >= LOOP_PUTS_MAX || Date.now() - started > LOOP_MS_MAX) return;
            // Each key is written twice (the second an overwrite), then every key deleted.
            for (let pass = 0; pass < 2; pass++) {
              for (let k = 0; k < KEYS_PER_WORKER; k++) {
                const body = prng.bytes(64 * KIB + prng.nextInt(448 * KIB));
                const r = await put(`loop/w${w}/k${k}`, body);
                puts++;
                if (r.status !== 200) failures.push(`PUT ${r.status} ${r.code}`);
                else moved += body.length;
              }
            }
            for (let k = 0; k < KEYS_PER_WORKER; k++) {
              const r = await del(`loop/w${w}/k${k}`);
              if (r.status !== 204) failures.push(`DELETE ${r.status} ${r.code}`);
            }
            if (failures.length > 0) return;
          }
        }));
        const seconds = (Date.now() - started) / 1000;
        console.log(
          `loop: ${(moved / MIB).toFixed(0)} MiB in ${puts} PUTs over ${seconds.toFixed(1)} s ` +
            `(${(moved / 1e6 / seconds).toFixed(1)} MB/s) on a pool of ${capacity / MIB} MiB`,
        );
        assert.deepEqual(failures.slice(0, 5), [], "no request was refused");
        assert.ok(moved >= target, `moved ${moved} of ${target} bytes within the bounds`);
      },
    );

    await t.step("after the deletes, used bytes come back to live bytes", async () => {
      const deadline = Date.now() + RECLAIM_MS_MAX;
      let g = await poolGauges(metrics);
      const settled = (g: PoolGauges) => g.live === 0 && g.used - g.live <= DEVICES * SEGMENT_BYTES;
      while (!settled(g) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 200));
        g = await poolGauges(metrics);
      }
      assert.ok(
        g.used - g.live <= DEVICES * SEGMENT_BYTES,
        `used ${g.used} live ${g.live}: more than a segment per device not reclaimed`,
      );
      assert.equal(g.live, 0, "every object was deleted");
    });

    await t.step(
      "a full pool answers 507 InsufficientStorage and keeps serving reads",
      async () => {
        const prng = new Prng(0xf111);
        const written: string[] = [];
        let refusal: { status: number; code: string } | null = null;
        const attemptsMax = Math.ceil((2 * capacity) / FILL_OBJECT_BYTES);
        for (let i = 0; i < attemptsMax && refusal === null; i++) {
          const key = `fill/${i}`;
          const r = await put(key, prng.bytes(FILL_OBJECT_BYTES));
          if (r.status === 200) written.push(key);
          else refusal = r;
        }
        assert.ok(refusal !== null, `the pool took ${attemptsMax} objects of twice its size`);
        assert.deepEqual(refusal, { status: 507, code: "InsufficientStorage" });
        assert.ok(written.length > 0);
        // Still refused (not a passing hiccup), and reads still work.
        assert.equal((await put("fill/again", prng.bytes(FILL_OBJECT_BYTES))).status, 507);
        const got = await client.send(new GetObjectCommand({ Bucket: "space", Key: written[0]! }));
        assert.equal((await got.Body!.transformToByteArray()).length, FILL_OBJECT_BYTES);

        for (const key of written) assert.equal((await del(key)).status, 204);
        const deadline = Date.now() + RECLAIM_MS_MAX;
        let after = await put("fill/after", prng.bytes(FILL_OBJECT_BYTES));
        while (after.status !== 200 && Date.now() < deadline) {
          assert.equal(after.status, 507, `refused with ${after.status} ${after.code}`);
          await new Promise((r) => setTimeout(r, 200));
          after = await put("fill/after", prng.bytes(FILL_OBJECT_BYTES));
        }
        assert.equal(after.status, 200, "writes are taken again once space is reclaimed");
      },
    );

    await t.step("kiseki admin pools shows capacity, used and live bytes", async () => {
      const out = await run(Deno.execPath(), [
        "run",
        "--quiet",
        ...flagsFor("admin", { KISEKI_DATA_DIR: dataDir }),
        `${ROOT}mod/role/admin.ts`,
        "pools",
        "--json",
        "--node",
        metrics,
      ], { env: { KISEKI_DATA_DIR: dataDir } });
      assert.equal(out.code, 0, out.stderr);
      const report = JSON.parse(out.stdout) as {
        pools: { name: string; capacityBytes: number; usedBytes: number; liveBytes: number }[];
      };
      const pool = report.pools.find((p) => p.name === "default")!;
      assert.equal(pool.capacityBytes, capacity);
      assert.ok(pool.liveBytes > 0 && pool.usedBytes >= pool.liveBytes);
      const table = await run(Deno.execPath(), [
        "run",
        "--quiet",
        ...flagsFor("admin", { KISEKI_DATA_DIR: dataDir }),
        `${ROOT}mod/role/admin.ts`,
        "pools",
        "--node",
        metrics,
      ], { env: { KISEKI_DATA_DIR: dataDir } });
      assert.equal(table.code, 0, table.stderr);
      assert.match(table.stdout, /^pool\s+durability\s+capacity\s+used\s+live/m);
      assert.match(table.stdout, /^default\s+ec:4\+2\s/m);
    });
  } finally {
    s3?.destroy();
    const code = await server.stop();
    if (code !== 0) console.error(server.stderr());
    await Deno.remove(dataDir, { recursive: true });
  }
});
