import assert from "node:assert/strict";
import { AssertionError, Prng } from "../base/mod.ts";
import { injectCommitFailure, type KvEnv, lmdbPermissionFlags } from "../disk/mod.ts";
import { createLogger, type Logger } from "../obs/mod.ts";
import { MemoryRaftLogStore } from "../raft/mod.ts";
import type { Entry, RaftLogStore, Snapshot } from "../raft/mod.ts";
import {
  LmdbRaftLogStore,
  type LmdbRaftLogStoreOptions,
  openRaftLogEnv,
  RAFT_LOG_TABLE,
  raftEntryKey,
  RaftLogCorruptError,
} from "./lmdb_raft_store.ts";
import {
  defineRaftLogStoreConformance,
  makeEntries,
  type RaftLogStoreHarness,
  readAll,
} from "./raft_store_conformance.ts";

const ENV_MAP_SIZE_BYTES = 16 << 20;
const SHARD = 7;

function captureLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    logger: createLogger({ level: "info", format: "text", sink: { write: (l) => lines.push(l) } }),
  };
}

/** A data directory with the raft environment and one shard's store, reopenable. */
class LmdbHarness implements RaftLogStoreHarness {
  store!: LmdbRaftLogStore;
  env!: KvEnv;
  readonly dir: string;
  readonly options: Omit<LmdbRaftLogStoreOptions, "env">;
  readonly wal: RaftWalOption;

  private constructor(
    dir: string,
    options: Omit<LmdbRaftLogStoreOptions, "env">,
    wal: RaftWalOption,
  ) {
    this.dir = dir;
    this.options = options;
    this.wal = wal;
  }

  /** `wal`: the raft environment's write-ahead log (default on), as openRaftLogEnv() takes it. */
  static async create(
    options: Partial<Omit<LmdbRaftLogStoreOptions, "env">> = {},
    wal: RaftWalOption = true,
  ): Promise<LmdbHarness> {
    const dir = await Deno.makeTempDir({ prefix: "kiseki-raft-" });
    const h = new LmdbHarness(dir, {
      shardId: SHARD,
      logger: captureLogger().logger,
      ...options,
    }, wal);
    h.env = await openRaftLogEnv({
      dataDir: dir,
      pageKeys: null,
      mapSizeBytes: ENV_MAP_SIZE_BYTES,
      wal,
      logger: captureLogger().logger,
    });
    h.store = await LmdbRaftLogStore.open({ env: h.env, ...h.options });
    return h;
  }

  /** Closes store and environment (staged writes are dropped, as in a crash). */
  async shut(): Promise<void> {
    await this.store.close();
    await this.env.close();
  }

  async reopenEnv(): Promise<KvEnv> {
    this.env = await openRaftLogEnv({
      dataDir: this.dir,
      pageKeys: null,
      mapSizeBytes: ENV_MAP_SIZE_BYTES,
      wal: this.wal,
      logger: captureLogger().logger,
    });
    return this.env;
  }

  async restart(overrides: Partial<LmdbRaftLogStoreOptions> = {}): Promise<LmdbRaftLogStore> {
    await this.shut();
    await this.reopenEnv();
    this.store = await LmdbRaftLogStore.open({
      env: this.env,
      ...this.options,
      initial: undefined,
      ...overrides,
    });
    return this.store;
  }

  async close(): Promise<void> {
    await this.shut();
    await Deno.remove(this.dir, { recursive: true });
  }
}

type RaftWalOption = NonNullable<Parameters<typeof openRaftLogEnv>[0]["wal"]>;

defineRaftLogStoreConformance(
  "LmdbRaftLogStore behind the WAL",
  (initial) => LmdbHarness.create({ initial }),
);
defineRaftLogStoreConformance(
  "LmdbRaftLogStore behind the WAL, small segments checkpointed at once",
  (initial) =>
    LmdbHarness.create({ initial, cacheEntriesMax: 0 }, {
      segmentBytes: 64 << 10,
      checkpointDelayMs: 0,
    }),
);
defineRaftLogStoreConformance(
  "LmdbRaftLogStore on lmdb alone",
  (initial) => LmdbHarness.create({ initial }, false),
);
defineRaftLogStoreConformance(
  "LmdbRaftLogStore without a cache",
  (initial) => LmdbHarness.create({ initial, cacheEntriesMax: 0 }),
);

