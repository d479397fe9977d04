// The binary wire form of a Raft `Message`: what the transport carries between nodes. Pure:
// encoding writes through a DataView into a caller's (reused) buffer; decoding is strict
// (every byte accounted for, every count bounded) and fails only with a CodecError.
//
// Layout, version 1, all integers big-endian:
//
//   off size field
//   0   1    version (1)
//   1   1    type (index into MESSAGE_TYPES)
//   2   1    flags: bit 0 reject, bit 1 snapshot present; other bits 0
//   3   1    reserved, 0
//   4   4    from (u32)            8   4  to (u32)
//   12  8    term (u64)            20  8  logTerm
//   28  8    index                 36  8  commit
//   44  8    rejectHint
//   52  4    context length        56  4  entry count
//   60  ...  context bytes
//            entries, each: term u64, index u64, type u8 (0 normal, 1 conf_change),
//                           data length u32, data
//            snapshot (when flagged): index u64, term u64, voter count u32, voters u32...,
//                           learner count u32, learners u32..., data length u32, data
//
// u64 fields hold safe integers (below 2^53); anything larger is rejected on decode. The
// form is canonical: a decoded message re-encodes to the exact bytes it came from.

import { assert } from "../base/mod.ts";
import {
  EMPTY_BYTES,
  type Entry,
  type EntryType,
  type Message,
  type MessageType,
  type NodeId,
  type Snapshot,
} from "./types.ts";

export const CODEC_VERSION = 1;

/** Largest encoded message (a snapshot travels in one message, so this bounds snapshots). */
export const MESSAGE_SIZE_BYTES_MAX: number = 64 * 1024 * 1024;
/** Most entries one message may carry. */
export const MESSAGE_ENTRY_COUNT_MAX: number = 64 * 1024;
/** Largest `context` (read-index ids and transfer markers are a few bytes). */
export const MESSAGE_CONTEXT_SIZE_BYTES_MAX: number = 4096;
/** Most voters, and separately most learners, in a snapshot's membership. */
export const CONF_MEMBER_COUNT_MAX: number = 1024;

/** Wire numbering of message types: append only, never reorder. */
export const MESSAGE_TYPES: readonly MessageType[] = [
  "append",
  "append_resp",
  "vote",
  "vote_resp",
  "prevote",
  "prevote_resp",
  "heartbeat",
  "heartbeat_resp",
  "snapshot",
  "timeout_now",
  "read_index",
  "read_index_resp",
  "propose",
];
const MESSAGE_TYPE_CODES: ReadonlyMap<MessageType, number> = new Map(
  MESSAGE_TYPES.map((t, i) => [t, i]),
);
const ENTRY_TYPES: readonly EntryType[] = ["normal", "conf_change"];

export const MESSAGE_HEADER_SIZE_BYTES = 60;
const ENTRY_HEADER_SIZE_BYTES = 21;
const SNAPSHOT_FIXED_SIZE_BYTES = 28;
const FLAG_REJECT = 1;
const FLAG_SNAPSHOT = 2;
const U32_MAX = 0xffff_ffff;
const TWO_POW_32 = 0x1_0000_0000;
/** The high word of a u64 that still holds a safe integer (2^53 - 1). */
const SAFE_HIGH_WORD_MAX = 0x1f_ffff;

export type CodecErrorKind = "truncated" | "oversized" | "version" | "invalid";

/** Input that is not a valid encoded message. Never thrown for anything else. */
export class CodecError extends Error {
  override name = "CodecError";
  constructor(readonly kind: CodecErrorKind, message: string) {
    super(message);
  }
}

/** Exact encoded size of `msg`. Asserts the limits (an over-limit message is a sender bug). */
export function encodedMessageSizeBytes(msg: Message): number {
  let size = MESSAGE_HEADER_SIZE_BYTES + msg.context.length;
  const entries = msg.entries;
  for (let i = 0; i < entries.length; i++) {
    size += ENTRY_HEADER_SIZE_BYTES + entries[i]!.data.length;
  }
  const snapshot = msg.snapshot;
  if (snapshot !== null) {
    size += SNAPSHOT_FIXED_SIZE_BYTES + 4 * (snapshot.meta.conf.voters.length +
          snapshot.meta.conf.learners.length) +
      snapshot.data.length;
  }
  return size;
}

