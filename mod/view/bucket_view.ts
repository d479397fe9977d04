// The bucket view: per namespace, objects by key in exact byte order, multipart uploads by
// (key, upload id) and their parts. Folded from object and upload deltas; read with S3
// ListObjectsV2 semantics (prefix, delimiter roll-up with common prefixes counted against
// maxKeys, start-after, opaque continuation), ListMultipartUploads and ListParts.

import { assert } from "../base/mod.ts";
import {
  bytesEqual,
  type ChunkRef,
  type Composition,
  COMPOSITION_CHUNK_REFS_MAX,
  COMPOSITION_KEY_BYTES_MAX,
  CompositionError,
  concatBytes,
  decodeContinuationToken,
  DELIMITER_BYTES_MAX,
  encodeContinuationToken,
  fromHex,
  LIST_KEYS_MAX,
  LIST_PARTS_MAX,
  LIST_UPLOADS_MAX,
  type ListObjectsOptions,
  type ListObjectsResult,
  type ListPartsOptions,
  type ListPartsResult,
  type ListPosition,
  type ListUploadsOptions,
  type ListUploadsResult,
  metadataProblem,
  type ObjectSummary,
  type Part,
  PART_NUMBER_MAX,
  partsDigest,
  type Payload,
  type PutCondition,
  toHex,
  type Upload,
  UPLOAD_ID_BYTES,
} from "../composition/mod.ts";
import { compareKeys } from "../log/mod.ts";
import { type Fold, refuse, release, type ViewTables } from "./_fold.ts";
import {
  afterPrefixBound,
  compareOrdered,
  groupPrefix,
  isLongKey,
  LONG_KEY_GROUP_ENTRIES_MAX,
  lowerBound,
  orderedKey,
  orderedScan,
  startsWith,
  successor,
} from "./_ordered.ts";
import {
  decodeObject,
  decodeObjectSummary,
  decodePart,
  decodeUpload,
  encodeObject,
  encodePart,
  encodeUpload,
  fromUtf8,
  type NamespaceRecord,
  objectKeyBytes,
  publicUpload,
  u64Bytes,
  uploadOrder,
  type UploadRecord,
  utf8,
} from "./_records.ts";

/** Multipart uploads in progress per namespace. */
export const UPLOADS_PER_NAMESPACE_MAX = 100_000;

const EMPTY = new Uint8Array(0);
const UPLOAD_SEPARATOR = Uint8Array.of(0);

export function objectKey(ns: Uint8Array, key: string | Uint8Array): Uint8Array {
  return orderedKey(ns, typeof key === "string" ? utf8(key) : key);
}

function uploadKey(ns: Uint8Array, key: string, uploadId: Uint8Array): Uint8Array {
  return concatBytes(orderedKey(ns, utf8(key)), UPLOAD_SEPARATOR, uploadId);
}

function uploadIdKey(ns: Uint8Array, uploadId: Uint8Array): Uint8Array {
  return concatBytes(ns, uploadId);
}

function partKey(ns: Uint8Array, uploadId: Uint8Array, partNumber: number): Uint8Array {
  return concatBytes(ns, uploadId, Uint8Array.of(partNumber >> 8, partNumber & 0xff));
}

// ---- folding -------------------------------------------------------------------------------

type BucketPayload = Extract<
  Payload,
  {
    type:
      | "object_put"
      | "object_delete"
      | "upload_start"
      | "upload_part"
      | "upload_complete"
      | "upload_abort";
  }
>;

export function isBucketPayload(p: Payload): p is BucketPayload {
  return p.type.startsWith("object_") || p.type.startsWith("upload_");
}

