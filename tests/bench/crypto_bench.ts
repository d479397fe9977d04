// `deno task bench:crypto [--quick]`: AES-256-GCM seal/open throughput of the OpenSSL shim
// and the WebCrypto twin through the Aead port, against a same-run ceiling from
// `openssl speed -evp aes-256-gcm` at the same block size. Prints a table and writes
// tests/bench/results/crypto.json.
//
// Buffers are allocated once per size and reused, as hot paths do. Each case runs a short
// warm-up, then several timed rounds; the table shows the median round (the machine is
// shared, and a median is as fair to us as openssl's one long average is to it).

import { defaultShimOptions } from "../../ffi/loader.ts";
import { Prng } from "../../mod/base/mod.ts";
import {
  type Aead,
  AEAD_KEY_BYTES,
  AEAD_NONCE_BYTES,
  AEAD_TAG_BYTES,
  type AeadKey,
  type AeadSealItem,
  OpensslAead,
  WebCryptoAead,
} from "../../mod/crypto/mod.ts";

const KIB = 1024;
const MIB = 1024 * KIB;
const quick = Deno.args.includes("--quick");

const SIZES = quick ? [4 * KIB, 64 * KIB, MIB] : [4 * KIB, 64 * KIB, MIB, 16 * MIB];
/** Time spent timing one case (split into rounds), and the rounds. */
const CASE_BUDGET_MS = quick ? 300 : 1500;
const ROUNDS = quick ? 3 : 5;
const WARMUP_MS = quick ? 30 : 100;
/** Seconds per `openssl speed` run (whole seconds only). */
const CEILING_SECONDS = quick ? 1 : 3;
const BATCH_ITEMS = 256;
const BATCH_ITEM_BYTES = 4 * KIB;
/** Sizes whose OpenSSL seal is also timed on the other path, and with two in flight. */
const OTHER_PATH_SIZES = quick ? [MIB] : [MIB, 16 * MIB];

const RESULTS_DIR = new URL("./results/", import.meta.url);
const encoder = new TextEncoder();

function print(line = ""): void {
  Deno.stdout.writeSync(encoder.encode(line + "\n"));
}

function progress(line: string): void {
  Deno.stderr.writeSync(encoder.encode(line + "\n"));
}

interface Row {
  impl: string;
  op: string;
  sizeBytes: number;
  path: string;
  mbPerSecond: number;
  roundsMbPerSecond: number[];
  ceilingMbPerSecond: number | null;
  ratio: number | null;
}

/** `openssl speed` for one block size, in MB/s (10^6 bytes), or null when it fails. */
async function opensslSpeed(sizeBytes: number, decrypt: boolean): Promise<number | null> {
  const args = ["speed", "-mr", ...(decrypt ? ["-decrypt"] : []), "-evp", "aes-256-gcm"];
  args.push("-bytes", String(sizeBytes), "-seconds", String(CEILING_SECONDS));
  try {
    const { success, stdout } = await new Deno.Command("openssl", {
      args,
      stdout: "piped",
      stderr: "null",
    }).output();
    if (!success) return null;
    // Machine-readable result: "+F:<n>:AES-256-GCM:<bytes per second>".
    const line = new TextDecoder().decode(stdout).split("\n").find((l) => l.startsWith("+F:"));
    const value = Number(line?.split(":").at(-1));
    return Number.isFinite(value) && value > 0 ? value / 1e6 : null;
  } catch {
    return null;
  }
}

async function opensslVersionText(): Promise<string | null> {
  try {
    const { success, stdout } = await new Deno.Command("openssl", {
      args: ["version"],
      stdout: "piped",
      stderr: "null",
    }).output();
    return success ? new TextDecoder().decode(stdout).trim() : null;
  } catch {
    return null;
  }
}

/** Runs `op` repeatedly; returns MB/s per round. Checks the clock about once a ms. */
async function measure(op: () => Promise<unknown>, bytesPerOp: number): Promise<number[]> {
  let inner = 1;
  const warmEnd = performance.now() + WARMUP_MS;
  while (performance.now() < warmEnd) {
    const t0 = performance.now();
    for (let i = 0; i < inner; i++) await op();
    if (performance.now() - t0 < 1) inner *= 2;
  }
  const rounds: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const start = performance.now();
    const end = start + CASE_BUDGET_MS / ROUNDS;
    let ops = 0;
    let now = start;
    while (now < end) {
      for (let i = 0; i < inner; i++) await op();
      ops += inner;
      now = performance.now();
    }
    rounds.push((ops * bytesPerOp) / ((now - start) / 1000) / 1e6);
  }
  return rounds;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function row(
  impl: string,
  op: string,
  sizeBytes: number,
  path: string,
  rounds: number[],
  ceiling: number | null,
): Row {
  const mbPerSecond = median(rounds);
  return {
    impl,
    op,
    sizeBytes,
    path,
    mbPerSecond,
    roundsMbPerSecond: rounds.map((v) => Math.round(v)),
    ceilingMbPerSecond: ceiling,
    ratio: ceiling === null ? null : mbPerSecond / ceiling,
  };
}

