// Disk throughput: UringDisk (io_uring shim, O_DIRECT when the file system allows) and
// FileDisk (Deno.FsFile, buffered) writing then reading one device file sequentially in
// 1 MiB ops, one op per submit (qd 1) or batches of 16 (qd 16), against a same-run ceiling:
// fio with the same parameters (ioengine=io_uring, bs=1M, iodepth, direct as the disk, a
// final fdatasync after writes), or ffi/build/uring_bench when fio is not installed. Prints
// a table and writes tests/bench/results/disk.json.
//
//   deno run -A tests/bench/disk_bench.ts [--quick]
//
// MB/s is 10^6 bytes per second; writes include their final sync. Buffered rows read from
// the page cache (the file was just written and dropping caches is not allowed here), and
// their ceiling reads cached too (fio --invalidate=0): they measure the copy path, not the
// device. Each figure is the best of several rounds on a shared, noisy machine.

import { defaultShimOptions, SOURCE_FFI_DIR } from "../../ffi/loader.ts";
import { openUringShim } from "../../ffi/uring/bindings.ts";
import { Prng } from "../../mod/base/mod.ts";
import { type Disk, type DiskOp, FileDisk, probeUring, UringDisk } from "../../mod/disk/mod.ts";
import { table as printTable } from "./_table.ts";

const QUICK = Deno.args.includes("--quick");
const MIB = 1 << 20;
/** Size of the device file each pass covers end to end. */
const FILE_BYTES = (QUICK ? 64 : 512) * MIB;
const OP_BYTES = MIB;
const QUEUE_DEPTHS: readonly number[] = [1, 16];
/** Rounds per figure; the best is reported. */
const ROUNDS = QUICK ? 2 : 3;
const NATIVE_BENCH = `${SOURCE_FFI_DIR}/uring_bench`;
const RESULTS_PATH = new URL("./results/disk.json", import.meta.url);

type Op = "write" | "read";