/** Applies one object or upload mutation to namespace `ns` (a bucket owned by the delta's tenant). */
export function foldBucket(fold: Fold, p: BucketPayload, ns: NamespaceRecord): void {
  switch (p.type) {
    case "object_put": {
      const existing = loadObject(fold, ns.id, p.key);
      checkCondition(p.key, p.condition, existing);
      storeObject(fold, ns, existing, {
        namespaceId: ns.id,
        key: p.key,
        version: fold.delta.sequence,
        size: p.size,
        contentType: p.contentType,
        metadata: p.metadata,
        etag: p.etag,
        createdMs: existing?.createdMs ?? fold.nowMs,
        modifiedMs: fold.nowMs,
        content: p.content,
        ...(p.partSizes !== undefined && { partSizes: p.partSizes }),
      });
      return;
    }
    case "object_delete": {
      const existing = loadObject(fold, ns.id, p.key);
      fold.outcome.deleted = existing !== undefined;
      if (existing === undefined) return;
      fold.store.delete(fold.tables.obj, objectKey(ns.id, p.key));
      release(fold, existing.content);
      ns.objects--;
      ns.bytes -= existing.size;
      return;
    }
    case "upload_start": {
      if (ns.uploads >= UPLOADS_PER_NAMESPACE_MAX) {
        refuse("too_large", `${ns.uploads} uploads in progress (max ${UPLOADS_PER_NAMESPACE_MAX})`);
      }
      // Upload ids ascend with initiation: the delta's sequence, then token bytes.
      const uploadId = concatBytes(u64Bytes(fold.delta.sequence), p.token.subarray(0, 8));
      assert(uploadId.length === UPLOAD_ID_BYTES, "upload id length");
      const keyBytes = utf8(p.key);
      if (isLongKey(keyBytes)) checkGroup(fold, fold.tables.upload, ns.id, keyBytes);
      const record: UploadRecord = {
        key: p.key,
        uploadId,
        initiatedMs: fold.nowMs,
        parts: 0,
        contentType: p.contentType,
        metadata: p.metadata,
      };
      const at = uploadKey(ns.id, p.key, uploadId);
      fold.store.put(fold.tables.upload, at, encodeUpload(record));
      fold.store.put(fold.tables.uploadId, uploadIdKey(ns.id, uploadId), at);
      ns.uploads++;
      fold.outcome.uploadId = toHex(uploadId);
      return;
    }
    case "upload_part": {
      const { at, upload } = loadUpload(fold, ns.id, p.uploadId, p.key);
      const key = partKey(ns.id, p.uploadId, p.partNumber);
      const old = fold.store.get(fold.tables.part, key);
      if (old !== undefined) {
        release(fold, { kind: "chunks", chunkRefs: decodePart(old).chunkRefs });
      } else {
        upload.parts++;
        fold.store.put(fold.tables.upload, at, encodeUpload(upload));
      }
      fold.store.put(
        fold.tables.part,
        key,
        encodePart({
          partNumber: p.partNumber,
          size: p.size,
          etag: p.etag,
          modifiedMs: fold.nowMs,
          chunkRefs: p.chunkRefs,
          ...(p.metadata !== undefined && { metadata: p.metadata }),
        }),
      );
      return;
    }
    case "upload_complete": {
      const { upload } = loadUpload(fold, ns.id, p.uploadId, p.key);
      const existing = loadObject(fold, ns.id, p.key);
      if (p.condition !== undefined) checkCondition(p.key, p.condition, existing);
      const metadata = p.metadata === undefined
        ? upload.metadata
        : { ...upload.metadata, ...p.metadata };
      const metadataTrouble = metadataProblem(metadata);
      if (metadataTrouble !== null) refuse("invalid_argument", metadataTrouble);
      for (let i = 1; i < p.partNumbers.length; i++) {
        if (p.partNumbers[i]! <= p.partNumbers[i - 1]!) {
          refuse("invalid_part_order", "part numbers must be listed in strictly ascending order");
        }
      }
      const all = partsOf(fold, ns.id, p.uploadId);
      const listed: Part[] = [];
      for (const n of p.partNumbers) {
        const part = all.get(n);
        if (part === undefined) refuse("invalid_part", `part ${n} was not uploaded`);
        listed.push(part);
      }
      if (!p.partsDigest.every((b) => b === 0) && !bytesEqual(partsDigest(listed), p.partsDigest)) {
        refuse("invalid_part", "the listed etags do not match the stored parts");
      }
      for (let i = 0; i < listed.length - 1; i++) {
        if (listed[i]!.size < p.partBytesMin) {
          refuse(
            "entity_too_small",
            `part ${listed[i]!.partNumber} is ${listed[i]!.size} bytes (min ${p.partBytesMin})`,
          );
        }
      }
      const refs: ChunkRef[] = [];
      let size = 0;
      for (const part of listed) {
        if (refs.length + part.chunkRefs.length > COMPOSITION_CHUNK_REFS_MAX) {
          refuse(
            "too_large",
            `the object would hold more than ${COMPOSITION_CHUNK_REFS_MAX} chunk refs`,
          );
        }
        for (const r of part.chunkRefs) {
          refs.push({
            chunkId: r.chunkId,
            offsetBytes: size + r.offsetBytes,
            lengthBytes: r.lengthBytes,
          });
        }
        size += part.size;
      }
      let partSizes: number[] | undefined;
      if (p.partSizes === "listed") partSizes = listed.map((part) => part.size);
      else if (p.partSizes !== undefined) {
        const sum = p.partSizes.reduce((a, b) => a + b, 0);
        if (sum !== size) {
          refuse(
            "invalid_argument",
            `the part layout covers ${sum} bytes but the listed parts hold ${size}`,
          );
        }
        partSizes = p.partSizes;
      }
      const listedNumbers = new Set(p.partNumbers);
      for (const [n, part] of all) {
        if (!listedNumbers.has(n)) release(fold, { kind: "chunks", chunkRefs: part.chunkRefs });
      }
      dropUpload(fold, ns, upload, all.keys());
      storeObject(fold, ns, existing, {
        namespaceId: ns.id,
        key: p.key,
        version: fold.delta.sequence,
        size,
        contentType: upload.contentType,
        metadata,
        etag: p.etag,
        createdMs: existing?.createdMs ?? fold.nowMs,
        modifiedMs: fold.nowMs,
        content: { kind: "chunks", chunkRefs: refs },
        ...(partSizes !== undefined && { partSizes }),
        // An S3 completion (its own parts' layout) names its upload, for a repeat of it.
        ...(p.partSizes === "listed" && { completedUploadId: upload.uploadId }),
      });
      fold.outcome.size = size;
      return;
    }
    case "upload_abort": {
      const { upload } = loadUpload(fold, ns.id, p.uploadId, p.key);
      const all = partsOf(fold, ns.id, p.uploadId);
      for (const part of all.values()) {
        release(fold, { kind: "chunks", chunkRefs: part.chunkRefs });
      }
      dropUpload(fold, ns, upload, all.keys());
      return;
    }
  }
}

