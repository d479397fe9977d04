// The one owner of the `lmdb` package: a small key-value port (environments of named binary
// tables, synchronous reads, atomic durable write transactions) that the Raft log store and
// the other lmdb-backed indexes build on. Nothing else in Kiseki imports `lmdb`.
//
// The package is loaded lazily, on the first openKvEnv(), because loading it loads a
// Node-API addon: importing this module (or the disk door) needs no FFI permission.
//
// DESIGN: at-rest protection of environments that hold tenant-readable records in clear
// (views/: names in ordered keys; keys/, keys/s3/). They are opened with a page key: lmdb encrypts every page
// it writes (ChaCha8 keyed by the page key, nonce = page number and writing transaction id,
// so a rewritten page never reuses a nonce) and decrypts pages into a cache on read. That
// covers keys, values, the B-tree structure, the free list and every free page, since a page
// is written to the file only in encrypted form; lock.mdb holds only the reader table. The
// cipher is unauthenticated (confidentiality, not integrity): records that must not be
// altered undetected are sealed with AEAD by their owners as well (the Raft payloads, the
// key store, the credential store). The page key comes from a KvPageKeys source (the key
// store's: a random key per environment, sealed under the node KEK in `<env>/page.key`).
// rekey() copies the live records into a fresh environment under a fresh page key and
// destroys the old file and key: after it, nothing deleted before it (a shredded tenant's
// records, old page versions, free pages) can be read with any key that still exists.
//
// Page encryption is used only where it is needed. lmdb-js 3.5.6 runs an encrypted
// environment in its remapped-chunk mode, and under sustained overwrite load (deno task
// stress:put) that mode failed chunk-index commits with "freelist entry had bad/duplicate
// entries" and crashed the process in mdb_cursor_put (core dump, chunks/index): 3 of 4
// campaigns with every environment encrypted, 0 of 3 with none. raft/ (delta payloads
// sealed per tenant) and chunks/index/ (digests and places) are therefore plain
// environments. A commit lmdb fails as "damaged" rebuilds the environment from its records
// (rebuild()), so a free-list inconsistency costs a copy, not the node.

import type { Database, RootDatabase } from "lmdb";
import { assert } from "../base/mod.ts";
import { log } from "../obs/mod.ts";

const kvLog = log.child({ component: "lmdb" });

/**
 * Environment variables lmdb-js 3.5.6 (and the addon loader under it) must be allowed to
 * read on Deno 2.9: reading one without permission throws NotCapable. Measured with
 * DENO_AUDIT_PERMISSIONS and shown sufficient by lmdb_test.ts. Two more are read inside a
 * try/catch and deliberately left out: LMDB_PREBUILD and MSGPACKR_EXTRACT_PREBUILD would let
 * the environment point the loader at another addon file; denied, the loader uses the
 * package's own prebuild.
 */
export const LMDB_ENV_VARS: readonly string[] = Object.freeze([
  "PREBUILDS_ONLY",
  "ELECTRON_RUN_AS_NODE",
  "npm_config_arch",
  "npm_config_platform",
  "LIBC",
  "ARM_VERSION",
  "LMDB_RESTORE",
  "MSGPACKR_NATIVE_ACCELERATION_DISABLED",
]);

/**
 * `--allow-sys` kinds lmdb-js needs: its prebuild selection asks detect-libc, which calls
 * process.report.getReport(), which Deno answers with the CPU list, network interfaces and
 * host name.
 */
export const LMDB_SYS_PERMISSIONS: readonly string[] = Object.freeze([
  "cpus",
  "networkInterfaces",
  "hostname",
]);

/** Deno permission flags for a process that opens lmdb environments under `dataDirs`. */
export function lmdbPermissionFlags(options: {
  /** The project's node_modules directory (absolute): the addon is loaded from there. */
  nodeModulesDir: string;
  /** Directories the environments live in (absolute). */
  dataDirs: string[];
}): string[] {
  assert(options.nodeModulesDir.startsWith("/"), "nodeModulesDir must be absolute");
  assert(options.dataDirs.every((d) => d.startsWith("/")), "dataDirs must be absolute");
  return [
    `--allow-read=${[...options.dataDirs, options.nodeModulesDir].join(",")}`,
    `--allow-write=${options.dataDirs.join(",")}`,
    `--allow-ffi=${options.nodeModulesDir}`,
    `--allow-sys=${LMDB_SYS_PERMISSIONS.join(",")}`,
    `--allow-env=${LMDB_ENV_VARS.join(",")}`,
  ];
}

/** LMDB's own key limit without a custom build is 511 bytes. */
export const KV_KEY_BYTES_MAX = 511;
export const KV_TABLES_MAX_DEFAULT = 16;
export const KV_READERS_MAX_DEFAULT = 126;
/** Operations one transaction may stage; a commit is one lmdb write transaction. */
export const KV_TXN_OPERATIONS_MAX = 1 << 20;

/**
 * Bytes of a page key. lmdb-js takes its key as a 32-character string; 24 random bytes
 * written as base64url fill it exactly (192 bits of key).
 */
