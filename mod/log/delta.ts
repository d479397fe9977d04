// The delta: one change to a shard, as the Raft log carries it. A header the system reads
// (ordering, routing, chunk references for GC) and a payload only the tenant can read
// (encrypted under the tenant key in a later step; opaque bytes here). The encoding is
// compact, versioned, checksummed and decoded strictly: anything off is a DeltaFormatError.

import { crc32c, type HlcTimestamp, isHlcTimestamp, readHlc, writeHlc } from "../base/mod.ts";
import { HASHED_KEY_BYTES, isShardId, type ShardId } from "./shard.ts";

export const DELTA_FORMAT_VERSION = 1;
export const DELTA_TENANT_ID_BYTES = 16;
export const DELTA_CHUNK_REF_BYTES = 32;
/** Largest opaque payload: small files ride inline up to this (after encryption overhead). */
export const DELTA_PAYLOAD_BYTES_MAX = 128 * 1024;
/** Chunk references one delta may carry (a longer composition takes several deltas). */
export const DELTA_CHUNK_REFS_MAX = 4096;

/**
 * v1 layout, big-endian:
 *   0 version u8 | 1 op u8 | 2 flags u8 (0) | 3 reserved u8 (0) | 4 shard u32 |
 *   8 sequence u64 | 16 HLC u64 | 24 tenant [16] | 40 hashed key [32] |
 *   72 chunk ref count u32 | 76 payload length u32 | 80 chunk refs [32 x n] | payload |
 *   CRC-32C u32 over everything before it.
 */
export const DELTA_HEADER_BYTES = 80;
export const DELTA_CRC_BYTES = 4;
export const DELTA_ENCODED_BYTES_MAX = DELTA_HEADER_BYTES +
  DELTA_CHUNK_REFS_MAX * DELTA_CHUNK_REF_BYTES + DELTA_PAYLOAD_BYTES_MAX + DELTA_CRC_BYTES;

/** Operation codes; the numbers are the wire format and never change meaning. */
export const DELTA_OPS = Object.freeze(
  {
    create: 1,
    update: 2,
    delete: 3,
    rename: 4,
    set_attributes: 5,
  } as const,
);
export type DeltaOp = keyof typeof DELTA_OPS;

const OP_BY_CODE: ReadonlyMap<number, DeltaOp> = new Map(
  Object.entries(DELTA_OPS).map(([name, code]) => [code, name as DeltaOp]),
);

export interface Delta {
  /** Position in the shard's sequence of deltas (safe integer). */
  sequence: number;
  shardId: ShardId;
  tenantId: Uint8Array;
  op: DeltaOp;
  /** The 32-byte hashed key that routes the delta to its shard. */
  hashedKey: Uint8Array;
  timestamp: HlcTimestamp;
  /** 32-byte chunk ids the delta references (the GC counts these). */
  chunkRefs: Uint8Array[];
  /** Opaque to the system. */
  payload: Uint8Array;
}

/** Bytes that are not a valid delta, or a delta that cannot be encoded. */
export class DeltaFormatError extends Error {
  override name = "DeltaFormatError";
}

function fail(message: string): never {
  throw new DeltaFormatError(message);
}

function checkDelta(delta: Delta): void {
  if (!Number.isSafeInteger(delta.sequence) || delta.sequence < 0) {
    fail(`sequence ${delta.sequence} is not a non-negative safe integer`);
  }
  if (!isShardId(delta.shardId)) fail(`shard id ${delta.shardId} is not a u32`);
  if (delta.tenantId.length !== DELTA_TENANT_ID_BYTES) {
    fail(`tenant id is ${delta.tenantId.length} bytes, not ${DELTA_TENANT_ID_BYTES}`);
  }
  if (!Object.hasOwn(DELTA_OPS, delta.op)) fail(`unknown operation ${JSON.stringify(delta.op)}`);
  if (delta.hashedKey.length !== HASHED_KEY_BYTES) {
    fail(`hashed key is ${delta.hashedKey.length} bytes, not ${HASHED_KEY_BYTES}`);
  }
  if (!isHlcTimestamp(delta.timestamp)) fail("timestamp is out of range");
  if (delta.chunkRefs.length > DELTA_CHUNK_REFS_MAX) {
    fail(`${delta.chunkRefs.length} chunk refs (max ${DELTA_CHUNK_REFS_MAX})`);
  }
  for (const ref of delta.chunkRefs) {
    if (ref.length !== DELTA_CHUNK_REF_BYTES) {
      fail(`chunk ref is ${ref.length} bytes, not ${DELTA_CHUNK_REF_BYTES}`);
    }
  }
  if (delta.payload.length > DELTA_PAYLOAD_BYTES_MAX) {
    fail(`payload is ${delta.payload.length} bytes (max ${DELTA_PAYLOAD_BYTES_MAX})`);
  }
}