/** Refuses a write whose precondition on the key's current version does not hold. */
function checkCondition(key: string, condition: PutCondition, existing: Composition | undefined) {
  if (condition.kind === "absent" && existing !== undefined) {
    refuse("precondition_failed", `key ${JSON.stringify(key)} exists`);
  }
  if (condition.kind === "version" && existing?.version !== condition.version) {
    refuse(
      "precondition_failed",
      `key ${JSON.stringify(key)} is not at version ${condition.version}`,
    );
  }
}

function loadObject(fold: Fold, ns: Uint8Array, key: string): Composition | undefined {
  const bytes = fold.store.get(fold.tables.obj, objectKey(ns, key));
  return bytes === undefined ? undefined : decodeObject(ns, bytes);
}

function storeObject(
  fold: Fold,
  ns: NamespaceRecord,
  existing: Composition | undefined,
  object: Composition,
): void {
  const keyBytes = utf8(object.key);
  if (existing === undefined) {
    if (isLongKey(keyBytes)) checkGroup(fold, fold.tables.obj, ns.id, keyBytes);
    ns.objects++;
  } else {
    release(fold, existing.content);
    ns.bytes -= existing.size;
  }
  ns.bytes += object.size;
  fold.store.put(fold.tables.obj, objectKey(ns.id, keyBytes), encodeObject(object));
  fold.outcome.version = object.version;
}

/** Refuses a new long key whose group is full (see _ordered.ts). */
function checkGroup(
  fold: Fold,
  table: ViewTables["obj"],
  ns: Uint8Array,
  key: Uint8Array,
): void {
  const prefix = groupPrefix(ns, key);
  const entries = fold.store.range(table, prefix, successor(prefix));
  if (entries.length >= LONG_KEY_GROUP_ENTRIES_MAX) {
    refuse(
      "too_large",
      `more than ${LONG_KEY_GROUP_ENTRIES_MAX} keys share this key's first ${
        prefix.length - ns.length
      } bytes`,
    );
  }
}

