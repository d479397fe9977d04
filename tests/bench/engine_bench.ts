// `deno task bench:engine [--quick]` (deno run -A tests/bench/engine_bench.ts): objects of
// 4 KiB, 64 KiB, 1 MiB and 64 MiB written and read through the object engine on a pool of
// six device files with EC 4+2 (io_uring disks when the shim loads), in MB/s and op/s.
//
// Same-run ceilings:
//   - devices: fio (ioengine=io_uring, bs=1M, iodepth 16, direct=1 when O_DIRECT works, a
//     final fsync on writes) writing and then reading six files in this run's directory, all
//     at once (one job per file). The engine's data ceiling for writes is that bandwidth
//     times k/(k+m) (every data byte costs 1.5 device bytes); reads fetch k fragments of
//     each chunk, so their ceiling is the read bandwidth itself.
//   - CPU, in this process: AES-256-GCM seal/open of 1 MiB through the selected Aead
//     (OpenSSL shim), ISA-L encode 4+2 of 1 MiB, and the other per-byte stages of the path
//     (MD5 etag, SHA-256 chunk id, CDC, CRC-32C of fragments), to show where the time goes.
// Targets: large-object write >= 0.6x the device ceiling, read >= 0.7x. Every row also gives
// this process's CPU time (user + system, all threads) per object. The 64 MiB rows run
// again with the engine's other hashing set-ups (hash workers with node:crypto, and hashing
// on the event loop), to show what the hashing shim buys. Prints tables and writes
// tests/bench/results/engine.json.

import { createHash } from "node:crypto";
import { crc32c, crc32cImplementation, installCrc32c } from "../../mod/base/mod.ts";
import { defaultShimOptions, SOURCE_FFI_DIR } from "../../ffi/loader.ts";
import { selectCrc32c } from "../../ffi/ec/crc32c.ts";
import { cdcParams, ContentDefinedChunker } from "../../mod/chunk/mod.ts";
import { startEngineStack } from "../../mod/role/engine_stack.ts";
import type { NamespaceRef } from "../../mod/composition/mod.ts";
import { ObjectEngine } from "../../mod/composition/object_engine.ts";
import {
  type Aead,
  envelopeBytes,
  openChunk,
  sealChunk,
  systemRandom,
} from "../../mod/crypto/mod.ts";
import { selectDisk } from "../../mod/disk/mod.ts";
import { selectErasureCodec } from "../../mod/ec/mod.ts";
import { createLogger } from "../../mod/obs/mod.ts";
import { type Hashing, NodeHashing, OpensslHashing } from "../../mod/crypto/mod.ts";
import { table } from "./_table.ts";

// CRC-32C as the server runs it (ISA-L when the ec shim loads), installed before anything.
{
  const crc = selectCrc32c({ ffiDir: SOURCE_FFI_DIR, ffiMode: "auto" });
  installCrc32c(crc.impl, crc.name, crc.reason);
}

const KIB = 1024;
const MIB = 1024 * KIB;
const quick = Deno.args.includes("--quick");
const RESULTS = new URL("./results/engine.json", import.meta.url);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

const K = 4;
const M = 2;
const DEVICES = 6;
/** Objects per size and the operations each keeps in flight. */
const SIZES: { bytes: number; count: number; concurrency: number }[] = [
  { bytes: 4 * KIB, count: quick ? 600 : 4500, concurrency: 16 },
  { bytes: 64 * KIB, count: quick ? 300 : 2100, concurrency: 16 },
  { bytes: 1 * MIB, count: quick ? 48 : 240, concurrency: 4 },
  { bytes: 64 * MIB, count: quick ? 3 : 6, concurrency: 1 },
];
/** Each size is written (then read) in this many timed rounds; the median is reported. */
const ROUNDS = 3;
/** Pieces a streamed body arrives in (a socket's reads are of this order). */
const PIECE_BYTES = 1 * MIB;
const FIO_FILE_BYTES = quick ? 256 * MIB : 1024 * MIB;
const STAGE_BYTES = quick ? 64 * MIB : 256 * MIB;
const LARGE = 64 * MIB;
const TARGET_WRITE = 0.6;
const TARGET_READ = 0.7;

