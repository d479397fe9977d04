// `deno run -A tests/bench/cdc_bench.ts [--quick]`: chooses the content-defined chunking
// defaults by measurement. For several average chunk sizes it measures
//   1. chunker throughput, streaming 1 MiB pieces, against a same-run ceiling: a JS loop
//      that only reads every byte once (the least any byte-at-a-time scan can cost);
//   2. dedup after editing a large random file (inserts, deletions, overwrites): how many
//      bytes the edited version re-stores, per edit;
//   3. the write pipeline per chunk: chunking + chunk id (SHA-256) + per-chunk DEK + AES-GCM
//      seal into a reused buffer, through the Aead this machine would select; this is where
//      small chunks lose, because each chunk pays fixed costs;
// and, for the chunk id decision, SHA-256 through node:crypto against WebCrypto.
// Prints tables and writes tests/bench/results/cdc.json.

import { createHash } from "node:crypto";
import { defaultShimOptions } from "../../ffi/loader.ts";
import { Prng } from "../../mod/base/mod.ts";
import { cdcParams, ContentDefinedChunker, cutPoints } from "../../mod/chunk/mod.ts";
import { sha256ChunkId } from "../../mod/chunk/mod.ts";
import { chooseAead, envelopeBytes, sealChunk, WebCryptoAead } from "../../mod/crypto/mod.ts";
import { table } from "./_table.ts";

const KIB = 1024;
const MIB = 1024 * KIB;
const quick = Deno.args.includes("--quick");

const AVG_SIZES = [64 * KIB, 256 * KIB, 1 * MIB, 4 * MIB];
/** Bytes chunked per throughput round, and rounds (the median is reported). */
const SCAN_BYTES = quick ? 64 * MIB : 256 * MIB;
const ROUNDS = quick ? 3 : 5;
const PIECE_BYTES = 1 * MIB;
/** The edited file and its edits. */
const DEDUP_FILE_BYTES = quick ? 64 * MIB : 512 * MIB;
const EDITS = quick ? 8 : 32;
const EDIT_BYTES_MAX = 4096;
/** Bytes pushed through the whole write pipeline per size. */
const PIPELINE_BYTES = quick ? 32 * MIB : 128 * MIB;

const RESULTS_DIR = new URL("./results/", import.meta.url);
const encoder = new TextEncoder();

function print(line = ""): void {
  Deno.stdout.writeSync(encoder.encode(line + "\n"));
}

function progress(line: string): void {
  Deno.stderr.writeSync(encoder.encode(line + "\n"));
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function mbps(bytes: number, ms: number): number {
  return bytes / 1e6 / (ms / 1000);
}

function size(bytes: number): string {
  return bytes >= MIB ? `${bytes / MIB} MiB` : `${bytes / KIB} KiB`;
}

// One buffer of random data, reused by every section (fresh large allocations are slow).
progress(`generating ${DEDUP_FILE_BYTES / MIB} MiB of random data`);
const data = new Prng(1).bytes(Math.max(SCAN_BYTES, DEDUP_FILE_BYTES));

// --- 1. chunker throughput -------------------------------------------------------------

/** The ceiling: read every byte once in a JS loop, nothing else. */
function scanCeiling(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i++) sum = (sum + bytes[i]!) | 0;
  return sum;
}

function chunkAll(bytes: Uint8Array, avgBytes: number): number {
  const chunker = new ContentDefinedChunker({ avgBytes });
  let chunks = 0;
  for (let at = 0; at < bytes.length; at += PIECE_BYTES) {
    chunks += chunker.push(bytes.subarray(at, Math.min(bytes.length, at + PIECE_BYTES))).length;
  }
  return chunks + (chunker.finish() === null ? 0 : 1);
}

interface ChunkerRow {
  avgBytes: number;
  minBytes: number;
  maxBytes: number;
  meanChunkBytes: number;
  mbPerSecond: number;
  roundsMbPerSecond: number[];
  ceilingMbPerSecond: number;
  ratio: number;
}

