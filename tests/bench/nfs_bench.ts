// `deno task bench:nfs [--quick] [--size-mib N] [--files N]`: NFSv3 through libnfs on the host,
// against one real `kiseki server` (role table flags, fresh temp data dir, its default pool:
// chunks encrypted and erasure-coded or replicated as the pool says) and, in the same run,
// Debian's nfs-ganesha (VFS FSAL) serving a directory on the same disk. For each server:
//  - sequential write of SIZE (1 GiB) in 1 MiB pwrites, then fsync (COMMIT), MB/s;
//  - sequential read of it back in 1 MiB preads, MB/s (bytes compared to what was written);
//  - small files: FILES creat+close, then FILES stat, then FILES unlink, ops/s each.
// The client is libnfs (libnfs13, Debian) driven through FFI, one synchronous context per
// server, so both servers see the same client doing the same calls. The written data is
// random (nothing deduplicates). Prints a table with kiseki/ganesha ratios and writes
// tests/bench/results/nfs.json. MB = 10^6 bytes.
//
// ganesha needs rpcbind to start: when none answers, a private one runs in its own network
// namespace (`unshare -n`, only /run/rpcbind.sock shared), as in the kernel-nfs recipe.
// ganesha and kiseki listen on 127.0.BENCH_HOST_OCTET.x only.
//
//   deno run -A tests/bench/nfs_bench.ts [--quick] [--size-mib N] [--files N]

import { type RunningRole, startRole, testAddrs, waitForHttp } from "../e2e/_role.ts";
import { table } from "./_table.ts";

const QUICK = Deno.args.includes("--quick");
function flag(name: string, fallback: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(Deno.args[i + 1]);
  if (!Number.isSafeInteger(v) || v <= 0) throw new Error(`--${name} needs a positive number`);
  return v;
}
const MIB = 1 << 20;
const SIZE_MIB = flag("size-mib", QUICK ? 64 : 1024);
const FILES = flag("files", QUICK ? 200 : 2000);
const IO_BYTES = MIB;
const BENCH_HOST_OCTET = 149;
const GANESHA_HOST = `127.0.${BENCH_HOST_OCTET}.2`;
const RESULTS_PATH = new URL("./results/nfs.json", import.meta.url);
/** How long ganesha gets to listen. */
const GANESHA_START_MS = 30_000;

// ---- libnfs through FFI --------------------------------------------------------------------

const LIBNFS = "libnfs.so.13";
const O_RDONLY = 0;

function openLibnfs() {
  return Deno.dlopen(LIBNFS, {
    nfs_init_context: { parameters: [], result: "pointer" },
    nfs_destroy_context: { parameters: ["pointer"], result: "void" },
    nfs_parse_url_dir: { parameters: ["pointer", "buffer"], result: "pointer" },
    nfs_destroy_url: { parameters: ["pointer"], result: "void" },
    nfs_mount: { parameters: ["pointer", "pointer", "pointer"], result: "i32" },
    nfs_umount: { parameters: ["pointer"], result: "i32" },
    nfs_get_error: { parameters: ["pointer"], result: "pointer" },
    nfs_set_uid: { parameters: ["pointer", "i32"], result: "void" },
    nfs_set_gid: { parameters: ["pointer", "i32"], result: "void" },
    nfs_creat: { parameters: ["pointer", "buffer", "i32", "buffer"], result: "i32" },
    nfs_open: { parameters: ["pointer", "buffer", "i32", "buffer"], result: "i32" },
    nfs_close: { parameters: ["pointer", "pointer"], result: "i32" },
    nfs_pwrite: { parameters: ["pointer", "pointer", "u64", "u64", "buffer"], result: "i32" },
    nfs_pread: { parameters: ["pointer", "pointer", "u64", "u64", "buffer"], result: "i32" },
    nfs_fsync: { parameters: ["pointer", "pointer"], result: "i32" },
    nfs_stat64: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
    nfs_unlink: { parameters: ["pointer", "buffer"], result: "i32" },
    nfs_mkdir: { parameters: ["pointer", "buffer"], result: "i32" },
  });
}
type Libnfs = ReturnType<typeof openLibnfs>["symbols"];

function cstr(s: string): Uint8Array {
  return new TextEncoder().encode(`${s}\0`);
}

/** One mounted libnfs context (synchronous calls: one RPC outstanding at a time). */
class NfsMount {
  readonly #nfs: Libnfs;
  readonly #ctx: Deno.PointerObject;