function loadUpload(
  fold: Fold,
  ns: Uint8Array,
  uploadId: Uint8Array,
  key: string,
): { at: Uint8Array; upload: UploadRecord } {
  const at = fold.store.get(fold.tables.uploadId, uploadIdKey(ns, uploadId));
  const bytes = at === undefined ? undefined : fold.store.get(fold.tables.upload, at);
  assert((at === undefined) === (bytes === undefined), "upload index and uploads disagree");
  if (at === undefined || bytes === undefined) {
    refuse("no_such_upload", `no upload ${toHex(uploadId)}`);
  }
  const upload = decodeUpload(bytes);
  if (upload.key !== key) refuse("no_such_upload", `upload ${toHex(uploadId)} is for another key`);
  return { at, upload };
}

function partsOf(fold: Fold, ns: Uint8Array, uploadId: Uint8Array): Map<number, Part> {
  const prefix = concatBytes(ns, uploadId);
  const parts = new Map<number, Part>();
  for (const e of fold.store.range(fold.tables.part, prefix, successor(prefix))) {
    const part = decodePart(e.value);
    parts.set(part.partNumber, part);
  }
  assert(parts.size <= PART_NUMBER_MAX, "an upload holds more parts than part numbers");
  return parts;
}

function dropUpload(
  fold: Fold,
  ns: NamespaceRecord,
  upload: UploadRecord,
  partNumbers: Iterable<number>,
): void {
  for (const n of partNumbers) {
    fold.store.delete(fold.tables.part, partKey(ns.id, upload.uploadId, n));
  }
  fold.store.delete(fold.tables.upload, uploadKey(ns.id, upload.key, upload.uploadId));
  fold.store.delete(fold.tables.uploadId, uploadIdKey(ns.id, upload.uploadId));
  ns.uploads--;
}

// ---- reading -------------------------------------------------------------------------------

function invalid(message: string): never {
  throw new CompositionError("invalid_argument", message);
}

function textBytes(what: string, text: string | undefined, max: number): Uint8Array {
  if (text === undefined) return EMPTY;
  if (typeof text !== "string" || !text.isWellFormed()) invalid(`${what} is not a string`);
  const bytes = utf8(text);
  if (bytes.length > max) invalid(`${what} is ${bytes.length} bytes (max ${max})`);
  return bytes;
}

function pageSize(what: string, value: number | undefined, max: number): number {
  if (value === undefined) return max;
  if (!Number.isInteger(value) || value < 0) {
    invalid(`${what} ${value} is not a non-negative integer`);
  }
  return Math.min(value, max);
}

function text(bytes: Uint8Array): string {
  const t = fromUtf8(bytes);
  assert(t !== null, "a stored key or prefix is not UTF-8");
  return t;
}

/** Where `delimiter` first occurs in `key` at or after `from`; -1 if nowhere. */
function indexOf(key: Uint8Array, delimiter: Uint8Array, from: number): number {
  outer: for (let i = from; i + delimiter.length <= key.length; i++) {
    for (let j = 0; j < delimiter.length; j++) if (key[i + j] !== delimiter[j]) continue outer;
    return i;
  }
  return -1;
}

/** A position in (key, tie) order: after one entry, after all of a key, or after a prefix. */
type Position =
  | { after: "entry"; key: Uint8Array; tie: Uint8Array }
  | { after: "key"; key: Uint8Array }
  | { after: "prefix"; key: Uint8Array };

function isPast(entry: { key: Uint8Array; tie: Uint8Array }, p: Position | null): boolean {
  if (p === null) return true;
  switch (p.after) {
    case "entry":
      return compareOrdered(entry, p) > 0;
    case "key":
      return compareKeys(entry.key, p.key) > 0;
    case "prefix":
      return compareKeys(entry.key, p.key) > 0 && !startsWith(entry.key, p.key);
  }
}

