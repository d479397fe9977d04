// The client's L2 cache: sealed chunks in files on the compute node's local disk, one file per
// chunk id (so a chunk two files share is kept once), each with a checksummed header. Only
// sealed bytes are written: nothing here is readable without the tenant's keys. The index is
// memory only and is rebuilt from the files when a client starts, so L2 outlives a restart.
//
// Entry file, KISEKI_CACHE_DIR/chunks/<first 2 hex>/<chunk id hex>, integers little-endian:
//   0   4   magic "KCL2"
//   4   1   version (1)
//   5   1   flags: bit 0 pinned (staged; organic eviction never takes it)
//   6   2   reserved, 0
//   8   8   sealed length N
//   16  4   CRC-32C of the N sealed bytes
//   20  4   CRC-32C of bytes 0..20 of this header
//   24  8   reserved, 0
//   32  N   the sealed chunk
// A file is written beside its place and renamed into it, so a crash leaves either the old
// state or a whole entry; a torn or flipped entry fails its checksum, is deleted and refetched.

import { assert, BoundedLru, crc32c, fromHex, getU64LE, setU64LE, toHex } from "../../base/mod.ts";

export const L2_HEADER_BYTES = 32;
export const L2_MAGIC = 0x324c434b; // "KCL2" little-endian
export const L2_VERSION = 1;
export const L2_FLAG_PINNED = 1;
/** Entries the index holds at most, whatever their size (a bound on memory, not disk). */
export const L2_ENTRIES_MAX = 4 * 1024 * 1024;
/** Longest chunk id kept (ids are 32 bytes; the bound keeps file names sane). */
export const L2_CHUNK_ID_BYTES_MAX = 64;
/** Writes to disk in flight at most; past it a chunk is simply not cached. */
export const L2_WRITES_PENDING_MAX = 64;
/**
 * Entries up to this size are read with one blocking read: a warm 1 MiB entry comes from the
 * page cache in ~0.4 ms, and the blocking path measured 2x the async one (a thread-pool hop
 * per read). Larger entries are read asynchronously so the event loop keeps turning.
 */
export const L2_SYNC_READ_BYTES_MAX = 4 * 1024 * 1024 + 64;
/** Name of the file holding the last time the client reached a node (ms since the epoch). */
export const L2_CONTACT_FILE = "contact";

/** Why an L2 entry was not kept. */
export class L2FullError extends Error {
  override name = "L2FullError";
}

export interface L2Entry {
  bytes: number;
  pinned: boolean;
}

export interface DiskL2StoreOptions {
  dir: string;
  maxBytes: number;
}

export interface L2Stats {
  entries: number;
  bytes: number;
  pinnedEntries: number;
  pinnedBytes: number;
  corruptDropped: number;
  evicted: number;
  writesSkipped: number;
}

/** Outcome of a read: the sealed bytes, absent, or present but corrupt (now deleted). */
export type L2Read = { kind: "hit"; sealed: Uint8Array } | { kind: "miss" } | {
  kind: "corrupt";
  reason: string;
};

export function encodeL2Header(sealed: Uint8Array, pinned: boolean): Uint8Array {
  const header = new Uint8Array(L2_HEADER_BYTES);
  const view = new DataView(header.buffer);
  view.setUint32(0, L2_MAGIC, true);
  header[4] = L2_VERSION;
  header[5] = pinned ? L2_FLAG_PINNED : 0;
  setU64LE(view, 8, sealed.length);
  view.setUint32(16, crc32c(sealed), true);
  view.setUint32(20, crc32c(header.subarray(0, 20)), true);
  return header;
}