function print(line = ""): void {
  Deno.stdout.writeSync(encoder.encode(line + "\n"));
}

function progress(line: string): void {
  Deno.stderr.writeSync(encoder.encode(line + "\n"));
}

function mbps(bytes: number, seconds: number): number {
  return bytes / 1e6 / seconds;
}

function round(n: number, digits = 0): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  systemRandom(out);
  return out;
}

function streamOf(bytes: Uint8Array): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    pull(controller) {
      if (at >= bytes.length) {
        controller.close();
        return;
      }
      controller.enqueue(bytes.subarray(at, at + PIECE_BYTES));
      at += PIECE_BYTES;
    },
  }, { highWaterMark: 0 });
}

/** Runs `count` tasks with `concurrency` in flight; returns the seconds taken. */
async function timed(count: number, concurrency: number, task: (i: number) => Promise<void>) {
  let next = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, async () => {
    while (next < count) await task(next++);
  }));
  return (performance.now() - started) / 1000;
}

// ---- CPU stages -----------------------------------------------------------------------------

interface Stage {
  stage: string;
  mbPerSecond: number;
  /** Nanoseconds of one core per byte of object data on the write and read paths. */
  writeNsPerByte: number;
  readNsPerByte: number;
}

async function measure(bytes: number, fn: () => void | Promise<void>): Promise<number> {
  await fn(); // warm up
  const rounds: number[] = [];
  for (let r = 0; r < 3; r++) {
    const started = performance.now();
    await fn();
    rounds.push(mbps(bytes, (performance.now() - started) / 1000));
  }
  return rounds.sort((a, b) => a - b)[1]!;
}

async function cpuStages(
  aead: Aead,
): Promise<
  { stages: Stage[]; aeadSeal: number; ecEncode: number; node: { md5: number; sha: number } }