export const KV_PAGE_KEY_BYTES = 24;
/** Records copied per write transaction by rekey(). */
export const KV_REKEY_BATCH_RECORDS = 4096;
// Reads use lmdb-js's own read transaction (one per event turn, renewed after each commit).
// A read snapshot held across turns and handed to lmdb-js as `transaction` (to save starting
// a transaction on a page-encrypted environment) was tried and is not used: lmdb-js renews,
// revives and ends its shared read transaction on its own schedule, and reads through the
// held one then went to the wrong database (the view's namespace table answered with the
// main database's table names: `deno task fuzz:nfs` failed "the tenant index names a
// missing namespace", and segfaulted).
/** The directory beside the environment where rekey() builds the copy. */
const REKEY_SUFFIX = ".rekey";
/** In it: written once the copy is complete and synced (from then on the swap is redone). */
const REKEY_COMPLETE = "complete";
/** In it: where the old file and key go before they are destroyed. */
const REKEY_OLD_DIR = "old";
const DATA_FILE = "data.mdb";
const LOCK_FILE = "lock.mdb";
/** Zeros written per call when a plaintext file is overwritten before removal. */
const ZERO_WRITE_BYTES = 1 << 20;

/**
 * Where environments' page keys live. The implementation seals each key (for instance under
 * the node KEK) and stores it in the environment's directory, so the key moves with it.
 */
export interface KvPageKeys {
  /**
   * The page key of the environment in `dir` (KV_PAGE_KEY_BYTES). When `dir` holds no key
   * yet it creates, stores (durably) and returns one (openKvEnv() asks only when the file is
   * new; it upgrades an unencrypted file and refuses an encrypted one without its key).
   */
  keyFor(dir: string): Promise<Uint8Array>;
  /** Stores `key` durably as the page key of the environment being built in `dir`. */
  store(dir: string, key: Uint8Array): Promise<void>;
  /** Overwrites and removes the stored key of the environment in `dir` (if any). */
  destroy(dir: string): Promise<void>;
  /** The name of the file in an environment's directory that holds its key. */
  readonly keyFile: string;
}

export interface KvEnvOptions {
  /** Directory of the environment (created if missing); holds data.mdb and lock.mdb. */
  path: string;
  /**
   * The source of the environment's page key, or null for an unencrypted environment. Null
   * is for tests and scratch data only: the node's environments hold tenant data and the
   * at-rest canary test fails on any of them opened without a key.
   */
  pageKeys: KvPageKeys | null;
  /**
   * With `pageKeys` null: the keys under which an earlier version page-encrypted this
   * environment. Such a file is opened with its key once, rewritten unencrypted (rebuild())
   * and its key destroyed; for environments whose records are sealed by their owners or hold
   * nothing tenant-readable (see DESIGN in mod/role/data_dir.ts).
   */
  legacyPageKeys?: KvPageKeys;
  /**
   * Initial size of the memory map. Not a cap: lmdb-js's patched LMDB doubles the map when
   * a write needs more pages, so limits on stored bytes belong to the caller.
   */
  mapSizeBytes: number;
  /** Named tables the environment can hold. */
  tablesMax?: number;
  /** Concurrent read transactions (threads and processes). */
  readersMax?: number;
  /**
   * "durable" (default): a commit resolves once it survives power loss (two syncs: pages,
   * then the meta page). "replayable": for state rebuilt from elsewhere (views refold from
   * the Raft log past their stored watermark): one sync per commit, the meta page left to
   * the next commit; a power loss may undo the last commit, never the integrity (LMDB's
   * MDB_NOMETASYNC). A killed process loses nothing either way.
   */
  durability?: "durable" | "replayable";
}

export interface KvEntry {
  key: Uint8Array;
  value: Uint8Array;
}

export interface KvRangeOptions {
  /** Inclusive lower bound (default: the first key). */
  start?: Uint8Array;
  /** Exclusive upper bound (default: past the last key). */
  end?: Uint8Array;
  /** Iterate from the top of [start, end) downwards. */
  reverse?: boolean;
  limit?: number;
}

/** A named table of binary keys (byte-wise order) and binary values. */
export interface KvTable {
  readonly name: string;
  /** The committed value, or undefined. Returns a fresh copy the caller may keep. */
  getSync(key: Uint8Array): Uint8Array | undefined;
  /**
   * Committed entries of [start, end) in key order (or reverse). Lazy: do not hold the
   * iterator across an await, it pins a read snapshot.
   */
  range(options?: KvRangeOptions): Iterable<KvEntry>;
}

/** Writes staged inside KvEnv.transaction(); applied atomically, in order, at commit. */
export interface KvTxn {
  put(table: KvTable, key: Uint8Array, value: Uint8Array): void;
  delete(table: KvTable, key: Uint8Array): void;
  readonly operationCount: number;
}

