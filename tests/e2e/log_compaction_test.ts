// Log compaction end to end: overwrites of a few keys through the engine keep the Raft log
// to a bounded window behind its snapshot and raft/ near the live data, and a restart from
// the compacted log serves every key's last value.

import assert from "node:assert/strict";
import { startEngineStack } from "../../mod/role/engine_stack.ts";
import { createLogger } from "../../mod/obs/mod.ts";
import { OVERWRITE_TENANT, overwriteValue, runOverwrites } from "./_overwrites.ts";

const KEYS = 50;
const OVERWRITES = 6_000;
const VALUE_BYTES = 1024;
const SNAPSHOT_ENTRIES = 256;
const MARGIN_ENTRIES = 256;

Deno.test("log compaction keeps the raft log bounded under overwrites and restarts from its snapshot", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "kiseki-compaction-" });
  try {
    const result = await runOverwrites({
      dataDir,
      keys: KEYS,
      overwrites: OVERWRITES,
      valueBytes: VALUE_BYTES,
      concurrency: 8,
      compaction: {
        snapshotEntries: SNAPSHOT_ENTRIES,
        marginEntries: MARGIN_ENTRIES,
        intervalMs: 50,
      },
      // raft/ is measured once the WAL's checkpoints have released what they cover.
      settleMs: 10_000,
    });
    console.log(
      `${OVERWRITES} overwrites of ${KEYS} keys x ${VALUE_BYTES} B in ${
        result.seconds.toFixed(1)
      } s: ` +
        `raft/ ${result.raftBytes} B, views/ ${result.viewBytes} B, live ${result.liveBytes} B, ` +
        `logs ${JSON.stringify(result.logs)}`,
    );
    const written = OVERWRITES * VALUE_BYTES;
    // The namespace lives on one shard; the others saw no writes.
    const busy = result.logs.filter((l) => l.lastIndex > OVERWRITES / 2);
    assert.equal(busy.length, 1, "one shard orders the namespace");
    for (const log of busy) {
      assert(log.snapshotIndex > OVERWRITES / 2, `shard ${log.shardId} took no recent snapshot`);
      // At most one snapshot interval past the last snapshot, plus the margin behind it
      // and what arrived during the last pass.
      assert(
        log.lastIndex - log.firstIndex < SNAPSHOT_ENTRIES * 4 + MARGIN_ENTRIES,
        `shard ${log.shardId} keeps ${log.lastIndex - log.firstIndex + 1} entries`,
      );
    }
    assert(
      result.raftBytes < written / 3,
      `raft/ holds ${result.raftBytes} B after ${written} B of overwrites`,
    );

    // A restart replays only the log after the snapshot; the views hold the rest.
    const stack = await startEngineStack({
      dataDir,
      logger: createLogger({ level: "warn", format: "text", sink: { write: () => {} } }),
      pool: { devices: 6, deviceSizeBytes: 256 << 20, segmentSizeBytes: 8 << 20 },
    });
    try {
      await stack.caughtUp();
      const ns = stack.engine.namespace(OVERWRITE_TENANT, "overwrites");
      const lastRound = Math.floor((OVERWRITES - 1) / KEYS);
      for (let key = 0; key < KEYS; key++) {
        const round = key <= (OVERWRITES - 1) % KEYS ? lastRound : lastRound - 1;
        const got = await stack.engine.getObject(ns, `k${key}`);
        const body = new Uint8Array(await new Response(got.body).arrayBuffer());
        assert.deepEqual(body, overwriteValue(key, round, VALUE_BYTES), `k${key}`);
      }
    } finally {
      await stack.close();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});
