// Shard snapshots: each part of a shard's state contributes its share. Small state folded in
// memory (maintenance mode, cluster records) is captured at the applied index and rides in
// the Raft snapshot record itself ("inline" parts); state that keeps itself durable (the
// views) only says up to which index it is durable, and is streamed out on demand when a
// follower is too far behind for the log ("durable" parts). The log is truncated behind
// the oldest of them, so nothing a part still needs from the log is ever dropped.

import { assert } from "../base/mod.ts";

/** State captured with the Raft snapshot record (kept small: it is read and written whole). */
export interface InlineSnapshotPart {
  /** Unique per shard, at most SNAPSHOT_PART_NAME_BYTES_MAX bytes of ASCII. */
  readonly name: string;
  /** The part's state after the last applied entry (called between two applies). */
  capture(): Uint8Array;
  /** Replaces the state with what capture() returned at the snapshot's index (undefined: none). */
  restore(bytes: Uint8Array | undefined): void;
}

/** State that keeps itself durable outside the log and travels as a stream. */
export interface DurableSnapshotPart {
  readonly name: string;
  /** Highest index whose effects the part holds durably: the log is kept after it. */
  durableIndex(): number;
  /**
   * Streams the state at one index >= `atLeast` through `write` (which applies backpressure),
   * in chunks of at most SNAPSHOT_CHUNK_BYTES_MAX, and resolves with that index.
   */
  export(write: (chunk: Uint8Array) => Promise<void>, atLeast: number): Promise<number>;
  /**
   * Replaces the state with an exported stream taken at `index`, durably; a part already
   * past `index` keeps its own state (a part never goes backwards).
   */
  install(chunks: AsyncIterable<Uint8Array>, index: number): Promise<void>;
}

/**
 * What log compaction and snapshot streams need of a Raft group's state machine, whatever it
 * holds (a shard's deltas, or cluster records): ShardStateMachine is one.
 */
export interface SnapshottingStateMachine {
  /** The index of the last command applied. */
  readonly lastApplied: number;
  /** Up to where the state survives without the log (min over its durable parts). */
  durableIndex(): number;
  /** The inline state at lastApplied, as a Raft snapshot record. */
  captureSnapshot(): { index: number; data: Uint8Array };
  /** The log up to `index` is gone: drop what only served reads of it. */
  forgetThrough(index: number): void;
  durableParts(): DurableSnapshotPart[];
}

/** Longest part name. */
export const SNAPSHOT_PART_NAME_BYTES_MAX = 64;
/** Parts one shard may have, inline and durable together. */
export const SNAPSHOT_PARTS_MAX = 16;
/** Largest chunk of a durable part's stream (whole records; bounds receiver buffers). */
export const SNAPSHOT_CHUNK_BYTES_MAX: number = 8 << 20;
/** Largest inline snapshot record (it is held in memory and sent in one Raft message). */
export const SNAPSHOT_INLINE_BYTES_MAX: number = 16 << 20;

const INLINE_FORMAT = 2;

/** Snapshot data that cannot be decoded. */
export class SnapshotFormatError extends Error {
  override name = "SnapshotFormatError";
}

export function checkPartName(name: string): void {
  assert(
    /^[a-z0-9_.-]+$/.test(name) && name.length <= SNAPSHOT_PART_NAME_BYTES_MAX,
    `snapshot part name ${name} is invalid`,
  );
}

/** [u8 2][u16 count] then per part [u8 name length][name][u32 length][bytes]. */
export function encodeInlineSnapshot(parts: ReadonlyMap<string, Uint8Array>): Uint8Array {
  const names = [...parts.keys()].sort();
  let size = 3;
  for (const n of names) size += 1 + n.length + 4 + parts.get(n)!.length;
  assert(size <= SNAPSHOT_INLINE_BYTES_MAX, `inline snapshot of ${size} bytes is too large`);
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  out[0] = INLINE_FORMAT;
  view.setUint16(1, names.length);
  let at = 3;
  for (const n of names) {
    const bytes = parts.get(n)!;
    out[at++] = n.length;
    for (let i = 0; i < n.length; i++) out[at++] = n.charCodeAt(i);
    view.setUint32(at, bytes.length);
    at += 4;
    out.set(bytes, at);
    at += bytes.length;
  }
  return out;
}

/**
 * The parts of an inline snapshot. The bootstrap record every shard starts from is the
 * single byte of the first format ([u8 maintenance]); it decodes as the "shard" part.
 */
export function decodeInlineSnapshot(data: Uint8Array): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  if (data.length <= 1) {
    out.set("shard", data.slice());
    return out;
  }
  if (data[0] !== INLINE_FORMAT || data.length < 3) {
    throw new SnapshotFormatError(`unknown snapshot format ${data[0]}`);
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const count = view.getUint16(1);
  if (count > SNAPSHOT_PARTS_MAX) throw new SnapshotFormatError(`${count} snapshot parts`);
  let at = 3;
  for (let p = 0; p < count; p++) {
    if (at + 1 > data.length) throw new SnapshotFormatError("snapshot record is truncated");
    const nameBytes = data[at++]!;
    if (at + nameBytes + 4 > data.length) {
      throw new SnapshotFormatError("snapshot record is truncated");
    }
    const name = String.fromCharCode(...data.subarray(at, at + nameBytes));
    at += nameBytes;
    const length = view.getUint32(at);
    at += 4;
    if (at + length > data.length) throw new SnapshotFormatError("snapshot record is truncated");
    out.set(name, data.slice(at, at + length));
    at += length;
  }
  if (at !== data.length) throw new SnapshotFormatError("snapshot record has trailing bytes");
  return out;
}
