// Crash consistency of the object engine: a writer process (engine_crash_writer.ts) stores,
// overwrites, deletes and multipart-uploads objects on a single-node engine stack and is
// killed with SIGKILL at seeded random points, then started again on the same data
// directory. After every kill this process opens the same stack and checks:
//   - every acknowledged put or completed upload reads back byte-exact (MD5/etag and bytes),
//   - no acknowledged delete reappears,
//   - no half-written object is visible: a key holds its last acknowledged state, or the
//     complete result of the one operation in flight at the kill, nothing else.
// Every few cycles it also runs GC and reads everything again, which fails if the engine
// ever gave back a chunk reference a live object still holds.
//
// KISEKI_CRASH_CYCLES (default 50) and KISEKI_CRASH_SEED choose the run.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { Prng } from "../../mod/base/mod.ts";
import { type EngineStack, startEngineStack } from "../../mod/role/engine_stack.ts";
import { CompositionError } from "../../mod/composition/mod.ts";
import { createLogger } from "../../mod/obs/mod.ts";
import {
  CRASH_KEYS,
  CRASH_NAMESPACE,
  CRASH_STACK,
  CRASH_TENANT,
  crashBody,
  type CrashLine,
  type CrashOp,
  multipartBody,
} from "./engine_crash_writer.ts";

const CYCLES = Number(Deno.env.get("KISEKI_CRASH_CYCLES") ?? 50);
const SEED = Number(Deno.env.get("KISEKI_CRASH_SEED") ?? 20_261_124);
const WRITER = new URL("./engine_crash_writer.ts", import.meta.url).pathname;
/** A writer that is not ready by then is stuck (recovery must not take this long). */
const READY_TIMEOUT_MS = 60_000;
/** After SIGKILL the process must be gone within this. */
const EXIT_TIMEOUT_MS = 10_000;
/** The writer runs this long at most after it is ready. */
const RUN_MS_MAX = 1_200;
/** Share of cycles killed at a random point of start-up and recovery instead, and when. */
const EARLY_KILL_SHARE = 0.2;
const EARLY_KILL_MS_MAX = 200;
/** GC in the checker, and a second full read, every this many cycles. */
const GC_EVERY = 5;

const quiet = createLogger({ level: "error", format: "text", sink: { write: () => {} } });

/** What a key holds: nothing, or an object and how to regenerate its bytes. */
type KeyState =
  | { kind: "absent" }
  | { kind: "object"; etag: string; size: number; body: () => Uint8Array; from: string };

const ABSENT: KeyState = { kind: "absent" };

function md5(bytes: Uint8Array): string {
  return createHash("md5").update(bytes).digest("hex");
}

/** The state `op` leaves its key in (null: it changes no key). */
function stateAfter(op: CrashOp): { key: string; state: KeyState } | null {
  switch (op.op) {
    case "put": {
      const body = () => crashBody(op.seed, op.size);
      return {
        key: op.key,
        state: { kind: "object", etag: md5(body()), size: op.size, body, from: `put ${op.seed}` },
      };
    }
    case "multipart": {
      const hash = createHash("md5");
      op.parts.forEach((size, i) =>
        hash.update(Buffer.from(md5(crashBody(op.seed + i + 1, size)), "hex"))
      );
      const size = op.parts.reduce((n, p) => n + p, 0);
      return {
        key: op.key,
        state: {
          kind: "object",
          etag: `${hash.digest("hex")}-${op.parts.length}`,
          size,
          body: () => multipartBody(op.seed, op.parts),
          from: `multipart ${op.seed}`,
        },
      };
    }
    case "delete":
      return { key: op.key, state: ABSENT };
    case "abort":
    case "gc":
      return null;
  }
}

function describe(s: KeyState): string {
  return s.kind === "absent" ? "absent" : `${s.from} (${s.size} B, ${s.etag})`;
}

async function readAll(body: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const pieces: Uint8Array[] = [];
  for await (const p of body) pieces.push(p);
  return new Uint8Array(Buffer.concat(pieces));
}