export interface KvEnv {
  readonly path: string;
  /** Opens (creating if needed) the named table. */
  table(name: string): KvTable;
  /**
   * Runs `fn` to stage writes and commits them as one lmdb transaction. Resolves once the
   * commit is durable (synced to stable storage); rejects if it failed, in which case none of
   * the writes happened. Transactions started in the same event turn share one commit and
   * one sync (group commit), each still atomic.
   */
  transaction(fn: (txn: KvTxn) => void): Promise<void>;
  /**
   * Copies every record into a fresh environment under a new page key and swaps it in,
   * then destroys the old file and its key. Transactions wait while it runs; reads see the
   * old environment until the swap, the new one after. Needs a page key source.
   */
  rekey(): Promise<void>;
  /**
   * Copies every record into a fresh file and swaps it in, as rekey() does (under a fresh
   * page key when the environment has one). It rebuilds lmdb's free list and B-trees from
   * the records alone: an environment runs it by itself after a commit fails as "damaged".
   */
  rebuild(): Promise<void>;
  /** Resolves once no rebuild or rekey is running or due (new commits wait for them). */
  settled(): Promise<void>;
  /**
   * For an environment whose commits reach lmdb later than transaction() resolves (WalKvEnv
   * without a log): resolves once lmdb holds every transaction committed before the call.
   * Absent: a resolved transaction() is already there.
   */
  synced?(): Promise<void>;
  /** Rebuilds run since the environment opened (after damage, or asked for). */
  readonly rebuilds: number;
  /** Waits for outstanding commits, then closes. */
  close(): Promise<void>;
}

type Lmdb = typeof import("lmdb");
let lmdbModule: Promise<Lmdb> | null = null;

function loadLmdb(): Promise<Lmdb> {
  if (lmdbModule === null) {
    globalThis.addEventListener("unhandledrejection", dropLmdbCommitEcho);
    lmdbModule = import("lmdb");
  }
  return lmdbModule;
}

/** The message lmdb-js gives every write promise of a failed commit. */
const LMDB_COMMIT_FAILED = "Commit failed (see commitError for details)";

/**
 * A failed lmdb commit also rejects promises lmdb-js keeps to itself: the commit's own
 * promise, and the `commitError` promise holding the real cause, which nothing inside
 * lmdb-js awaits. Unhandled, either ends the process (measured: a full filesystem killed the
 * node). The failure itself reaches the caller through the batch promise transaction()
 * awaits, so these echoes are dropped here, and only these.
 */
function dropLmdbCommitEcho(event: PromiseRejectionEvent): void {
  const reason = event.reason as { message?: unknown; commitError?: unknown } | null;
  if (reason instanceof Error && reason.message === LMDB_COMMIT_FAILED) {
    event.preventDefault();
    handleCommitError(reason);
    return;
  }
  if (commitErrors.has(event.promise)) event.preventDefault();
}

/** lmdb-js's `commitError` promises seen on failed commits (handled as they are seen). */
const commitErrors = new WeakSet<Promise<unknown>>();

/** How long a failed commit's error waits for lmdb-js to name its cause. */
const COMMIT_CAUSE_WAIT_MS = 100;