/**
 * Writes `msg` at `offset` of `bytes` (viewed by `view`, over the same memory) and returns
 * the offset after it. The caller sizes the buffer with encodedMessageSizeBytes().
 */
export function writeMessage(
  view: DataView,
  bytes: Uint8Array,
  offset: number,
  msg: Message,
): number {
  const typeCode = MESSAGE_TYPE_CODES.get(msg.type);
  assert(typeCode !== undefined, `unknown message type ${msg.type}`);
  assert(msg.entries.length <= MESSAGE_ENTRY_COUNT_MAX, "message has too many entries");
  assert(msg.context.length <= MESSAGE_CONTEXT_SIZE_BYTES_MAX, "message context too large");
  view.setUint8(offset, CODEC_VERSION);
  view.setUint8(offset + 1, typeCode);
  view.setUint8(
    offset + 2,
    (msg.reject ? FLAG_REJECT : 0) | (msg.snapshot !== null ? FLAG_SNAPSHOT : 0),
  );
  view.setUint8(offset + 3, 0);
  setNodeId(view, offset + 4, msg.from);
  setNodeId(view, offset + 8, msg.to);
  setU64(view, offset + 12, msg.term);
  setU64(view, offset + 20, msg.logTerm);
  setU64(view, offset + 28, msg.index);
  setU64(view, offset + 36, msg.commit);
  setU64(view, offset + 44, msg.rejectHint);
  view.setUint32(offset + 52, msg.context.length);
  view.setUint32(offset + 56, msg.entries.length);
  let at = offset + MESSAGE_HEADER_SIZE_BYTES;
  bytes.set(msg.context, at);
  at += msg.context.length;
  const entries = msg.entries;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    setU64(view, at, e.term);
    setU64(view, at + 8, e.index);
    view.setUint8(at + 16, e.type === "normal" ? 0 : 1);
    view.setUint32(at + 17, e.data.length);
    bytes.set(e.data, at + ENTRY_HEADER_SIZE_BYTES);
    at += ENTRY_HEADER_SIZE_BYTES + e.data.length;
  }
  const snapshot = msg.snapshot;
  if (snapshot !== null) {
    const { voters, learners } = snapshot.meta.conf;
    assert(
      voters.length <= CONF_MEMBER_COUNT_MAX && learners.length <= CONF_MEMBER_COUNT_MAX,
      "snapshot membership too large",
    );
    setU64(view, at, snapshot.meta.index);
    setU64(view, at + 8, snapshot.meta.term);
    at += 16;
    at = writeNodeIds(view, at, voters);
    at = writeNodeIds(view, at, learners);
    view.setUint32(at, snapshot.data.length);
    bytes.set(snapshot.data, at + 4);
    at += 4 + snapshot.data.length;
  }
  assert(at - offset <= MESSAGE_SIZE_BYTES_MAX, "message larger than MESSAGE_SIZE_BYTES_MAX");
  return at;
}

/** Encodes `msg` into a fresh, exactly sized array. */
export function encodeMessage(msg: Message): Uint8Array {
  const bytes = new Uint8Array(encodedMessageSizeBytes(msg));
  const end = writeMessage(new DataView(bytes.buffer), bytes, 0, msg);
  assert(end === bytes.length, "encodedMessageSizeBytes disagrees with writeMessage");
  return bytes;
}

/**
 * Encodes many messages through one growing buffer, so the hot path allocates nothing once
 * the buffer has reached its working size.
 */
export class MessageEncoder {
  #bytes: Uint8Array;
  #view: DataView;

  constructor(initialSizeBytes = 4096) {
    this.#bytes = new Uint8Array(initialSizeBytes);
    this.#view = new DataView(this.#bytes.buffer);
  }

