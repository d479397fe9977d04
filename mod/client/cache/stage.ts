// Staging: pulls a dataset's chunks into pinned L2 before a job reads it, resumes after an
// interruption, reports its state and releases it. It needs only a DatasetSource ("list the
// files of a dataset, give a file's chunks"), which the cluster client implements.
//
// State lives under KISEKI_CACHE_DIR/staging/, per dataset, named by a hash of its path:
//   <id>.state    one JSON line: totals and whether the run finished (rewritten, renamed in)
//   <id>.journal  per file, "p <file hash> <version hash> <bytes> <chunk ids>" before its
//                 chunks are pinned (so --release finds pins an interrupted run left) and
//                 "f ..." (same fields) once all are; a torn last line is ignored.
// Dataset paths and file names are tenant data, so only their SHA-256 is written here; chunk
// ids are already the names of L2's files.

import { assert, fromHex, toHex } from "../../base/mod.ts";
import type { Progress } from "./progress.ts";
import type { TieredChunkCache } from "./tiered_cache.ts";

/** Files one dataset may list at most (the journal and the listing held in memory). */
export const STAGE_FILES_MAX = 1_000_000;
/** Chunks one file may have at most. */
export const STAGE_CHUNKS_PER_FILE_MAX = 1_000_000;
/** Datasets staged at once on one node (state files read by --status and --release). */
export const STAGE_DATASETS_MAX = 1024;

/** One file of a dataset, as the cluster lists it. */
export interface DatasetFile {
  path: string;
  sizeBytes: number;
  /** Changes when the file's content changes (a composition version): resume re-stages it. */
  version: string;
}

/** One chunk of a file, with the means to fetch its sealed bytes. */
export interface DatasetChunk {
  id: Uint8Array;
  fetchSealed(): Promise<Uint8Array>;
}

/** What staging needs from the cluster client. */
export interface DatasetSource {
  /** The files under `path` (a directory, recursively, or one file). */
  listFiles(path: string): AsyncIterable<DatasetFile>;
  /** The chunks of a file, in order (a file's inline bytes have none to stage). */
  chunksOf(file: DatasetFile): Promise<DatasetChunk[]>;
}

export class StageError extends Error {
  override name = "StageError";
}

export interface StageState {
  /** SHA-256 of the dataset path (the path itself is not written down). */
  id: string;
  filesTotal: number;
  bytesTotal: number;
  filesDone: number;
  bytesDone: number;
  chunksPinned: number;
  finished: boolean;
  startedAtMs: number;
  updatedAtMs: number;
}

export interface StagerOptions {
  cache: TieredChunkCache;
  /** Where state files go (KISEKI_CACHE_DIR/staging). */
  dir: string;
  nowMs?: () => number;
}

export interface StageRunOptions {
  onProgress?: (p: Progress) => void;
  /** Stops after this file (tests of resume); the run reports finished: false. */
  signal?: AbortSignal;
}

/** Journal lines read at most (two per file, and files staged again when they changed). */
const JOURNAL_LINES_MAX = 4 * STAGE_FILES_MAX;

interface JournalEntry {
  /** p: pinning begun; f: file fully staged. */
  kind: "p" | "f";
  fileHash: string;
  versionHash: string;
  bytes: number;
  chunks: string[];
}

const encoder = new TextEncoder();

async function sha256Hex(text: string): Promise<string> {
  return toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(text))));
}

export async function datasetId(path: string): Promise<string> {
  return await sha256Hex(`kiseki-stage-dataset\u0000${path.replace(/\/+$/, "") || "/"}`);
}

export class Stager {
  readonly #cache: TieredChunkCache;
  readonly #dir: string;
  readonly #nowMs: () => number;

  constructor(options: StagerOptions) {
    assert(options.cache.l2 !== null, "staging needs an L2 cache");
    this.#cache = options.cache;
    this.#dir = options.dir.replace(/\/+$/, "");
    this.#nowMs = options.nowMs ?? (() => Date.now());
  }