// ---- recovery ------------------------------------------------------------------------------

Deno.test("LmdbRaftLogStore matches MemoryRaftLogStore through random writes and restarts", async () => {
  const prng = new Prng(1234);
  const h = await LmdbHarness.create({
    cacheEntriesMax: 8,
    cacheBytesMax: 512,
    tailVerifyEntries: 16,
  });
  let memory = new MemoryRaftLogStore();
  let lmdb: RaftLogStore = h.store;
  let restarts = 0;
  try {
    for (let step = 0; step < 600; step++) {
      const first = memory.firstIndex();
      const last = memory.lastIndex();
      const { hardState } = memory.initialState();
      const snapIndex = memory.snapshot().meta.index;
      const term = Math.max(hardState.term, last >= first - 1 ? memory.term(last) : 0);
      const roll = prng.nextInt(100);
      const both = (fn: (s: RaftLogStore) => void): void => {
        fn(memory);
        fn(lmdb);
      };
      if (roll < 40) {
        // Append, possibly replacing an uncommitted suffix, never a committed entry.
        const lowest = Math.max(first, hardState.commit + 1);
        const from = lowest + prng.nextInt(last + 2 - lowest);
        const newTerm = term + prng.nextInt(2);
        const count = 1 + prng.nextInt(6);
        const entries: Entry[] = [];
        for (let i = 0; i < count; i++) {
          entries.push({
            term: newTerm,
            index: from + i,
            type: prng.nextInt(4) === 0 ? "conf_change" : "normal",
            data: prng.bytes(prng.nextInt(200)),
          });
        }
        both((s) => s.append(entries));
      } else if (roll < 55) {
        const commit = hardState.commit + prng.nextInt(last - hardState.commit + 1);
        const vote = prng.nextInt(4);
        both((s) => s.setHardState({ term, vote, commit }));
      } else if (roll < 62 && hardState.commit > snapIndex) {
        const index = snapIndex + 1 + prng.nextInt(hardState.commit - snapIndex);
        const data = prng.bytes(prng.nextInt(300));
        both((s) => s.createSnapshot(index, { voters: [1, 2], learners: [] }, data));
      } else if (roll < 70 && snapIndex > first - 1) {
        const index = first + prng.nextInt(snapIndex - first + 1);
        both((s) => s.compact(index));
      } else if (roll < 73) {
        const index = Math.max(snapIndex, last) + 1 + prng.nextInt(5);
        const snapshot: Snapshot = {
          meta: { index, term: term + 1, conf: { voters: [1, 2, 3], learners: [4] } },
          data: prng.bytes(prng.nextInt(100)),
        };
        both((s) => s.applySnapshot(snapshot));
        both((s) => s.setHardState({ term: term + 1, vote: 0, commit: index }));
      } else if (roll < 93) {
        await Promise.all([memory.persist(), lmdb.persist()]);
      } else {
        memory = memory.cloneDurable();
        lmdb = await h.restart();
        restarts++;
      }
      assert.deepEqual(readAll(lmdb), readAll(memory), `step ${step}`);
    }
    assert.ok(restarts > 10);
  } finally {
    await h.close();
  }
});

Deno.test("LmdbRaftLogStore keeps shards apart in one environment and commits them together", async () => {
  const h = await LmdbHarness.create({ shardId: 1 });
  try {
    const others = await Promise.all(
      [2, 0xffff_ffff].map((shardId) => LmdbRaftLogStore.open({ env: h.env, shardId })),
    );
    const stores = [h.store, ...others];
    stores.forEach((s, i) => s.append(makeEntries(1, 5 + i, 1 + i)));
    await Promise.all(stores.map((s) => s.persist()));
    await assert.rejects(LmdbRaftLogStore.open({ env: h.env, shardId: 2 }), AssertionError);
    await Promise.all(others.map((s) => s.close()));
    await h.shut();
    const env = await h.reopenEnv();
    for (const [i, shardId] of [1, 2, 0xffff_ffff].entries()) {
      const store = await LmdbRaftLogStore.open({ env, shardId });
      assert.equal(store.lastIndex(), 5 + i);
      assert.deepEqual(store.entries(1, 6 + i, 1 << 20), makeEntries(1, 5 + i, 1 + i));
      if (shardId === 1) h.store = store;
      else await store.close();
    }
  } finally {
    await h.close();
  }
});