export function encodedDeltaBytes(delta: Delta): number {
  return DELTA_HEADER_BYTES + delta.chunkRefs.length * DELTA_CHUNK_REF_BYTES +
    delta.payload.length + DELTA_CRC_BYTES;
}

/** Encodes a delta; throws DeltaFormatError when a field is malformed or over its limit. */
export function encodeDelta(delta: Delta): Uint8Array {
  checkDelta(delta);
  const bytes = new Uint8Array(encodedDeltaBytes(delta));
  const view = new DataView(bytes.buffer);
  bytes[0] = DELTA_FORMAT_VERSION;
  bytes[1] = DELTA_OPS[delta.op];
  view.setUint32(4, delta.shardId);
  view.setBigUint64(8, BigInt(delta.sequence));
  writeHlc(view, 16, delta.timestamp);
  bytes.set(delta.tenantId, 24);
  bytes.set(delta.hashedKey, 40);
  view.setUint32(72, delta.chunkRefs.length);
  view.setUint32(76, delta.payload.length);
  let at = DELTA_HEADER_BYTES;
  for (const ref of delta.chunkRefs) {
    bytes.set(ref, at);
    at += DELTA_CHUNK_REF_BYTES;
  }
  bytes.set(delta.payload, at);
  at += delta.payload.length;
  view.setUint32(at, crc32c(bytes.subarray(0, at)));
  return bytes;
}

/**
 * Decodes one delta that fills `bytes` exactly. Checks length, version and checksum before
 * trusting any field, then every field against its limit. Returns copies, never views.
 */
export function decodeDelta(bytes: Uint8Array): Delta {
  if (bytes.length < DELTA_HEADER_BYTES + DELTA_CRC_BYTES) {
    fail(`delta is ${bytes.length} bytes, shorter than a header`);
  }
  if (bytes.length > DELTA_ENCODED_BYTES_MAX) {
    fail(`delta is ${bytes.length} bytes (max ${DELTA_ENCODED_BYTES_MAX})`);
  }
  if (bytes[0] !== DELTA_FORMAT_VERSION) {
    fail(`delta format version ${bytes[0]} is not ${DELTA_FORMAT_VERSION}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const bodyBytes = bytes.length - DELTA_CRC_BYTES;
  const stored = view.getUint32(bodyBytes);
  const computed = crc32c(bytes.subarray(0, bodyBytes));
  if (stored !== computed) {
    fail(`delta checksum ${hex32(stored)} does not match its contents (${hex32(computed)})`);
  }
  const op = OP_BY_CODE.get(bytes[1]!);
  if (op === undefined) fail(`unknown delta operation code ${bytes[1]}`);
  if (bytes[2] !== 0 || bytes[3] !== 0) fail("delta reserved header bytes are not zero");
  const sequence = view.getBigUint64(8);
  if (sequence > BigInt(Number.MAX_SAFE_INTEGER)) fail(`delta sequence ${sequence} is too large`);
  const chunkRefCount = view.getUint32(72);
  const payloadBytes = view.getUint32(76);
  if (chunkRefCount > DELTA_CHUNK_REFS_MAX) {
    fail(`delta has ${chunkRefCount} chunk refs (max ${DELTA_CHUNK_REFS_MAX})`);
  }
  if (payloadBytes > DELTA_PAYLOAD_BYTES_MAX) {
    fail(`delta payload is ${payloadBytes} bytes (max ${DELTA_PAYLOAD_BYTES_MAX})`);
  }
  const expected = DELTA_HEADER_BYTES + chunkRefCount * DELTA_CHUNK_REF_BYTES + payloadBytes +
    DELTA_CRC_BYTES;
  if (expected !== bytes.length) {
    fail(`delta is ${bytes.length} bytes but its header describes ${expected}`);
  }
  const chunkRefs: Uint8Array[] = [];
  let at = DELTA_HEADER_BYTES;
  for (let i = 0; i < chunkRefCount; i++, at += DELTA_CHUNK_REF_BYTES) {
    chunkRefs.push(bytes.slice(at, at + DELTA_CHUNK_REF_BYTES));
  }
  return {
    sequence: Number(sequence),
    shardId: view.getUint32(4),
    tenantId: bytes.slice(24, 24 + DELTA_TENANT_ID_BYTES),
    op,
    hashedKey: bytes.slice(40, 40 + HASHED_KEY_BYTES),
    timestamp: readHlc(view, 16),
    chunkRefs,
    payload: bytes.slice(at, at + payloadBytes),
  };
}

function hex32(n: number): string {
  return `0x${n.toString(16).padStart(8, "0")}`;
}