function formatSize(bytes: number): string {
  return bytes >= MIB ? `${bytes / MIB} MiB` : `${bytes / KIB} KiB`;
}

function pathOf(aead: Aead, bytes: number): string {
  if (aead instanceof OpensslAead) {
    return bytes >= aead.nonblockingMinBytes ? "nonblocking" : "blocking";
  }
  return "async";
}

/** A counter nonce in a reused buffer: unique per call, as the port requires. */
class NonceCounter {
  readonly bytes = new Uint8Array(AEAD_NONCE_BYTES);
  readonly #view = new DataView(this.bytes.buffer);
  #next = 0;
  advance(): Uint8Array {
    this.#view.setUint32(8, this.#next++);
    return this.bytes;
  }
}

/** OpenSSL instances pinned to one path each, beside the default one. */
interface OtherPaths {
  defaultPath: OpensslAead;
  blocking: OpensslAead;
  nonblocking: OpensslAead;
  raw: Uint8Array;
}

async function benchSize(
  impls: { name: string; aead: Aead; key: AeadKey }[],
  other: OtherPaths | null,
  sizeBytes: number,
  prng: Prng,
): Promise<Row[]> {
  progress(`crypto bench: ${formatSize(sizeBytes)}: openssl speed ceilings...`);
  const sealCeiling = await opensslSpeed(sizeBytes, false);
  const openCeiling = await opensslSpeed(sizeBytes, true);
  const plaintext = prng.bytes(sizeBytes);
  const aad = prng.bytes(16);
  const sealed = new Uint8Array(sizeBytes + AEAD_TAG_BYTES);
  const opened = new Uint8Array(sizeBytes);
  const nonces = new NonceCounter();
  const rows: Row[] = [];
  for (const { name, aead, key } of impls) {
    progress(`crypto bench: ${formatSize(sizeBytes)}: ${name}...`);
    const seal = await measure(
      () => aead.seal(key, nonces.advance(), plaintext, aad, sealed),
      sizeBytes,
    );
    rows.push(row(name, "seal", sizeBytes, pathOf(aead, sizeBytes), seal, sealCeiling));
    const nonce = nonces.advance().slice();
    await aead.seal(key, nonce, plaintext, aad, sealed);
    const open = await measure(() => aead.open(key, nonce, sealed, aad, opened), sizeBytes);
    rows.push(row(name, "open", sizeBytes, pathOf(aead, sizeBytes), open, openCeiling));
    if (!opened.every((b, i) => b === plaintext[i])) throw new Error(`${name} open mismatch`);
  }
  if (other !== null && OTHER_PATH_SIZES.includes(sizeBytes)) {
    const aead = sizeBytes >= other.defaultPath.nonblockingMinBytes
      ? other.blocking
      : other.nonblocking;
    const key = await aead.importKey(other.raw);
    progress(`crypto bench: ${formatSize(sizeBytes)}: openssl on the other path...`);
    const seal = await measure(
      () => aead.seal(key, nonces.advance(), plaintext, aad, sealed),
      sizeBytes,
    );
    rows.push(
      row("openssl", "seal", sizeBytes, `${pathOf(aead, sizeBytes)} (forced)`, seal, sealCeiling),
    );
    // Two seals in flight: what the nonblocking path gives concurrent requests.
    const inFlight = other.nonblocking;
    const inFlightKey = await inFlight.importKey(other.raw);
    const second = new Uint8Array(sealed.length);
    const twoSeals = await measure(
      () =>
        Promise.all([
          inFlight.seal(inFlightKey, nonces.advance().slice(), plaintext, aad, sealed),
          inFlight.seal(inFlightKey, nonces.advance().slice(), plaintext, aad, second),
        ]),
      2 * sizeBytes,
    );
    rows.push(row("openssl", "seal, 2 in flight", sizeBytes, "nonblocking", twoSeals, null));
  }
  return rows;
}