Deno.test("LmdbRaftLogStore keeps its entry cache within its limits", async () => {
  const h = await LmdbHarness.create({ cacheEntriesMax: 16, cacheBytesMax: 4096 });
  try {
    const entries = Array.from({ length: 100 }, (_, i): Entry => ({
      term: 1,
      index: i + 1,
      type: "normal",
      data: new Uint8Array(100).fill(i),
    }));
    for (let i = 0; i < 100; i += 10) {
      h.store.append(entries.slice(i, i + 10));
      assert.equal(h.store.cacheStats().unstable, 10);
      await h.store.persist();
      const stats = h.store.cacheStats();
      assert.equal(stats.unstable, 0);
      assert.ok(stats.entries <= 16 && stats.bytes <= 4096, JSON.stringify(stats));
    }
    assert.ok(h.store.cacheStats().entries > 0);
    assert.deepEqual(h.store.entries(1, 101, 1 << 20), entries); // old ones from lmdb
  } finally {
    await h.close();
  }
});

Deno.test("LmdbRaftLogStore persists again after lmdb rebuilt a damaged environment", async () => {
  const h = await LmdbHarness.create({}, false);
  try {
    h.store.append(makeEntries(1, 4, 1));
    await h.store.persist();
    // lmdb finds its free list inconsistent: the environment rebuilds itself and the same
    // writes go to the fresh file; the caller sees one successful persist.
    injectCommitFailure(h.env, "MDB_BAD_TXN: freelist entry 5 had bad/duplicate entries");
    h.store.append(makeEntries(5, 9, 1));
    await h.store.persist();
    assert.equal(h.env.rebuilds, 1);
    assert.deepEqual(h.store.entries(1, 10, 1 << 20), makeEntries(1, 9, 1));
    const store = await h.restart();
    assert.deepEqual(store.entries(1, 10, 1 << 20), makeEntries(1, 9, 1));
    // Something else (an I/O error) still stops the shard.
    injectCommitFailure(h.env, "Input/output error");
    h.store.append(makeEntries(10, 10, 1));
    await assert.rejects(h.store.persist(), /Input\/output error/);
    assert.throws(() => h.store.lastIndex(), RaftLogCorruptError);
  } finally {
    await h.close();
  }
});

Deno.test("LmdbRaftLogStore refuses further use after a failed persist", async () => {
  const h = await LmdbHarness.create();
  try {
    const real = h.env;
    const failing: KvEnv = {
      path: real.path,
      table: (name) => real.table(name),
      transaction: () => Promise.reject(new Error("injected: device gone")),
      rekey: () => real.rekey(),
      rebuild: () => real.rebuild(),
      settled: () => real.settled(),
      rebuilds: 0,
      close: () => real.close(),
    };
    const store = await LmdbRaftLogStore.open({
      env: failing,
      shardId: 99,
      logger: captureLogger().logger,
    });
    store.append(makeEntries(1, 3, 1));
    await assert.rejects(store.persist(), /device gone/);
    assert.throws(() => store.lastIndex(), RaftLogCorruptError);
    await assert.rejects(store.persist(), RaftLogCorruptError);
    await store.close();
  } finally {
    await h.close();
  }
});

// ---- damaged records ------------------------------------------------------------------------

/** Writes entries 1..10 (commit 5), then lets `damage` edit raw records before a reopen. */
async function damaged(
  damage: (env: KvEnv) => Promise<void>,
  options: Partial<LmdbRaftLogStoreOptions> = {},
): Promise<{ h: LmdbHarness; open: () => Promise<LmdbRaftLogStore>; lines: string[] }> {
  const h = await LmdbHarness.create();
  h.store.append(makeEntries(1, 10, 1));
  h.store.setHardState({ term: 1, vote: 1, commit: 5 });
  await h.store.persist();
  await h.shut();
  await damage(await h.reopenEnv());
  const { logger, lines } = captureLogger();
  const open = async () => {
    h.store = await LmdbRaftLogStore.open({ env: h.env, shardId: SHARD, logger, ...options });
    return h.store;
  };
  return { h, open, lines };
}