const scanData = data.subarray(0, SCAN_BYTES);
const ceilingRounds: number[] = [];
for (let r = 0; r < ROUNDS; r++) {
  const t = performance.now();
  scanCeiling(scanData);
  ceilingRounds.push(mbps(SCAN_BYTES, performance.now() - t));
}
const ceiling = median(ceilingRounds);

const chunkerRows: ChunkerRow[] = [];
for (const avgBytes of AVG_SIZES) {
  progress(`chunker: avg ${size(avgBytes)}`);
  const params = cdcParams({ avgBytes });
  chunkAll(scanData.subarray(0, 8 * MIB), avgBytes); // warm-up
  const rounds: number[] = [];
  let chunks = 0;
  for (let r = 0; r < ROUNDS; r++) {
    const t = performance.now();
    chunks = chunkAll(scanData, avgBytes);
    rounds.push(mbps(SCAN_BYTES, performance.now() - t));
  }
  const mbPerSecond = median(rounds);
  chunkerRows.push({
    avgBytes,
    minBytes: params.minBytes,
    maxBytes: params.maxBytes,
    meanChunkBytes: Math.round(SCAN_BYTES / chunks),
    mbPerSecond: Math.round(mbPerSecond),
    roundsMbPerSecond: rounds.map(Math.round),
    ceilingMbPerSecond: Math.round(ceiling),
    ratio: Math.round((mbPerSecond / ceiling) * 1000) / 1000,
  });
}

// --- 2. dedup of an edited file -------------------------------------------------------

interface Edit {
  kind: "insert" | "delete" | "overwrite";
  at: number;
  bytes: number;
}

function applyEdits(original: Uint8Array, edits: Edit[], prng: Prng): Uint8Array {
  // Edits sorted by position, applied in one pass into one new buffer.
  const grow = edits.reduce((n, e) => n + (e.kind === "insert" ? e.bytes : 0), 0);
  const out = new Uint8Array(original.length + grow);
  let from = 0;
  let to = 0;
  for (const e of [...edits].sort((a, b) => a.at - b.at)) {
    if (e.at < from) continue;
    out.set(original.subarray(from, e.at), to);
    to += e.at - from;
    from = e.at;
    if (e.kind === "insert") {
      out.set(prng.bytes(e.bytes), to);
      to += e.bytes;
    } else if (e.kind === "delete") {
      from += e.bytes;
    } else {
      out.set(prng.bytes(e.bytes), to);
      to += e.bytes;
      from += e.bytes;
    }
  }
  out.set(original.subarray(from), to);
  return out.subarray(0, to + original.length - from);
}

function chunkDigests(bytes: Uint8Array, avgBytes: number): { digest: string; bytes: number }[] {
  let start = 0;
  return cutPoints(bytes, { avgBytes }).map((end) => {
    const chunk = bytes.subarray(start, end);
    start = end;
    return { digest: createHash("sha256").update(chunk).digest("hex"), bytes: chunk.length };
  });
}

interface DedupRow {
  avgBytes: number;
  fileBytes: number;
  edits: number;
  chunks: number;
  restoredChunks: number;
  restoredBytes: number;
  restoredBytesPerEdit: number;
  dedupRatio: number;
  singleInsertRestoredChunks: number;
  /** A composition's chunk list for 1 GiB: refs x (32-byte id + 8-byte length). */
  chunkListBytesPerGib: number;
}

/** One chunk reference in a composition delta: id and length. */
const CHUNK_REF_BYTES = 32 + 8;

const prng = new Prng(2);
const original = data.subarray(0, DEDUP_FILE_BYTES);
const edits: Edit[] = Array.from({ length: EDITS }, () => ({
  kind: (["insert", "delete", "overwrite"] as const)[prng.nextInt(3)]!,
  at: prng.nextInt(DEDUP_FILE_BYTES - EDIT_BYTES_MAX),
  bytes: 1 + prng.nextInt(EDIT_BYTES_MAX),
}));
progress(`dedup: applying ${EDITS} edits`);
const edited = applyEdits(original, edits, prng);
const singleInsert = applyEdits(
  original,
  [{ kind: "insert", at: DEDUP_FILE_BYTES >> 1, bytes: 100 }],
  prng,
);