  #paths(id: string) {
    return { state: `${this.#dir}/${id}.state`, journal: `${this.#dir}/${id}.journal` };
  }

  /** Pins every chunk of the dataset into L2; files the journal has (same version) are skipped. */
  async stage(source: DatasetSource, path: string, run: StageRunOptions = {}): Promise<StageState> {
    await Deno.mkdir(this.#dir, { recursive: true, mode: 0o700 });
    const id = await datasetId(path);
    const paths = this.#paths(id);
    const files: DatasetFile[] = [];
    for await (const f of source.listFiles(path)) {
      if (files.length >= STAGE_FILES_MAX) {
        throw new StageError(`dataset lists more than ${STAGE_FILES_MAX} files`);
      }
      files.push(f);
    }
    const bytesTotal = files.reduce((n, f) => n + f.sizeBytes, 0);
    const previous = await this.#readState(id);
    const done = new Map<string, JournalEntry>();
    const journalRead = await this.#readJournal(paths.journal);
    for (const e of journalRead.entries) if (e.kind === "f") done.set(e.fileHash, e);
    const state: StageState = {
      id,
      filesTotal: files.length,
      bytesTotal,
      filesDone: 0,
      bytesDone: 0,
      chunksPinned: 0,
      finished: false,
      startedAtMs: previous?.startedAtMs ?? this.#nowMs(),
      updatedAtMs: this.#nowMs(),
    };
    await this.#writeState(state);
    const started = this.#nowMs();
    let bytesMoved = 0;
    const report = () =>
      run.onProgress?.({
        bytesDone: state.bytesDone,
        bytesTotal,
        filesDone: state.filesDone,
        filesTotal: files.length,
        bytesMoved,
        elapsedMs: this.#nowMs() - started,
      });
    const journal = await Deno.open(paths.journal, {
      append: true,
      create: true,
      mode: 0o600,
    });
    try {
      // A line torn by a crash is ended, so the next one starts whole.
      if (journalRead.torn) await writeAll(journal, encoder.encode("\n"));
      for (const file of files) {
        if (run.signal?.aborted) break;
        const fileHash = await sha256Hex(`kiseki-stage-file\u0000${file.path}`);
        const versionHash = await sha256Hex(`kiseki-stage-version\u0000${file.version}`);
        const already = done.get(fileHash);
        if (already !== undefined && already.versionHash === versionHash) {
          state.filesDone++;
          state.bytesDone += file.sizeBytes;
          state.chunksPinned += already.chunks.length;
          report();
          continue;
        }
        const chunks = await source.chunksOf(file);
        if (chunks.length > STAGE_CHUNKS_PER_FILE_MAX) {
          throw new StageError(`a file has more than ${STAGE_CHUNKS_PER_FILE_MAX} chunks`);
        }
        const ids = chunks.map((c) => toHex(c.id));
        const fields = `${fileHash} ${versionHash} ${file.sizeBytes} ${ids.join(",")}`;
        await writeAll(journal, encoder.encode(`p ${fields}\n`));
        for (const chunk of chunks) {
          let fetchedBytes = 0;
          await this.#cache.pin(chunk.id, async () => {
            const sealed = await chunk.fetchSealed();
            fetchedBytes = sealed.length;
            return sealed;
          });
          bytesMoved += fetchedBytes;
        }
        // Written after every chunk is pinned: an f line is a file fully staged.
        await writeAll(journal, encoder.encode(`f ${fields}\n`));
        state.filesDone++;
        state.bytesDone += file.sizeBytes;
        state.chunksPinned += ids.length;
        report();
      }
    } finally {
      journal.close();
    }
    state.finished = state.filesDone === files.length;
    state.updatedAtMs = this.#nowMs();
    await this.#writeState(state);
    return state;
  }

  /** The recorded state of one dataset (by path), or of every staged dataset. */
  async status(path?: string): Promise<StageState[]> {
    if (path !== undefined) {
      const s = await this.#readState(await datasetId(path));
      return s === null ? [] : [s];
    }
    const out: StageState[] = [];
    for (const id of await this.#ids()) {
      const s = await this.#readState(id);
      if (s !== null) out.push(s);
    }
    return out;
  }

  /**
   * Unpins the dataset's chunks (they stay in L2 as organic entries until evicted), except
   * those another staged dataset also pinned, and forgets its state. Returns chunks unpinned.
   */
  async release(path: string): Promise<number> {
    const id = await datasetId(path);
    const paths = this.#paths(id);
    const mine = new Set<string>();
    for (const e of (await this.#readJournal(paths.journal)).entries) {
      for (const c of e.chunks) mine.add(c);
    }
    for (const other of await this.#ids()) {
      if (other === id) continue;
      for (const e of (await this.#readJournal(this.#paths(other).journal)).entries) {
        for (const c of e.chunks) mine.delete(c);
      }
    }
    const ids = [...mine].map((hex) => fromHex(hex, hex.length / 2)).filter((id) => id !== null);
    const released = await this.#cache.release(ids);
    await removeQuietly(paths.journal);
    await removeQuietly(paths.state);
    return released;
  }

  async #ids(): Promise<string[]> {
    const ids: string[] = [];
    try {
      for await (const e of Deno.readDir(this.#dir)) {
        const m = /^([0-9a-f]{64})\.state$/.exec(e.name);
        if (m !== null && ids.length < STAGE_DATASETS_MAX) ids.push(m[1]!);
      }
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    return ids.sort();
  }

  async #readState(id: string): Promise<StageState | null> {
    try {
      const parsed = JSON.parse(await Deno.readTextFile(this.#paths(id).state)) as StageState;
      return parsed.id === id ? parsed : null;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound || e instanceof SyntaxError) return null;
      throw e;
    }
  }

  async #writeState(state: StageState): Promise<void> {
    const path = this.#paths(state.id).state;
    await Deno.writeTextFile(`${path}.tmp`, JSON.stringify(state) + "\n", { mode: 0o600 });
    await Deno.rename(`${path}.tmp`, path);
  }

  async #readJournal(path: string): Promise<{ entries: JournalEntry[]; torn: boolean }> {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return { entries: [], torn: false };
      throw e;
    }
    const out: JournalEntry[] = [];
    const lines = text.split("\n");
    // The last element is "" after a whole last line, or a torn line: either way not used.
    for (const line of lines.slice(0, -1)) {
      const m =
        /^([pf]) ([0-9a-f]{64}) ([0-9a-f]{64}) ([0-9]+) ((?:[0-9a-f]{2,128}(?:,[0-9a-f]{2,128})*)?)$/
          .exec(line);
      if (m === null) continue;
      out.push({
        kind: m[1] as "p" | "f",
        fileHash: m[2]!,
        versionHash: m[3]!,
        bytes: +m[4]!,
        chunks: m[5] === "" ? [] : m[5]!.split(","),
      });
      if (out.length >= JOURNAL_LINES_MAX) break;
    }
    return { entries: out, torn: text.length > 0 && !text.endsWith("\n") };
  }
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await file.write(bytes.subarray(done));
}

async function removeQuietly(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}
