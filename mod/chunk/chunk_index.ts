// The chunk index: chunk id -> where its fragments are, how long it is, who references it.
// Kept in lmdb next to the segment tables, so one durable transaction moves a fragment and
// updates both. Also the queue of unreferenced chunks GC works through, and small cursors.

import { createHash } from "node:crypto";
import { assert, crc32c, getU64LE, setU64LE, toHex } from "../base/mod.ts";
import type { KvEnv, KvTable, KvTxn } from "../disk/mod.ts";
import type { Durability } from "./pool.ts";

export const CHUNK_INDEX_FORMAT_VERSION = 1;
/** Tenant tags kept per chunk; beyond it the entry only says "more" (holds then block GC). */
export const CHUNK_TENANT_TAGS_MAX = 8;
export const CHUNK_INDEX_HEADER_BYTES = 24;
export const CHUNK_INDEX_FRAGMENT_BYTES = 16;
export const CHUNK_INDEX_TABLES = {
  chunks: "chunk_index",
  unreferenced: "chunk_unreferenced",
  meta: "chunk_meta",
} as const;

const STATE_REFERENCED = 1;
const STATE_UNREFERENCED = 2;
const SCHEME_EC = 1;
const SCHEME_COPIES = 2;
const FLAG_TENANT_OVERFLOW = 1;
const FRAGMENT_LOST = 1;

export interface FragmentEntry {
  device: number;
  /** Offset of the fragment's record on the device. */
  offsetBytes: number;
  payloadCrc: number;
  /** Known to be gone (its device was replaced, its record unreadable); scrub rebuilds it. */
  lost: boolean;
}

export interface ChunkEntry {
  durability: Durability;
  refcount: number;
  /** Length of the stored bytes before padding. */
  lengthBytes: number;
  /** Payload bytes of every fragment (EC: one k-th, padded; copies: the whole chunk). */
  fragmentBytes: number;
  /** In fragment order: EC data 0..k-1 then parity; copies in any order. */
  fragments: FragmentEntry[];
  /** tenantTag()s of tenants that referenced the chunk (at most CHUNK_TENANT_TAGS_MAX). */
  tenants: string[];
  /** More tenants referenced the chunk than `tenants` lists. */
  tenantOverflow: boolean;
}

export class ChunkIndexCorruptError extends Error {
  override name = "ChunkIndexCorruptError";
}

/** A stable 64-bit tag for a tenant id (hex); collisions only ever keep data longer. */
export function tenantTag(tenant: string): string {
  assert(typeof tenant === "string" && tenant.length > 0, "tenant id is a non-empty string");
  return createHash("sha256").update(tenant).digest("hex").slice(0, 16);
}

/** Adds a tenant tag to an entry (bounded), in place; returns whether it changed. */
export function addTenant(
  entry: Pick<ChunkEntry, "tenants" | "tenantOverflow">,
  tag: string,
): boolean {
  if (entry.tenants.includes(tag)) return false;
  if (entry.tenants.length >= CHUNK_TENANT_TAGS_MAX) {
    const changed = !entry.tenantOverflow;
    entry.tenantOverflow = true;
    return changed;
  }
  entry.tenants.push(tag);
  return true;
}

function fragmentCountOf(d: Durability): number {
  return d.kind === "ec" ? d.k + d.m : d.copies;
}

/**
 * Index value, little-endian:
 *   0 u8 format version (1)   1 u8 state (1 referenced, 2 unreferenced)   2 u8 scheme (1 EC,
 *   2 copies)   3 u8 k (copies: 1)   4 u8 n fragments   5 u8 flags (bit 0: tenant overflow)
 *   6 u8 tenant tag count t   7 u8 reserved   8 u32 refcount   12 u32 fragment payload bytes
 *  16 u64 chunk length bytes
 *  24 n x 16: u16 device | u8 flags (bit 0 lost) | u8 reserved | u32 payload CRC-32C |
 *             u64 record offset bytes
 *     t x 8: tenant tags
 *   then u32 CRC-32C of all bytes before it
 */