async function editEntry(
  env: KvEnv,
  index: number,
  edit: (value: Uint8Array) => Uint8Array | null,
): Promise<void> {
  const table = env.table(RAFT_LOG_TABLE);
  const key = raftEntryKey(SHARD, index);
  const value = table.getSync(key);
  assert.ok(value, `entry ${index} exists`);
  const edited = edit(value.slice());
  await env.transaction((txn) => {
    if (edited === null) txn.delete(table, key);
    else txn.put(table, key, edited);
  });
}

const flipLastByte = (v: Uint8Array): Uint8Array => {
  v[v.length - 1]! ^= 0x10;
  return v;
};

Deno.test("LmdbRaftLogStore.open() cuts a corrupted last entry off and logs it", async () => {
  const { h, open, lines } = await damaged((env) => editEntry(env, 10, flipLastByte));
  try {
    const store = await open();
    assert.equal(store.lastIndex(), 9);
    assert.deepEqual(store.entries(1, 10, 1 << 20), makeEntries(1, 9, 1));
    assert.equal(h.env.table(RAFT_LOG_TABLE).getSync(raftEntryKey(SHARD, 10)), undefined);
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /WARN.*cut a damaged tail.*entry 10 fails its checksum.*fromIndex=10/);
    // The cut is durable: the next open finds a clean log and says nothing.
    await h.restart({ logger: captureLogger().logger });
    assert.equal(h.store.lastIndex(), 9);
    assert.equal(lines.length, 1);
  } finally {
    await h.close();
  }
});

Deno.test("LmdbRaftLogStore.open() cuts from a torn entry inside the tail, and after a gap", async () => {
  const torn = await damaged((env) => editEntry(env, 8, (v) => v.subarray(0, 6)));
  try {
    const store = await torn.open();
    assert.equal(store.lastIndex(), 7);
    assert.match(torn.lines[0]!, /entry 8 is 6 bytes, torn.*entries=3/);
  } finally {
    await torn.h.close();
  }
  const gap = await damaged((env) => editEntry(env, 7, () => null));
  try {
    const store = await gap.open();
    assert.equal(store.lastIndex(), 6);
    assert.match(gap.lines[0]!, /entries 7\.\.7 are missing/);
  } finally {
    await gap.h.close();
  }
  // A bad checksum field (not the data) is caught the same way.
  const badCrc = await damaged((env) =>
    editEntry(env, 9, (v) => {
      v[12]! ^= 1;
      return v;
    })
  );
  try {
    assert.equal((await badCrc.open()).lastIndex(), 8);
  } finally {
    await badCrc.h.close();
  }
});

Deno.test("LmdbRaftLogStore.open() refuses a damaged entry at or below the commit index", async () => {
  const { h, open } = await damaged((env) => editEntry(env, 5, flipLastByte));
  try {
    await assert.rejects(open, (e: unknown) =>
      e instanceof RaftLogCorruptError &&
      /entry 5 fails its checksum, at or below the commit index 5 in .*; refusing/.test(e.message));
    // Nothing was cut: the evidence stays for an operator.
    assert.ok(h.env.table(RAFT_LOG_TABLE).getSync(raftEntryKey(SHARD, 10)));
  } finally {
    await h.close();
  }
});

Deno.test("LmdbRaftLogStore.open() refuses a damaged hard state and lost committed entries", async () => {
  const hs = await damaged(async (env) => {
    const table = env.table(RAFT_LOG_TABLE);
    const key = Uint8Array.of(0, 0, 0, SHARD, 0x01);
    const value = table.getSync(key)!.slice();
    value[value.length - 1]! ^= 1;
    await env.transaction((txn) => txn.put(table, key, value));
  });
  try {
    await assert.rejects(hs.open, /hard state record is damaged/);
  } finally {
    await hs.h.close();
  }
  const lost = await damaged(async (env) => {
    for (let i = 1; i <= 10; i++) await editEntry(env, i, () => null);
  });
  try {
    await assert.rejects(lost.open, /commit index 5 is past the last entry 0/);
  } finally {
    await lost.h.close();
  }
});

