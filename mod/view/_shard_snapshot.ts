// One shard's share of the views as a stream of records, for a follower too far behind for
// the log: every record of the namespaces the shard owns (the namespace, its tenant index
// entry, and its objects, uploads, parts and POSIX tree). A record is
// [u8 table][u16 key length][key][u32 value length][value]; a chunk holds whole records.

import { assert } from "../base/mod.ts";
import { concatBytes, utf8 } from "../composition/mod.ts";
import type { KvEnv, KvTable } from "../disk/mod.ts";
import { SNAPSHOT_CHUNK_BYTES_MAX } from "../log/mod.ts";
import { VIEW_TABLE_NAMES, type ViewTables } from "./_fold.ts";
import { successor } from "./_ordered.ts";
import { decodeNamespace, ViewCorruptError } from "./_records.ts";

/** A chunk is sent once it holds this many bytes of records. */
export const VIEW_SNAPSHOT_CHUNK_BYTES = 1 << 20;
/**
 * Records read from a table per page while exporting or clearing: with inline objects of up
 * to 64 KiB, a page holds at most 16 MiB.
 */
const PAGE_RECORDS = 256;
/** Writes per transaction while installing. */
const INSTALL_OPS_PER_TXN = 50_000;

const FIELDS = Object.keys(VIEW_TABLE_NAMES) as (keyof ViewTables)[];
/** Tables keyed by namespace id first: everything of a namespace is one key range. */
const SCOPED: readonly (keyof ViewTables)[] = [
  "obj",
  "upload",
  "uploadId",
  "part",
  "inode",
  "dirent",
  "cookie",
];

assert(VIEW_SNAPSHOT_CHUNK_BYTES * 2 <= SNAPSHOT_CHUNK_BYTES_MAX, "a chunk fits the stream");

/** Ids of the namespaces `owns` picks, read page by page. */
function* ownedNamespaces(
  tables: ViewTables,
  owns: (namespaceId: Uint8Array) => boolean,
): Iterable<{ id: Uint8Array; value: Uint8Array }> {
  let start: Uint8Array | undefined = undefined;
  for (;;) {
    const page = [...tables.ns.range({ start, limit: PAGE_RECORDS })];
    for (const e of page) if (owns(e.key)) yield { id: e.key, value: e.value };
    if (page.length < PAGE_RECORDS) return;
    start = successor(page[page.length - 1]!.key);
    if (start === undefined) return;
  }
}

/** The records of one key range, page by page (no read snapshot is held between pages). */
function* rangePages(table: KvTable, start: Uint8Array, end: Uint8Array | undefined) {
  let from = start;
  for (;;) {
    const page = [...table.range({ start: from, end, limit: PAGE_RECORDS })];
    yield page;
    if (page.length < PAGE_RECORDS) return;
    const next = successor(page[page.length - 1]!.key);
    if (next === undefined) return;
    from = next;
  }
}

class ChunkWriter {
  #parts: Uint8Array[] = [];
  #bytes = 0;
  constructor(readonly write: (chunk: Uint8Array) => Promise<void>) {}

