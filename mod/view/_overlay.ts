// Uncommitted writes layered over committed lmdb tables, so a fold can read its own writes
// before the batch commits. Layers nest: each delta folds into its own layer, merged into
// the batch's layer only if the fold accepts it (a refused delta leaves no trace).

import { assert } from "../base/mod.ts";
import type { KvEntry, KvTable, KvTxn } from "../disk/mod.ts";

/** Read access the folds need: point reads and bounded ranges, in key order. */
export interface KvRead {
  get(table: KvTable, key: Uint8Array): Uint8Array | undefined;
  /** Entries of [start, end) in key order; callers keep ranges small (bounded by limits). */
  range(table: KvTable, start: Uint8Array, end: Uint8Array | undefined): KvEntry[];
}

/** Entries one fold range may return (a multipart upload's parts, a long-key group). */
export const FOLD_RANGE_ENTRIES_MAX = 65_536;

/** The committed state. */
export const committed: KvRead = {
  get: (table, key) => table.getSync(key),
  range(table, start, end) {
    const out: KvEntry[] = [];
    for (const entry of table.range({ start, end })) {
      out.push(entry);
      assert(out.length <= FOLD_RANGE_ENTRIES_MAX, `fold range over ${table.name} is too large`);
    }
    return out;
  },
};

interface Write {
  key: Uint8Array;
  value: Uint8Array | null;
}

/** Byte strings as latin1 strings: JS string order is then byte order. */
function id(key: Uint8Array): string {
  return String.fromCharCode(...key);
}

export class Overlay implements KvRead {
  readonly #parent: KvRead;
  readonly #tables = new Map<KvTable, Map<string, Write>>();
  #operations = 0;

  constructor(parent: KvRead) {
    this.#parent = parent;
  }

  /** Writes staged (puts and deletes, after coalescing). */
  get operationCount(): number {
    return this.#operations;
  }

  #table(table: KvTable): Map<string, Write> {
    let t = this.#tables.get(table);
    if (t === undefined) {
      t = new Map();
      this.#tables.set(table, t);
    }
    return t;
  }

  get(table: KvTable, key: Uint8Array): Uint8Array | undefined {
    const w = this.#tables.get(table)?.get(id(key));
    if (w !== undefined) return w.value ?? undefined;
    return this.#parent.get(table, key);
  }

  put(table: KvTable, key: Uint8Array, value: Uint8Array): void {
    this.#set(table, key, value);
  }

  delete(table: KvTable, key: Uint8Array): void {
    this.#set(table, key, null);
  }

  #set(table: KvTable, key: Uint8Array, value: Uint8Array | null): void {
    const t = this.#table(table);
    const k = id(key);
    if (!t.has(k)) this.#operations++;
    t.set(k, { key, value });
  }

  range(table: KvTable, start: Uint8Array, end: Uint8Array | undefined): KvEntry[] {
    const base = this.#parent.range(table, start, end);
    const mine = this.#tables.get(table);
    if (mine === undefined || mine.size === 0) return base;
    const lo = id(start);
    const hi = end === undefined ? undefined : id(end);
    const own = [...mine].filter(([k]) => k >= lo && (hi === undefined || k < hi));
    if (own.length === 0) return base;
    own.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const out: KvEntry[] = [];
    let i = 0;
    let j = 0;
    let baseId = i < base.length ? id(base[i]!.key) : undefined;
    while (i < base.length || j < own.length) {
      const [ownId, write] = j < own.length ? own[j]! : [undefined, undefined];
      if (ownId === undefined || (baseId !== undefined && baseId < ownId)) {
        out.push(base[i]!);
        i++;
        baseId = i < base.length ? id(base[i]!.key) : undefined;
        continue;
      }
      if (baseId === ownId) {
        i++;
        baseId = i < base.length ? id(base[i]!.key) : undefined;
      }
      if (write!.value !== null) out.push({ key: write!.key, value: write!.value });
      j++;
    }
    assert(out.length <= FOLD_RANGE_ENTRIES_MAX, `fold range over ${table.name} is too large`);
    return out;
  }

  /** Moves this layer's writes into `target`, which must be this layer's parent. */
  mergeInto(target: Overlay): void {
    assert(this.#parent === target, "an overlay merges only into its parent");
    for (const [table, writes] of this.#tables) {
      for (const w of writes.values()) target.#set(table, w.key, w.value);
    }
    this.#tables.clear();
    this.#operations = 0;
  }

  /** Stages every write into an lmdb transaction. */
  stage(txn: KvTxn): void {
    for (const [table, writes] of this.#tables) {
      for (const w of writes.values()) {
        if (w.value === null) txn.delete(table, w.key);
        else txn.put(table, w.key, w.value);
      }
    }
  }
}
