import assert from "node:assert/strict";
import { createLogger } from "../obs/mod.ts";
import { ecPool, Prng, randomChunk, SimHarness, type TestChunk } from "./_testing.ts";
import type { LocalChunkStore } from "./chunk_store.ts";
import { ScrubRunner, type ScrubRunnerOptions } from "./scrub_runner.ts";
import { RECORD_HEADER_BYTES } from "./segment_store.ts";

const logger = createLogger({ level: "error", format: "text", sink: { write: () => {} } });
const HOUR_MS = 3600 * 1000;

async function fill(store: LocalChunkStore, count: number): Promise<TestChunk[]> {
  const prng = new Prng(77);
  const chunks = Array.from({ length: count }, () => randomChunk(prng, 1 + prng.nextInt(30_000)));
  await Promise.all(chunks.map((c) => store.put(c.id, c.bytes)));
  return chunks;
}

/** Polls `done` (bounded by count), letting the runner's loop take its turns. */
async function until(done: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 20_000 && !done(); i++) await new Promise((r) => setTimeout(r, 1));
  assert.ok(done(), what);
}

/**
 * A sleep that records pauses and returns at once, but blocks waits between passes (an hour
 * or more) until the runner wakes them.
 */
function fakeSleep(pauses: number[], onPause?: (n: number) => void) {
  return (ms: number, signal: AbortSignal): Promise<void> => {
    if (ms < HOUR_MS || signal.aborted) {
      pauses.push(ms);
      onPause?.(pauses.length);
      // Returns on the next turn, not at once: a runner whose steps keep failing (a store
      // closed under it when a test fails) must not starve the event loop.
      return new Promise((resolve) => setTimeout(resolve, 0));
    }
    return new Promise((resolve) => signal.addEventListener("abort", () => resolve()));
  };
}

function runner(store: LocalChunkStore, options: Partial<ScrubRunnerOptions>): ScrubRunner {
  return new ScrubRunner({ store, logger, passIntervalMs: 24 * HOUR_MS, ...options });
}

Deno.test("ScrubRunner paces its reads to the rate and repairs what it finds", async () => {
  const h = await SimHarness.create(ecPool());
  try {
    const chunks = await fill(h.store, 20);
    const f = (await h.store.stat(chunks[3]!.id))!.fragments[2]!;
    h.pool.sim(h.poolIndex(f.device)).flipBits(f.offsetBytes + RECORD_HEADER_BYTES + 9, 0x10);
    const pauses: number[] = [];
    // 1000 B/s: every step reads one chunk (its budget is one second), then pauses.
    const r = runner(h.store, { rateBytesPerSecond: 1000, sleep: fakeSleep(pauses) });
    const startedMs = performance.now();
    r.start();
    await until(() => r.status().passesCompleted === 1, "the first pass completes by itself");
    // The sleeps return at once, so the pass's wall time is the time its steps took.
    const stepsMs = performance.now() - startedMs;
    const status = r.status();
    await r.stop();
    const last = status.lastPass!;
    assert.equal(last.chunksChecked, 20);
    assert.equal(last.fragmentsDamaged, 1);
    assert.equal(last.fragmentsRepaired, 1);
    assert.equal(status.state, "waiting");
    assert.equal(status.nextPassAtMs, last.startedAtMs + 24 * HOUR_MS);
    // At most one pause per one-chunk step (none after a step that took longer than its
    // budget, as on a loaded machine).
    assert.ok(pauses.length >= 1 && pauses.length <= 20, `${pauses.length} pauses`);
    const pausedMs = pauses.reduce((a, b) => a + b, 0);
    // Each pause is the step's bytes at 1000 B/s less the time the step took.
    assert.ok(pausedMs <= last.bytesChecked, `${pausedMs} <= ${last.bytesChecked}`);
    assert.ok(
      pausedMs >= last.bytesChecked - stepsMs,
      `${pausedMs} >= ${last.bytesChecked} - ${stepsMs.toFixed(0)} ms of steps`,
    );
    assert.equal((await h.store.read(chunks[3]!.id)).faults.length, 0, "repaired");
  } finally {
    await h.close();
  }
});

Deno.test("ScrubRunner resumes a pass after a restart and starts one when asked", async () => {
  const h = await SimHarness.create(ecPool());
  try {
    await fill(h.store, 20);
    const pauses: number[] = [];
    let stopping: Promise<void> | undefined;
    const first: ScrubRunner = runner(h.store, {
      rateBytesPerSecond: 1000,
      sleep: fakeSleep(pauses, (n) => {
        if (n === 7) stopping = first.stop();
      }),
    });
    first.start();
    await until(() => stopping !== undefined, "seven steps");
    await stopping;
    assert.equal(first.status().state, "stopped");
    assert.equal(first.status().pass?.chunksChecked, 7);
    const share = first.status().passProgress!;
    assert.ok(share > 0 && share < 1, `7 of 20 chunks: about a third of the id space (${share})`);
    await h.reopen();

    const second = runner(h.store, { rateBytesPerSecond: 64 << 20, sleep: fakeSleep([]) });
    assert.equal(second.status().pass?.chunksChecked, 7, "the pass survives the restart");
    second.start();
    await until(() => second.status().passesCompleted === 1, "the pass completes");
    assert.equal(second.status().lastPass?.chunksChecked, 20, "resumed, not restarted");
    assert.equal(second.status().state, "waiting");
    assert.equal(second.status().passProgress, null, "no pass underway");
    assert.equal(second.requestPass(), true);
    await until(() => second.status().passesCompleted === 2, "a requested pass runs now");
    assert.equal(second.status().lastPass?.chunksChecked, 20);
    await second.stop();
  } finally {
    await h.close();
  }
});

Deno.test("ScrubRunner with rate 0 runs no pass by itself, only the ones asked for", async () => {
  const h = await SimHarness.create(ecPool());
  try {
    await fill(h.store, 5);
    const r = runner(h.store, { rateBytesPerSecond: 0, sleep: fakeSleep([]) });
    r.start();
    for (let i = 0; i < 20; i++) await new Promise((res) => setTimeout(res, 1));
    assert.equal(r.status().state, "off");
    assert.equal(r.status().passesCompleted, 0);
    assert.equal(r.status().nextPassAtMs, null);
    assert.equal(r.requestPass(), true);
    await until(() => r.status().passesCompleted === 1, "the requested pass runs");
    assert.equal(r.status().state, "off");
    await r.stop();
  } finally {
    await h.close();
  }
});