function startOf(ns: Uint8Array, prefix: Uint8Array, p: Position | null): Uint8Array {
  const byPrefix = lowerBound(ns, prefix);
  if (p === null) return byPrefix;
  const byPosition = p.after === "prefix" ? afterPrefixBound(ns, p.key) : lowerBound(ns, p.key);
  return compareKeys(byPosition, byPrefix) > 0 ? byPosition : byPrefix;
}

interface Walk<T> {
  entries: T[];
  prefixes: Uint8Array[];
  /** The last entry or prefix returned. */
  last: { entry: T } | { prefix: Uint8Array } | null;
  isTruncated: boolean;
}

/**
 * The listing walk shared by objects and uploads: entries under `prefix` past `position`, with
 * keys holding `delimiter` past the prefix rolled up into common prefixes, at most `max`
 * results. A rolled-up prefix at or before a key position is skipped whole (a v1 marker that
 * names a common prefix resumes after it).
 */
function walk<T>(
  table: ViewTables["obj"],
  ns: Uint8Array,
  prefix: Uint8Array,
  delimiter: Uint8Array,
  start: Position | null,
  max: number,
  decode: (lmdbKey: Uint8Array, value: Uint8Array) => { key: Uint8Array; tie: Uint8Array; item: T },
): Walk<T> {
  const out: Walk<T> = { entries: [], prefixes: [], last: null, isTruncated: false };
  if (max === 0) return out;
  let position = start;
  const end = successor(lowerBound(ns, prefix));
  scan: for (;;) {
    for (const e of orderedScan(table, startOf(ns, prefix, position), end, decode)) {
      if (!startsWith(e.key, prefix) || !isPast(e, position)) continue;
      const at = delimiter.length === 0 ? -1 : indexOf(e.key, delimiter, prefix.length);
      const common = at < 0 ? null : e.key.slice(0, at + delimiter.length);
      if (
        common !== null && position !== null && position.after !== "prefix" &&
        compareKeys(common, position.key) <= 0
      ) {
        position = { after: "prefix", key: common };
        continue scan;
      }
      if (out.entries.length + out.prefixes.length >= max) {
        out.isTruncated = true;
        return out;
      }
      if (common !== null) {
        out.prefixes.push(common);
        out.last = { prefix: common };
        position = { after: "prefix", key: common };
        continue scan;
      }
      out.entries.push(e.item);
      out.last = { entry: e.item };
      position = { after: "entry", key: e.key, tie: e.tie };
    }
    return out;
  }
}

function objectEntry(
  _lmdbKey: Uint8Array,
  value: Uint8Array,
): { key: Uint8Array; tie: Uint8Array; item: Uint8Array } {
  return { key: objectKeyBytes(value), tie: EMPTY, item: value };
}

/** Reads of the bucket view (committed state; synchronous, so one consistent snapshot). */
export class BucketView {
  readonly #tables: ViewTables;

  constructor(tables: ViewTables) {
    this.#tables = tables;
  }