  async record(table: number, key: Uint8Array, value: Uint8Array): Promise<void> {
    const rec = new Uint8Array(3 + key.length + 4 + value.length);
    const rv = new DataView(rec.buffer);
    rec[0] = table;
    rv.setUint16(1, key.length);
    rec.set(key, 3);
    rv.setUint32(3 + key.length, value.length);
    rec.set(value, 7 + key.length);
    assert(rec.length <= SNAPSHOT_CHUNK_BYTES_MAX - VIEW_SNAPSHOT_CHUNK_BYTES, "a record fits");
    this.#parts.push(rec);
    this.#bytes += rec.length;
    if (this.#bytes >= VIEW_SNAPSHOT_CHUNK_BYTES) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.#bytes === 0) return;
    const chunk = concatBytes(...this.#parts);
    this.#parts = [];
    this.#bytes = 0;
    await this.write(chunk);
  }
}

/**
 * Streams every record of the owned namespaces. The caller holds off every writer of the
 * views meanwhile (it runs between fold batches), so the pages read add up to one state.
 */
export async function exportShardViews(
  tables: ViewTables,
  owns: (namespaceId: Uint8Array) => boolean,
  write: (chunk: Uint8Array) => Promise<void>,
): Promise<number> {
  const out = new ChunkWriter(write);
  let records = 0;
  const owned = [...ownedNamespaces(tables, owns)];
  for (const ns of owned) {
    const record = decodeNamespace(ns.id, ns.value);
    const tenantKey = concatBytes(record.tenantId, utf8(record.name));
    await out.record(FIELDS.indexOf("ns"), ns.id, ns.value);
    await out.record(FIELDS.indexOf("nsTenant"), tenantKey, ns.id);
    records += 2;
    for (const field of SCOPED) {
      for (const page of rangePages(tables[field], ns.id, successor(ns.id))) {
        for (const e of page) await out.record(FIELDS.indexOf(field), e.key, e.value);
        records += page.length;
      }
    }
  }
  await out.flush();
  return records;
}

/** Deletes every record of the owned namespaces (before an install). */
export async function clearShardViews(
  env: KvEnv,
  tables: ViewTables,
  owns: (namespaceId: Uint8Array) => boolean,
): Promise<number> {
  let records = 0;
  const owned = [...ownedNamespaces(tables, owns)];
  for (const ns of owned) {
    const record = decodeNamespace(ns.id, ns.value);
    for (const field of SCOPED) {
      const table = tables[field];
      for (;;) {
        const keys = [...table.range({ start: ns.id, end: successor(ns.id), limit: PAGE_RECORDS })]
          .map((e) => e.key);
        if (keys.length === 0) break;
        await env.transaction((txn) => {
          for (const k of keys) txn.delete(table, k);
        });
        records += keys.length;
      }
    }
    await env.transaction((txn) => {
      txn.delete(tables.ns, ns.id);
      txn.delete(tables.nsTenant, concatBytes(record.tenantId, utf8(record.name)));
    });
    records += 2;
  }
  return records;
}

/** Writes the records of an exported stream (whole records per chunk). */
export async function installShardViews(
  env: KvEnv,
  tables: ViewTables,
  chunks: AsyncIterable<Uint8Array>,
): Promise<number> {
  let records = 0;
  let batch: { table: KvTable; key: Uint8Array; value: Uint8Array }[] = [];
  const commit = async () => {
    const writes = batch;
    batch = [];
    if (writes.length > 0) {
      await env.transaction((txn) => {
        for (const w of writes) txn.put(w.table, w.key, w.value);
      });
    }
  };
  for await (const chunk of chunks) {
    const view = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let at = 0;
    while (at < chunk.length) {
      if (at + 7 > chunk.length) throw new ViewCorruptError("view snapshot record is torn");
      const field = FIELDS[chunk[at]!];
      if (field === undefined || field === "meta") {
        throw new ViewCorruptError(`view snapshot names table ${chunk[at]}`);
      }
      const keyBytes = view.getUint16(at + 1);
      if (at + 3 + keyBytes + 4 > chunk.length) {
        throw new ViewCorruptError("view snapshot record is torn");
      }
      const key = chunk.slice(at + 3, at + 3 + keyBytes);
      const valueBytes = view.getUint32(at + 3 + keyBytes);
      const from = at + 7 + keyBytes;
      if (from + valueBytes > chunk.length) {
        throw new ViewCorruptError("view snapshot record is torn");
      }
      batch.push({ table: tables[field], key, value: chunk.slice(from, from + valueBytes) });
      at = from + valueBytes;
      records++;
      if (batch.length >= INSTALL_OPS_PER_TXN) await commit();
    }
  }
  await commit();
  return records;
}