function restored(before: Set<string>, after: { digest: string; bytes: number }[]) {
  const fresh = after.filter((c) => !before.has(c.digest));
  return { chunks: fresh.length, bytes: fresh.reduce((n, c) => n + c.bytes, 0) };
}

const dedupRows: DedupRow[] = [];
for (const avgBytes of AVG_SIZES) {
  progress(`dedup: avg ${size(avgBytes)}`);
  const before = chunkDigests(original, avgBytes);
  const known = new Set(before.map((c) => c.digest));
  const after = chunkDigests(edited, avgBytes);
  const many = restored(known, after);
  const one = restored(known, chunkDigests(singleInsert, avgBytes));
  dedupRows.push({
    avgBytes,
    fileBytes: DEDUP_FILE_BYTES,
    edits: EDITS,
    chunks: after.length,
    restoredChunks: many.chunks,
    restoredBytes: many.bytes,
    restoredBytesPerEdit: Math.round(many.bytes / EDITS),
    dedupRatio: Math.round((1 - many.bytes / edited.length) * 10000) / 10000,
    singleInsertRestoredChunks: one.chunks,
    chunkListBytesPerGib: Math.round(
      ((1024 * MIB) / (edited.length / after.length)) * CHUNK_REF_BYTES,
    ),
  });
}

// --- 3. write pipeline per chunk ------------------------------------------------------

interface PipelineRow {
  avgBytes: number;
  aead: string;
  chunks: number;
  mbPerSecond: number;
  roundsMbPerSecond: number[];
  perChunkMicros: number;
}

// The Aead this machine selects (the OpenSSL shim when built), and the WebCrypto twin that
// roles without FFI use; per-chunk costs differ between them.
const selected = chooseAead(defaultShimOptions());
const aeads = selected instanceof WebCryptoAead ? [selected] : [selected, new WebCryptoAead()];
const masterKey = new Prng(3).bytes(32);
const pipelineData = data.subarray(0, PIPELINE_BYTES);
const pipelineRows: PipelineRow[] = [];
for (const aead of aeads) {
  for (const avgBytes of AVG_SIZES) {
    progress(`pipeline: avg ${size(avgBytes)} (${aead.implementation})`);
    const out = new Uint8Array(envelopeBytes(cdcParams({ avgBytes }).maxBytes)); // reused
    const rounds: number[] = [];
    let chunks = 0;
    for (let r = 0; r < ROUNDS; r++) {
      const t = performance.now();
      const chunker = new ContentDefinedChunker({ avgBytes });
      let start = 0;
      chunks = 0;
      const cuts = chunker.push(pipelineData);
      cuts.push(chunker.finish() ?? pipelineData.length);
      for (const end of cuts) {
        const plaintext = pipelineData.subarray(start, end);
        const chunkId = sha256ChunkId(plaintext);
        await sealChunk({ aead, masterKey, epoch: 1, chunkId, plaintext, out });
        start = end;
        chunks++;
      }
      rounds.push(mbps(PIPELINE_BYTES, performance.now() - t));
    }
    const mbPerSecond = median(rounds);
    pipelineRows.push({
      avgBytes,
      aead: aead.implementation,
      chunks,
      mbPerSecond: Math.round(mbPerSecond),
      roundsMbPerSecond: rounds.map(Math.round),
      perChunkMicros: Math.round((PIPELINE_BYTES / chunks / (mbPerSecond * 1e6)) * 1e6),
    });
  }
}

// --- 4. chunk id: node:crypto against WebCrypto ---------------------------------------

interface ChunkIdRow {
  sizeBytes: number;
  nodeMbPerSecond: number;
  webCryptoMbPerSecond: number;
  ratio: number;
}