/** The cause lmdb-js gives a failed commit (e.g. "No space left on device"), if it does. */
async function commitCause(error: unknown): Promise<string | null> {
  handleCommitError(error);
  const cause = (error as { commitError?: unknown } | null)?.commitError;
  if (!(cause instanceof Promise)) return null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), COMMIT_CAUSE_WAIT_MS);
  });
  try {
    return await Promise.race([
      cause.then(() => null, (c: unknown) => (c instanceof Error ? c.message : String(c))),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Marks a failed commit's `commitError` promise as handled (its cause is logged by callers). */
function handleCommitError(error: unknown): void {
  const cause = (error as { commitError?: unknown } | null)?.commitError;
  if (cause instanceof Promise && !commitErrors.has(cause)) {
    commitErrors.add(cause);
    cause.catch(() => {});
  }
}

/**
 * How a failed commit failed: "space" (the filesystem or the map is full: retry once room is
 * made), "damaged" (lmdb found its own structure inconsistent, e.g. a free-list entry it
 * cannot account for: the environment rebuilds itself, see rebuild()), "other".
 */
export type KvFailureKind = "space" | "damaged" | "other";

export class KvError extends Error {
  override name = "KvError";
  constructor(message: string, readonly kind: KvFailureKind = "other", options?: ErrorOptions) {
    super(message, options);
  }
}

/** When a transaction lmdb failed is tried again (see transactionRetrying()). */
export interface KvRetryPolicy {
  /** Times a "damaged" failure is tried again, each after the environment rebuilt. */
  damagedRetries: number;
  /** How long a "space" failure (full filesystem) keeps being tried, and how often. */
  spaceWaitMs: number;
  spaceRetryMs: number;
  /** False when the caller no longer wants the writes (closing, superseded). */
  stillWanted: () => boolean;
  /** Told before each retry (callers log it). */
  onRetry: (kind: KvFailureKind, attempt: number, error: Error) => void;
  /** Waits between "space" retries (default: a timer). */
  sleep?: (ms: number) => Promise<void>;
}

/**
 * `env.transaction(fn)`, tried again when lmdb failed it in a way the environment recovers
 * from: "damaged" (it rebuilds itself from its records; the same writes then go to the fresh
 * file) or "space" (room may come back). A failed commit changed nothing, so the same writes
 * are the right retry, as long as no later writer replaced them (`stillWanted`).
 */
export async function transactionRetrying(
  env: KvEnv,
  fn: (txn: KvTxn) => void,
  policy: KvRetryPolicy,
): Promise<void> {
  const deadline = performance.now() + policy.spaceWaitMs;
  const sleep = policy.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  for (let attempt = 0;; attempt++) {
    try {
      return await env.transaction(fn);
    } catch (e) {
      const kind = e instanceof KvError ? e.kind : "other";
      const again = policy.stillWanted() &&
        ((kind === "damaged" && attempt < policy.damagedRetries) ||
          (kind === "space" && performance.now() < deadline));
      if (!again) throw e;
      policy.onRetry(kind, attempt + 1, e as Error);
      if (kind === "space") await sleep(policy.spaceRetryMs);
      await env.settled();
    }
  }
}

/** Classifies a failed commit by the cause lmdb gives. */
export function kvFailureKind(cause: string): KvFailureKind {
  if (/No space left|ENOSPC|MDB_MAP_FULL|Disk quota exceeded|EDQUOT/i.test(cause)) return "space";
  if (
    /MDB_BAD_TXN|MDB_CORRUPTED|MDB_PANIC|MDB_PAGE_NOTFOUND|MDB_BAD_VALSIZE|free-space record|freelist|free list|mop_len|-30782|-30796|-30795|-30797/
      .test(cause)
  ) return "damaged";
  return "other";
}

/** Opens an lmdb environment. One process opens a given path at most once at a time. */
export async function openKvEnv(options: KvEnvOptions): Promise<KvEnv> {
  const tablesMax = options.tablesMax ?? KV_TABLES_MAX_DEFAULT;
  const readersMax = options.readersMax ?? KV_READERS_MAX_DEFAULT;
  assert(options.path.length > 0, "openKvEnv: path is empty");
  assert(
    Number.isSafeInteger(options.mapSizeBytes) && options.mapSizeBytes >= 1 << 20,
    "openKvEnv: mapSizeBytes must be at least 1 MiB",
  );
  assert(Number.isInteger(tablesMax) && tablesMax >= 1, "openKvEnv: tablesMax must be >= 1");
  assert(Number.isInteger(readersMax) && readersMax >= 1, "openKvEnv: readersMax must be >= 1");
  assert(options.pageKeys !== undefined, "openKvEnv: pageKeys must be given (null: unencrypted)");
  const path = options.path.replace(/\/+$/, "");
  if (openPaths.has(path)) {
    // lmdb-js shares one handle per path inside a process; two owners would close it under each other.
    throw new KvError(`lmdb environment ${path} is already open in this process`);
  }
  openPaths.add(path);
  try {
    await finishRekey(path, options.pageKeys);
    const lmdb = await loadLmdb();
    const settings: RootSettings = {
      mapSizeBytes: options.mapSizeBytes,
      tablesMax,
      readersMax,
      durability: options.durability ?? "durable",
    };
    const context = { lmdb, settings, pageKeys: options.pageKeys };
    // lmdb crashes the process on a page-encrypted file opened without its key: look first.
    const encrypted = await fileIsEncrypted(`${path}/${DATA_FILE}`);
    if (options.pageKeys === null) {
      const legacy = options.legacyPageKeys;
      if (encrypted === true && legacy !== undefined) {
        if (!(await fileExists(`${path}/${legacy.keyFile}`))) {
          throw new KvError(
            `${path} is page-encrypted but its ${legacy.keyFile} is missing: the page key was ` +
              `lost; restore the key file from the node's backup`,
          );
        }
        // Page-encrypted by an earlier version: rewritten unencrypted, then its key destroyed.
        const key = pageKeyString(await legacy.keyFor(path));
        const env = new LmdbKvEnv(path, openRoot(lmdb, path, settings, key), tablesMax, context);
        try {
          await env.rebuild();
          await legacy.destroy(path);
        } catch (e) {
          await env.close().catch(() => {});
          throw e;
        }
        return env;
      }
      if (encrypted === true) {
        throw new KvError(`${path} is page-encrypted: open it with its page keys`);
      }
      // A rewrite that a crash interrupted after the swap leaves the old key behind.
      if (legacy !== undefined && await fileExists(`${path}/${legacy.keyFile}`)) {
        await legacy.destroy(path);
      }
      return new LmdbKvEnv(path, openRoot(lmdb, path, settings, null), tablesMax, context);
    }
    await Deno.mkdir(path, { recursive: true, mode: 0o700 });
    if (!(await fileExists(`${path}/${options.pageKeys.keyFile}`))) {
      if (encrypted === true) {
        throw new KvError(
          `${path} is page-encrypted but its ${options.pageKeys.keyFile} is missing: the page ` +
            `key was lost; restore the key file from the node's backup`,
        );
      }
      if (encrypted === false) {
        // Written before page encryption: opened as it is, then rekeyed into an encrypted
        // copy; the plaintext file is overwritten with zeros and removed.
        const env = new LmdbKvEnv(path, openRoot(lmdb, path, settings, null), tablesMax, context);
        await env.rekey();
        return env;
      }
    }
    const pageKey = pageKeyString(await options.pageKeys.keyFor(path));
    return new LmdbKvEnv(path, openRoot(lmdb, path, settings, pageKey), tablesMax, context);
  } catch (e) {
    openPaths.delete(path);
    throw e;
  }
}

interface RootSettings {
  mapSizeBytes: number;
  tablesMax: number;
  readersMax: number;
  durability: "durable" | "replayable";
}

function openRoot(
  lmdb: Lmdb,
  path: string,
  settings: RootSettings,
  pageKey: string | null,
): RootDatabase<Uint8Array, Uint8Array> {
  try {
    return lmdb.open<Uint8Array, Uint8Array>({
      path,
      // A path with a dot would otherwise be taken for a file name.
      noSubdir: false,
      mapSize: settings.mapSizeBytes,
      maxDbs: settings.tablesMax,
      maxReaders: settings.readersMax,
      encoding: "binary",
      keyEncoding: "binary",
      // Durability: plain LMDB commits. Each commit writes its pages, fdatasync()s them, then
      // writes the meta page through an O_DSYNC descriptor; the batch promise resolves after
      // that. No noSync/noMetaSync/mapAsync/writemap. lmdb-js's default overlappingSync (commit
      // now, sync later, and on reopen trust unsynced commits if the boot id is unchanged) is
      // off: it measured no faster here, and plain LMDB's crash semantics are the known ones.
      noSync: false,
      noMetaSync: settings.durability === "replayable",
      useWritemap: false,
      overlappingSync: false,
      separateFlushed: true,
      // Values are raw bytes: no msgpack, no shared structures, no compression, no cache.
      cache: false,
      compression: false,
      commitDelay: 0,
      // Page encryption (see DESIGN above); lmdb-js turns on its remapped page cache with it.
      ...(pageKey === null ? {} : { encryptionKey: pageKey }),
    });
  } catch (e) {
    throw new KvError(`cannot open lmdb environment ${path}: ${(e as Error).message}`);
  }
}

/** lmdb-js wants the key as exactly 32 one-byte UTF-8 characters. */
function pageKeyString(key: Uint8Array): string {
  assert(key.length === KV_PAGE_KEY_BYTES, `a page key is ${KV_PAGE_KEY_BYTES} bytes`);
  const text = btoa(String.fromCharCode(...key)).replaceAll("+", "-").replaceAll("/", "_");
  assert(text.length === 32 && /^[A-Za-z0-9_-]+$/.test(text), "page key string is 32 chars");
  return text;
}

/**
 * Completes or undoes a rekey() that a crash interrupted. The environment's directory may
 * hold other files (keys/ holds node.kek), so a rekey swaps only the data file and the page
 * key file, one rename at a time, once the copy is complete (`.rekey/complete`):
 *   1. <env>/<key file>  -> .rekey/old/    (the live key, old)
 *   2. <env>/data.mdb    -> .rekey/old/    (the live file, old; its lock.mdb with it)
 *   3. .rekey/data.mdb   -> <env>/
 *   4. .rekey/<key file> -> <env>/
 *   5. the old key destroyed, .rekey removed.
 * A step is due while its source is still there, so the swap is redone from any point; a
 * copy without the marker is dropped (the old environment is intact).
 */
async function finishRekey(path: string, pageKeys: KvPageKeys | null): Promise<void> {
  const fresh = path + REKEY_SUFFIX;
  if (!(await fileExists(fresh))) return;
  const complete = await fileExists(`${fresh}/${REKEY_COMPLETE}`);
  // A plain environment's rebuild is swapped in only as a plain copy.
  const usable = complete &&
    (pageKeys !== null || (await fileIsEncrypted(`${fresh}/${DATA_FILE}`)) === false);
  if (!usable) {
    await Deno.remove(fresh, { recursive: true });
    syncDirSync(parentOf(fresh));
    return;
  }
  swapIn(path, pageKeys?.keyFile ?? null);
  await retireOld(fresh, pageKeys);
}

/**
 * Destroys what a rekey moved aside: the old page key (its pages are then noise), or, for
 * a file that had no key (written before page encryption), the plaintext file's bytes.
 */
async function retireOld(fresh: string, pageKeys: KvPageKeys | null): Promise<void> {
  const old = `${fresh}/${REKEY_OLD_DIR}`;
  if (pageKeys === null) {
    // A plain environment (tests, scratch data): its old file is dropped as it is.
    await Deno.remove(fresh, { recursive: true });
    syncDirSync(parentOf(fresh));
    return;
  }
  if (
    !(await fileExists(`${old}/${pageKeys.keyFile}`)) && await fileExists(`${old}/${DATA_FILE}`)
  ) {
    await zeroFile(`${old}/${DATA_FILE}`);
  }
  await pageKeys.destroy(old);
  await Deno.remove(fresh, { recursive: true });
  syncDirSync(parentOf(fresh));
}

async function zeroFile(path: string): Promise<void> {
  const file = await Deno.open(path, { write: true });
  try {
    const size = (await file.stat()).size;
    const zeros = new Uint8Array(Math.min(size, ZERO_WRITE_BYTES));
    for (let at = 0; at < size;) {
      at += await file.write(zeros.subarray(0, Math.min(zeros.length, size - at)));
    }
    await file.sync();
  } finally {
    file.close();
  }
}

/** Steps 1-4 of finishRekey(), synchronous (rekey() runs them without yielding). */
function swapIn(path: string, keyFile: string | null): void {
  const fresh = path + REKEY_SUFFIX;
  const old = `${fresh}/${REKEY_OLD_DIR}`;
  try {
    Deno.mkdirSync(old, { mode: 0o700 });
  } catch (e) {
    if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
  }
  const has = (p: string) => {
    try {
      Deno.statSync(p);
      return true;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return false;
      throw e;
    }
  };
  if (keyFile !== null && has(`${fresh}/${keyFile}`) && has(`${path}/${keyFile}`)) {
    Deno.renameSync(`${path}/${keyFile}`, `${old}/${keyFile}`);
  }
  if (has(`${fresh}/${DATA_FILE}`)) {
    if (has(`${path}/${DATA_FILE}`)) Deno.renameSync(`${path}/${DATA_FILE}`, `${old}/${DATA_FILE}`);
    // The old environment (still closing in this process) keeps its lock file; the new one
    // starts its own reader table.
    if (has(`${path}/${LOCK_FILE}`)) Deno.renameSync(`${path}/${LOCK_FILE}`, `${old}/${LOCK_FILE}`);
    Deno.renameSync(`${fresh}/${DATA_FILE}`, `${path}/${DATA_FILE}`);
  }
  if (keyFile !== null && has(`${fresh}/${keyFile}`)) {
    Deno.renameSync(`${fresh}/${keyFile}`, `${path}/${keyFile}`);
  }
  syncDirSync(old);
  syncDirSync(path);
}

/** Offsets in an lmdb file's first meta page: its magic, and the flags it was created with. */
const META_MAGIC_OFFSET = 24;
const META_MAGIC = 0xbeefc0de;
const META_FLAGS_OFFSET = 52;
/** LMDB's MDB_ENCRYPT environment flag, recorded in the meta page. */
const MDB_ENCRYPT = 0x2000;

/** Whether an lmdb file is page-encrypted; null when there is no (valid) file. */
async function fileIsEncrypted(path: string): Promise<boolean | null> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  try {
    const head = new Uint8Array(META_FLAGS_OFFSET + 2);
    let filled = 0;
    while (filled < head.length) {
      const n = await file.read(head.subarray(filled));
      if (n === null) return null;
      filled += n;
    }
    const view = new DataView(head.buffer);
    if (view.getUint32(META_MAGIC_OFFSET, true) !== META_MAGIC) return null;
    return (view.getUint16(META_FLAGS_OFFSET, true) & MDB_ENCRYPT) !== 0;
  } finally {
    file.close();
  }
}

/** Whether `path` exists (any other stat failure is thrown). */
export async function fileExists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

function parentOf(path: string): string {
  const at = path.lastIndexOf("/");
  return at <= 0 ? (at === 0 ? "/" : ".") : path.slice(0, at);
}

function syncDirSync(dir: string): void {
  const handle = Deno.openSync(dir, { read: true });
  try {
    handle.syncSync();
  } finally {
    handle.close();
  }
}

const openPaths = new Set<string>();

class LmdbKvTable implements KvTable {
  readonly name: string;
  /** Replaced when rekey() swaps the environment. */
  db: Database<Uint8Array, Uint8Array>;
  readonly env: LmdbKvEnv;

  constructor(env: LmdbKvEnv, name: string, db: Database<Uint8Array, Uint8Array>) {
    this.env = env;
    this.name = name;
    this.db = db;
  }

  getSync(key: Uint8Array): Uint8Array | undefined {
    this.env.assertOpen();
    checkKey(key);
    const value = this.db.getBinary(key);
    return value === undefined ? undefined : plain(value);
  }

  *range(options: KvRangeOptions = {}): Iterable<KvEntry> {
    this.env.assertOpen();
    if (options.start) checkKey(options.start);
    if (options.end) checkKey(options.end);
    if (options.limit !== undefined) {
      assert(Number.isInteger(options.limit) && options.limit >= 0, "range: limit must be >= 0");
      if (options.limit === 0) return;
    }
    if (options.start && options.end && compareBytes(options.start, options.end) >= 0) return;
    // lmdb-js walks from `start` towards `end`; in reverse that is from our (exclusive) end
    // down to our (inclusive) start.
    const lmdbOptions = options.reverse
      ? {
        start: options.end,
        end: options.start,
        reverse: true,
        exclusiveStart: options.end !== undefined,
        inclusiveEnd: options.start !== undefined,
        limit: options.limit,
      }
      : { start: options.start, end: options.end, limit: options.limit };
    // getRange() holds its own reference on lmdb-js's read transaction until the iteration
    // ends, so an iteration across an await keeps one snapshot.
    for (const { key, value } of this.db.getRange(lmdbOptions)) {
      yield { key: plain(key as Uint8Array), value: plain(value) };
    }
  }
}

type Operation =
  | { kind: "put"; table: LmdbKvTable; key: Uint8Array; value: Uint8Array }
  | { kind: "delete"; table: LmdbKvTable; key: Uint8Array };

class StagedTxn implements KvTxn {
  readonly operations: Operation[] = [];
  readonly #env: LmdbKvEnv;
  closed = false;

  constructor(env: LmdbKvEnv) {
    this.#env = env;
  }

  get operationCount(): number {
    return this.operations.length;
  }

  put(table: KvTable, key: Uint8Array, value: Uint8Array): void {
    this.#stage({ kind: "put", table: this.#own(table), key: checkKey(key), value });
  }

  delete(table: KvTable, key: Uint8Array): void {
    this.#stage({ kind: "delete", table: this.#own(table), key: checkKey(key) });
  }

  #stage(op: Operation): void {
    assert(!this.closed, "KvTxn used after its transaction function returned");
    assert(this.operations.length < KV_TXN_OPERATIONS_MAX, "KvTxn: too many operations");
    this.operations.push(op);
  }

  #own(table: KvTable): LmdbKvTable {
    assert(
      table instanceof LmdbKvTable && table.env === this.#env,
      "KvTxn: table belongs to another environment",
    );
    return table;
  }
}