  constructor(nfs: Libnfs, url: string) {
    this.#nfs = nfs;
    const ctx = nfs.nfs_init_context();
    if (ctx === null) throw new Error("nfs_init_context failed");
    this.#ctx = ctx;
    nfs.nfs_set_uid(ctx, 0);
    nfs.nfs_set_gid(ctx, 0);
    const parsed = nfs.nfs_parse_url_dir(ctx, cstr(url));
    if (parsed === null) throw new Error(`${url}: ${this.#error()}`);
    // struct nfs_url { char *server; char *path; char *file; }
    const view = new Deno.UnsafePointerView(parsed);
    const server = Deno.UnsafePointer.create(view.getBigUint64(0));
    const path = Deno.UnsafePointer.create(view.getBigUint64(8));
    const rc = nfs.nfs_mount(ctx, server, path);
    nfs.nfs_destroy_url(parsed);
    if (rc !== 0) throw new Error(`mount ${url}: ${this.#error()}`);
  }

  #error(): string {
    const p = this.#nfs.nfs_get_error(this.#ctx);
    return p === null ? "unknown error" : Deno.UnsafePointerView.getCString(p);
  }

  #check(rc: number, what: string): number {
    if (rc < 0) throw new Error(`${what}: ${this.#error()}`);
    return rc;
  }

  #handle(out: BigUint64Array): Deno.PointerObject {
    const fh = Deno.UnsafePointer.create(out[0]!);
    if (fh === null) throw new Error("libnfs returned no file handle");
    return fh;
  }

  create(path: string): Deno.PointerObject {
    const out = new BigUint64Array(1);
    this.#check(this.#nfs.nfs_creat(this.#ctx, cstr(path), 0o644, out), `creat ${path}`);
    return this.#handle(out);
  }

  open(path: string, flags: number): Deno.PointerObject {
    const out = new BigUint64Array(1);
    this.#check(this.#nfs.nfs_open(this.#ctx, cstr(path), flags, out), `open ${path}`);
    return this.#handle(out);
  }

  close(fh: Deno.PointerObject): void {
    this.#check(this.#nfs.nfs_close(this.#ctx, fh), "close");
  }

  pwrite(fh: Deno.PointerObject, offset: number, data: Uint8Array): void {
    let done = 0;
    while (done < data.length) {
      const part = data.subarray(done);
      done += this.#check(
        this.#nfs.nfs_pwrite(this.#ctx, fh, BigInt(offset + done), BigInt(part.length), part),
        "pwrite",
      );
    }
  }

  pread(fh: Deno.PointerObject, offset: number, into: Uint8Array): number {
    return this.#check(
      this.#nfs.nfs_pread(this.#ctx, fh, BigInt(offset), BigInt(into.length), into),
      "pread",
    );
  }

  fsync(fh: Deno.PointerObject): void {
    this.#check(this.#nfs.nfs_fsync(this.#ctx, fh), "fsync");
  }

  stat(path: string): number {
    // struct nfs_stat_64: 17 uint64 fields; nfs_size is the 8th.
    const st = new BigUint64Array(32);
    this.#check(this.#nfs.nfs_stat64(this.#ctx, cstr(path), st), `stat ${path}`);
    return Number(st[7]);
  }

  mkdir(path: string): void {
    this.#check(this.#nfs.nfs_mkdir(this.#ctx, cstr(path)), `mkdir ${path}`);
  }

  unlink(path: string): void {
    this.#check(this.#nfs.nfs_unlink(this.#ctx, cstr(path)), `unlink ${path}`);
  }

  destroy(): void {
    this.#nfs.nfs_umount(this.#ctx);
    this.#nfs.nfs_destroy_context(this.#ctx);
  }
}

// ---- the measured work ---------------------------------------------------------------------

interface ServerResult {
  server: string;
  writeMBps: number;
  readMBps: number;
  createOps: number;
  statOps: number;
  removeOps: number;
}

/** Fills `buf` with random bytes (getRandomValues takes at most 64 KiB per call). */
function randomFill(buf: Uint8Array): void {
  for (let i = 0; i < buf.length; i += 65536) crypto.getRandomValues(buf.subarray(i, i + 65536));
}

function mbps(bytes: number, ms: number): number {
  return bytes / 1e6 / (ms / 1000);
}

