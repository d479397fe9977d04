// The writer half of the engine crash test: opens the single-node engine stack on a data
// directory and stores, overwrites, deletes and multipart-uploads objects until it is
// killed. Before each operation it prints an "intent" line, after the engine acknowledges
// it an "ack" line; both are written synchronously to stdout (no buffering), so every
// acknowledged operation the test sees really was acknowledged before the kill.
//
// Usage: deno run -A tests/e2e/engine_crash_writer.ts <dataDir> <seed>
// Object bodies are crashBody(seed, size): the test regenerates them to compare bytes.

import { Prng } from "../../mod/base/mod.ts";
import { startEngineStack } from "../../mod/role/engine_stack.ts";
import { CompositionError } from "../../mod/composition/mod.ts";
import { createLogger } from "../../mod/obs/mod.ts";

/** Keys the writer uses: few enough that overwrites and deletes are common. */
export const CRASH_KEYS = 24;
export const CRASH_TENANT: Uint8Array = Uint8Array.from([0x6b, ...new Array(14).fill(0), 7]);
export const CRASH_NAMESPACE = "crash";
/** Pool and engine shape shared by the writer and the checker. */
export const CRASH_STACK = {
  pool: { devices: 6, durability: "ec:4+2", deviceSizeBytes: 1 << 30, segmentSizeBytes: 8 << 20 },
  engine: { partBytesMin: 0 },
} as const;

export type CrashLine =
  | { ready: true; pid: number }
  | { intent: CrashOp }
  | { ack: CrashOp; version?: number; etag?: string };

export type CrashOp =
  | { op: "put"; key: string; seed: number; size: number }
  | { op: "multipart"; key: string; seed: number; parts: number[] }
  | { op: "delete"; key: string }
  | { op: "abort"; key: string; seed: number; parts: number[] }
  | { op: "gc" };

/** The body of an object: `size` bytes from a Prng seeded with `seed`, in 64 KiB blocks. */
export function crashBody(seed: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  const prng = new Prng(seed);
  for (let at = 0; at < size; at += 65_536) {
    prng.fill(out.subarray(at, Math.min(size, at + 65_536)));
  }
  return out;
}

/** A multipart object's body: its parts' bodies (seed + part index) one after another. */
export function multipartBody(seed: number, parts: readonly number[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p, 0));
  let at = 0;
  parts.forEach((size, i) => {
    out.set(crashBody(seed + i + 1, size), at);
    at += size;
  });
  return out;
}

function pickSize(prng: Prng): number {
  const r = prng.nextFloat();
  if (r < 0.1) return [0, 1, 4095, 4096, 4097][prng.nextInt(5)]!;
  if (r < 0.35) return prng.nextInt(4096);
  if (r < 0.6) return 4096 + prng.nextInt(200_000);
  if (r < 0.9) return 200_000 + prng.nextInt(2 << 20);
  return (2 << 20) + prng.nextInt(5 << 20);
}

function nextOp(prng: Prng, seedBase: number, n: number): CrashOp {
  const key = `k${prng.nextInt(CRASH_KEYS)}`;
  const r = prng.nextFloat();
  const seed = seedBase * 10_000 + n * 10;
  if (r < 0.2) return { op: "delete", key };
  if (r < 0.33) {
    const parts = Array.from({ length: 2 + prng.nextInt(3) }, () => 1 + prng.nextInt(1_500_000));
    return { op: "multipart", key, seed, parts };
  }
  if (r < 0.37) return { op: "abort", key, seed, parts: [1 + prng.nextInt(1_000_000)] };
  if (r < 0.40) return { op: "gc" };
  return { op: "put", key, seed, size: pickSize(prng) };
}

const encoder = new TextEncoder();

function emit(line: CrashLine): void {
  const bytes = encoder.encode(JSON.stringify(line) + "\n");
  let at = 0;
  while (at < bytes.length) at += Deno.stdout.writeSync(bytes.subarray(at));
}

async function main(args: string[]): Promise<void> {
  const [dataDir, seedText] = args;
  if (dataDir === undefined || seedText === undefined) {
    throw new Error("usage: engine_crash_writer.ts <dataDir> <seed>");
  }
  const seed = Number(seedText);
  const logger = createLogger({
    level: "warn",
    format: "text",
    sink: { write: (l) => console.error(l) },
  });
  const stack = await startEngineStack({ dataDir, logger, ...CRASH_STACK });
  await stack.caughtUp();
  const { engine } = stack;
  const ns = engine.namespace(CRASH_TENANT, CRASH_NAMESPACE);
  try {
    await engine.createNamespace(CRASH_TENANT, CRASH_NAMESPACE);
  } catch (e) {
    if (!(e instanceof CompositionError) || e.code !== "namespace_exists") throw e;
  }
  emit({ ready: true, pid: Deno.pid });
  const prng = new Prng(seed);
  for (let n = 0;; n++) {
    const op = nextOp(prng, seed, n);
    emit({ intent: op });
    switch (op.op) {
      case "put": {
        const r = await engine.putObject(ns, op.key, crashBody(op.seed, op.size));
        emit({ ack: op, version: r.version, etag: r.etag });
        break;
      }
      case "multipart": {
        const { uploadId } = await engine.createMultipartUpload(ns, op.key);
        const etags: string[] = [];
        // Parts go up in reverse order; one part is uploaded twice (the first copy replaced).
        for (let i = op.parts.length - 1; i >= 0; i--) {
          const body = crashBody(op.seed + i + 1, op.parts[i]!);
          if (i === 0) await engine.uploadPart(ns, op.key, uploadId, 1, body.subarray(0, 1));
          etags[i] = (await engine.uploadPart(ns, op.key, uploadId, i + 1, body)).etag;
        }
        const r = await engine.completeMultipartUpload(
          ns,
          op.key,
          uploadId,
          etags.map((etag, i) => ({ partNumber: i + 1, etag })),
        );
        emit({ ack: op, version: r.version, etag: r.etag });
        break;
      }
      case "abort": {
        // An upload that never completes: its parts' chunks must all come back.
        const { uploadId } = await engine.createMultipartUpload(ns, op.key);
        await engine.uploadPart(ns, op.key, uploadId, 1, crashBody(op.seed, op.parts[0]!));
        await engine.abortMultipartUpload(ns, op.key, uploadId);
        emit({ ack: op });
        break;
      }
      case "delete":
        await engine.deleteObject(ns, op.key);
        emit({ ack: op });
        break;
      case "gc":
        await stack.gc.run();
        emit({ ack: op });
        break;
    }
  }
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    console.error(`engine_crash_writer: ${(e as Error).stack ?? e}`);
    Deno.exit(1);
  }
}