interface EnvContext {
  lmdb: Lmdb;
  settings: RootSettings;
  pageKeys: KvPageKeys | null;
}

class LmdbKvEnv implements KvEnv {
  readonly path: string;
  #root: RootDatabase<Uint8Array, Uint8Array>;
  readonly #tablesMax: number;
  readonly #context: EnvContext;
  readonly #tables = new Map<string, LmdbKvTable>();
  #closed = false;
  #pending = new Set<Promise<unknown>>();
  /** Set while rekey() or rebuild() runs: transactions wait for it. */
  #rekeying: Promise<void> | null = null;
  #rebuilds = 0;
  #injectedFailure: string | null = null;

  constructor(
    path: string,
    root: RootDatabase<Uint8Array, Uint8Array>,
    tablesMax: number,
    context: EnvContext,
  ) {
    this.path = path;
    this.#root = root;
    this.#tablesMax = tablesMax;
    this.#context = context;
  }

  assertOpen(): void {
    assert(!this.#closed, `lmdb environment ${this.path} is closed`);
  }

  table(name: string): KvTable {
    this.assertOpen();
    assert(/^[a-z][a-z0-9_]{0,62}$/.test(name), `table name ${JSON.stringify(name)} is invalid`);
    let table = this.#tables.get(name);
    if (!table) {
      assert(
        this.#tables.size < this.#tablesMax,
        `lmdb environment holds at most ${this.#tablesMax} tables`,
      );
      table = new LmdbKvTable(this, name, openTable(this.#root, name));
      this.#tables.set(name, table);
    }
    return table;
  }

  async transaction(fn: (txn: KvTxn) => void): Promise<void> {
    this.assertOpen();
    while (this.#rekeying !== null) {
      await this.#rekeying.catch(() => {});
      this.assertOpen();
    }
    const txn = new StagedTxn(this);
    try {
      fn(txn);
    } finally {
      txn.closed = true;
    }
    if (txn.operations.length === 0) return;
    if (this.#injectedFailure !== null) {
      const cause = this.#injectedFailure;
      this.#injectedFailure = null;
      throw this.#commitFailed(cause);
    }
    // batch() writes every operation into one lmdb transaction on lmdb-js's write thread.
    // Without overlappingSync, `.flushed` is the commit promise itself (the commit synced);
    // awaiting it keeps this correct should overlappingSync ever be turned on.
    const committed = this.#root.batch(() => {
      // Each put and remove returns a promise of its own, rejected too when the commit fails:
      // the batch's promise is the one awaited, these must never go unhandled (an unhandled
      // rejection ends the process).
      for (const op of txn.operations) {
        const done = op.kind === "put"
          ? op.table.db.put(op.key, op.value)
          : op.table.db.remove(op.key);
        ignoreRejection(done);
      }
    }) as Promise<boolean> & { flushed?: Promise<unknown> };
    const durable = (async () => {
      const ok = await committed;
      assert(ok !== false, "lmdb batch without conditions reported a failed condition");
      assert(committed.flushed !== undefined, "lmdb-js did not give a flushed promise");
      await committed.flushed;
    })();
    this.#pending.add(durable);
    try {
      await durable;
    } catch (e) {
      const cause = (await commitCause(e)) ?? (e as Error).message;
      throw this.#commitFailed(cause, e);
    } finally {
      this.#pending.delete(durable);
    }
  }

  /**
   * The error of a failed commit. A "damaged" one (lmdb found its free list or pages
   * inconsistent: seen under sustained write load, in lmdb-js's own users too) starts a
   * rebuild, so that the next commits run on a fresh file built from the committed records;
   * the failed commit changed nothing, and its caller hears why.
   */
  #commitFailed(cause: string, e?: unknown): KvError {
    const kind = kvFailureKind(cause);
    const error = new KvError(`lmdb commit in ${this.path} failed: ${cause}`, kind, { cause: e });
    if (kind === "damaged" && !this.#closed) {
      kvLog.warn("lmdb environment damaged: rebuilding it from its records", {
        path: this.path,
        cause,
      });
      this.rebuild().then(
        () => kvLog.info("lmdb environment rebuilt", { path: this.path }),
        (failure) =>
          kvLog.error("lmdb environment rebuild failed", { path: this.path, error: failure }),
      );
    }
    return error;
  }