  object(ns: Uint8Array, key: string): Composition | undefined {
    const bytes = this.#tables.obj.getSync(
      objectKey(ns, textBytes("key", key, COMPOSITION_KEY_BYTES_MAX)),
    );
    return bytes === undefined ? undefined : decodeObject(ns, bytes);
  }

  list(ns: Uint8Array, options: ListObjectsOptions): ListObjectsResult {
    const prefix = textBytes("prefix", options.prefix, COMPOSITION_KEY_BYTES_MAX);
    const delimiter = textBytes("delimiter", options.delimiter, DELIMITER_BYTES_MAX);
    const maxKeys = pageSize("maxKeys", options.maxKeys, LIST_KEYS_MAX);
    let start: Position | null = null;
    if (options.continuationToken !== undefined) {
      const p: ListPosition = decodeContinuationToken(options.continuationToken);
      start = p.after === "prefix"
        ? { after: "prefix", key: p.value }
        : { after: "key", key: p.value };
    } else if (options.startAfter !== undefined && options.startAfter !== "") {
      start = {
        after: "key",
        key: textBytes("startAfter", options.startAfter, COMPOSITION_KEY_BYTES_MAX),
      };
    }
    const w = walk(this.#tables.obj, ns, prefix, delimiter, start, maxKeys, objectEntry);
    const objects: ObjectSummary[] = w.entries.map(decodeObjectSummary);
    let next: ListPosition | null = null;
    if (w.isTruncated && w.last !== null) {
      next = "prefix" in w.last
        ? { after: "prefix", value: w.last.prefix }
        : { after: "key", value: utf8(objects[objects.length - 1]!.key) };
    }
    return {
      objects,
      commonPrefixes: w.prefixes.map(text),
      keyCount: objects.length + w.prefixes.length,
      isTruncated: w.isTruncated,
      nextContinuationToken: next === null ? null : encodeContinuationToken(next),
      nextMarker: next === null ? null : text(next.value),
    };
  }

  upload(ns: Uint8Array, uploadId: Uint8Array): Upload | undefined {
    if (uploadId.length !== UPLOAD_ID_BYTES) return undefined;
    const at = this.#tables.uploadId.getSync(uploadIdKey(ns, uploadId));
    if (at === undefined) return undefined;
    const bytes = this.#tables.upload.getSync(at);
    assert(bytes !== undefined, "upload index points at no upload");
    return publicUpload(ns, decodeUpload(bytes));
  }

  listUploads(ns: Uint8Array, options: ListUploadsOptions): ListUploadsResult {
    const prefix = textBytes("prefix", options.prefix, COMPOSITION_KEY_BYTES_MAX);
    const delimiter = textBytes("delimiter", options.delimiter, DELIMITER_BYTES_MAX);
    const max = pageSize("maxUploads", options.maxUploads, LIST_UPLOADS_MAX);
    let start: Position | null = null;
    if (options.keyMarker !== undefined && options.keyMarker !== "") {
      const key = textBytes("keyMarker", options.keyMarker, COMPOSITION_KEY_BYTES_MAX);
      const tie = options.uploadIdMarker ? fromHex(options.uploadIdMarker, UPLOAD_ID_BYTES) : null;
      if (options.uploadIdMarker && tie === null) invalid("uploadIdMarker is not an upload id");
      start = tie === null ? { after: "key", key } : { after: "entry", key, tie };
    }
    const w = walk(
      this.#tables.upload,
      ns,
      prefix,
      delimiter,
      start,
      max,
      (_k, value) => ({ ...uploadOrder(value), item: value }),
    );
    const uploads = w.entries.map((v) => publicUpload(ns, decodeUpload(v)));
    let nextKeyMarker: string | null = null;
    let nextUploadIdMarker: string | null = null;
    if (w.isTruncated && w.last !== null) {
      if ("prefix" in w.last) nextKeyMarker = text(w.last.prefix);
      else {
        const last = uploads[uploads.length - 1]!;
        nextKeyMarker = last.key;
        nextUploadIdMarker = last.uploadId;
      }
    }
    return {
      uploads,
      commonPrefixes: w.prefixes.map(text),
      isTruncated: w.isTruncated,
      nextKeyMarker,
      nextUploadIdMarker,
    };
  }

  listParts(
    ns: Uint8Array,
    uploadId: Uint8Array,
    options: ListPartsOptions,
  ): ListPartsResult | undefined {
    const upload = this.upload(ns, uploadId);
    if (upload === undefined) return undefined;
    const marker = options.partNumberMarker ?? 0;
    if (!Number.isInteger(marker) || marker < 0) invalid(`partNumberMarker ${marker} is invalid`);
    const max = pageSize("maxParts", options.maxParts, LIST_PARTS_MAX);
    const parts: Part[] = [];
    let isTruncated = false;
    if (max > 0 && marker < PART_NUMBER_MAX) {
      const prefix = concatBytes(ns, uploadId);
      for (
        const e of this.#tables.part.range({
          start: partKey(ns, uploadId, marker + 1),
          end: successor(prefix),
        })
      ) {
        if (parts.length === max) {
          isTruncated = true;
          break;
        }
        parts.push(decodePart(e.value));
      }
    }
    return {
      upload,
      parts,
      isTruncated,
      nextPartNumberMarker: isTruncated ? parts[parts.length - 1]!.partNumber : null,
    };
  }
}