interface Row {
  impl: string;
  op: Op;
  qd: number;
  direct: boolean;
  /** Buffered reads come from the page cache. */
  cached: boolean;
  mbPerS: number;
  ceilingMbPerS: number | null;
  ratio: number | null;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
function print(line = ""): void {
  Deno.stdout.writeSync(encoder.encode(line + "\n"));
}

/** One sequential pass over the device in batches of `qd` ops; MB/s. */
async function pass(disk: Disk, op: Op, qd: number, buffers: Uint8Array[]): Promise<number> {
  const ops: DiskOp[] = buffers.slice(0, qd).map((buffer) => ({
    kind: op,
    offsetBytes: 0,
    buffer,
  }));
  const start = performance.now();
  for (let offset = 0; offset < FILE_BYTES; offset += qd * OP_BYTES) {
    for (let i = 0; i < qd; i++) ops[i]!.offsetBytes = offset + i * OP_BYTES;
    await disk.submit(ops);
  }
  if (op === "write") await disk.sync();
  const seconds = (performance.now() - start) / 1000;
  return FILE_BYTES / 1e6 / seconds;
}

async function hasFio(): Promise<string | null> {
  try {
    const out = await new Deno.Command("fio", { args: ["--version"], stdout: "piped" }).output();
    return out.success ? decoder.decode(out.stdout).trim() : null;
  } catch {
    return null;
  }
}

/** One ceiling run: MB/s of fio (or uring_bench) doing what the disk just did. */
async function ceilingRun(
  tool: "fio" | "uring_bench",
  path: string,
  op: Op,
  qd: number,
  direct: boolean,
): Promise<number> {
  if (tool === "fio") {
    const args = [
      "--name=kiseki-disk",
      `--filename=${path}`,
      `--rw=${op}`,
      `--bs=${OP_BYTES}`,
      `--size=${FILE_BYTES}`,
      "--ioengine=io_uring",
      `--direct=${direct ? 1 : 0}`,
      `--iodepth=${qd}`,
      // Like our pass: writes end with a data sync (fio counts it in the runtime).
      `--end_fsync=${op === "write" ? 1 : 0}`,
      // Keep the page cache as it is: buffered reads are cached reads on both sides.
      "--invalidate=0",
      "--output-format=json",
    ];
    const out = await new Deno.Command("fio", { args, stdout: "piped", stderr: "piped" }).output();
    if (!out.success) throw new Error(`fio failed: ${decoder.decode(out.stderr).trim()}`);
    const text = decoder.decode(out.stdout);
    const json = JSON.parse(text.slice(text.indexOf("{"))) as {
      jobs: Record<Op, { bw_bytes: number }>[];
    };
    return json.jobs[0]![op].bw_bytes / 1e6;
  }
  const out = await new Deno.Command(NATIVE_BENCH, {
    args: [path, op, String(FILE_BYTES), String(OP_BYTES), String(qd), direct ? "1" : "0"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`uring_bench failed: ${decoder.decode(out.stderr).trim()}`);
  return (JSON.parse(decoder.decode(out.stdout)) as { mb_s: number }).mb_s;
}

async function main(): Promise<void> {
  const started = performance.now();
  const directory = await Deno.makeTempDir({ prefix: "kiseki-disk-bench-" });
  const path = `${directory}/device`;
  const fio = await hasFio();
  let nativeBuilt = true;
  try {
    Deno.statSync(NATIVE_BENCH);
  } catch {
    nativeBuilt = false;
  }
  const tool: "fio" | "uring_bench" | null = fio !== null
    ? "fio"
    : nativeBuilt
    ? "uring_bench"
    : null;
  if (tool === null) print("no ceiling: fio not installed and ffi/build/uring_bench not built");

  const shim = openUringShim(defaultShimOptions());
  const uringReason = shim.ok ? probeUring(shim.lib) : shim.reason;
  if (uringReason !== null) print(`UringDisk not measured: ${uringReason}`);

  const impls: { name: string; open: (qd: number) => Promise<Disk> }[] = [];
  if (shim.ok && uringReason === null) {
    impls.push({
      name: "io_uring",
      open: () => UringDisk.open(shim.lib, path, { sizeBytes: FILE_BYTES }),
    });
  }
  impls.push({
    name: "file",
    open: (qd) => FileDisk.open(path, { sizeBytes: FILE_BYTES, handles: qd }),
  });

  const rows: Row[] = [];
  const ceilings = new Map<string, number>();
  const modes: Record<string, string> = {};
  try {
    for (const impl of impls) {
      for (const qd of QUEUE_DEPTHS) {
        const disk = await impl.open(qd);
        modes[impl.name] = disk.reason;
        const buffers = disk.allocateAligned(Math.max(...QUEUE_DEPTHS), OP_BYTES);
        const prng = new Prng(qd);
        for (const b of buffers) prng.fill(b);
        const best: Record<Op, number> = { write: 0, read: 0 };
        for (let round = 0; round < ROUNDS; round++) {
          // Write first: reads must cover written blocks, not holes of a sparse file.
          best.write = Math.max(best.write, await pass(disk, "write", qd, buffers));
          best.read = Math.max(best.read, await pass(disk, "read", qd, buffers));
        }
        const direct = disk.direct;
        await disk.close();
        for (const op of ["write", "read"] as const) {
          const key = `${op}/${qd}/${direct}`;
          if (tool !== null && !ceilings.has(key)) {
            let ceiling = 0;
            for (let round = 0; round < ROUNDS; round++) {
              // fio's read pass needs a written file: it is, by our own write pass and its.
              ceiling = Math.max(ceiling, await ceilingRun(tool, path, op, qd, direct));
            }
            ceilings.set(key, ceiling);
          }
          const ceiling = ceilings.get(key) ?? null;
          const mbPerS = best[op];
          rows.push({
            impl: `${impl.name} ${direct ? "O_DIRECT" : "buffered"}`,
            op,
            qd,
            direct,
            cached: op === "read" && !direct,
            mbPerS: Math.round(mbPerS),
            ceilingMbPerS: ceiling === null ? null : Math.round(ceiling),
            ratio: ceiling === null ? null : Math.round((mbPerS / ceiling) * 1000) / 1000,
          });
        }
      }
    }
  } finally {
    await Deno.remove(directory, { recursive: true });
  }

  const header = ["impl", "op", "qd", "MB/s", "ceiling MB/s", "ratio"];
  const table = rows.map((r) => [
    r.impl,
    r.op + (r.cached ? " (cached)" : ""),
    String(r.qd),
    String(r.mbPerS),
    r.ceilingMbPerS === null ? "-" : String(r.ceilingMbPerS),
    r.ratio === null ? "-" : r.ratio.toFixed(2),
  ]);
  printTable(print, header, table, { leftColumns: 2, markdown: true });
  const seconds = (performance.now() - started) / 1000;
  const ceilingText = tool === "fio"
    ? `${fio} (ioengine=io_uring, bs=1M, iodepth=qd, direct as the disk, end_fsync on writes)`
    : tool === "uring_bench"
    ? `${NATIVE_BENCH} (io_uring, qd kept full, direct as the disk, fdatasync after writes)`
    : "none";
  print();
  print(`ceiling: ${ceilingText}`);
  for (const [name, reason] of Object.entries(modes)) print(`${name}: ${reason}`);
  print(
    `${FILE_BYTES / MIB} MiB file in ${OP_BYTES / MIB} MiB ops; qd 16 = batches of 16 ops per ` +
      `submit(); writes include the final sync; "(cached)" reads come from the page cache; ` +
      `${QUICK ? "quick" : "full"} run, ${seconds.toFixed(1)} s`,
  );

  await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
  await Deno.writeTextFile(
    RESULTS_PATH,
    JSON.stringify(
      {
        benchmark: "disk",
        mode: QUICK ? "quick" : "full",
        generatedAt: new Date().toISOString(),
        fileBytes: FILE_BYTES,
        opBytes: OP_BYTES,
        rounds: ROUNDS,
        ceiling: ceilingText,
        implementations: modes,
        rows,
      },
      null,
      2,
    ) + "\n",
  );
}

await main();