  /**
   * Makes the next transaction() fail as if lmdb had failed its commit with `cause`, through
   * the same path (classification, rebuild). For fault-injection tests only.
   */
  failNextCommit(cause: string): void {
    this.#injectedFailure = cause;
  }

  rekey(): Promise<void> {
    this.assertOpen();
    assert(this.#context.pageKeys !== null, `rekey of ${this.path}: it has no page key`);
    return this.#copyAndSwap();
  }

  rebuild(): Promise<void> {
    this.assertOpen();
    this.#rebuilds++;
    return this.#copyAndSwap();
  }

  get rebuilds(): number {
    return this.#rebuilds;
  }

  async settled(): Promise<void> {
    while (this.#rekeying !== null) await this.#rekeying.catch(() => {});
  }

  #copyAndSwap(): Promise<void> {
    const previous = this.#rekeying ?? Promise.resolve();
    const run = previous.catch(() => {}).then(() => this.#rekey());
    const gate = run.finally(() => {
      if (this.#rekeying === gate) this.#rekeying = null;
    });
    this.#rekeying = gate;
    return gate;
  }

  async #rekey(): Promise<void> {
    if (this.#closed) return;
    const pageKeys = this.#context.pageKeys;
    const { lmdb, settings } = this.#context;
    // Commits already handed to lmdb finish first; new ones wait on #rekeying.
    await Promise.allSettled([...this.#pending]);
    const fresh = this.path + REKEY_SUFFIX;
    await Deno.remove(fresh, { recursive: true }).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
    await Deno.mkdir(fresh, { mode: 0o700 });
    const key = new Uint8Array(KV_PAGE_KEY_BYTES);
    crypto.getRandomValues(key);
    const keyText = pageKeys === null ? null : pageKeyString(key);
    let target: RootDatabase<Uint8Array, Uint8Array> | null = null;
    try {
      if (pageKeys !== null) await pageKeys.store(fresh, key);
      key.fill(0);
      target = openRoot(lmdb, fresh, settings, keyText);
      for (const name of tableNames(this.#root)) {
        const from = openTable(this.#root, name);
        const to = openTable(target, name);
        let start: Uint8Array | undefined = undefined;
        for (;;) {
          // Copied out before the await: an lmdb iterator must not span one.
          const page: KvEntry[] = [];
          for (const { key, value } of from.getRange({ start, limit: KV_REKEY_BATCH_RECORDS })) {
            page.push({ key: (key as Uint8Array).slice(), value: value.slice() });
          }
          if (page.length === 0) break;
          await target.batch(() => {
            for (const entry of page) ignoreRejection(to.put(entry.key, entry.value));
          });
          if (page.length < KV_REKEY_BATCH_RECORDS) break;
          // The next page starts just past the last key copied.
          const last = page[page.length - 1]!.key;
          start = new Uint8Array(last.length + 1);
          start.set(last);
        }
      }
      await target.close();
      target = null;
    } catch (e) {
      key.fill(0);
      await target?.close().catch(() => {});
      await Deno.remove(fresh, { recursive: true }).catch(() => {});
      throw new KvError(`rebuild of ${this.path} failed: ${(e as Error).message}`);
    }
    // The copy is complete and synced: from here a crash finishes the swap at the next open.
    syncDirSync(fresh);
    const marker = Deno.openSync(`${fresh}/${REKEY_COMPLETE}`, { write: true, create: true });
    marker.syncSync();
    marker.close();
    syncDirSync(fresh);
    // The swap, without an await: no read sees a closed environment (tables are rebound in
    // the same turn).
    this.#root.close().catch(() => {});
    swapIn(this.path, pageKeys?.keyFile ?? null);
    this.#root = openRoot(lmdb, this.path, settings, keyText);
    for (const table of this.#tables.values()) table.db = openTable(this.#root, table.name);
    await retireOld(fresh, pageKeys);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#rekeying?.catch(() => {});
    await Promise.allSettled([...this.#pending]);
    try {
      await this.#root.close();
    } finally {
      openPaths.delete(this.path);
    }
  }
}

/**
 * Fault injection for tests: the next transaction() of `env` fails as if lmdb had failed its
 * commit with `cause` (e.g. a free-list error: the environment then rebuilds itself).
 */
export function injectCommitFailure(env: KvEnv, cause: string): void {
  assert(env instanceof LmdbKvEnv, "injectCommitFailure needs an environment from openKvEnv()");
  env.failNextCommit(cause);
}

function openTable(
  root: RootDatabase<Uint8Array, Uint8Array>,
  name: string,
): Database<Uint8Array, Uint8Array> {
  return root.openDB<Uint8Array, Uint8Array>({
    name,
    encoding: "binary",
    keyEncoding: "binary",
    cache: false,
    compression: false,
  });
}

/** The named tables of an environment (the keys of its main database, NUL-terminated). */
function tableNames(root: RootDatabase<Uint8Array, Uint8Array>): string[] {
  const names: string[] = [];
  for (const key of root.getKeys({})) {
    const bytes = key as Uint8Array;
    const end = bytes[bytes.length - 1] === 0 ? bytes.length - 1 : bytes.length;
    names.push(new TextDecoder().decode(bytes.subarray(0, end)));
  }
  return names;
}

/** Marks a promise lmdb-js returns, whose outcome another promise reports, as handled. */
function ignoreRejection(value: unknown): void {
  if (value instanceof Promise) value.catch(() => {});
}

function checkKey(key: Uint8Array): Uint8Array {
  assert(key instanceof Uint8Array, "lmdb keys are Uint8Array");
  assert(key.length > 0 && key.length <= KV_KEY_BYTES_MAX, `lmdb key length ${key.length}`);
  return key;
}

/** A plain Uint8Array view of a Node Buffer (same memory), so callers never see Buffer. */
function plain(bytes: Uint8Array): Uint8Array {
  return Object.getPrototypeOf(bytes) === Uint8Array.prototype
    ? bytes
    : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Byte-wise order, LMDB's default key order. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return a[i]! - b[i]!;
  }
  return a.length - b.length;
}