  /** The encoding of `msg`, valid only until the next call (copy it to keep it). */
  encode(msg: Message): Uint8Array {
    const size = encodedMessageSizeBytes(msg);
    if (size > this.#bytes.length) {
      this.#bytes = new Uint8Array(Math.max(size, this.#bytes.length * 2));
      this.#view = new DataView(this.#bytes.buffer);
    }
    const end = writeMessage(this.#view, this.#bytes, 0, msg);
    return this.#bytes.subarray(0, end);
  }
}

/**
 * Decodes exactly one message that fills `bytes`. Byte fields (entry data, context,
 * snapshot data) are views into `bytes`, not copies: the caller hands over `bytes` and must
 * not reuse or change it while the message lives.
 */
export function decodeMessage(bytes: Uint8Array): Message {
  return readMessage(
    new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength),
    bytes,
    0,
    bytes.length,
  );
}

/**
 * Decodes the one message that occupies [offset, end) of `bytes` (viewed by `view` over
 * the same memory; both indexed alike). Views into `bytes`, as decodeMessage().
 */
export function readMessage(
  view: DataView,
  bytes: Uint8Array,
  offset: number,
  end: number,
): Message {
  assert(
    view.buffer === bytes.buffer && view.byteOffset === bytes.byteOffset &&
      view.byteLength === bytes.byteLength && 0 <= offset && offset <= end &&
      end <= bytes.length,
    "readMessage bounds",
  );
  const size = end - offset;
  if (size > MESSAGE_SIZE_BYTES_MAX) {
    throw new CodecError("oversized", `message of ${size} bytes exceeds ${MESSAGE_SIZE_BYTES_MAX}`);
  }
  if (size < 1) throw new CodecError("truncated", "empty message");
  const version = view.getUint8(offset);
  if (version !== CODEC_VERSION) {
    throw new CodecError("version", `message version ${version} is not ${CODEC_VERSION}`);
  }
  if (size < MESSAGE_HEADER_SIZE_BYTES) {
    throw new CodecError("truncated", `message of ${size} bytes is shorter than its header`);
  }
  const type = MESSAGE_TYPES[view.getUint8(offset + 1)];
  if (type === undefined) {
    throw new CodecError("invalid", `unknown message type code ${view.getUint8(offset + 1)}`);
  }
  const flags = view.getUint8(offset + 2);
  if ((flags & ~(FLAG_REJECT | FLAG_SNAPSHOT)) !== 0 || view.getUint8(offset + 3) !== 0) {
    throw new CodecError("invalid", "unknown flag or reserved bits set");
  }
  const from = view.getUint32(offset + 4);
  const to = view.getUint32(offset + 8);
  const term = getU64(view, offset + 12, "term");
  const logTerm = getU64(view, offset + 20, "logTerm");
  const index = getU64(view, offset + 28, "index");
  const commit = getU64(view, offset + 36, "commit");
  const rejectHint = getU64(view, offset + 44, "rejectHint");
  const contextLength = view.getUint32(offset + 52);
  const entryCount = view.getUint32(offset + 56);
  if (contextLength > MESSAGE_CONTEXT_SIZE_BYTES_MAX) {
    throw new CodecError(
      "oversized",
      `context of ${contextLength} bytes exceeds ${MESSAGE_CONTEXT_SIZE_BYTES_MAX}`,
    );
  }
  if (entryCount > MESSAGE_ENTRY_COUNT_MAX) {
    throw new CodecError("oversized", `${entryCount} entries exceed ${MESSAGE_ENTRY_COUNT_MAX}`);
  }
  let at = offset + MESSAGE_HEADER_SIZE_BYTES;
  // Checked before allocating: a garbage count must not make us build a huge array.
  if (contextLength + entryCount * ENTRY_HEADER_SIZE_BYTES > end - at) {
    throw new CodecError("truncated", "message shorter than its context and entry headers");
  }
  const context = slice(bytes, at, contextLength);
  at += contextLength;
  const entries: Entry[] = new Array(entryCount);
  for (let i = 0; i < entryCount; i++) {
    if (end - at < ENTRY_HEADER_SIZE_BYTES) {
      throw new CodecError("truncated", `entry ${i} cut short`);
    }
    const entryTerm = getU64(view, at, "entry term");
    const entryIndex = getU64(view, at + 8, "entry index");
    const entryType = ENTRY_TYPES[view.getUint8(at + 16)];
    if (entryType === undefined) {
      throw new CodecError("invalid", `entry ${i} has unknown type code ${view.getUint8(at + 16)}`);
    }
    const dataLength = view.getUint32(at + 17);
    at += ENTRY_HEADER_SIZE_BYTES;
    if (dataLength > end - at) throw new CodecError("truncated", `entry ${i} data cut short`);
    entries[i] = {
      term: entryTerm,
      index: entryIndex,
      type: entryType,
      data: slice(bytes, at, dataLength),
    };
    at += dataLength;
  }
  let snapshot: Snapshot | null = null;
  if ((flags & FLAG_SNAPSHOT) !== 0) {
    if (end - at < 20) throw new CodecError("truncated", "snapshot header cut short");
    const snapIndex = getU64(view, at, "snapshot index");
    const snapTerm = getU64(view, at + 8, "snapshot term");
    at += 16;
    const voters: NodeId[] = [];
    at = readNodeIds(view, at, end, voters, "voters");
    const learners: NodeId[] = [];
    at = readNodeIds(view, at, end, learners, "learners");
    if (end - at < 4) throw new CodecError("truncated", "snapshot data length cut short");
    const dataLength = view.getUint32(at);
    at += 4;
    if (dataLength > end - at) throw new CodecError("truncated", "snapshot data cut short");
    snapshot = {
      meta: { index: snapIndex, term: snapTerm, conf: { voters, learners } },
      data: slice(bytes, at, dataLength),
    };
    at += dataLength;
  }
  if (at !== end) throw new CodecError("invalid", `${end - at} trailing bytes after message`);
  return {
    type,
    from,
    to,
    term,
    logTerm,
    index,
    entries,
    commit,
    reject: (flags & FLAG_REJECT) !== 0,
    rejectHint,
    snapshot,
    context,
  };
}