> {
  const data = randomBytes(STAGE_BYTES);
  const pieces = Array.from(
    { length: STAGE_BYTES / MIB },
    (_, i) => data.subarray(i * MIB, (i + 1) * MIB),
  );
  // MD5 and chunk ids as the engine computes them (the hashing shim when it loads), and
  // with node:crypto for comparison.
  const loaded = OpensslHashing.load(defaultShimOptions());
  const hashing: Hashing = loaded.ok ? loaded.hashing : new NodeHashing();
  const md5 = await measure(STAGE_BYTES, () => {
    const h = hashing.md5();
    for (const p of pieces) h.update(p);
    h.digest();
  });
  const sha = await measure(STAGE_BYTES, () => {
    for (const p of pieces) hashing.chunkId(p, null, null);
  });
  const nodeMd5 = await measure(STAGE_BYTES, () => {
    const h = createHash("md5");
    for (const p of pieces) h.update(p);
    h.digest();
  });
  const nodeSha = await measure(STAGE_BYTES, () => {
    for (const p of pieces) createHash("sha256").update(p).digest();
  });
  const cdc = await measure(STAGE_BYTES, () => {
    const chunker = new ContentDefinedChunker(cdcParams());
    for (const p of pieces) chunker.push(p);
  });
  const crc = await measure(STAGE_BYTES, () => {
    for (const p of pieces) crc32c(p);
  });
  const masterKey = randomBytes(32);
  const id = randomBytes(32);
  const envelope = new Uint8Array(envelopeBytes(MIB));
  const seal = await measure(STAGE_BYTES, async () => {
    for (const p of pieces) {
      await sealChunk({ aead, masterKey, epoch: 1, chunkId: id, plaintext: p, out: envelope });
    }
  });
  const sealed = envelope.slice();
  const scratch = new Uint8Array(MIB);
  const open = await measure(STAGE_BYTES, async () => {
    for (let i = 0; i < pieces.length; i++) {
      await openChunk({
        aead,
        masterKeyFor: () => masterKey,
        chunkId: id,
        envelope: sealed,
        out: scratch,
      });
    }
  });
  const codec = selectErasureCodec().create({ k: K, m: M });
  const fragments = selectErasureCodec().allocateFragments(K + M, MIB / K);
  const ec = await measure(STAGE_BYTES, () => {
    for (let i = 0; i < pieces.length; i++) {
      codec.encode(fragments.slice(0, K), fragments.slice(K));
    }
  });
  const ns = (mb: number) => 1000 / mb;
  const fan = (K + M) / K;
  const stages: Stage[] = [
    {
      stage: `MD5 (etag, ${hashing.implementation})`,
      mbPerSecond: md5,
      writeNsPerByte: ns(md5),
      readNsPerByte: 0,
    },
    {
      stage: `SHA-256 (chunk id, ${hashing.implementation})`,
      mbPerSecond: sha,
      writeNsPerByte: ns(sha),
      readNsPerByte: 0,
    },
    { stage: "CDC (FastCDC)", mbPerSecond: cdc, writeNsPerByte: ns(cdc), readNsPerByte: 0 },
    {
      stage: `CRC-32C ${crc32cImplementation().name} (fragments, x${fan} on writes)`,
      mbPerSecond: crc,
      writeNsPerByte: ns(crc) * fan,
      readNsPerByte: ns(crc),
    },
    {
      stage: `AEAD seal 1 MiB (${aead.implementation})`,
      mbPerSecond: seal,
      writeNsPerByte: ns(seal),
      readNsPerByte: 0,
    },
    {
      stage: `AEAD open 1 MiB (${aead.implementation})`,
      mbPerSecond: open,
      writeNsPerByte: 0,
      readNsPerByte: ns(open),
    },
    {
      stage: `EC encode ${K}+${M} 1 MiB (${codec.implementation})`,
      mbPerSecond: ec,
      writeNsPerByte: ns(ec),
      readNsPerByte: 0,
    },
  ];
  return { stages, aeadSeal: seal, ecEncode: ec, node: { md5: nodeMd5, sha: nodeSha } };
}

// ---- device ceiling --------------------------------------------------------------------------

async function fioVersion(): Promise<string | null> {
  try {
    const out = await new Deno.Command("fio", { args: ["--version"], stdout: "piped" }).output();
    return out.success ? decoder.decode(out.stdout).trim() : null;
  } catch {
    return null;
  }
}

