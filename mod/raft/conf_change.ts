// The bytes of a conf_change entry. Layout (big-endian):
//   u8 version (1) | u8 type (1 add_voter, 2 add_learner, 3 remove_node) | u64 nodeId |
//   u32 context length | context bytes
// Entries outlive software versions, so the version byte comes first.

import { assert } from "../base/mod.ts";
import type { ConfChange, ConfChangeType } from "./types.ts";

export const CONF_CHANGE_FORMAT_VERSION = 1;
/** Upper bound on ConfChange.context (the host's opaque data, e.g. an address). */
export const CONF_CHANGE_CONTEXT_BYTES_MAX = 64 * 1024;
const HEADER_BYTES = 1 + 1 + 8 + 4;

const TYPE_CODES: Record<ConfChangeType, number> = {
  add_voter: 1,
  add_learner: 2,
  remove_node: 3,
};
const TYPES_BY_CODE: ReadonlyMap<number, ConfChangeType> = new Map(
  (Object.entries(TYPE_CODES) as [ConfChangeType, number][]).map(([type, code]) => [code, type]),
);

/** A conf_change entry whose bytes are not a valid encoding. */
export class ConfChangeDecodeError extends Error {
  override name = "ConfChangeDecodeError";
}

export function encodeConfChange(change: ConfChange): Uint8Array {
  assert(
    Number.isSafeInteger(change.nodeId) && change.nodeId > 0,
    `conf change node id must be a positive safe integer, got ${change.nodeId}`,
  );
  assert(
    change.context.byteLength <= CONF_CHANGE_CONTEXT_BYTES_MAX,
    `conf change context exceeds ${CONF_CHANGE_CONTEXT_BYTES_MAX} bytes`,
  );
  const bytes = new Uint8Array(HEADER_BYTES + change.context.byteLength);
  const view = new DataView(bytes.buffer);
  view.setUint8(0, CONF_CHANGE_FORMAT_VERSION);
  view.setUint8(1, TYPE_CODES[change.type]);
  view.setBigUint64(2, BigInt(change.nodeId));
  view.setUint32(10, change.context.byteLength);
  bytes.set(change.context, HEADER_BYTES);
  return bytes;
}

export function decodeConfChange(bytes: Uint8Array): ConfChange {
  if (bytes.byteLength < HEADER_BYTES) {
    throw new ConfChangeDecodeError(
      `conf change is ${bytes.byteLength} bytes, shorter than its ${HEADER_BYTES}-byte header`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint8(0);
  if (version !== CONF_CHANGE_FORMAT_VERSION) {
    throw new ConfChangeDecodeError(`conf change format version ${version} is not supported`);
  }
  const type = TYPES_BY_CODE.get(view.getUint8(1));
  if (type === undefined) {
    throw new ConfChangeDecodeError(`conf change type code ${view.getUint8(1)} is unknown`);
  }
  const nodeId = view.getBigUint64(2);
  if (nodeId === 0n || nodeId > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new ConfChangeDecodeError(`conf change node id ${nodeId} is out of range`);
  }
  const contextLength = view.getUint32(10);
  if (contextLength > CONF_CHANGE_CONTEXT_BYTES_MAX) {
    throw new ConfChangeDecodeError(
      `conf change context of ${contextLength} bytes exceeds ${CONF_CHANGE_CONTEXT_BYTES_MAX}`,
    );
  }
  if (bytes.byteLength !== HEADER_BYTES + contextLength) {
    throw new ConfChangeDecodeError(
      `conf change is ${bytes.byteLength} bytes, expected ${HEADER_BYTES + contextLength}`,
    );
  }
  return {
    type,
    nodeId: Number(nodeId),
    context: bytes.slice(HEADER_BYTES),
  };
}
