// Retention holds: while a hold exists, GC does not erase what it covers. A hold covers a
// tenant (every chunk that tenant ever referenced, by the tenant tags in the chunk index)
// or an explicit set of chunks. Persisted in lmdb beside the chunk index; the control plane
// owns the policy of placing and lifting them.

import { assert, concatBytes } from "../base/mod.ts";
import type { KvEnv, KvTable } from "../disk/mod.ts";
import { tenantTag } from "./chunk_index.ts";

export const HOLDS_MAX = 10_000;
export const HOLD_CHUNKS_MAX = 100_000;
export const HOLD_ID_BYTES_MAX = 128;
export const HOLD_REASON_BYTES_MAX = 1024;
export const HOLD_TABLES = {
  holds: "hold_list",
  chunks: "hold_chunks",
  tenants: "hold_tenants",
} as const;

export type HoldSpec =
  | { id: string; kind: "tenant"; tenant: string; reason?: string }
  | { id: string; kind: "chunks"; chunkIds: readonly Uint8Array[]; reason?: string };

export interface HoldSummary {
  id: string;
  kind: "tenant" | "chunks";
  /** The tenant id for tenant holds. */
  tenant?: string;
  /** How many chunks a chunk-set hold names. */
  chunks?: number;
  reason: string;
}

export type HoldErrorCode = "invalid" | "exists" | "too_many";

export class HoldError extends Error {
  override name = "HoldError";
  constructor(readonly code: HoldErrorCode, message: string) {
    super(message);
  }
}

/** What a hold check needs to know about a chunk. */
export interface HoldSubject {
  tenants: readonly string[];
  tenantOverflow: boolean;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class LmdbHoldStore {
  readonly #env: KvEnv;
  readonly #holds: KvTable;
  readonly #chunks: KvTable;
  readonly #tenants: KvTable;

  constructor(env: KvEnv) {
    this.#env = env;
    this.#holds = env.table(HOLD_TABLES.holds);
    this.#chunks = env.table(HOLD_TABLES.chunks);
    this.#tenants = env.table(HOLD_TABLES.tenants);
  }

  /** Places a hold, durably. Throws HoldError for bad input, a repeated id, or too many. */
  async place(spec: HoldSpec): Promise<void> {
    const id = checkId(spec.id);
    const reason = spec.reason ?? "";
    if (encoder.encode(reason).length > HOLD_REASON_BYTES_MAX) {
      throw new HoldError(
        "invalid",
        `hold ${spec.id}: reason longer than ${HOLD_REASON_BYTES_MAX} bytes`,
      );
    }
    if (this.#holds.getSync(id) !== undefined) {
      throw new HoldError("exists", `hold ${spec.id} already exists`);
    }
    if (this.#count() >= HOLDS_MAX) {
      throw new HoldError("too_many", `${HOLDS_MAX} holds exist; release one first`);
    }
    let summary: HoldSummary;
    const keys: Uint8Array[] = [];
    let table: KvTable;
    if (spec.kind === "tenant") {
      if (typeof spec.tenant !== "string" || spec.tenant.length === 0) {
        throw new HoldError("invalid", `hold ${spec.id}: tenant must be a non-empty string`);
      }
      keys.push(concatBytes(hexBytes(tenantTag(spec.tenant)), id));
      table = this.#tenants;
      summary = { id: spec.id, kind: "tenant", tenant: spec.tenant, reason };
    } else if (spec.kind === "chunks") {
      const ids = spec.chunkIds;
      if (!Array.isArray(ids) || ids.length === 0 || ids.length > HOLD_CHUNKS_MAX) {
        throw new HoldError("invalid", `hold ${spec.id}: give 1..${HOLD_CHUNKS_MAX} chunk ids`);
      }
      for (const chunkId of ids) {
        if (!(chunkId instanceof Uint8Array) || chunkId.length !== 32) {
          throw new HoldError("invalid", `hold ${spec.id}: chunk ids are 32 bytes`);
        }
        keys.push(concatBytes(chunkId, id));
      }
      table = this.#chunks;
      summary = { id: spec.id, kind: "chunks", chunks: ids.length, reason };
    } else {
      throw new HoldError("invalid", `hold kind must be "tenant" or "chunks"`);
    }
    await this.#env.transaction((txn) => {
      txn.put(this.#holds, id, encoder.encode(JSON.stringify(summary)));
      for (const key of keys) txn.put(table, key, EMPTY);
    });
  }

  /** Lifts a hold, durably; false when there was none. */
  async release(holdId: string): Promise<boolean> {
    const id = checkId(holdId);
    const value = this.#holds.getSync(id);
    if (value === undefined) return false;
    const summary = JSON.parse(decoder.decode(value)) as HoldSummary;
    const doomed: { table: KvTable; key: Uint8Array }[] = [];
    if (summary.kind === "tenant") {
      doomed.push({
        table: this.#tenants,
        key: concatBytes(hexBytes(tenantTag(summary.tenant!)), id),
      });
    } else {
      // Chunk-set holds are found by scanning: the set is keyed by chunk id for fast checks.
      for (const { key } of this.#chunks.range()) {
        if (bytesEqual(key.subarray(32), id)) doomed.push({ table: this.#chunks, key });
      }
    }
    await this.#env.transaction((txn) => {
      txn.delete(this.#holds, id);
      for (const { table, key } of doomed) txn.delete(table, key);
    });
    return true;
  }

  list(): HoldSummary[] {
    return [...this.#holds.range()].map(({ value }) =>
      JSON.parse(decoder.decode(value)) as HoldSummary
    );
  }

  /** The id of a hold that covers the chunk, or null when none does. */
  holding(chunkId: Uint8Array, subject: HoldSubject): string | null {
    assert(chunkId.length === 32, "chunk id length");
    for (const { key } of this.#chunks.range({ start: chunkId, end: next(chunkId), limit: 1 })) {
      return decoder.decode(key.subarray(32));
    }
    if (subject.tenantOverflow) {
      // The chunk's tenant list is incomplete: any tenant hold may cover it.
      for (const { key } of this.#tenants.range({ limit: 1 })) {
        return decoder.decode(key.subarray(8));
      }
    }
    for (const tag of subject.tenants) {
      const prefix = hexBytes(tag);
      for (const { key } of this.#tenants.range({ start: prefix, end: next(prefix), limit: 1 })) {
        return decoder.decode(key.subarray(8));
      }
    }
    return null;
  }

  #count(): number {
    let n = 0;
    for (const _ of this.#holds.range()) n++;
    return n;
  }
}

const EMPTY = new Uint8Array([0]);

function checkId(holdId: string): Uint8Array {
  if (typeof holdId !== "string" || holdId.length === 0) {
    throw new HoldError("invalid", "hold id must be a non-empty string");
  }
  const id = encoder.encode(holdId);
  if (id.length > HOLD_ID_BYTES_MAX) {
    throw new HoldError("invalid", `hold id longer than ${HOLD_ID_BYTES_MAX} bytes`);
  }
  return id;
}

function hexBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** The first key after every key that starts with `prefix` (prefix + 1 in byte order). */
function next(prefix: Uint8Array): Uint8Array {
  const out = prefix.slice();
  for (let i = out.length - 1; i >= 0; i--) {
    if (out[i]! < 0xff) {
      out[i]!++;
      return out.subarray(0, i + 1);
    }
  }
  // All 0xff: no key after the prefix range; a longer key of 0xff bytes bounds it.
  return concatBytes(out, new Uint8Array(HOLD_ID_BYTES_MAX + 1).fill(0xff));
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