function measure(nfs: Libnfs, name: string, url: string, dir: string): ServerResult {
  const m = new NfsMount(nfs, url);
  try {
    const path = `${dir}/big-${Date.now()}.bin`;
    // A digest of what was written, per MiB, to check the read without holding 1 GiB.
    const sums = new Uint32Array(SIZE_MIB);
    const block = new Uint8Array(IO_BYTES);
    const sum = (b: Uint8Array) => {
      let h = 0x811c9dc5;
      for (let i = 0; i < b.length; i += 4093) h = Math.imul(h ^ b[i]!, 16777619);
      return h >>> 0;
    };
    let writeMs = 0;
    {
      const fh = m.create(path);
      for (let i = 0; i < SIZE_MIB; i++) {
        randomFill(block);
        sums[i] = sum(block);
        const t0 = performance.now();
        m.pwrite(fh, i * IO_BYTES, block);
        writeMs += performance.now() - t0;
      }
      const t0 = performance.now();
      m.fsync(fh);
      m.close(fh);
      writeMs += performance.now() - t0;
    }
    if (m.stat(path) !== SIZE_MIB * IO_BYTES) throw new Error(`${name}: size after write`);
    let readMs = 0;
    {
      const fh = m.open(path, O_RDONLY);
      const t0 = performance.now();
      for (let i = 0; i < SIZE_MIB; i++) {
        let got = 0;
        while (got < IO_BYTES) {
          const n = m.pread(fh, i * IO_BYTES + got, block.subarray(got));
          if (n === 0) throw new Error(`${name}: short read at MiB ${i}`);
          got += n;
        }
        if (sum(block) !== sums[i]) throw new Error(`${name}: MiB ${i} read back differs`);
      }
      readMs = performance.now() - t0;
      m.close(fh);
    }
    m.unlink(path);
    const names = Array.from({ length: FILES }, (_, i) => `${dir}/small-${i}`);
    let t0 = performance.now();
    for (const n of names) m.close(m.create(n));
    const createOps = FILES / ((performance.now() - t0) / 1000);
    t0 = performance.now();
    for (const n of names) m.stat(n);
    const statOps = FILES / ((performance.now() - t0) / 1000);
    t0 = performance.now();
    for (const n of names) m.unlink(n);
    const removeOps = FILES / ((performance.now() - t0) / 1000);
    const result = {
      server: name,
      writeMBps: mbps(SIZE_MIB * IO_BYTES, writeMs),
      readMBps: mbps(SIZE_MIB * IO_BYTES, readMs),
      createOps,
      statOps,
      removeOps,
    };
    console.log(JSON.stringify(result));
    return result;
  } finally {
    m.destroy();
  }
}

// ---- the servers ---------------------------------------------------------------------------

