// Ranges and parts of an object over its chunk refs: resolving an S3 byte range or part
// number against the object's size, and finding the refs a range touches (refs ascend
// without overlap), for the engine's read and copy paths.

import { assert } from "../base/mod.ts";
import { type ChunkRef, PART_NUMBER_MAX } from "./composition.ts";
import { CompositionError } from "./errors.ts";

/** Bytes `start`..`end` inclusive (end omitted: to the last byte), or the last `suffixBytes`. */
export type ByteRange = { start: number; end?: number } | { suffixBytes: number };

/** A range that does not overlap the object (S3 InvalidRange, HTTP 416). */
export class ObjectRangeError extends CompositionError {
  override name = "ObjectRangeError";
  constructor(message: string, readonly sizeBytes: number) {
    super("invalid_argument", message);
  }
}

/** A part number past the object's parts (S3 InvalidPartNumber, HTTP 416). */
export class ObjectPartError extends CompositionError {
  override name = "ObjectPartError";
  constructor(readonly partNumber: number, readonly partsCount: number) {
    super("invalid_argument", `part ${partNumber} of an object of ${partsCount} parts`);
  }
}

/** Resolves a requested range against the object's size (null: the whole object). */
export function resolveRange(
  range: ByteRange | undefined,
  size: number,
): { start: number; end: number } | null {
  if (range === undefined) return null;
  let start: number;
  let end: number;
  if ("suffixBytes" in range) {
    const n = range.suffixBytes;
    if (!Number.isSafeInteger(n) || n < 0) {
      throw new CompositionError("invalid_argument", `suffix length ${n} is invalid`);
    }
    if (n === 0 || size === 0) {
      throw new ObjectRangeError(`the last ${n} bytes of a ${size}-byte object is empty`, size);
    }
    start = Math.max(size - n, 0);
    end = size - 1;
  } else {
    start = range.start;
    const last = range.end;
    if (
      !Number.isSafeInteger(start) || start < 0 ||
      (last !== undefined && (!Number.isSafeInteger(last) || last < start))
    ) {
      throw new CompositionError("invalid_argument", `range ${start}-${last ?? ""} is invalid`);
    }
    end = last ?? size - 1;
    if (start >= size) {
      throw new ObjectRangeError(`range starts at ${start}, past the ${size}-byte object`, size);
    }
    end = Math.min(end, size - 1);
  }
  return { start, end };
}

/**
 * The bytes of part `partNumber` as S3 serves GET ?partNumber: a multipart object's part
 * (an empty part: end = start - 1), or null (the whole object) for part 1 of a single-part
 * object. ObjectPartError past the last part.
 */
export function resolvePart(
  partSizes: readonly number[] | null,
  size: number,
  partNumber: number,
): { start: number; end: number } | null {
  if (!Number.isInteger(partNumber) || partNumber < 1 || partNumber > PART_NUMBER_MAX) {
    throw new CompositionError(
      "invalid_argument",
      `part number ${partNumber} is not 1..${PART_NUMBER_MAX}`,
    );
  }
  const count = partSizes?.length ?? 1;
  if (partNumber > count) {
    throw new ObjectPartError(partNumber, count);
  }
  if (partSizes === null) return null;
  let start = 0;
  for (let i = 0; i < partNumber - 1; i++) start += partSizes[i]!;
  const end = start + partSizes[partNumber - 1]! - 1;
  assert(end < size, "a part lies within its object");
  return { start, end };
}

/** Index of the first ref ending after `offset` (refs ascend without overlap). */
export function firstEndingAfter(refs: readonly ChunkRef[], offset: number): number {
  return search(refs, (r) => r.offsetBytes + r.lengthBytes > offset);
}

/** Index of the first ref starting at or after `offset` (refs.length if none). */
export function firstStartingAt(refs: readonly ChunkRef[], offset: number): number {
  return search(refs, (r) => r.offsetBytes >= offset);
}

/** The first index where `past` holds (it holds for every later index too). */
function search(refs: readonly ChunkRef[], past: (r: ChunkRef) => boolean): number {
  let lo = 0;
  let hi = refs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (past(refs[mid]!)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

export function offsetOf(refs: readonly ChunkRef[]): number {
  return refs.length === 0 ? 0 : refs[0]!.offsetBytes;
}

/** Refs moved to start at offset 0 (a part's refs tile the part). */
export function rebase(refs: readonly ChunkRef[]): ChunkRef[] {
  const base = offsetOf(refs);
  return refs.map((r) => ({ ...r, offsetBytes: r.offsetBytes - base }));
}