export function encodeChunkEntry(entry: ChunkEntry): Uint8Array {
  const n = entry.fragments.length;
  const d = entry.durability;
  assert(n === fragmentCountOf(d), "fragment count matches the durability");
  assert(entry.tenants.length <= CHUNK_TENANT_TAGS_MAX, "tenant tags bounded");
  assert(
    Number.isInteger(entry.refcount) && entry.refcount >= 0 && entry.refcount <= 0xffff_ffff,
    "refcount",
  );
  const t = entry.tenants.length;
  const bytes = new Uint8Array(
    CHUNK_INDEX_HEADER_BYTES + n * CHUNK_INDEX_FRAGMENT_BYTES + t * 8 + 4,
  );
  const view = new DataView(bytes.buffer);
  view.setUint8(0, CHUNK_INDEX_FORMAT_VERSION);
  view.setUint8(1, entry.refcount > 0 ? STATE_REFERENCED : STATE_UNREFERENCED);
  view.setUint8(2, d.kind === "ec" ? SCHEME_EC : SCHEME_COPIES);
  view.setUint8(3, d.kind === "ec" ? d.k : 1);
  view.setUint8(4, n);
  view.setUint8(5, entry.tenantOverflow ? FLAG_TENANT_OVERFLOW : 0);
  view.setUint8(6, t);
  view.setUint32(8, entry.refcount, true);
  view.setUint32(12, entry.fragmentBytes, true);
  setU64LE(view, 16, entry.lengthBytes);
  let at = CHUNK_INDEX_HEADER_BYTES;
  for (const f of entry.fragments) {
    view.setUint16(at, f.device, true);
    view.setUint8(at + 2, f.lost ? FRAGMENT_LOST : 0);
    view.setUint32(at + 4, f.payloadCrc, true);
    setU64LE(view, at + 8, f.offsetBytes);
    at += CHUNK_INDEX_FRAGMENT_BYTES;
  }
  for (const tag of entry.tenants) {
    assert(/^[0-9a-f]{16}$/.test(tag), "tenant tag is 16 hex digits");
    for (let i = 0; i < 8; i++) bytes[at + i] = parseInt(tag.slice(2 * i, 2 * i + 2), 16);
    at += 8;
  }
  view.setUint32(at, crc32c(bytes.subarray(0, at)), true);
  return bytes;
}

export function decodeChunkEntry(bytes: Uint8Array): ChunkEntry {
  const fail = (why: string): never => {
    throw new ChunkIndexCorruptError(`chunk index entry: ${why}`);
  };
  if (bytes.length < CHUNK_INDEX_HEADER_BYTES + 4) fail(`${bytes.length} bytes is too short`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint8(0) !== CHUNK_INDEX_FORMAT_VERSION) fail(`format ${view.getUint8(0)}`);
  const n = view.getUint8(4);
  const t = view.getUint8(6);
  const expected = CHUNK_INDEX_HEADER_BYTES + n * CHUNK_INDEX_FRAGMENT_BYTES + t * 8 + 4;
  if (bytes.length !== expected) fail(`${bytes.length} bytes, layout says ${expected}`);
  if (view.getUint32(expected - 4, true) !== crc32c(bytes.subarray(0, expected - 4))) {
    fail("CRC-32C mismatch");
  }
  const scheme = view.getUint8(2);
  const k = view.getUint8(3);
  let durability: Durability;
  if (scheme === SCHEME_EC && k >= 1 && n > k) durability = { kind: "ec", k, m: n - k };
  else if (scheme === SCHEME_COPIES && n >= 1) durability = { kind: "copies", copies: n };
  else return fail(`scheme ${scheme} with k=${k} n=${n}`);
  const fragments: FragmentEntry[] = [];
  let at = CHUNK_INDEX_HEADER_BYTES;
  for (let i = 0; i < n; i++) {
    fragments.push({
      device: view.getUint16(at, true),
      lost: (view.getUint8(at + 2) & FRAGMENT_LOST) !== 0,
      payloadCrc: view.getUint32(at + 4, true),
      offsetBytes: getU64LE(view, at + 8),
    });
    at += CHUNK_INDEX_FRAGMENT_BYTES;
  }
  const tenants: string[] = [];
  for (let i = 0; i < t; i++) {
    tenants.push(toHex(bytes.subarray(at, at + 8)));
    at += 8;
  }
  const refcount = view.getUint32(8, true);
  const state = view.getUint8(1);
  if (state !== (refcount > 0 ? STATE_REFERENCED : STATE_UNREFERENCED)) {
    fail(`state ${state} disagrees with refcount ${refcount}`);
  }
  return {
    durability,
    refcount,
    lengthBytes: getU64LE(view, 16),
    fragmentBytes: view.getUint32(12, true),
    fragments,
    tenants,
    tenantOverflow: (view.getUint8(5) & FLAG_TENANT_OVERFLOW) !== 0,
  };
}