async function benchBatch(
  impls: { name: string; aead: Aead; key: AeadKey }[],
  prng: Prng,
): Promise<Row[]> {
  progress(`crypto bench: batch ${BATCH_ITEMS} x ${formatSize(BATCH_ITEM_BYTES)}...`);
  const ceiling = await opensslSpeed(BATCH_ITEM_BYTES, false);
  // Items are views into two arenas, the layout a chunk store hands over.
  const plainArena = prng.bytes(BATCH_ITEMS * BATCH_ITEM_BYTES);
  const sealedArena = new Uint8Array(BATCH_ITEMS * (BATCH_ITEM_BYTES + AEAD_TAG_BYTES));
  const nonceArena = new Uint8Array(BATCH_ITEMS * AEAD_NONCE_BYTES);
  const nonceView = new DataView(nonceArena.buffer);
  const aad = new Uint8Array(0);
  let counter = 0;
  const rows: Row[] = [];
  for (const { name, aead, key } of impls) {
    const items: AeadSealItem[] = Array.from({ length: BATCH_ITEMS }, (_, i) => ({
      key,
      nonce: nonceArena.subarray(i * AEAD_NONCE_BYTES, (i + 1) * AEAD_NONCE_BYTES),
      plaintext: plainArena.subarray(i * BATCH_ITEM_BYTES, (i + 1) * BATCH_ITEM_BYTES),
      aad,
      out: sealedArena.subarray(
        i * (BATCH_ITEM_BYTES + AEAD_TAG_BYTES),
        (i + 1) * (BATCH_ITEM_BYTES + AEAD_TAG_BYTES),
      ),
    }));
    const rounds = await measure(() => {
      for (let i = 0; i < BATCH_ITEMS; i++) {
        nonceView.setUint32(i * AEAD_NONCE_BYTES + 8, counter++);
      }
      return aead.sealBatch(items);
    }, BATCH_ITEMS * BATCH_ITEM_BYTES);
    const path = aead instanceof OpensslAead
      ? `${pathOf(aead, BATCH_ITEMS * BATCH_ITEM_BYTES)}, 1 FFI call`
      : "async";
    rows.push(row(name, `sealBatch ${BATCH_ITEMS}x`, BATCH_ITEM_BYTES, path, rounds, ceiling));
  }
  return rows;
}

function printTable(rows: Row[]): void {
  const header = ["impl", "op", "size", "path", "MB/s", "ceiling MB/s", "ratio"];
  const cells = rows.map((r) => [
    r.impl,
    r.op,
    formatSize(r.sizeBytes),
    r.path,
    r.mbPerSecond.toFixed(0),
    r.ceilingMbPerSecond === null ? "n/a" : r.ceilingMbPerSecond.toFixed(0),
    r.ratio === null ? "n/a" : r.ratio.toFixed(2),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]): string =>
    c.map((v, i) => (i >= 4 ? v.padStart(widths[i]) : v.padEnd(widths[i]))).join("  ");
  print(line(header));
  print(widths.map((w) => "-".repeat(w)).join("  "));
  for (const c of cells) print(line(c));
}

async function main(): Promise<void> {
  const started = performance.now();
  const prng = new Prng(0xc0ffee);
  const raw = prng.bytes(AEAD_KEY_BYTES);
  const impls: { name: string; aead: Aead; key: AeadKey }[] = [];
  let other: OtherPaths | null = null;
  const loaded = OpensslAead.load(defaultShimOptions());
  const shimNote = loaded.ok
    ? `${loaded.aead.reason} (${loaded.aead.opensslVersion})`
    : `OpenSSL shim absent: ${loaded.reason}`;
  if (loaded.ok) {
    impls.push({ name: "openssl", aead: loaded.aead, key: await loaded.aead.importKey(raw) });
    const blocking = OpensslAead.load(defaultShimOptions(), {
      nonblockingMinBytes: Number.MAX_SAFE_INTEGER,
    });
    const nonblocking = OpensslAead.load(defaultShimOptions(), { nonblockingMinBytes: 0 });
    if (blocking.ok && nonblocking.ok) {
      other = {
        defaultPath: loaded.aead,
        blocking: blocking.aead,
        nonblocking: nonblocking.aead,
        raw,
      };
    }
  }
  const twin = new WebCryptoAead("benchmark");
  impls.push({ name: "webcrypto", aead: twin, key: await twin.importKey(raw) });

  const rows: Row[] = [];
  for (const size of SIZES) rows.push(...(await benchSize(impls, other, size, prng)));
  rows.push(...(await benchBatch(impls, prng)));

  const elapsedSeconds = (performance.now() - started) / 1000;
  print(`AES-256-GCM, ${quick ? "quick" : "full"} mode, ${elapsedSeconds.toFixed(1)} s`);
  print(`shim: ${shimNote}`);
  print(
    `ceiling: openssl speed -evp aes-256-gcm -bytes <size> -seconds ${CEILING_SECONDS}` +
      ` (open rows: with -decrypt)`,
  );
  print();
  printTable(rows);

  await Deno.mkdir(RESULTS_DIR, { recursive: true });
  const report = {
    bench: "crypto",
    mode: quick ? "quick" : "full",
    date: new Date().toISOString(),
    elapsedSeconds,
    host: {
      cpus: navigator.hardwareConcurrency,
      deno: Deno.version.deno,
      openssl: await opensslVersionText(),
    },
    shim: shimNote,
    method: {
      caseBudgetMs: CASE_BUDGET_MS,
      rounds: ROUNDS,
      statistic: "median of rounds",
      ceiling:
        `openssl speed -mr [-decrypt] -evp aes-256-gcm -bytes <size> -seconds ${CEILING_SECONDS}`,
      mbUnit: "10^6 bytes",
    },
    rows,
  };
  const file = new URL("crypto.json", RESULTS_DIR);
  await Deno.writeTextFile(file, JSON.stringify(report, null, 2) + "\n");
  print();
  print(`wrote ${file.pathname}`);
}

await main();