/** The header's fields, or why it is not one. */
export function decodeL2Header(
  header: Uint8Array,
): { ok: true; length: number; crc: number; pinned: boolean } | { ok: false; reason: string } {
  if (header.length < L2_HEADER_BYTES) return { ok: false, reason: "short header" };
  const view = new DataView(header.buffer, header.byteOffset, L2_HEADER_BYTES);
  if (view.getUint32(0, true) !== L2_MAGIC) return { ok: false, reason: "bad magic" };
  if (view.getUint32(20, true) !== crc32c(header.subarray(0, 20))) {
    return { ok: false, reason: "header checksum mismatch" };
  }
  if (header[4] !== L2_VERSION) return { ok: false, reason: `version ${header[4]}` };
  return {
    ok: true,
    length: getU64LE(view, 8),
    crc: view.getUint32(16, true),
    pinned: (header[5]! & L2_FLAG_PINNED) !== 0,
  };
}

/** L2 on a local directory. Open it with DiskL2Store.open(); one process per directory. */
export class DiskL2Store {
  readonly dir: string;
  readonly maxBytes: number;
  // Organic entries, least recently used first; eviction is ours (pinned bytes share the bound).
  // Past L2_ENTRIES_MAX the oldest index entry goes, and its file with it, so no file is
  // ever on disk that the byte bound does not count.
  readonly #organic = new BoundedLru<number>(L2_ENTRIES_MAX, Infinity, (hex) => {
    this.#evicted++;
    removeQuietly(this.#pathOf(hex)).catch(() => {});
  });
  readonly #pinned = new Map<string, number>();
  #pinnedBytes = 0;
  readonly #pending = new Map<string, Promise<void>>();
  #corruptDropped = 0;
  #evicted = 0;
  #writesSkipped = 0;
  #closed = false;

  private constructor(options: DiskL2StoreOptions) {
    assert(Number.isSafeInteger(options.maxBytes) && options.maxBytes >= 0, "L2 maxBytes");
    this.dir = options.dir.replace(/\/+$/, "");
    this.maxBytes = options.maxBytes;
  }

  /** Opens (creating) the directory and rebuilds the index from the entry files. */
  static async open(options: DiskL2StoreOptions): Promise<DiskL2Store> {
    const store = new DiskL2Store(options);
    await Deno.mkdir(`${store.dir}/chunks`, { recursive: true, mode: 0o700 });
    await store.#rebuild();
    return store;
  }

  #pathOf(hex: string): string {
    return `${this.dir}/chunks/${hex.slice(0, 2)}/${hex}`;
  }

  async #rebuild(): Promise<void> {
    const found: { hex: string; bytes: number; pinned: boolean; mtimeMs: number }[] = [];
    for await (const shard of Deno.readDir(`${this.dir}/chunks`)) {
      if (!shard.isDirectory) continue;
      const shardDir = `${this.dir}/chunks/${shard.name}`;
      for await (const file of Deno.readDir(shardDir)) {
        const path = `${shardDir}/${file.name}`;
        const hex = file.name;
        // Leftovers of a write cut short, and anything not ours, go.
        if (
          !file.isFile || fromHex(hex, hex.length / 2) === null || hex.length === 0 ||
          hex.length > 2 * L2_CHUNK_ID_BYTES_MAX || !hex.startsWith(shard.name) ||
          found.length >= L2_ENTRIES_MAX
        ) {
          await removeQuietly(path);
          continue;
        }
        const checked = await readHeader(path);
        if (!checked.ok) {
          this.#corruptDropped++;
          await removeQuietly(path);
          continue;
        }
        found.push({ hex, bytes: checked.size, pinned: checked.pinned, mtimeMs: checked.mtimeMs });
      }
    }
    found.sort((a, b) => a.mtimeMs - b.mtimeMs);
    for (const f of found) {
      if (f.pinned) {
        this.#pinned.set(f.hex, f.bytes);
        this.#pinnedBytes += f.bytes;
      } else this.#organic.set(f.hex, f.bytes, f.bytes);
    }
    await this.#evictToBound(0);
  }

  has(chunkId: Uint8Array): boolean {
    const hex = toHex(chunkId);
    return this.#pinned.has(hex) || this.#organic.has(hex);
  }

  entry(chunkId: Uint8Array): L2Entry | null {
    const hex = toHex(chunkId);
    const pinned = this.#pinned.get(hex);
    if (pinned !== undefined) return { bytes: pinned, pinned: true };
    const organic = this.#organic.peek(hex);
    return organic === undefined ? null : { bytes: organic, pinned: false };
  }

  /** The sealed bytes of a chunk, checked; a corrupt entry is deleted and reported. */
  async read(chunkId: Uint8Array): Promise<L2Read> {
    const hex = toHex(chunkId);
    let bytes = this.#pinned.get(hex) ?? this.#organic.get(hex);
    if (bytes === undefined) {
      // Another process on this directory (kiseki-client stage beside a running mount) may
      // have written it since the index was built: adopt it rather than fetch it again.
      if (!(await this.#adopt(hex))) return { kind: "miss" };
      bytes = this.#pinned.get(hex) ?? this.#organic.get(hex)!;
    }
    // The index knows the size: one exact read into one buffer (Deno.readFile grows its own
    // and measured at half the speed); one byte more catches a file longer than its header.
    let file: Uint8Array;
    try {
      file = await readExactly(this.#pathOf(hex), L2_HEADER_BYTES + bytes + 1);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        this.#forget(hex);
        return { kind: "miss" };
      }
      throw e;
    }
    const header = decodeL2Header(file);
    let reason: string | null = null;
    if (!header.ok) reason = header.reason;
    else if (file.length !== L2_HEADER_BYTES + header.length) reason = "length mismatch";
    else if (crc32c(file.subarray(L2_HEADER_BYTES)) !== header.crc) {
      reason = "body checksum mismatch";
    }
    if (reason !== null) {
      this.#corruptDropped++;
      this.#forget(hex);
      await removeQuietly(this.#pathOf(hex));
      return { kind: "corrupt", reason };
    }
    return { kind: "hit", sealed: file.subarray(L2_HEADER_BYTES) };
  }

  /**
   * Keeps a chunk as an organic entry, in the background: returns at once; the entry exists
   * once written. Skipped (counted) when too many writes are pending or it cannot fit.
   */
  put(chunkId: Uint8Array, sealed: Uint8Array): void {
    const hex = this.#checkId(chunkId);
    if (this.#closed || this.has(chunkId) || this.#pending.has(hex)) return;
    if (
      this.#pending.size >= L2_WRITES_PENDING_MAX ||
      this.#pinnedBytes + sealed.length > this.maxBytes
    ) {
      this.#writesSkipped++;
      return;
    }
    const write = (async () => {
      // Never over another process's entry (its pinned flag would be lost).
      if (await this.#adopt(hex)) return;
      await this.#write(hex, sealed, false);
    })().catch(() => {
      this.#writesSkipped++;
    }).finally(() => this.#pending.delete(hex));
    this.#pending.set(hex, write);
  }

  /** Takes an entry file the index does not know into it, if it is whole. */
  async #adopt(hex: string): Promise<boolean> {
    if (this.#closed || this.#pending.has(hex)) return false;
    let checked;
    try {
      checked = await readHeader(this.#pathOf(hex));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return false;
      throw e;
    }
    if (!checked.ok || this.has(fromHex(hex, hex.length / 2)!)) return false;
    if (checked.pinned) {
      this.#pinned.set(hex, checked.size);
      this.#pinnedBytes += checked.size;
    } else this.#organic.set(hex, checked.size, checked.size);
    return true;
  }

  /**
   * Keeps a chunk pinned: written (or an organic entry turned pinned) before this returns.
   * Throws L2FullError when pinned bytes would pass the bound.
   */
  async pin(chunkId: Uint8Array, sealed: Uint8Array): Promise<void> {
    const hex = this.#checkId(chunkId);
    assert(!this.#closed, "pin() after close()");
    await this.#pending.get(hex);
    if (this.#pinned.has(hex)) return;
    if (this.#pinned.size >= L2_ENTRIES_MAX) {
      throw new L2FullError(`${L2_ENTRIES_MAX} chunks are pinned already (L2_ENTRIES_MAX)`);
    }
    if (this.#pinnedBytes + sealed.length > this.maxBytes) {
      throw new L2FullError(
        `pinning ${sealed.length} bytes would pass KISEKI_CACHE_L2_MAX (${this.maxBytes} bytes, ` +
          `${this.#pinnedBytes} pinned)`,
      );
    }
    this.#organic.delete(hex);
    await this.#write(hex, sealed, true);
  }

  /** Turns pinned entries organic again (they stay until evicted). Returns how many changed. */
  async release(chunkIds: Iterable<Uint8Array>): Promise<number> {
    let changed = 0;
    for (const id of chunkIds) {
      const hex = toHex(id);
      const bytes = this.#pinned.get(hex);
      if (bytes === undefined) continue;
      try {
        await setPinnedFlag(this.#pathOf(hex), false);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
        this.#forget(hex);
        continue;
      }
      this.#pinned.delete(hex);
      this.#pinnedBytes -= bytes;
      this.#organic.set(hex, bytes, bytes);
      changed++;
    }
    await this.#evictToBound(0);
    return changed;
  }

  async #write(hex: string, sealed: Uint8Array, pinned: boolean): Promise<void> {
    await this.#evictToBound(sealed.length);
    const path = this.#pathOf(hex);
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true, mode: 0o700 });
    const tmp = `${path}.tmp`;
    const file = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
    try {
      await writeAll(file, encodeL2Header(sealed, pinned));
      await writeAll(file, sealed);
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
    if (this.#closed) return;
    if (pinned) {
      this.#organic.delete(hex);
      if (!this.#pinned.has(hex)) this.#pinnedBytes += sealed.length;
      this.#pinned.set(hex, sealed.length);
    } else this.#organic.set(hex, sealed.length, sealed.length);
  }

  /** Evicts organic entries, oldest first, until `incoming` more bytes fit under the bound. */
  async #evictToBound(incoming: number): Promise<void> {
    while (
      this.#organic.size > 0 && this.#organic.bytes + this.#pinnedBytes + incoming > this.maxBytes
    ) {
      const oldest = this.#organic.keys().next().value as string;
      this.#organic.delete(oldest);
      this.#evicted++;
      await removeQuietly(this.#pathOf(oldest));
    }
  }

  #forget(hex: string): void {
    const pinned = this.#pinned.get(hex);
    if (pinned !== undefined) {
      this.#pinned.delete(hex);
      this.#pinnedBytes -= pinned;
    }
    this.#organic.delete(hex);
  }

  #checkId(chunkId: Uint8Array): string {
    assert(
      chunkId.length >= 1 && chunkId.length <= L2_CHUNK_ID_BYTES_MAX,
      "chunk id of 1..64 bytes",
    );
    return toHex(chunkId);
  }

  /** Deletes one entry (pinned or not). */
  async drop(chunkId: Uint8Array): Promise<void> {
    const hex = toHex(chunkId);
    await this.#pending.get(hex);
    this.#forget(hex);
    await removeQuietly(this.#pathOf(hex));
  }

  /** Waits for a background write of this chunk, if one is in flight. */
  async settled(chunkId: Uint8Array): Promise<void> {
    await this.#pending.get(toHex(chunkId));
  }

  /** Waits for the background writes in flight. */
  async flush(): Promise<void> {
    while (this.#pending.size > 0) await Promise.all([...this.#pending.values()]);
  }

  /** Deletes every entry, pinned ones too, and the contact stamp. */
  async wipe(): Promise<void> {
    await this.flush();
    this.#organic.clear();
    this.#pinned.clear();
    this.#pinnedBytes = 0;
    await Deno.remove(`${this.dir}/chunks`, { recursive: true }).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
    await removeQuietly(`${this.dir}/${L2_CONTACT_FILE}`);
    await Deno.mkdir(`${this.dir}/chunks`, { recursive: true, mode: 0o700 });
  }

  /** Records that a node was reached at `nowMs` (read back by lastContactMs() after a restart). */
  async markContact(nowMs: number): Promise<void> {
    const tmp = `${this.dir}/${L2_CONTACT_FILE}.tmp`;
    await Deno.writeTextFile(tmp, `${Math.floor(nowMs)}\n`, { mode: 0o600 });
    await Deno.rename(tmp, `${this.dir}/${L2_CONTACT_FILE}`);
  }

  /** When a node was last reached, as recorded; null when never (or unreadable). */
  async lastContactMs(): Promise<number | null> {
    try {
      const text = (await Deno.readTextFile(`${this.dir}/${L2_CONTACT_FILE}`)).trim();
      return /^[0-9]{1,16}$/.test(text) ? +text : null;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw e;
    }
  }

  stats(): L2Stats {
    return {
      entries: this.#organic.size + this.#pinned.size,
      bytes: this.#organic.bytes + this.#pinnedBytes,
      pinnedEntries: this.#pinned.size,
      pinnedBytes: this.#pinnedBytes,
      corruptDropped: this.#corruptDropped,
      evicted: this.#evicted,
      writesSkipped: this.#writesSkipped,
    };
  }

  async close(): Promise<void> {
    await this.flush();
    this.#closed = true;
  }
}

async function readHeader(
  path: string,
): Promise<
  { ok: true; size: number; pinned: boolean; mtimeMs: number } | { ok: false; reason: string }
> {
  const file = await Deno.open(path, { read: true });
  try {
    const info = await file.stat();
    const header = new Uint8Array(L2_HEADER_BYTES);
    let got = 0;
    while (got < L2_HEADER_BYTES) {
      const n = await file.read(header.subarray(got));
      if (n === null) break;
      got += n;
    }
    const decoded = decodeL2Header(header.subarray(0, got));
    if (!decoded.ok) return decoded;
    if (info.size !== L2_HEADER_BYTES + decoded.length) return { ok: false, reason: "length" };
    return {
      ok: true,
      size: decoded.length,
      pinned: decoded.pinned,
      mtimeMs: info.mtime?.getTime() ?? 0,
    };
  } finally {
    file.close();
  }
}

/** Rewrites the flags byte and the header checksum in place. */
async function setPinnedFlag(path: string, pinned: boolean): Promise<void> {
  const file = await Deno.open(path, { read: true, write: true });
  try {
    const header = new Uint8Array(L2_HEADER_BYTES);
    let got = 0;
    while (got < L2_HEADER_BYTES) {
      const n = await file.read(header.subarray(got));
      if (n === null) throw new Deno.errors.NotFound(`${path}: short header`);
      got += n;
    }
    header[5] = pinned ? L2_FLAG_PINNED : 0;
    new DataView(header.buffer).setUint32(20, crc32c(header.subarray(0, 20)), true);
    await file.seek(0, Deno.SeekMode.Start);
    await writeAll(file, header.subarray(0, 24));
  } finally {
    file.close();
  }
}

/** Up to `length` bytes from the start of a file (fewer when it is shorter). */
async function readExactly(path: string, length: number): Promise<Uint8Array> {
  if (length <= L2_SYNC_READ_BYTES_MAX) return readExactlySync(path, length);
  const file = await Deno.open(path, { read: true });
  try {
    const out = new Uint8Array(length);
    let got = 0;
    while (got < length) {
      const n = await file.read(out.subarray(got));
      if (n === null) break;
      got += n;
    }
    return out.subarray(0, got);
  } finally {
    file.close();
  }
}

function readExactlySync(path: string, length: number): Uint8Array {
  const file = Deno.openSync(path, { read: true });
  try {
    const out = new Uint8Array(length);
    let got = 0;
    while (got < length) {
      const n = file.readSync(out.subarray(got));
      if (n === null) break;
      got += n;
    }
    return out.subarray(0, got);
  } finally {
    file.close();
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
