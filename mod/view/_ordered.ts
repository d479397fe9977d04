// Object keys (up to 1024 bytes) in lmdb keys (at most 511 bytes), in exact key order.
// A key shorter than KEY_VERBATIM_BYTES is stored verbatim after the namespace id, so lmdb
// order is key order. A longer key is stored as its first KEY_VERBATIM_BYTES bytes and 8
// bytes of its SHA-256: all keys sharing that prefix form one contiguous "group" in lmdb,
// ordered by hash, and the scan below re-sorts each group by the full key (kept in the
// value). Groups are bounded (LONG_KEY_GROUP_ENTRIES_MAX, enforced when folding).

import { assert } from "../base/mod.ts";
import type { KvTable } from "../disk/mod.ts";
import { concatBytes, NAMESPACE_ID_BYTES, sha256 } from "../composition/mod.ts";
import { compareKeys } from "../log/mod.ts";

export const KEY_VERBATIM_BYTES = 448;
export const KEY_HASH_BYTES = 8;
/** Keys that may share their first KEY_VERBATIM_BYTES bytes (per namespace and table). */
export const LONG_KEY_GROUP_ENTRIES_MAX = 1024;
/** ns id + verbatim prefix: the lmdb prefix every entry of a group starts with. */
export const GROUP_PREFIX_BYTES = NAMESPACE_ID_BYTES + KEY_VERBATIM_BYTES;

export function isLongKey(key: Uint8Array): boolean {
  return key.length >= KEY_VERBATIM_BYTES;
}

/** The lmdb key of `key` in namespace `ns`. */
export function orderedKey(ns: Uint8Array, key: Uint8Array): Uint8Array {
  if (!isLongKey(key)) return concatBytes(ns, key);
  return concatBytes(
    ns,
    key.subarray(0, KEY_VERBATIM_BYTES),
    sha256(key).subarray(0, KEY_HASH_BYTES),
  );
}

/** The lmdb prefix shared by every key with the same first KEY_VERBATIM_BYTES bytes. */
export function groupPrefix(ns: Uint8Array, key: Uint8Array): Uint8Array {
  assert(isLongKey(key), "groupPrefix: short keys form no group");
  return concatBytes(ns, key.subarray(0, KEY_VERBATIM_BYTES));
}

/**
 * An lmdb key at or below the encoding of every key >= `key` (and above no key < `key`
 * outside `key`'s group): where a scan for keys from `key` on starts.
 */
export function lowerBound(ns: Uint8Array, key: Uint8Array): Uint8Array {
  return concatBytes(ns, key.subarray(0, Math.min(key.length, KEY_VERBATIM_BYTES)));
}

/**
 * Where a scan for keys after every key starting with `prefix` starts. Past them exactly when
 * the prefix is short (UTF-8 never holds 0xff); otherwise at the prefix's group, and the
 * caller skips what still starts with the prefix.
 */
export function afterPrefixBound(ns: Uint8Array, prefix: Uint8Array): Uint8Array {
  if (prefix.length < KEY_VERBATIM_BYTES) return concatBytes(ns, prefix, Uint8Array.of(0xff));
  return concatBytes(ns, prefix.subarray(0, KEY_VERBATIM_BYTES));
}

/** The smallest byte string greater than every string starting with `bytes`; undefined if none. */
export function successor(bytes: Uint8Array): Uint8Array | undefined {
  const out = bytes.slice();
  for (let i = out.length - 1; i >= 0; i--) {
    if (out[i]! < 0xff) {
      out[i]!++;
      return out.subarray(0, i + 1);
    }
  }
  return undefined;
}

/** An entry in exact (key, tie) order. */
export interface OrderedEntry<T> {
  key: Uint8Array;
  /** Orders entries of one key (upload ids); empty when keys are unique. */
  tie: Uint8Array;
  item: T;
}

export function compareOrdered(
  a: { key: Uint8Array; tie: Uint8Array },
  b: { key: Uint8Array; tie: Uint8Array },
): number {
  return compareKeys(a.key, b.key) || compareKeys(a.tie, b.tie);
}

/**
 * Committed entries of [start, end) in exact (key, tie) order. `decode` reads the full key
 * and tie from an entry. Lazy: do not hold across an await.
 */
export function* orderedScan<T>(
  table: KvTable,
  start: Uint8Array,
  end: Uint8Array | undefined,
  decode: (lmdbKey: Uint8Array, value: Uint8Array) => OrderedEntry<T>,
): Generator<OrderedEntry<T>> {
  const it = table.range({ start, end })[Symbol.iterator]();
  let pending = it.next();
  while (!pending.done) {
    const first = pending.value;
    const entry = decode(first.key, first.value);
    pending = it.next();
    if (!isLongKey(entry.key)) {
      yield entry;
      continue;
    }
    const prefix = first.key.subarray(0, GROUP_PREFIX_BYTES);
    const group = [entry];
    while (!pending.done && startsWith(pending.value.key, prefix)) {
      group.push(decode(pending.value.key, pending.value.value));
      pending = it.next();
    }
    group.sort(compareOrdered);
    yield* group;
  }
}

export function startsWith(bytes: Uint8Array, prefix: Uint8Array): boolean {
  if (bytes.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}
