// `deno task stress:kv [plain|sealed] [seconds]`: a sustained write load on one lmdb
// environment through mod/disk/lmdb.ts, shaped like the chunk index under overwrite PUTs:
// concurrent transactions putting and deleting records of 40 B to 12 KiB over a bounded key
// space (so pages are freed and reused all the time), with point reads and short ranges in
// between (which hold read snapshots). It counts failed commits (all must be 0) and exits
// non-zero on any. Not a benchmark: a campaign for the storage layer's stability under load.

import { KV_PAGE_KEY_BYTES, KvError, type KvPageKeys, openKvEnv } from "../../mod/disk/mod.ts";
import { Prng } from "../../mod/base/mod.ts";

const mode = Deno.args[0] ?? "sealed";
const seconds = Number(Deno.args[1] ?? "120");
if (mode !== "plain" && mode !== "sealed") {
  console.error("usage: stress:kv [plain|sealed] [seconds]");
  Deno.exit(2);
}
const WRITERS = 16;
const KEYS = Number(Deno.env.get("KV_STRESS_KEYS") ?? "20000");
const TXNS_MAX = 50_000_000;

/** Page keys kept raw beside the scratch environment (the node seals them: mod/keys). */
class ScratchPageKeys implements KvPageKeys {
  readonly keyFile = "scratch.key";
  async keyFor(dir: string): Promise<Uint8Array> {
    try {
      return await Deno.readFile(`${dir}/${this.keyFile}`);
    } catch {
      const key = crypto.getRandomValues(new Uint8Array(KV_PAGE_KEY_BYTES));
      await this.store(dir, key);
      return key;
    }
  }
  async store(dir: string, key: Uint8Array): Promise<void> {
    await Deno.writeFile(`${dir}/${this.keyFile}`, key, { mode: 0o600 });
  }
  async destroy(dir: string): Promise<void> {
    await Deno.remove(`${dir}/${this.keyFile}`).catch(() => {});
  }
}

const dir = await Deno.makeTempDir({ prefix: `kiseki-kv-stress-${mode}-` });
const env = await openKvEnv({
  path: dir,
  pageKeys: mode === "sealed" ? new ScratchPageKeys() : null,
  mapSizeBytes: Number(Deno.env.get("KV_STRESS_MAP_MIB") ?? "64") << 20,
});
const main = env.table("main");
const queue = env.table("queue");
const deadline = Date.now() + seconds * 1000;
let commits = 0;
let failures = 0;
let reads = 0;
const causes = new Map<string, number>();

function keyOf(n: number): Uint8Array {
  const k = new Uint8Array(32);
  new DataView(k.buffer).setUint32(0, Math.imul(n, 0x9e37_79b1) >>> 0);
  new DataView(k.buffer).setUint32(28, n);
  return k;
}

async function writer(seed: number): Promise<void> {
  const prng = new Prng(seed);
  const value = new Uint8Array(12 << 10);
  while (Date.now() < deadline && commits + failures < TXNS_MAX) {
    const ops = 1 + prng.nextInt(8);
    try {
      await env.transaction((txn) => {
        for (let i = 0; i < ops; i++) {
          const n = prng.nextInt(KEYS);
          if (prng.nextInt(10) < 3) {
            txn.delete(main, keyOf(n));
            txn.put(queue, keyOf(n), value.subarray(0, 8));
          } else {
            const len = prng.nextInt(10) === 0 ? 4096 + prng.nextInt(8192) : 40 + prng.nextInt(400);
            prng.fill(value.subarray(0, len));
            txn.put(main, keyOf(n), value.subarray(0, len));
            txn.delete(queue, keyOf(n));
          }
        }
      });
      commits++;
    } catch (e) {
      failures++;
      const cause = e instanceof KvError ? e.message : String(e);
      causes.set(cause.slice(0, 160), (causes.get(cause.slice(0, 160)) ?? 0) + 1);
      if (failures > 100) return;
    }
    // Reads between writes, as the gateway's lookups are.
    for (let i = 0; i < 4; i++) {
      main.getSync(keyOf(prng.nextInt(KEYS)));
      reads++;
    }
    if (prng.nextInt(16) === 0) {
      for (const _ of main.range({ start: keyOf(prng.nextInt(KEYS)), limit: 32 })) reads++;
    }
  }
}

const started = performance.now();
const progress = setInterval(() => {
  console.log(`${mode}: ${commits} commits, ${failures} failed, ${reads} reads`);
}, 15_000);
await Promise.all(Array.from({ length: WRITERS }, (_, i) => writer(0x5eed + i)));
clearInterval(progress);
const size = (await Deno.stat(`${dir}/data.mdb`)).size;
await env.close().catch((e) => console.log("close:", String(e)));
await Deno.remove(dir, { recursive: true });
const secs = (performance.now() - started) / 1000;
console.log(
  `${mode}: ${commits} commits (${
    Math.round(commits / secs)
  }/s), ${failures} failed, ${reads} reads, file ${(size / 2 ** 20).toFixed(1)} MiB`,
);
for (const [cause, n] of causes) console.log(`  ${n} x ${cause}`);
Deno.exit(failures === 0 ? 0 : 1);