const chunkIdRows: ChunkIdRow[] = [];
for (const sizeBytes of [4 * KIB, 64 * KIB, 1 * MIB]) {
  const input = data.subarray(0, sizeBytes) as Uint8Array<ArrayBuffer>;
  const iterations = Math.max(16, Math.floor((quick ? 32 : 128) * MIB / sizeBytes));
  const time = async (f: () => unknown) => {
    for (let i = 0; i < 8; i++) await f();
    const t = performance.now();
    for (let i = 0; i < iterations; i++) await f();
    return mbps(sizeBytes * iterations, performance.now() - t);
  };
  const node = await time(() => sha256ChunkId(input));
  const web = await time(() => crypto.subtle.digest("SHA-256", input));
  chunkIdRows.push({
    sizeBytes,
    nodeMbPerSecond: Math.round(node),
    webCryptoMbPerSecond: Math.round(web),
    ratio: Math.round((node / web) * 100) / 100,
  });
}

// --- report ---------------------------------------------------------------------------

const kib = (bytes: number) => `${Math.round(bytes / KIB)} KiB`;

print(
  `content-defined chunking (${quick ? "quick" : "full"}; ${navigator.hardwareConcurrency} cores)`,
);
print();
print(
  `chunker: ${SCAN_BYTES / MIB} MiB pushed in ${PIECE_BYTES / MIB} MiB pieces, median of ${ROUNDS}`,
);
table(
  print,
  ["avg", "min", "max", "mean chunk", "MB/s", "ceiling MB/s", "ratio"],
  chunkerRows.map((r) => [
    size(r.avgBytes),
    size(r.minBytes),
    size(r.maxBytes),
    kib(r.meanChunkBytes),
    r.mbPerSecond,
    r.ceilingMbPerSecond,
    r.ratio.toFixed(3),
  ]),
  { leftColumns: 0 },
);
print();
print(
  `dedup: ${EDITS} edits (insert/delete/overwrite of 1..${EDIT_BYTES_MAX} B) in a ` +
    `${DEDUP_FILE_BYTES / MIB} MiB file; refs = chunk list of a composition per GiB`,
);
table(
  print,
  [
    "avg",
    "chunks",
    "re-stored",
    "re-stored MiB",
    "per edit",
    "dedup ratio",
    "1 insert",
    "refs/GiB",
  ],
  dedupRows.map((r) => [
    size(r.avgBytes),
    r.chunks,
    r.restoredChunks,
    (r.restoredBytes / MIB).toFixed(1),
    kib(r.restoredBytesPerEdit),
    r.dedupRatio.toFixed(4),
    r.singleInsertRestoredChunks,
    kib(r.chunkListBytesPerGib),
  ]),
  { leftColumns: 0 },
);
print();
print(
  `write pipeline: chunk + SHA-256 id + HKDF DEK + AES-256-GCM seal into a reused buffer, ` +
    `${PIPELINE_BYTES / MIB} MiB, median of ${ROUNDS}`,
);
table(
  print,
  ["avg", "aead", "chunks", "MB/s", "µs/chunk"],
  pipelineRows.map((r) => [size(r.avgBytes), r.aead, r.chunks, r.mbPerSecond, r.perChunkMicros]),
  { leftColumns: 0 },
);
print();
print("chunk id SHA-256: node:crypto against WebCrypto");
table(
  print,
  ["size", "node MB/s", "webcrypto MB/s", "ratio"],
  chunkIdRows.map((r) => [
    size(r.sizeBytes),
    r.nodeMbPerSecond,
    r.webCryptoMbPerSecond,
    r.ratio.toFixed(2),
  ]),
  { leftColumns: 0 },
);

await Deno.mkdir(RESULTS_DIR, { recursive: true });
await Deno.writeTextFile(
  new URL("cdc.json", RESULTS_DIR),
  JSON.stringify(
    {
      mode: quick ? "quick" : "full",
      cores: navigator.hardwareConcurrency,
      deno: Deno.version.deno,
      rows: chunkerRows,
      dedup: dedupRows,
      pipeline: pipelineRows,
      chunkId: chunkIdRows,
    },
    null,
    2,
  ) + "\n",
);