Deno.test("LmdbRaftLogStore never returns a damaged entry outside the verified tail", async () => {
  const { h, open } = await damaged((env) => editEntry(env, 2, flipLastByte), {
    tailVerifyEntries: 3,
  });
  try {
    const store = await open();
    assert.equal(store.lastIndex(), 10);
    assert.deepEqual(store.entries(3, 11, 1 << 20), makeEntries(3, 10, 1));
    assert.throws(() => store.entries(1, 11, 1 << 20), RaftLogCorruptError);
    assert.throws(() => store.term(2), RaftLogCorruptError);
  } finally {
    await h.close();
  }
});

Deno.test("LmdbRaftLogStore.snapshot() refuses damaged snapshot data", async () => {
  const h = await LmdbHarness.create();
  try {
    h.store.append(makeEntries(1, 4, 1));
    h.store.setHardState({ term: 1, vote: 0, commit: 4 });
    h.store.createSnapshot(3, { voters: [1], learners: [] }, Uint8Array.of(1, 2, 3, 4));
    await h.store.persist();
    const table = h.env.table(RAFT_LOG_TABLE);
    const key = Uint8Array.of(0, 0, 0, SHARD, 0x04);
    await h.env.transaction((txn) => txn.put(table, key, Uint8Array.of(1, 2, 3, 5)));
    await h.restart();
    assert.throws(() => h.store.snapshot(), /snapshot 3 data fails its checksum/);
  } finally {
    await h.close();
  }
});

// ---- crashes of a real process ---------------------------------------------------------------

const CRASH_SHARDS = [1, 2];

/** Deterministic entry content, so the parent can check what the child wrote. */
function crashEntry(shardId: number, index: number): Entry {
  const data = new Uint8Array((index * 37) % 700);
  for (let j = 0; j < data.length; j++) data[j] = (index * 13 + shardId + j) & 0xff;
  return { term: 1 + Math.floor(index / 50), index, type: "normal", data };
}

function spawnChild(mode: string, dir: string, seed = 0): Deno.ChildProcess {
  const nodeModulesDir = new URL("../../node_modules", import.meta.url).pathname.replace(/\/$/, "");
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      "--quiet",
      ...lmdbPermissionFlags({ nodeModulesDir, dataDirs: [dir] }),
      new URL(import.meta.url).pathname,
      mode,
      dir,
      String(seed),
    ],
    cwd: new URL("../..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Reads the child's stdout line by line until `stop(line)` says so, then kills it (-9). */
async function killWhen(
  child: Deno.ChildProcess,
  stop: (line: string) => boolean,
): Promise<string[]> {
  const lines: string[] = [];
  let buffered = "";
  let killed = false;
  const decoder = new TextDecoder();
  const timeout = setTimeout(() => {
    killed = true;
    child.kill("SIGKILL");
  }, 60_000);
  for await (const chunk of child.stdout) {
    buffered += decoder.decode(chunk, { stream: true });
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      lines.push(line);
      if (!killed && stop(line)) {
        killed = true;
        child.kill("SIGKILL");
      }
    }
  }
  clearTimeout(timeout);
  const status = await child.status;
  const stderr = new TextDecoder().decode(
    await new Response(child.stderr).arrayBuffer(),
  );
  assert.equal(status.signal, "SIGKILL", `child ended by itself: ${stderr}`);
  // A partial last line was being written when the kill came: not an acknowledgement.
  return lines;
}