interface CycleResult {
  lines: CrashLine[];
  /** Killed at a random point from its start rather than after it was ready. */
  early: boolean;
  /** Killed before it said it was ready (during start-up and recovery). */
  killedEarly: boolean;
  stderr: string;
}

async function runWriter(dataDir: string, seed: number, prng: Prng): Promise<CycleResult> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", WRITER, dataDir, String(seed)],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  let stdout = "";
  let stderr = "";
  let onReady!: () => void;
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  const out = (async () => {
    for await (const text of child.stdout.pipeThrough(new TextDecoderStream())) {
      stdout += text;
      if (stdout.includes('"ready":true')) onReady();
    }
  })();
  const err = (async () => {
    for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) stderr += text;
  })();
  const early = prng.nextFloat() < EARLY_KILL_SHARE;
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  if (early) {
    // Start-up (process, stack, recovery) takes ~150-200 ms here: most land inside it.
    await sleep(10 + prng.nextInt(EARLY_KILL_MS_MAX));
  } else {
    const timer = sleep(READY_TIMEOUT_MS);
    await Promise.race([ready, timer, status]);
    timer.cancel();
    if (!exited) {
      assert.ok(stdout.includes('"ready":true'), `writer not ready in ${READY_TIMEOUT_MS} ms`);
      await sleep(prng.nextInt(RUN_MS_MAX));
    }
  }
  if (exited) {
    throw new Error(`the writer exited on its own (${JSON.stringify(await status)}):\n${stderr}`);
  }
  child.kill("SIGKILL");
  const timer = sleep(EXIT_TIMEOUT_MS);
  const finished = await Promise.race([status.then(() => true), timer.then(() => false)]);
  timer.cancel();
  assert.ok(finished, "the writer outlived SIGKILL");
  assert.equal((await status).signal, "SIGKILL");
  await out;
  await err;
  const lines: CrashLine[] = [];
  // The last line may be cut by the kill; complete lines were written whole, before it.
  for (const text of stdout.split("\n").slice(0, -1)) lines.push(JSON.parse(text) as CrashLine);
  return { lines, early, killedEarly: !lines.some((l) => "ready" in l), stderr };
}

function sleep(ms: number): Promise<void> & { cancel(): void } {
  let id: ReturnType<typeof setTimeout> | undefined;
  const p = new Promise<void>((resolve) => (id = setTimeout(resolve, ms)));
  return Object.assign(p, { cancel: () => clearTimeout(id) });
}

/** Reads every key and checks it against what may be there; returns what is there. */
async function check(
  stack: EngineStack,
  model: Map<string, KeyState>,
  pending: CrashOp | null,
  where: string,
): Promise<{ objects: number; bytes: number }> {
  const { engine } = stack;
  const ns = engine.namespace(CRASH_TENANT, CRASH_NAMESPACE);
  const after = pending === null ? null : stateAfter(pending);
  let objects = 0;
  let bytes = 0;
  try {
    await engine.getNamespace(ns);
  } catch (e) {
    if (!(e instanceof CompositionError) || e.code !== "namespace_not_found") throw e;
    // Every writer so far died before creating it (before it was ready): nothing was done.
    assert.ok([...model.values()].every((s) => s.kind === "absent"), `${where}: namespace lost`);
    assert.equal(pending, null, `${where}: an operation before the namespace existed`);
    return { objects, bytes };
  }
  const listed = new Set(
    (await engine.listObjects(ns, { maxKeys: 1000 })).objects.map((o) => o.key),
  );
  for (let i = 0; i < CRASH_KEYS; i++) {
    const key = `k${i}`;
    const allowed = [model.get(key) ?? ABSENT];
    if (after !== null && after.key === key) allowed.push(after.state);
    let seen: KeyState = ABSENT;
    try {
      const got = await engine.getObject(ns, key);
      const body = await readAll(got.body);
      assert.equal(body.length, got.size, `${where}: ${key} body is as long as its size`);
      const match = allowed.find((s) => s.kind === "object" && s.etag === got.etag);
      assert.ok(
        match !== undefined && match.kind === "object",
        `${where}: ${key} holds etag ${got.etag} (${got.size} B); allowed: ${
          allowed.map(describe).join(" | ")
        }`,
      );
      assert.equal(got.size, match.size, `${where}: ${key} size`);
      const expected = match.body();
      assert.ok(Buffer.from(body).equals(Buffer.from(expected)), `${where}: ${key} bytes differ`);
      if (!match.etag.includes("-")) assert.equal(md5(body), got.etag, `${where}: ${key} md5`);
      seen = match;
      objects++;
      bytes += body.length;
    } catch (e) {
      if (!(e instanceof CompositionError) || e.code !== "not_found") throw e;
      assert.ok(
        allowed.some((s) => s.kind === "absent"),
        `${where}: ${key} is missing; allowed: ${allowed.map(describe).join(" | ")}`,
      );
    }
    assert.equal(listed.has(key), seen.kind === "object", `${where}: ${key} listing agrees`);
    listed.delete(key);
    model.set(key, seen);
  }
  assert.deepEqual([...listed], [], `${where}: no keys the writer never used`);
  return { objects, bytes };
}

