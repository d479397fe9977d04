// The bytes a node keeps for one fragment of a cluster chunk: a fixed header that describes
// the chunk (its durability, its length, which fragment this is, the payload's CRC-32C), then
// the payload. A node that never wrote the chunk can read it from its holders alone: any
// fragment says how many to gather and how long the chunk is. Frames also name the chunk and
// the node that wrote it (v2), so the survivors can find and adopt the chunks of a writer that
// is gone for good from the fragments they hold (cluster_store.ts, adoptStep()). Pure.

import { assert, crc32c } from "../base/mod.ts";
import type { Durability } from "./pool.ts";

/** Frames written before they named their chunk: still read, never written. */
export const FRAGMENT_FRAME_MAGIC_V1 = 0x4b46_5231; // "KFR1"
export const FRAGMENT_FRAME_MAGIC = 0x4b46_5232; // "KFR2"
const FRAGMENT_FRAME_HEADER_BYTES_V1 = 24;
/** The header of the frames written now: v1's, then chunk id, writer node, reserved. */
export const FRAGMENT_FRAME_HEADER_BYTES = 64;
const SCHEME_EC = 1;
const SCHEME_COPIES = 2;

export interface FragmentFrameHeader {
  /** EC k+m; copies carry no count (every copy of a chunk is the same, whoever wrote it). */
  durability: Durability | { kind: "copies" };
  index: number;
  lengthBytes: number;
  payloadCrc: number;
  /** The chunk and the node that wrote it (null in a v1 frame). */
  origin: FragmentOrigin | null;
}

export interface FragmentOrigin {
  chunkId: Uint8Array;
  writer: number;
}

export class FragmentFrameError extends Error {
  override name = "FragmentFrameError";
}

/** Header then a copy of `payload`: what the holder stores. */
export function encodeFragmentFrame(
  durability: Durability,
  index: number,
  lengthBytes: number,
  payload: Uint8Array,
  origin: FragmentOrigin,
  payloadCrc = crc32c(payload),
): Uint8Array {
  assert(Number.isInteger(index) && index >= 0 && index <= 0xffff, "fragment index");
  assert(Number.isSafeInteger(lengthBytes) && lengthBytes >= 0, "chunk length");
  assert(origin.chunkId.length === 32, "chunk id is 32 bytes");
  assert(
    Number.isInteger(origin.writer) && origin.writer >= 1 && origin.writer <= 0xffff_ffff,
    "writer node id",
  );
  const frame = new Uint8Array(FRAGMENT_FRAME_HEADER_BYTES + payload.length);
  const view = new DataView(frame.buffer);
  view.setUint32(0, FRAGMENT_FRAME_MAGIC);
  view.setUint8(4, durability.kind === "ec" ? SCHEME_EC : SCHEME_COPIES);
  view.setUint8(5, durability.kind === "ec" ? durability.k : 1);
  view.setUint8(6, durability.kind === "ec" ? durability.m : 0);
  view.setUint8(7, 0);
  view.setUint32(8, index);
  view.setUint32(12, payloadCrc >>> 0);
  view.setBigUint64(16, BigInt(lengthBytes));
  frame.set(origin.chunkId, 24);
  view.setUint32(56, origin.writer);
  frame.set(payload, FRAGMENT_FRAME_HEADER_BYTES);
  return frame;
}

/**
 * The header and payload of a stored frame, checked: magic, the expected fragment index, the
 * payload's CRC (`expectedIndex` null: any index, for a holder reading what it keeps).
 * Throws FragmentFrameError naming what is wrong.
 */
export function decodeFragmentFrame(
  frame: Uint8Array,
  expectedIndex: number | null,
): { header: FragmentFrameHeader; payload: Uint8Array } {
  if (frame.length < FRAGMENT_FRAME_HEADER_BYTES_V1) {
    throw new FragmentFrameError(`fragment frame of ${frame.length} bytes has no header`);
  }
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const magic = view.getUint32(0);
  if (magic !== FRAGMENT_FRAME_MAGIC && magic !== FRAGMENT_FRAME_MAGIC_V1) {
    throw new FragmentFrameError("fragment frame has a wrong magic");
  }
  const headerBytes = magic === FRAGMENT_FRAME_MAGIC
    ? FRAGMENT_FRAME_HEADER_BYTES
    : FRAGMENT_FRAME_HEADER_BYTES_V1;
  if (frame.length < headerBytes) {
    throw new FragmentFrameError(`fragment frame of ${frame.length} bytes has no header`);
  }
  const scheme = view.getUint8(4);
  const k = view.getUint8(5);
  const m = view.getUint8(6);
  let durability: FragmentFrameHeader["durability"];
  if (scheme === SCHEME_EC && k >= 1 && m >= 1) durability = { kind: "ec", k, m };
  else if (scheme === SCHEME_COPIES) durability = { kind: "copies" };
  else throw new FragmentFrameError(`fragment frame has an unknown scheme ${scheme}/${k}/${m}`);
  const index = view.getUint32(8);
  if (expectedIndex !== null && index !== expectedIndex) {
    throw new FragmentFrameError(`fragment frame is fragment ${index}, not ${expectedIndex}`);
  }
  const payloadCrc = view.getUint32(12);
  const lengthBig = view.getBigUint64(16);
  if (lengthBig > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new FragmentFrameError("fragment frame names an impossible chunk length");
  }
  const payload = frame.subarray(headerBytes);
  if (crc32c(payload) !== payloadCrc) {
    throw new FragmentFrameError(`fragment ${index}: payload fails its CRC-32C`);
  }
  const writer = magic === FRAGMENT_FRAME_MAGIC ? view.getUint32(56) : 0;
  if (magic === FRAGMENT_FRAME_MAGIC && writer < 1) {
    throw new FragmentFrameError("fragment frame names no writer node");
  }
  const origin = magic === FRAGMENT_FRAME_MAGIC ? { chunkId: frame.slice(24, 56), writer } : null;
  return {
    header: { durability, index, lengthBytes: Number(lengthBig), payloadCrc, origin },
    payload,
  };
}