Deno.test("LmdbRaftLogStore keeps every acknowledged write when its process is killed mid-stream", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-raft-crash-" });
  try {
    // Three lives of one data directory: each child continues the log its predecessor left.
    const acked = new Map<number, number>();
    for (const killAfterAcks of [150, 311, 77]) {
      const child = spawnChild("stream", dir, killAfterAcks);
      let acks = 0;
      const lines = await killWhen(child, (l) => l.startsWith("ack ") && ++acks >= killAfterAcks);
      for (const line of lines) {
        const [, shard, last] = line.split(" ");
        acked.set(Number(shard), Math.max(acked.get(Number(shard)) ?? 0, Number(last)));
      }
      assert.equal(acked.size, CRASH_SHARDS.length);
      const env = await openRaftLogEnv({
        dataDir: dir,
        pageKeys: null,
        mapSizeBytes: ENV_MAP_SIZE_BYTES,
        logger: captureLogger().logger,
      });
      try {
        for (const shardId of CRASH_SHARDS) {
          const store = await LmdbRaftLogStore.open({ env, shardId, tailVerifyEntries: 1 << 20 });
          const last = store.lastIndex();
          assert.ok(last >= acked.get(shardId)!, `shard ${shardId}: ${last} < acked`);
          assert.ok(store.initialState().hardState.commit >= acked.get(shardId)!);
          for (let index = 1; index <= last; index++) {
            assert.deepEqual(store.entries(index, index + 1, 1 << 20), [
              crashEntry(shardId, index),
            ]);
          }
          await store.close();
        }
      } finally {
        await env.close();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("LmdbRaftLogStore loses writes staged but not persisted when its process is killed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-raft-crash-" });
  try {
    const child = spawnChild("staged", dir);
    const lines = await killWhen(child, (line) => line.startsWith("staged"));
    assert.deepEqual(lines, ["persisted 10", "staged 20"]);
    const env = await openRaftLogEnv({
      dataDir: dir,
      pageKeys: null,
      mapSizeBytes: ENV_MAP_SIZE_BYTES,
      logger: captureLogger().logger,
    });
    try {
      const store = await LmdbRaftLogStore.open({ env, shardId: 1 });
      assert.equal(store.lastIndex(), 10);
      assert.deepEqual(store.initialState().hardState, { term: 1, vote: 1, commit: 10 });
      assert.deepEqual(
        store.entries(1, 11, 1 << 20),
        Array.from({ length: 10 }, (_, i) => crashEntry(1, i + 1)),
      );
      await store.close();
    } finally {
      await env.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// The crash child: `deno run <lmdb flags> lmdb_raft_store_test.ts <mode> <dir>`.
if (import.meta.main) {
  const [mode, dir, seed] = Deno.args;
  const env = await openRaftLogEnv({
    dataDir: dir!,
    pageKeys: null,
    mapSizeBytes: ENV_MAP_SIZE_BYTES,
  });
  const quiet = captureLogger().logger;
  const encoder = new TextEncoder();
  const say = (line: string): void => void Deno.stdout.writeSync(encoder.encode(line + "\n"));
  if (mode === "stream") {
    // Both shards persist in the same turn (one group commit); acknowledge only after.
    const stores = await Promise.all(
      CRASH_SHARDS.map((shardId) => LmdbRaftLogStore.open({ env, shardId, logger: quiet })),
    );
    const prng = new Prng(Number(seed));
    for (let round = 0;; round++) {
      await Promise.all(stores.map(async (store) => {
        const from = store.lastIndex() + 1;
        const to = from + prng.nextInt(8);
        const entries: Entry[] = [];
        for (let i = from; i <= to; i++) entries.push(crashEntry(store.shardId, i));
        store.append(entries);
        store.setHardState({ term: crashEntry(store.shardId, to).term, vote: 1, commit: to });
        await store.persist();
        say(`ack ${store.shardId} ${to}`);
      }));
    }
  } else if (mode === "staged") {
    const store = await LmdbRaftLogStore.open({ env, shardId: 1, logger: quiet });
    store.append(Array.from({ length: 10 }, (_, i) => crashEntry(1, i + 1)));
    store.setHardState({ term: 1, vote: 1, commit: 10 });
    await store.persist();
    say("persisted 10");
    store.append(Array.from({ length: 10 }, (_, i) => crashEntry(1, i + 11)));
    store.setHardState({ term: 1, vote: 1, commit: 20 });
    say("staged 20");
    setInterval(() => {}, 1000); // wait for the kill
  }
}