/** Aggregate MB/s of fio on DEVICES files at once. */
async function fio(dir: string, op: "write" | "read", direct: boolean): Promise<number> {
  const args = [
    `--rw=${op}`,
    `--bs=${MIB}`,
    `--size=${FIO_FILE_BYTES}`,
    "--ioengine=io_uring",
    `--direct=${direct ? 1 : 0}`,
    "--iodepth=16",
    `--end_fsync=${op === "write" ? 1 : 0}`,
    "--group_reporting",
    "--output-format=json",
  ];
  for (let i = 0; i < DEVICES; i++) args.push(`--name=dev${i}`, `--filename=${dir}/fio-${i}.dat`);
  const out = await new Deno.Command("fio", { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) throw new Error(`fio failed: ${decoder.decode(out.stderr).trim()}`);
  const text = decoder.decode(out.stdout);
  const json = JSON.parse(text.slice(text.indexOf("{"))) as {
    jobs: Record<"write" | "read", { bw_bytes: number }>[];
  };
  return json.jobs[0]![op].bw_bytes / 1e6;
}

// ---- the engine -------------------------------------------------------------------------------

interface Row {
  op: "write" | "read";
  /** How the engine ran, when not as configured for production. */
  variant?: string;
  objectBytes: number;
  objects: number;
  concurrency: number;
  seconds: number;
  /** Median of the rounds. */
  mbPerSecond: number;
  roundsMbPerSecond: number[];
  opsPerSecond: number;
  /** This process's CPU time (user + system) per object, in ms. */
  cpuMsPerOp: number | null;
  ceilingMbPerSecond: number;
  ratio: number;
  target?: number;
  met?: boolean;
}

/** This process's CPU time so far (user + system, every thread), in ms; null if unknown. */
function processCpuMs(): number | null {
  try {
    const stat = Deno.readTextFileSync("/proc/self/stat");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return null;
  }
}

/** Median of per-round results; rounds split `count` tasks in order. */
async function rounds(
  count: number,
  concurrency: number,
  task: (i: number) => Promise<void>,
): Promise<{ seconds: number; perRound: number[] }> {
  const rounds = Math.min(ROUNDS, count);
  const perRound: number[] = [];
  let seconds = 0;
  for (let r = 0; r < rounds; r++) {
    const from = Math.floor((r * count) / rounds);
    const to = Math.floor(((r + 1) * count) / rounds);
    const s = await timed(to - from, concurrency, (i) => task(from + i));
    seconds += s;
    perRound.push((to - from) / s);
  }
  return { seconds, perRound };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

async function engineRows(
  engines: { engine: ObjectEngine; variant?: string; sizes: number[] }[],
  ns: NamespaceRef,
  ceilings: { write: number; read: number },
): Promise<Row[]> {
  const rows: Row[] = [];
  for (const { bytes, count, concurrency } of SIZES) {
    for (const { engine, variant, sizes } of engines) {
      if (!sizes.includes(bytes)) continue;
      progress(`engine${variant ? ` (${variant})` : ""}: ${count} x ${bytes} B objects`);
      const distinct = bytes >= MIB ? count : 256;
      const bodies = Array.from({ length: distinct }, () => randomBytes(bytes));
      // Small objects cycle through 256 bodies, each made unique by its first 8 bytes.
      const bodyOf = (i: number) => {
        const b = bodies[i % bodies.length]!;
        if (distinct < count) new DataView(b.buffer, b.byteOffset).setFloat64(0, i);
        return b;
      };
      const key = (i: number) => `o-${variant ?? ""}-${bytes}-${i}`;
      const cpuBeforeWrite = processCpuMs();
      const write = await rounds(count, concurrency, async (i) => {
        const body = bodyOf(i);
        await engine.putObject(
          ns,
          key(i),
          body.length > PIECE_BYTES ? streamOf(body) : body.slice(),
          { sizeHint: body.length },
        );
      });
      const cpuAfterWrite = processCpuMs();
      const read = await rounds(count, concurrency, async (i) => {
        const got = await engine.getObject(ns, key(i));
        let n = 0;
        for await (const piece of got.body) n += piece.length;
        if (n !== bytes) throw new Error(`read ${n} of ${bytes} bytes`);
      });
      const cpuAfterRead = processCpuMs();
      const cpuPerOp = (from: number | null, to: number | null) =>
        from === null || to === null ? null : round((to - from) / count, 2);
      const cpu = {
        write: cpuPerOp(cpuBeforeWrite, cpuAfterWrite),
        read: cpuPerOp(cpuAfterWrite, cpuAfterRead),
      };
      for (const [op, result] of [["write", write], ["read", read]] as const) {
        const opsPerRound = result.perRound;
        const mbPerRound = opsPerRound.map((ops) => (ops * bytes) / 1e6);
        const mb = median(mbPerRound);
        const ceiling = ceilings[op];
        const row: Row = {
          op,
          ...(variant === undefined ? {} : { variant }),
          objectBytes: bytes,
          objects: count,
          concurrency,
          seconds: round(result.seconds, 3),
          mbPerSecond: round(mb, 1),
          roundsMbPerSecond: mbPerRound.map((v) => round(v, 1)),
          opsPerSecond: round(median(opsPerRound), 1),
          cpuMsPerOp: cpu[op],
          ceilingMbPerSecond: round(ceiling, 1),
          ratio: round(round(mb, 1) / round(ceiling, 1), 3),
        };
        if (bytes === LARGE && variant === undefined) {
          row.target = op === "write" ? TARGET_WRITE : TARGET_READ;
          row.met = row.ratio >= row.target;
        }
        rows.push(row);
      }
    }
  }
  return rows;
}

function sizeName(bytes: number): string {
  return bytes >= MIB ? `${bytes / MIB} MiB` : `${bytes / KIB} KiB`;
}

async function main(): Promise<void> {
  const started = performance.now();
  const dir = await Deno.makeTempDir({ prefix: "kiseki-engine-bench-" });
  const logger = createLogger({
    level: "warn",
    format: "text",
    sink: { write: (l) => progress(l) },
  });
  try {
    const probe = await selectDisk({ path: `${dir}/probe.dev`, sizeBytes: MIB, logger });
    const direct = probe.direct;
    const diskImpl = probe.implementation;
    await probe.close();
    await Deno.remove(`${dir}/probe.dev`);

    const version = await fioVersion();
    if (version === null) throw new Error("fio is not installed: no device ceiling");
    progress(`fio ceilings: ${DEVICES} files of ${FIO_FILE_BYTES / MIB} MiB, direct=${direct}`);
    const fioWrite = await fio(dir, "write", direct);
    const fioRead = await fio(dir, "read", direct);
    for (let i = 0; i < DEVICES; i++) await Deno.remove(`${dir}/fio-${i}.dat`);
    const ceilings = { write: fioWrite * K / (K + M), read: fioRead };

    const stack = await startEngineStack({
      dataDir: `${dir}/engine`,
      logger,
      pool: {
        devices: DEVICES,
        durability: `ec:${K}+${M}`,
        deviceSizeBytes: (quick ? 4 : 16) * 1024 * MIB,
      },
    });
    progress("cpu stages");
    const cpu = await cpuStages(stack.aead);
    // The same stack with hashing (MD5, chunk ids) on hash workers (node:crypto), and on
    // the event loop: what the hashing shim and the workers buy.
    const workers = new ObjectEngine({
      service: stack.service,
      chunkStore: stack.chunkStore,
      aead: stack.aead,
      systemKeys: stack.systemKeys,
      tenantGate: stack.cipher,
      dedup: stack.dedup,
      logger,
    });
    const inline = new ObjectEngine({
      service: stack.service,
      chunkStore: stack.chunkStore,
      aead: stack.aead,
      systemKeys: stack.systemKeys,
      tenantGate: stack.cipher,
      dedup: stack.dedup,
      hashWorker: false,
      logger,
    });
    let rows: Row[];
    try {
      const tenant = new Uint8Array(16).fill(0x42);
      const ns = await stack.engine.createNamespace(tenant, "bench");
      rows = await engineRows(
        [
          { engine: stack.engine, sizes: SIZES.map((s) => s.bytes) },
          { engine: workers, variant: "hash workers, node:crypto", sizes: [LARGE] },
          { engine: inline, variant: "hashing on the event loop", sizes: [LARGE] },
        ],
        ns,
        ceilings,
      );
    } finally {
      await workers.close();
      await inline.close();
      await stack.close();
    }

    const writeNs = cpu.stages.reduce((n, s) => n + s.writeNsPerByte, 0);
    const readNs = cpu.stages.reduce((n, s) => n + s.readNsPerByte, 0);
    print(
      `engine bench (${quick ? "quick" : "full"}): ${DEVICES} device files, EC ${K}+${M}, ` +
        `${diskImpl}${direct ? " O_DIRECT" : ""}, aead ${stack.aead.implementation}`,
    );
    print();
    table(
      print,
      [
        "op",
        "object",
        "objects",
        "in flight",
        "MB/s",
        "op/s",
        "CPU ms/op",
        "ceiling MB/s",
        "ratio",
        "target",
      ],
      rows.map((r) => [
        r.variant === undefined ? r.op : `${r.op} (${r.variant})`,
        sizeName(r.objectBytes),
        r.objects,
        r.concurrency,
        r.mbPerSecond,
        r.opsPerSecond,
        r.cpuMsPerOp ?? "-",
        r.ceilingMbPerSecond,
        r.ratio,
        r.target === undefined ? "" : `${r.target}x ${r.met ? "met" : "MISSED"}`,
      ]),
    );
    print();
    print(
      `ceilings: ${version} x${DEVICES} files: write ${round(fioWrite)} MB/s ` +
        `(data ${round(ceilings.write)} MB/s at ${K}+${M}), read ${round(fioRead)} MB/s; ` +
        `AEAD seal 1 MiB ${round(cpu.aeadSeal)} MB/s; EC encode ${round(cpu.ecEncode)} MB/s; ` +
        `node:crypto MD5 ${round(cpu.node.md5)} MB/s, SHA-256 ${round(cpu.node.sha)} MB/s`,
    );
    print();
    print("where one core's time goes, per byte of object data:");
    table(
      print,
      ["stage", "MB/s", "write ns/B", "read ns/B"],
      cpu.stages.map((
        s,
      ) => [s.stage, round(s.mbPerSecond), round(s.writeNsPerByte, 2), round(s.readNsPerByte, 2)]),
    );
    const hashNs = cpu.stages.slice(0, 2).reduce((n, s) => n + s.writeNsPerByte, 0);
    print(
      `sum: write ${round(writeNs, 2)} ns/B (one core: at most ${round(1000 / writeNs)} MB/s ` +
        `before any I/O, Raft or lmdb work), read ${round(readNs, 2)} ns/B ` +
        `(at most ${round(1000 / readNs)} MB/s)`,
    );
    print(
      `with MD5 and SHA-256 off the event loop (the hashing shim's threads, or hash workers ` +
        `without it) the event loop keeps ${round(writeNs - hashNs, 2)} ns/B of writes (at ` +
        `most ${round(1000 / (writeNs - hashNs))} MB/s) and hashing ${round(hashNs, 2)} ns/B ` +
        `(at most ${round(1000 / hashNs)} MB/s), on ${navigator.hardwareConcurrency} cores ` +
        `shared with the kernel's I/O`,
    );

    await Deno.mkdir(new URL("./", RESULTS), { recursive: true });
    await Deno.writeTextFile(
      RESULTS,
      JSON.stringify(
        {
          benchmark: "engine",
          mode: quick ? "quick" : "full",
          generatedAt: new Date().toISOString(),
          seconds: round((performance.now() - started) / 1000, 1),
          host: { cpus: navigator.hardwareConcurrency, deno: Deno.version.deno },
          pool: { devices: DEVICES, durability: `ec:${K}+${M}`, disk: diskImpl, direct },
          aead: stack.aead.implementation,
          ceilings: {
            tool: `${version} (ioengine=io_uring, bs=1M, iodepth=16, direct=${direct ? 1 : 0}, ` +
              `${DEVICES} files at once, end_fsync on writes)`,
            fioWriteMbPerSecond: round(fioWrite, 1),
            fioReadMbPerSecond: round(fioRead, 1),
            dataWriteMbPerSecond: round(ceilings.write, 1),
            dataReadMbPerSecond: round(ceilings.read, 1),
            aeadSeal1MiBMbPerSecond: round(cpu.aeadSeal, 1),
            ecEncode4p2MbPerSecond: round(cpu.ecEncode, 1),
            nodeCryptoMd5MbPerSecond: round(cpu.node.md5, 1),
            nodeCryptoSha256MbPerSecond: round(cpu.node.sha, 1),
          },
          stages: cpu.stages.map((s) => ({
            ...s,
            mbPerSecond: round(s.mbPerSecond, 1),
            writeNsPerByte: round(s.writeNsPerByte, 3),
            readNsPerByte: round(s.readNsPerByte, 3),
          })),
          cpuBoundMbPerSecond: {
            write: round(1000 / writeNs, 1),
            writeEventLoopWithHashWorker: round(1000 / (writeNs - hashNs), 1),
            writeHashWorker: round(1000 / hashNs, 1),
            read: round(1000 / readNs, 1),
          },
          rows,
        },
        null,
        2,
      ) + "\n",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

await main();