function slice(bytes: Uint8Array, at: number, length: number): Uint8Array {
  return length === 0 ? EMPTY_BYTES : bytes.subarray(at, at + length);
}

function setNodeId(view: DataView, at: number, id: NodeId): void {
  assert(Number.isInteger(id) && id >= 0 && id <= U32_MAX, `node id ${id} is not a u32`);
  view.setUint32(at, id);
}

function setU64(view: DataView, at: number, value: number): void {
  assert(Number.isSafeInteger(value) && value >= 0, `${value} is not a non-negative safe integer`);
  view.setUint32(at, Math.floor(value / TWO_POW_32));
  view.setUint32(at + 4, value >>> 0);
}

function getU64(view: DataView, at: number, field: string): number {
  const high = view.getUint32(at);
  if (high > SAFE_HIGH_WORD_MAX) {
    throw new CodecError("invalid", `${field} is larger than 2^53 - 1`);
  }
  return high * TWO_POW_32 + view.getUint32(at + 4);
}

function writeNodeIds(view: DataView, at: number, ids: readonly NodeId[]): number {
  view.setUint32(at, ids.length);
  at += 4;
  for (let i = 0; i < ids.length; i++, at += 4) setNodeId(view, at, ids[i]!);
  return at;
}

function readNodeIds(
  view: DataView,
  at: number,
  end: number,
  into: NodeId[],
  what: string,
): number {
  if (end - at < 4) throw new CodecError("truncated", `snapshot ${what} count cut short`);
  const count = view.getUint32(at);
  at += 4;
  if (count > CONF_MEMBER_COUNT_MAX) {
    throw new CodecError("oversized", `${count} snapshot ${what} exceed ${CONF_MEMBER_COUNT_MAX}`);
  }
  if (count * 4 > end - at) throw new CodecError("truncated", `snapshot ${what} cut short`);
  for (let i = 0; i < count; i++, at += 4) into.push(view.getUint32(at));
  return at;
}
