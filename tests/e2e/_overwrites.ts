// Many overwrites of few small keys through a real engine stack (lmdb Raft log, views,
// chunk store), then the size of raft/ next to the live data. Shared by the log compaction
// test (short) and `deno task campaign:compaction` (1,000,000 overwrites, by hand).

import { type LocalMetadataPlane, startEngineStack } from "../../mod/role/engine_stack.ts";
import { createLogger } from "../../mod/obs/mod.ts";

export const OVERWRITE_TENANT: Uint8Array = Uint8Array.from([0x6f, ...new Array(14).fill(0), 9]);

export interface OverwriteOptions {
  dataDir: string;
  keys: number;
  overwrites: number;
  valueBytes: number;
  concurrency: number;
  compaction?: { snapshotEntries?: number; marginEntries?: number; intervalMs?: number };
  /** Called every `every` overwrites with the count done. */
  progress?: { every: number; report: (done: number, raftBytes: number) => void };
  /**
   * How long to let the background work (the log's checkpoints releasing WAL segments,
   * compaction) finish before raft/ is measured: until it stops shrinking for a second, at
   * most this long (default 0: measured at once).
   */
  settleMs?: number;
}

/** The size of `dir` once it has stopped shrinking for a second, or after `maxMs`. */
async function settledBytes(dir: string, maxMs: number): Promise<number> {
  let best = await dirBytes(dir);
  const deadline = Date.now() + maxMs;
  let since = Date.now();
  while (Date.now() < deadline && Date.now() - since < 1000) {
    await new Promise((r) => setTimeout(r, 200));
    const now = await dirBytes(dir);
    if (now < best) {
      best = now;
      since = Date.now();
    }
  }
  return best;
}

export interface OverwriteResult {
  seconds: number;
  liveBytes: number;
  raftBytes: number;
  viewBytes: number;
  /** Per shard: first and last index of the log, and its snapshot's index. */
  logs: { shardId: number; firstIndex: number; lastIndex: number; snapshotIndex: number }[];
}

/** Bytes of the files under `dir` (what they occupy on disk, sparse regions excluded). */
export async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for await (const e of Deno.readDir(dir)) {
    const path = `${dir}/${e.name}`;
    try {
      if (e.isDirectory) total += await dirBytes(path);
      else if (e.isFile) {
        const st = await Deno.stat(path);
        total += st.blocks !== null ? st.blocks * 512 : st.size;
      }
    } catch (error) {
      // Removed while the walk ran (a released WAL segment, a finished snapshot): it holds
      // nothing any more.
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  return total;
}

/** The value stored for `key` at `round` (so the last round can be checked). */
export function overwriteValue(key: number, round: number, bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  const view = new DataView(out.buffer);
  for (let i = 0; i + 8 <= bytes; i += 8) {
    view.setUint32(i, key);
    view.setUint32(i + 4, round ^ i);
  }
  return out;
}

export async function runOverwrites(options: OverwriteOptions): Promise<OverwriteResult> {
  const logger = createLogger({ level: "warn", format: "text", sink: { write: () => {} } });
  const stack = await startEngineStack({
    dataDir: options.dataDir,
    logger,
    pool: { devices: 6, deviceSizeBytes: 256 << 20, segmentSizeBytes: 8 << 20 },
    compaction: options.compaction,
  });
  const started = performance.now();
  try {
    await stack.caughtUp();
    const { engine } = stack;
    const ns = engine.namespace(OVERWRITE_TENANT, "overwrites");
    await engine.createNamespace(OVERWRITE_TENANT, "overwrites");
    let next = 0;
    const worker = async () => {
      for (;;) {
        const n = next++;
        if (n >= options.overwrites) return;
        const key = n % options.keys;
        const round = Math.floor(n / options.keys);
        await engine.putObject(
          ns,
          `k${key}`,
          overwriteValue(key, round, options.valueBytes),
        );
        const p = options.progress;
        if (p !== undefined && (n + 1) % p.every === 0) {
          p.report(n + 1, await dirBytes(`${options.dataDir}/raft`));
        }
      }
    };
    await Promise.all(Array.from({ length: options.concurrency }, worker));
    await stack.caughtUp();
    const host = (stack.metadata as LocalMetadataPlane).host;
    return {
      seconds: (performance.now() - started) / 1000,
      liveBytes: options.keys * options.valueBytes,
      raftBytes: await settledBytes(`${options.dataDir}/raft`, options.settleMs ?? 0),
      viewBytes: await dirBytes(`${options.dataDir}/views`),
      logs: host.shardIds().map((shardId) => {
        const s = host.logBounds(shardId);
        return { shardId, ...s };
      }),
    };
  } finally {
    await stack.close();
  }
}