function freePort(host: string): number {
  const l = Deno.listen({ hostname: host, port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function rpcbindAnswers(): Promise<boolean> {
  try {
    const out = await new Deno.Command("rpcinfo", { stdout: "null", stderr: "null" }).output();
    return out.success;
  } catch {
    return false;
  }
}

/** ganesha (VFS) exporting `exportDir` as /export; stops what it started. */
async function startGanesha(workDir: string, exportDir: string) {
  const started: Deno.ChildProcess[] = [];
  if (!(await rpcbindAnswers())) {
    await Deno.mkdir("/run/rpcbind", { recursive: true });
    started.push(
      new Deno.Command("unshare", {
        args: ["-n", "sh", "-c", "exec rpcbind -f -w"],
        stdout: "null",
        stderr: "null",
      }).spawn(),
    );
    for (let i = 0; i < 40 && !(await rpcbindAnswers()); i++) {
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  const nfsPort = freePort(GANESHA_HOST);
  const mntPort = freePort(GANESHA_HOST);
  await Deno.mkdir(`${workDir}/recov`, { recursive: true });
  const conf = `${workDir}/ganesha.conf`;
  await Deno.writeTextFile(
    conf,
    `NFS_CORE_PARAM { Bind_addr = ${GANESHA_HOST}; NFS_Port = ${nfsPort}; MNT_Port = ${mntPort};
  Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false; Protocols = 3, 4; }
NFSV4 { Graceless = true; RecoveryRoot = ${workDir}/recov; }
EXPORT { Export_Id = 1; Path = ${exportDir}; Pseudo = /export; Access_Type = RW;
  Squash = No_Root_Squash; SecType = sys; Protocols = 3, 4; Transports = TCP;
  FSAL { Name = VFS; } }
LOG { Default_Log_Level = EVENT; }
`,
  );
  const ganesha = new Deno.Command("ganesha.nfsd", {
    args: ["-F", "-f", conf, "-L", `${workDir}/ganesha.log`, "-p", `${workDir}/ganesha.pid`],
    stdout: "null",
    stderr: "null",
  }).spawn();
  started.unshift(ganesha);
  const stop = async () => {
    for (const p of started) {
      try {
        p.kill("SIGTERM");
      } catch { /* gone */ }
      await p.status;
    }
  };
  const deadline = Date.now() + GANESHA_START_MS;
  for (;;) {
    try {
      (await Deno.connect({ hostname: GANESHA_HOST, port: nfsPort })).close();
      break;
    } catch {
      if (Date.now() > deadline) {
        await stop();
        const log = await Deno.readTextFile(`${workDir}/ganesha.log`).catch(() => "");
        throw new Error(`ganesha did not listen: ${log.slice(-2000)}`);
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  // The first calls after start can meet its grace period: give it a moment.
  await new Promise((r) => setTimeout(r, 1000));
  // NFSv3 mounts ganesha's export by its path (the pseudo path is v4's).
  return { url: `nfs://${GANESHA_HOST}${exportDir}?nfsport=${nfsPort}&mountport=${mntPort}`, stop };
}

async function main(): Promise<void> {
  const lib = openLibnfs();
  const nfs = lib.symbols;
  const base = await Deno.makeTempDir({ prefix: "kiseki-nfs-bench-" });
  const dataDir = `${base}/kiseki`;
  const exportDir = `${base}/ganesha-export`;
  await Deno.mkdir(exportDir, { recursive: true });
  const addrs = testAddrs(BENCH_HOST_OCTET);
  let server: RunningRole | null = null;
  let ganesha: Awaited<ReturnType<typeof startGanesha>> | null = null;
  const results: ServerResult[] = [];
  try {
    server = startRole("server", { ...addrs, KISEKI_DATA_DIR: dataDir, KISEKI_LOG_LEVEL: "warn" });
    await Promise.race([
      waitForHttp(`http://${addrs.KISEKI_METRICS_ADDR}/health`, "OK", 60_000),
      server.exited.then((code) => {
        throw new Error(`kiseki server exited ${code}: ${server!.stderr()}`);
      }),
    ]);
    const [host, port] = addrs.KISEKI_NFS_ADDR.split(":");
    // The bucket is the top-level directory the files go to.
    const root = new NfsMount(nfs, `nfs://${host}/?nfsport=${port}&mountport=${port}`);
    try {
      root.mkdir("/bench");
    } finally {
      root.destroy();
    }
    ganesha = await startGanesha(base, exportDir);
    console.log(
      `bench:nfs: ${SIZE_MIB} MiB sequential, ${FILES} small files, libnfs (sync) on the host`,
    );
    results.push(
      measure(nfs, "kiseki", `nfs://${host}/bench?nfsport=${port}&mountport=${port}`, ""),
    );
    results.push(measure(nfs, "ganesha", ganesha.url, ""));
  } finally {
    await ganesha?.stop();
    await server?.stop("SIGTERM");
    lib.close();
    await Deno.remove(base, { recursive: true }).catch(() => {});
  }
  const [k, g] = results as [ServerResult, ServerResult];
  const ratio = (a: number, b: number) => (a / b).toPrecision(2);
  const rows: (string | number)[][] = [
    [`write ${SIZE_MIB} MiB (MB/s)`, k.writeMBps.toFixed(1), g.writeMBps.toFixed(1)],
    [`read ${SIZE_MIB} MiB (MB/s)`, k.readMBps.toFixed(1), g.readMBps.toFixed(1)],
    ["create (op/s)", k.createOps.toFixed(0), g.createOps.toFixed(0)],
    ["stat (op/s)", k.statOps.toFixed(0), g.statOps.toFixed(0)],
    ["remove (op/s)", k.removeOps.toFixed(0), g.removeOps.toFixed(0)],
  ];
  const ratios = [
    ratio(k.writeMBps, g.writeMBps),
    ratio(k.readMBps, g.readMBps),
    ratio(k.createOps, g.createOps),
    ratio(k.statOps, g.statOps),
    ratio(k.removeOps, g.removeOps),
  ];
  table(
    console.log,
    ["case", "kiseki", "ganesha", "kiseki/ganesha"],
    rows.map((r, i) => [
      ...r,
      `${ratios[i]}x`,
    ]),
  );
  const json = {
    date: new Date().toISOString(),
    sizeMiB: SIZE_MIB,
    files: FILES,
    client: "libnfs 4.0 (Debian libnfs13) through FFI, synchronous calls, NFSv3 over TCP",
    results,
    ratios: {
      write: Number(ratios[0]),
      read: Number(ratios[1]),
      create: Number(ratios[2]),
      stat: Number(ratios[3]),
      remove: Number(ratios[4]),
    },
  };
  await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
  await Deno.writeTextFile(RESULTS_PATH, JSON.stringify(json, null, 2) + "\n");
  console.log(`wrote ${RESULTS_PATH.pathname}`);
}

if (import.meta.main) await main();