/** An index entry with its chunk id. */
export interface IndexedChunk {
  id: Uint8Array;
  entry: ChunkEntry;
}

/**
 * The lmdb-backed chunk index. Reads see committed state; writes are staged into a
 * transaction the caller commits (with the segment changes that go with them).
 */
export class LmdbChunkIndex {
  readonly #chunks: KvTable;
  readonly #unreferenced: KvTable;
  readonly #meta: KvTable;

  constructor(env: KvEnv) {
    this.#chunks = env.table(CHUNK_INDEX_TABLES.chunks);
    this.#unreferenced = env.table(CHUNK_INDEX_TABLES.unreferenced);
    this.#meta = env.table(CHUNK_INDEX_TABLES.meta);
  }

  /** The encoded entry (to tell whether it changed between two reads). */
  getRaw(id: Uint8Array): Uint8Array | undefined {
    return this.#chunks.getSync(id);
  }

  get(id: Uint8Array): ChunkEntry | undefined {
    const value = this.#chunks.getSync(id);
    return value === undefined ? undefined : decodeChunkEntry(value);
  }

  /**
   * Stages `entry` for `id`, and keeps the unreferenced queue in step: an entry whose
   * refcount is zero is queued for GC, one with references is not.
   */
  stagePut(txn: KvTxn, id: Uint8Array, entry: ChunkEntry, before?: ChunkEntry): void {
    txn.put(this.#chunks, id, encodeChunkEntry(entry));
    const was = before === undefined ? -1 : before.refcount;
    if (entry.refcount === 0 && was !== 0) txn.put(this.#unreferenced, id, new Uint8Array(1));
    if (entry.refcount > 0 && was === 0) txn.delete(this.#unreferenced, id);
  }

  /** Stages removal of the entry (erase); the caller frees its records. */
  stageDelete(txn: KvTxn, id: Uint8Array): void {
    txn.delete(this.#chunks, id);
    txn.delete(this.#unreferenced, id);
  }

  /** Up to `limit` chunk ids after `after` (exclusive) in id order, with their entries. */
  scan(after: Uint8Array | null, limit: number): IndexedChunk[] {
    return this.#scan(this.#chunks, after, limit).map(({ key, value }) => ({
      id: key,
      entry: decodeChunkEntry(value),
    }));
  }

  /** Up to `limit` unreferenced chunk ids after `after` (exclusive), in id order. */
  unreferenced(after: Uint8Array | null, limit: number): Uint8Array[] {
    return this.#scan(this.#unreferenced, after, limit).map(({ key }) => key);
  }

  #scan(
    table: KvTable,
    after: Uint8Array | null,
    limit: number,
  ): { key: Uint8Array; value: Uint8Array }[] {
    assert(Number.isInteger(limit) && limit >= 0, "scan limit");
    const start = after === null ? undefined : successor(after);
    return [...table.range({ start, limit })];
  }

  /** Unreferenced chunks waiting for GC, counted up to `limit` (a lazy walk of the queue). */
  countUnreferenced(limit: number): number {
    let n = 0;
    for (const _ of this.#unreferenced.range({ limit })) n++;
    return n;
  }

  /** Number of entries (walks the table: for tests and reports, not hot paths). */
  count(): number {
    let n = 0;
    for (const _ of this.#chunks.range()) n++;
    return n;
  }

  getMeta(name: string): Uint8Array | undefined {
    return this.#meta.getSync(new TextEncoder().encode(name));
  }

  stageMeta(txn: KvTxn, name: string, value: Uint8Array | null): void {
    const key = new TextEncoder().encode(name);
    if (value === null) txn.delete(this.#meta, key);
    else txn.put(this.#meta, key, value);
  }
}

/** The smallest key greater than `key` in byte-wise order: `key` followed by a zero byte. */
function successor(key: Uint8Array): Uint8Array {
  const next = new Uint8Array(key.length + 1);
  next.set(key);
  return next;
}