Deno.test({
  name:
    "engine crash: kill -9 at random points loses no acknowledged write and shows no torn object",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const started = performance.now();
    const prng = new Prng(SEED);
    const dataDir = await Deno.makeTempDir({ prefix: "kiseki-engine-crash-" });
    const model = new Map<string, KeyState>();
    const totals = {
      acks: 0,
      puts: 0,
      multiparts: 0,
      deletes: 0,
      aborts: 0,
      early: 0,
      beforeReady: 0,
      inFlight: 0,
    };
    let lastStderr = "";
    try {
      for (let cycle = 0; cycle < CYCLES; cycle++) {
        const where = `cycle ${cycle} (seed ${SEED})`;
        const result = await runWriter(dataDir, SEED * 1000 + cycle, prng);
        lastStderr = result.stderr;
        if (result.early) totals.early++;
        if (result.killedEarly) totals.beforeReady++;
        let pending: CrashOp | null = null;
        for (const line of result.lines) {
          if ("intent" in line) {
            assert.equal(pending, null, `${where}: two operations in flight`);
            pending = line.intent;
          } else if ("ack" in line) {
            const op: CrashOp = line.ack;
            assert.equal(JSON.stringify(op), JSON.stringify(pending), `${where}: ack in flight`);
            const after = stateAfter(op);
            if (after !== null) {
              if (after.state.kind === "object") {
                assert.equal(line.etag, after.state.etag, `${where}: acknowledged etag`);
              }
              model.set(after.key, after.state);
            }
            totals.acks++;
            if (op.op === "put") totals.puts++;
            if (op.op === "multipart") totals.multiparts++;
            if (op.op === "delete") totals.deletes++;
            if (op.op === "abort") totals.aborts++;
            pending = null;
          }
        }
        if (pending !== null) totals.inFlight++;
        const stack = await startEngineStack({ dataDir, logger: quiet, ...CRASH_STACK });
        try {
          await stack.caughtUp();
          await check(stack, model, pending, where);
          if (cycle % GC_EVERY === GC_EVERY - 1) {
            await stack.gc.run();
            await check(stack, model, null, `${where} after GC`);
          }
        } finally {
          await stack.close();
        }
      }
    } catch (e) {
      console.error(`writer stderr of the last cycle:\n${lastStderr}`);
      throw e;
    } finally {
      await Deno.remove(dataDir, { recursive: true });
    }
    const seconds = (performance.now() - started) / 1000;
    console.log(
      `engine crash: ${CYCLES} kills in ${seconds.toFixed(1)} s (seed ${SEED}); ` +
        `${totals.acks} acknowledged (${totals.puts} puts, ${totals.multiparts} multipart, ` +
        `${totals.deletes} deletes, ${totals.aborts} aborted uploads), ${totals.inFlight} kills ` +
        `with an operation in flight, ${totals.early} at a random point of start-up ` +
        `(${totals.beforeReady} before the writer was ready)`,
    );
    assert.ok(totals.puts > 0 && totals.deletes > 0, "the run exercised puts and deletes");
  },
});
