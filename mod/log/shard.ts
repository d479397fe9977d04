// Shards: the unit of ordering. Each shard is one Raft group and owns a contiguous range
// [start, end) of the 32-byte hashed key space; the shard map covers the whole space with
// no gaps or overlaps, so every hashed key has exactly one owner.

import { assert, toHex } from "../base/mod.ts";

/** A shard's id: an unsigned 32-bit integer, stable across splits of other shards. */
export type ShardId = number;

export const SHARD_ID_MAX = 0xffff_ffff;
export const HASHED_KEY_BYTES = 32;
/** Shards one map may hold (splits are bounded by it). */
export const SHARD_MAP_SHARDS_MAX = 1 << 16;

export function isShardId(value: number): value is ShardId {
  return Number.isInteger(value) && value >= 0 && value <= SHARD_ID_MAX;
}

/** The lowest hashed key (32 zero bytes): where the first shard starts. */
export const HASHED_KEY_MIN: Uint8Array = new Uint8Array(HASHED_KEY_BYTES);

export interface ShardRange {
  shardId: ShardId;
  /** Inclusive, 32 bytes. */
  start: Uint8Array;
  /** Exclusive, 32 bytes; null for the end of the key space. */
  end: Uint8Array | null;
}

/** A shard map that does not cover the key space exactly once. */
export class ShardMapError extends Error {
  override name = "ShardMapError";
}

/** Byte-wise comparison of two keys. */
export function compareKeys(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return a[i]! - b[i]!;
  }
  return a.length - b.length;
}

export function rangeContains(range: ShardRange, hashedKey: Uint8Array): boolean {
  return compareKeys(hashedKey, range.start) >= 0 &&
    (range.end === null || compareKeys(hashedKey, range.end) < 0);
}

function hex(key: Uint8Array | null): string {
  return key === null ? "end" : toHex(key);
}

/** Which shard owns each hashed key; validated on construction, immutable after. */
export class ShardMap {
  readonly #ranges: readonly ShardRange[];
  readonly #byId: ReadonlyMap<ShardId, ShardRange>;

  /** `ranges` in any order; throws ShardMapError unless they tile the key space. */
  constructor(ranges: readonly ShardRange[]) {
    if (ranges.length === 0) throw new ShardMapError("shard map is empty");
    if (ranges.length > SHARD_MAP_SHARDS_MAX) {
      throw new ShardMapError(
        `shard map has ${ranges.length} shards (max ${SHARD_MAP_SHARDS_MAX})`,
      );
    }
    const byId = new Map<ShardId, ShardRange>();
    for (const r of ranges) {
      if (!isShardId(r.shardId)) throw new ShardMapError(`shard id ${r.shardId} is not a u32`);
      if (byId.has(r.shardId)) throw new ShardMapError(`shard ${r.shardId} appears twice`);
      if (r.start.length !== HASHED_KEY_BYTES || (r.end && r.end.length !== HASHED_KEY_BYTES)) {
        throw new ShardMapError(`shard ${r.shardId}: range keys must be ${HASHED_KEY_BYTES} bytes`);
      }
      if (r.end && compareKeys(r.start, r.end) >= 0) {
        throw new ShardMapError(`shard ${r.shardId}: empty range ${hex(r.start)}..${hex(r.end)}`);
      }
      const copy = {
        shardId: r.shardId,
        start: r.start.slice(),
        end: r.end ? r.end.slice() : null,
      };
      byId.set(r.shardId, copy);
    }
    const sorted = [...byId.values()].sort((a, b) => compareKeys(a.start, b.start));
    if (compareKeys(sorted[0]!.start, HASHED_KEY_MIN) !== 0) {
      throw new ShardMapError(`no shard owns keys below ${hex(sorted[0]!.start)}`);
    }
    for (let i = 0; i < sorted.length; i++) {
      const r = sorted[i]!;
      const next = sorted[i + 1];
      if (next === undefined) {
        if (r.end !== null) throw new ShardMapError(`no shard owns keys from ${hex(r.end)} on`);
      } else if (r.end === null || compareKeys(r.end, next.start) !== 0) {
        throw new ShardMapError(
          `shards ${r.shardId} and ${next.shardId} ${
            r.end === null || compareKeys(r.end, next.start) > 0 ? "overlap" : "leave a gap"
          } at ${hex(r.end ?? next.start)}`,
        );
      }
    }
    this.#ranges = sorted;
    this.#byId = byId;
  }

  /** One shard owning the whole key space. */
  static single(shardId: ShardId): ShardMap {
    return new ShardMap([{ shardId, start: HASHED_KEY_MIN, end: null }]);
  }

  get size(): number {
    return this.#ranges.length;
  }

  /** Ranges in key order. */
  ranges(): readonly ShardRange[] {
    return this.#ranges;
  }

  rangeOf(shardId: ShardId): ShardRange | undefined {
    return this.#byId.get(shardId);
  }

  /** The shard owning `hashedKey` (binary search over the sorted ranges). */
  shardForKey(hashedKey: Uint8Array): ShardId {
    assert(hashedKey.length === HASHED_KEY_BYTES, "shardForKey: hashed keys are 32 bytes");
    let lo = 0;
    let hi = this.#ranges.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (compareKeys(this.#ranges[mid]!.start, hashedKey) <= 0) lo = mid;
      else hi = mid - 1;
    }
    const range = this.#ranges[lo]!;
    assert(rangeContains(range, hashedKey), "shard map lookup found a range not holding the key");
    return range.shardId;
  }
}

/** The shard owning `hashedKey` under `map`. */
export function shardForKey(map: ShardMap, hashedKey: Uint8Array): ShardId {
  return map.shardForKey(hashedKey);
}
