// Fragment storage on Disks: each device is a label followed by fixed-size segments that
// fragments are appended to as checksummed records, with the segment table and a reverse
// index (device offset -> fragment) in lmdb. Owns the record and label formats, group
// commit to the devices, reads with verification, and compaction of segments whose
// records have died.
//
// Why segments and not an extent allocator: fragments are immutable and die in bulk (GC
// after refcounts fall), so a log-structured layout fits. Appending packs the fragments of
// many chunks into one contiguous write and one fdatasync per device per batch, whatever
// their size, where an allocator would scatter them; free space is "segments not in use"
// plus one append offset per segment, so nothing but the segment table changes on
// allocate, and a crash between the device write and the index commit leaves only bytes
// past the committed append offset, which the next batch overwrites. The price is
// compaction: live records of a mostly dead segment are copied forward before it is
// reused, bounded per step, and skipped entirely for segments whose records are all dead
// (the common case after GC).

import { assert, crc32c, getU64LE, setU64LE } from "../base/mod.ts";
import {
  type Disk,
  DISK_BATCH_OPS_MAX,
  DISK_OP_BYTES_MAX,
  DiskError,
  type DiskOp,
  type KvEnv,
  type KvTable,
  type KvTxn,
} from "../disk/mod.ts";
import { log, type Logger } from "../obs/mod.ts";
import { CHUNK_ID_BYTES } from "./chunk_id.ts";
import type { DeviceSpec } from "./pool.ts";
import type { SpaceGuard } from "./space.ts";

// ---- formats ---------------------------------------------------------------------------

/** "KSFR": Kiseki fragment record. */
export const RECORD_MAGIC = 0x5246534b;
export const RECORD_FORMAT_VERSION = 1;
export const RECORD_HEADER_BYTES = 64;
/** Records start on this boundary inside a write. */
export const RECORD_ALIGN_BYTES = 64;
/** The device label occupies the first bytes of a device; segments follow. */
export const LABEL_BYTES = 4096;
export const LABEL_FORMAT_VERSION = 1;
const LABEL_MAGIC = new TextEncoder().encode("KISEKIDV");
const LABEL_POOL_BYTES_MAX = 32;
const LABEL_ID_BYTES_MAX = 128;
export const CHUNK_ID_LENGTH = CHUNK_ID_BYTES;
/** Device numbers are 16-bit in index entries; 0 is never used. */
export const SEGMENT_DEVICE_NUMBER_MAX = 0xffff;
/** Staging buffer per device, reused by every batch: bounds the bytes of one write. */
export const SEGMENT_STAGING_BYTES_DEFAULT = 8 << 20;
/** A sealed segment with less than this share of live bytes is worth compacting. */
export const SEGMENT_COMPACT_LIVE_PERCENT_MAX = 50;
/**
 * Share of a segment that must be dead for compaction to copy its live records when its
 * device holds more than one segment of dead bytes: below it a copy could cost as much
 * space (the head's slack) as it frees.
 */
export const SEGMENT_COMPACT_DEAD_FRACTION_MIN = 1 / 8;
/** Empty segments one compaction commit frees at most. */
export const SEGMENT_FREE_BATCH_MAX = 4096;
/** Bytes of live records one compaction step copies by default. */
export const SEGMENT_COMPACT_STEP_BYTES_DEFAULT = 16 << 20;
/** Records one compaction step moves at most (each takes a chunk lock). */
export const SEGMENT_COMPACT_STEP_RECORDS_MAX = 256;

assert(SEGMENT_STAGING_BYTES_DEFAULT <= DISK_OP_BYTES_MAX, "staging fits one disk op");

export const SEGMENT_TABLES = {
  devices: "seg_devices",
  segments: "seg_segments",
  extents: "seg_extents",
} as const;

/** Bytes a record with `payloadBytes` of payload occupies on the device. */
export function recordBytesFor(payloadBytes: number): number {
  return alignUp(RECORD_HEADER_BYTES + payloadBytes, RECORD_ALIGN_BYTES);
}

function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}

function alignDown(value: number, alignment: number): number {
  return Math.floor(value / alignment) * alignment;
}

/**
 * Writes a record header. Layout (little-endian):
 *   0  4  magic "KSFR"          4  1  format version (1)     5  1  fragment index
 *   6  2  reserved (0)          8  4  payload length bytes  12  4  payload CRC-32C
 *  16 32  chunk id             48  2  device number         50 10  reserved (0)
 *  60  4  CRC-32C of header bytes 0..59
 */
export function encodeRecordHeader(
  out: Uint8Array,
  fields: {
    chunkId: Uint8Array;
    fragmentIndex: number;
    payloadBytes: number;
    payloadCrc: number;
    device: number;
  },
): void {
  assert(out.length >= RECORD_HEADER_BYTES, "record header buffer too small");
  assert(fields.chunkId.length === CHUNK_ID_LENGTH, "chunk id length");
  const view = new DataView(out.buffer, out.byteOffset, RECORD_HEADER_BYTES);
  out.fill(0, 0, RECORD_HEADER_BYTES);
  view.setUint32(0, RECORD_MAGIC, true);
  view.setUint8(4, RECORD_FORMAT_VERSION);
  view.setUint8(5, fields.fragmentIndex);
  view.setUint32(8, fields.payloadBytes, true);
  view.setUint32(12, fields.payloadCrc, true);
  out.set(fields.chunkId, 16);
  view.setUint16(48, fields.device, true);
  view.setUint32(60, crc32c(out.subarray(0, 60)), true);
}

export interface RecordHeader {
  fragmentIndex: number;
  payloadBytes: number;
  payloadCrc: number;
  chunkId: Uint8Array;
  device: number;
}

/** Parses a record header; null when the magic, version or header CRC is wrong. */
export function decodeRecordHeader(bytes: Uint8Array): RecordHeader | null {
  if (bytes.length < RECORD_HEADER_BYTES) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, RECORD_HEADER_BYTES);
  if (view.getUint32(0, true) !== RECORD_MAGIC) return null;
  if (view.getUint8(4) !== RECORD_FORMAT_VERSION) return null;
  if (view.getUint32(60, true) !== crc32c(bytes.subarray(0, 60))) return null;
  return {
    fragmentIndex: view.getUint8(5),
    payloadBytes: view.getUint32(8, true),
    payloadCrc: view.getUint32(12, true),
    chunkId: bytes.slice(16, 48),
    device: view.getUint16(48, true),
  };
}

export interface DeviceLabel {
  uuid: Uint8Array;
  sizeBytes: number;
  segmentSizeBytes: number;
  device: number;
  pool: string;
  id: string;
}

/**
 * The first LABEL_BYTES of a device (little-endian):
 *   0  8  magic "KISEKIDV"      8  4  format version (1)      12  4  label bytes (4096)
 *  16 16  device uuid          32  8  device size bytes       40  8  segment size bytes
 *  48  2  device number        50  2  pool name length        52  2  device id length
 *  54 10  reserved (0)         64 32  pool name (UTF-8)       96 128 device id (UTF-8)
 *  ...    zero              4092  4  CRC-32C of bytes 0..4091
 */
export function encodeLabel(out: Uint8Array, label: DeviceLabel): void {
  assert(out.length >= LABEL_BYTES, "label buffer too small");
  assert(label.uuid.length === 16, "label uuid is 16 bytes");
  const pool = new TextEncoder().encode(label.pool);
  const id = new TextEncoder().encode(label.id);
  assert(pool.length <= LABEL_POOL_BYTES_MAX && id.length <= LABEL_ID_BYTES_MAX, "label names");
  out.fill(0, 0, LABEL_BYTES);
  const view = new DataView(out.buffer, out.byteOffset, LABEL_BYTES);
  out.set(LABEL_MAGIC, 0);
  view.setUint32(8, LABEL_FORMAT_VERSION, true);
  view.setUint32(12, LABEL_BYTES, true);
  out.set(label.uuid, 16);
  setU64LE(view, 32, label.sizeBytes);
  setU64LE(view, 40, label.segmentSizeBytes);
  view.setUint16(48, label.device, true);
  view.setUint16(50, pool.length, true);
  view.setUint16(52, id.length, true);
  out.set(pool, 64);
  out.set(id, 96);
  view.setUint32(LABEL_BYTES - 4, crc32c(out.subarray(0, LABEL_BYTES - 4)), true);
}

/** Parses a label; null when it is not a valid Kiseki label (blank, foreign or damaged). */
export function decodeLabel(bytes: Uint8Array): DeviceLabel | null {
  if (bytes.length < LABEL_BYTES) return null;
  for (let i = 0; i < LABEL_MAGIC.length; i++) if (bytes[i] !== LABEL_MAGIC[i]) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, LABEL_BYTES);
  if (view.getUint32(8, true) !== LABEL_FORMAT_VERSION) return null;
  if (view.getUint32(12, true) !== LABEL_BYTES) return null;
  if (view.getUint32(LABEL_BYTES - 4, true) !== crc32c(bytes.subarray(0, LABEL_BYTES - 4))) {
    return null;
  }
  const poolLength = view.getUint16(50, true);
  const idLength = view.getUint16(52, true);
  if (poolLength > LABEL_POOL_BYTES_MAX || idLength > LABEL_ID_BYTES_MAX) return null;
  const text = new TextDecoder();
  return {
    uuid: bytes.slice(16, 32),
    sizeBytes: getU64LE(view, 32),
    segmentSizeBytes: getU64LE(view, 40),
    device: view.getUint16(48, true),
    pool: text.decode(bytes.subarray(64, 64 + poolLength)),
    id: text.decode(bytes.subarray(96, 96 + idLength)),
  };
}

// ---- lmdb keys and values --------------------------------------------------------------

function deviceKey(device: number): Uint8Array {
  const key = new Uint8Array(2);
  new DataView(key.buffer).setUint16(0, device);
  return key;
}

function segmentKey(device: number, segment: number): Uint8Array {
  const key = new Uint8Array(6);
  const view = new DataView(key.buffer);
  view.setUint16(0, device);
  view.setUint32(2, segment);
  return key;
}

/** Extent keys sort by device, then offset (big-endian), so a segment is one key range. */
function extentKey(device: number, offsetBytes: number): Uint8Array {
  const key = new Uint8Array(10);
  const view = new DataView(key.buffer);
  view.setUint16(0, device);
  view.setUint32(2, Math.floor(offsetBytes / 0x1_0000_0000));
  view.setUint32(6, offsetBytes % 0x1_0000_0000);
  return key;
}

function decodeExtentKey(key: Uint8Array): { device: number; offsetBytes: number } {
  const view = new DataView(key.buffer, key.byteOffset, key.byteLength);
  return {
    device: view.getUint16(0),
    offsetBytes: view.getUint32(2) * 0x1_0000_0000 + view.getUint32(6),
  };
}

/** Extent value: chunk id (32) | fragment index (1) | reserved (3) | record bytes (u32 LE). */
function encodeExtent(chunkId: Uint8Array, fragmentIndex: number, recordBytes: number): Uint8Array {
  const value = new Uint8Array(40);
  value.set(chunkId, 0);
  value[32] = fragmentIndex;
  new DataView(value.buffer).setUint32(36, recordBytes, true);
  return value;
}

export interface Extent {
  device: number;
  offsetBytes: number;
  chunkId: Uint8Array;
  fragmentIndex: number;
  recordBytes: number;
}

function decodeExtent(key: Uint8Array, value: Uint8Array): Extent {
  assert(value.length === 40, "extent value length");
  return {
    ...decodeExtentKey(key),
    chunkId: value.slice(0, 32),
    fragmentIndex: value[32]!,
    recordBytes: new DataView(value.buffer, value.byteOffset, 40).getUint32(36, true),
  };
}

const SEGMENT_FREE = 0;
const SEGMENT_OPEN = 1;
const SEGMENT_SEALED = 2;

interface SegmentState {
  state: number;
  /** Bytes from the segment start that writes have used (the append offset). */
  appendBytes: number;
  liveBytes: number;
  liveRecords: number;
}

/**
 * Segment value (32 bytes, little-endian): state (1: 0 free, 1 open, 2 sealed) | reserved
 * (7) | append bytes (u64) | live bytes (u64) | live records (u32) | reserved (4).
 */
function encodeSegment(s: SegmentState): Uint8Array {
  const value = new Uint8Array(32);
  const view = new DataView(value.buffer);
  view.setUint8(0, s.state);
  setU64LE(view, 8, s.appendBytes);
  setU64LE(view, 16, s.liveBytes);
  view.setUint32(24, s.liveRecords, true);
  return value;
}

function decodeSegment(value: Uint8Array): SegmentState {
  assert(value.length === 32, "segment value length");
  const view = new DataView(value.buffer, value.byteOffset, 32);
  return {
    state: view.getUint8(0),
    appendBytes: getU64LE(view, 8),
    liveBytes: getU64LE(view, 16),
    liveRecords: view.getUint32(24, true),
  };
}

/**
 * Device value: uuid (16) | size bytes (u64 LE) | segment size bytes (u64 LE) | id length
 * (u16 LE) | path length (u16 LE) | id | path.
 */
function encodeDeviceRecord(
  d: { uuid: Uint8Array; sizeBytes: number; segmentSizeBytes: number; id: string; path: string },
): Uint8Array {
  const id = new TextEncoder().encode(d.id);
  const path = new TextEncoder().encode(d.path);
  const value = new Uint8Array(36 + id.length + path.length);
  const view = new DataView(value.buffer);
  value.set(d.uuid, 0);
  setU64LE(view, 16, d.sizeBytes);
  setU64LE(view, 24, d.segmentSizeBytes);
  view.setUint16(32, id.length, true);
  view.setUint16(34, path.length, true);
  value.set(id, 36);
  value.set(path, 36 + id.length);
  return value;
}

function decodeDeviceRecord(value: Uint8Array): {
  uuid: Uint8Array;
  sizeBytes: number;
  segmentSizeBytes: number;
  id: string;
  path: string;
} {
  const view = new DataView(value.buffer, value.byteOffset, value.byteLength);
  const idLength = view.getUint16(32, true);
  const pathLength = view.getUint16(34, true);
  const text = new TextDecoder();
  return {
    uuid: value.slice(0, 16),
    sizeBytes: getU64LE(view, 16),
    segmentSizeBytes: getU64LE(view, 24),
    id: text.decode(value.subarray(36, 36 + idLength)),
    path: text.decode(value.subarray(36 + idLength, 36 + idLength + pathLength)),
  };
}

// ---- the store ---------------------------------------------------------------------------

/** Where a fragment's record lives. */
export interface FragmentLocation {
  device: number;
  /** Offset of the record (header first) on the device. */
  offsetBytes: number;
}

export type DeviceStatus = "ok" | "failed" | "offline";

export interface DeviceReport {
  device: number;
  id: string;
  path: string;
  status: DeviceStatus;
  /** Why the device is not "ok" (empty when it is). */
  reason: string;
  capacityBytes: number;
  /** Bytes of segments in use (append offsets): what new writes cannot have. */
  usedBytes: number;
  liveBytes: number;
  segments: number;
  segmentsFree: number;
  /** True while the device is below the pool's fill threshold and healthy. */
  writable: boolean;
}

/** Opens a device; the chunk store passes selectDisk() or a simulated disk. */
export type DeviceOpener = (spec: DeviceSpec) => Promise<Disk>;
/**
 * Identity of the file behind a device path (e.g. "dev:inode"), or null when the path is
 * gone: lets checkDevices() notice a device file deleted or replaced under a running store.
 */
export type DeviceProbe = (path: string) => Promise<string | null>;

export interface SegmentStoreOptions {
  env: KvEnv;
  pool: string;
  devices: readonly DeviceSpec[];
  segmentSizeBytes: number;
  fullPercent: number;
  openDevice: DeviceOpener;
  probeDevice?: DeviceProbe;
  stagingBytes?: number;
  /**
   * Room on the filesystem of sparse device files (a pool that grows with its filesystem):
   * a segment never written before is opened only while the filesystem has that much room
   * above its reserve. Absent for fixed devices.
   */
  space?: SpaceGuard;
  logger?: Logger;
  /** Random bytes for device uuids (tests pass a seeded source). */
  randomBytes?: (length: number) => Uint8Array;
}

interface DeviceState {
  number: number;
  id: string;
  path: string;
  spec: DeviceSpec | null;
  disk: Disk | null;
  identity: string | null;
  status: DeviceStatus;
  reason: string;
  uuid: Uint8Array;
  sizeBytes: number;
  segmentSizeBytes: number;
  segments: SegmentState[];
  head: number;
  staging: Uint8Array | null;
  /** usedBytesOf() cached (a walk of every segment); -1 after any segment changes. */
  usedCache: number;
  /** Free segments below highWater, cached with usedCache. */
  freeWrittenCache: number;
  /**
   * Segments ever opened (one past the highest): below it a sparse device file has its
   * blocks already, above it a new segment costs filesystem space.
   */
  highWater: number;
}

export type FragmentFault = "offline" | "io" | "header" | "mismatch" | "checksum";

export interface ReadRequest extends FragmentLocation {
  chunkId: Uint8Array;
  fragmentIndex: number;
  payloadBytes: number;
  /** Expected payload CRC-32C (from the index); omitted, only the header's is checked. */
  payloadCrc?: number;
  /** Where the payload goes (exactly payloadBytes); a fresh buffer when omitted. */
  into?: Uint8Array;
}

export type ReadOutcome =
  | { ok: true; payload: Uint8Array }
  | { ok: false; fault: FragmentFault; detail: string };

/** A record reserved in a batch: fill `payload`, then flush(). */
export interface Slot extends FragmentLocation {
  chunkId: Uint8Array;
  fragmentIndex: number;
  payloadBytes: number;
  recordBytes: number;
  /** Where the caller writes the payload (a view of the device's staging buffer). */
  payload: Uint8Array;
  /** CRC-32C of the payload, set by flush(). */
  payloadCrc: number;
  /** "pending" until flushed; "durable" once written and synced; "failed" otherwise. */
  state: "pending" | "durable" | "failed";
}

export type ReserveResult = { ok: true; slot: Slot } | { ok: false; why: "staging" | "device" };

interface Run {
  device: DeviceState;
  segment: number;
  /** Device offset where the run starts (aligned to the disk). */
  startBytes: number;
  usedBytes: number;
  buffer: Uint8Array;
  /** Where `buffer` starts in the device's staging buffer; -1 for a buffer of its own. */
  bufferOffset: number;
  slots: Slot[];
  flushed: boolean;
}

export class SegmentStoreError extends Error {
  override name = "SegmentStoreError";
}

/**
 * Fragments on the devices of one pool. Writes go through batch(): reserve records, fill
 * their payloads, flush() (one submit and one sync per device), then stage the index
 * changes (stageLive) in an lmdb transaction. One batch runs at a time.
 */
export class SegmentStore {
  readonly pool: string;
  readonly fullPercent: number;
  readonly #env: KvEnv;
  readonly #devicesTable: KvTable;
  readonly #segmentsTable: KvTable;
  readonly #extentsTable: KvTable;
  readonly #devices = new Map<number, DeviceState>();
  /** Configured devices with no number: could not be opened, or refused (foreign label). */
  readonly #unattached = new Map<string, { spec: DeviceSpec; reason: string }>();
  readonly #options: SegmentStoreOptions;
  readonly #logger: Logger;
  readonly #stagingBytes: number;
  /** Aligned bounce buffers of O_DIRECT reads, reused (allocating them is slow). */
  readonly #bounces = new BouncePool();
  #batchTail: Promise<void> = Promise.resolve();
  #closed = false;
  /** The largest record reserved since the store opened (bounds a seal's slack). */
  #recordBytesMax = 0;

  private constructor(options: SegmentStoreOptions) {
    this.#options = options;
    this.pool = options.pool;
    this.fullPercent = options.fullPercent;
    this.#env = options.env;
    this.#devicesTable = options.env.table(SEGMENT_TABLES.devices);
    this.#segmentsTable = options.env.table(SEGMENT_TABLES.segments);
    this.#extentsTable = options.env.table(SEGMENT_TABLES.extents);
    this.#logger = options.logger ?? log;
    this.#stagingBytes = options.stagingBytes ?? SEGMENT_STAGING_BYTES_DEFAULT;
    assert(
      this.#stagingBytes >= LABEL_BYTES && this.#stagingBytes % LABEL_BYTES === 0,
      "staging buffer is a positive multiple of 4 KiB",
    );
  }

  /**
   * Opens every configured device: labelled devices are matched to the index by uuid, blank
   * ones are formatted (a device the index knew at that path is a replacement: its old
   * fragments are gone and scrub rebuilds them). A device that cannot be opened, or carries
   * another store's label, stays out of service with the reason in devices().
   */
  static async open(options: SegmentStoreOptions): Promise<SegmentStore> {
    assert(options.devices.length > 0, "a pool has devices");
    assert(
      options.segmentSizeBytes % LABEL_BYTES === 0 && options.segmentSizeBytes >= 2 * LABEL_BYTES,
      "segment size is a multiple of 4 KiB",
    );
    const store = new SegmentStore(options);
    await store.#load();
    return store;
  }

  async #load(): Promise<void> {
    // Every device the index knows, configured or not: their fragments still need accounting.
    for (const { key, value } of this.#devicesTable.range()) {
      const number = new DataView(key.buffer, key.byteOffset, 2).getUint16(0);
      const record = decodeDeviceRecord(value);
      this.#devices.set(number, {
        number,
        id: record.id,
        path: record.path,
        spec: null,
        disk: null,
        identity: null,
        status: "offline",
        reason: "not in the pool specification",
        uuid: record.uuid,
        sizeBytes: record.sizeBytes,
        segmentSizeBytes: record.segmentSizeBytes,
        segments: [],
        head: -1,
        staging: null,
        usedCache: -1,
        freeWrittenCache: 0,
        highWater: 0,
      });
    }
    for (const { key, value } of this.#segmentsTable.range()) {
      const view = new DataView(key.buffer, key.byteOffset, 6);
      const device = this.#devices.get(view.getUint16(0));
      if (device === undefined) continue;
      const index = view.getUint32(2);
      const state = decodeSegment(value);
      ensureSegments(device, index + 1);
      device.segments[index] = state;
      device.highWater = Math.max(device.highWater, index + 1);
      if (state.state === SEGMENT_OPEN) device.head = index;
    }
    for (const spec of this.#options.devices) await this.#attach(spec);
    for (const d of this.#devices.values()) ensureSegments(d, segmentCountOf(d));
  }

  /**
   * Opens one configured device and binds it to its number. A new or replacement device is
   * recorded in the index before its label is written, so a crash in between leaves a
   * blank device at a known path (formatted again on the next start), never a labelled
   * device the index does not know.
   */
  async #attach(spec: DeviceSpec): Promise<void> {
    const known = [...this.#devices.values()];
    const byPath = known.find((d) => d.path === spec.path) ??
      known.find((d) => d.id === spec.id && d.spec === null);
    const refuse = (reason: string, event: string) => {
      this.#logger.error(event, { pool: this.pool, path: spec.path, reason });
      if (byPath !== undefined && byPath.disk === null) {
        Object.assign(byPath, { spec, status: "offline", reason });
      } else {
        this.#unattached.set(spec.path, { spec, reason });
      }
    };
    this.#unattached.delete(spec.path);
    let disk: Disk;
    try {
      disk = await this.#options.openDevice(spec);
    } catch (e) {
      return refuse(`cannot open: ${(e as Error).message}`, "chunk device offline");
    }
    let identity: string | null = null;
    try {
      identity = (await this.#options.probeDevice?.(spec.path)) ?? null;
    } catch {
      identity = null;
    }
    const [buffer] = disk.allocateAligned(1, LABEL_BYTES);
    let label: DeviceLabel | null = null;
    try {
      await disk.submit([{ kind: "read", offsetBytes: 0, buffer: buffer! }]);
      label = decodeLabel(buffer!);
    } catch (e) {
      await disk.close().catch(() => {});
      return refuse(`cannot read its label: ${(e as Error).message}`, "chunk device offline");
    }
    const attached = {
      spec,
      disk,
      identity,
      status: "ok",
      reason: "",
      id: spec.id,
      path: spec.path,
    };
    if (label !== null) {
      const owner = this.#devices.get(label.device);
      if (owner === undefined || !bytesEqual(owner.uuid, label.uuid) || owner.disk !== null) {
        await disk.close().catch(() => {});
        return refuse(
          `carries the label of device ${label.device} (${label.id}) of pool ${label.pool}, ` +
            `which this index does not know: refusing to overwrite it`,
          "chunk device refused",
        );
      }
      const moved = owner.path !== spec.path || owner.id !== spec.id;
      // A device file made larger (a pool that grows with its filesystem, or a bigger
      // deviceSize) gains segments past the old ones; offsets already used do not move.
      const grown = disk.sizeBytes > owner.sizeBytes;
      Object.assign(owner, attached);
      if (grown) {
        try {
          await this.#grow(owner, disk, label, buffer!);
        } catch (e) {
          this.#logger.warn("chunk device could not grow; it keeps its recorded size", {
            pool: this.pool,
            path: spec.path,
            error: (e as Error).message,
          });
        }
      } else if (moved) await this.#persistDevice(owner);
      return;
    }
    // Blank (or a damaged label): a new device, or a replacement for one the index knew here.
    let state: DeviceState;
    if (byPath !== undefined && byPath.disk === null) {
      state = byPath;
      this.#logger.warn("chunk device has no label: treating it as a replacement", {
        pool: this.pool,
        path: spec.path,
        device: state.number,
        note: "fragments it held are rebuilt by scrub",
      });
    } else {
      state = {
        number: this.#nextNumber(),
        id: spec.id,
        path: spec.path,
        spec,
        disk: null,
        identity: null,
        status: "offline",
        reason: "",
        uuid: new Uint8Array(16),
        sizeBytes: disk.sizeBytes,
        segmentSizeBytes: this.#options.segmentSizeBytes,
        segments: [],
        head: -1,
        staging: null,
        usedCache: -1,
        freeWrittenCache: 0,
        highWater: 0,
      };
      this.#devices.set(state.number, state);
    }
    // A replacement keeps the geometry the index recorded, so old offsets stay meaningful.
    state.sizeBytes = Math.min(state.sizeBytes, disk.sizeBytes);
    state.usedCache = -1;
    state.uuid = (this.#options.randomBytes ?? randomBytes)(16);
    Object.assign(state, { spec, id: spec.id, path: spec.path });
    try {
      await this.#persistDevice(state);
      encodeLabel(buffer!, {
        uuid: state.uuid,
        sizeBytes: state.sizeBytes,
        segmentSizeBytes: state.segmentSizeBytes,
        device: state.number,
        pool: this.pool,
        id: spec.id,
      });
      await disk.submit([{ kind: "write", offsetBytes: 0, buffer: buffer! }]);
      await disk.sync();
    } catch (e) {
      await disk.close().catch(() => {});
      Object.assign(state, {
        status: "offline",
        reason: `cannot write its label: ${(e as Error).message}`,
      });
      this.#logger.error("chunk device offline", {
        pool: this.pool,
        path: spec.path,
        reason: state.reason,
      });
      return;
    }
    Object.assign(state, attached);
  }

  /**
   * Records a device's larger size: the index first, then the label, so that a crash in
   * between leaves a label with the old size, which nothing but the uuid is read from.
   */
  async #grow(d: DeviceState, disk: Disk, label: DeviceLabel, buffer: Uint8Array): Promise<void> {
    const from = d.sizeBytes;
    d.sizeBytes = disk.sizeBytes;
    d.usedCache = -1;
    await this.#persistDevice(d);
    encodeLabel(buffer, { ...label, sizeBytes: d.sizeBytes });
    await disk.submit([{ kind: "write", offsetBytes: 0, buffer }]);
    await disk.sync();
    this.#logger.info("chunk device grown", {
      pool: this.pool,
      path: d.path,
      fromBytes: from,
      toBytes: d.sizeBytes,
    });
  }

  async #persistDevice(d: DeviceState): Promise<void> {
    await this.#env.transaction((txn) => {
      txn.put(this.#devicesTable, deviceKey(d.number), encodeDeviceRecord(d));
    });
  }

  #nextNumber(): number {
    let number = 1;
    for (const n of this.#devices.keys()) number = Math.max(number, n + 1);
    if (number > SEGMENT_DEVICE_NUMBER_MAX) {
      throw new SegmentStoreError(`more than ${SEGMENT_DEVICE_NUMBER_MAX} devices in one index`);
    }
    return number;
  }

  /**
   * Notices device files deleted or replaced under a running store (probeDevice) and
   * reattaches them: the new file is blank, so it is labelled as a replacement and its
   * fragments count as missing until scrub rebuilds them. Returns the devices reattached.
   */
  async checkDevices(): Promise<number[]> {
    const probe = this.#options.probeDevice;
    if (probe === undefined) return [];
    const changed: number[] = [];
    for (const d of this.#devices.values()) {
      if (d.spec === null || d.disk === null || d.identity === null) continue;
      let now: string | null;
      try {
        now = await probe(d.path);
      } catch {
        now = null;
      }
      if (now === d.identity) continue;
      changed.push(d.number);
      await this.#exclusive(async () => {
        const disk = d.disk;
        d.disk = null;
        d.staging = null;
        await disk?.close().catch(() => {});
        this.#logger.warn("chunk device file changed under the store: reattaching", {
          pool: this.pool,
          path: d.path,
          device: d.number,
        });
        await this.#attach(d.spec!);
        ensureSegments(d, segmentCountOf(d));
      });
    }
    return changed;
  }

  // ---- device information --------------------------------------------------------------

  /** Device number of the configured device with `id`, or undefined. */
  numberOf(id: string): number | undefined {
    for (const d of this.#devices.values()) if (d.spec !== null && d.id === id) return d.number;
    return undefined;
  }

  deviceId(device: number): string {
    return this.#devices.get(device)?.id ?? `#${device}`;
  }

  /** True when new records may go to `device`: open, healthy and below the fill threshold. */
  writable(device: number): boolean {
    const d = this.#devices.get(device);
    if (d === undefined || d.status !== "ok" || d.disk === null) return false;
    const capacity = segmentCountOf(d) * d.segmentSizeBytes;
    if (usedBytesOf(d) * 100 >= capacity * this.fullPercent) return false;
    const space = this.#options.space;
    if (space === undefined) return true;
    // Room without new filesystem blocks: the head's tail, or a segment written before.
    const head = d.head >= 0 ? d.segments[d.head] : undefined;
    if (head !== undefined && head.appendBytes < d.segmentSizeBytes) return true;
    if (d.freeWrittenCache > 0) return true;
    return space.headroomBytes() >= d.segmentSizeBytes;
  }

  /**
   * Bytes of segments the pool can hold: its devices' segments, or for sparse devices on a
   * guarded filesystem, the segments written so far plus the room above the reserve (never
   * more than the devices' size).
   */
  capacityBytes(): number {
    const space = this.#options.space;
    let nominal = 0;
    let written = 0;
    for (const d of this.#devices.values()) {
      const count = segmentCountOf(d);
      nominal += count * d.segmentSizeBytes;
      written += Math.min(count, d.highWater) * d.segmentSizeBytes;
    }
    if (space === undefined) return nominal;
    return Math.min(nominal, written + space.headroomBytes());
  }

  /** True when `device` can take repair writes (healthy; the fill threshold is ignored). */
  healthy(device: number): boolean {
    const d = this.#devices.get(device);
    return d !== undefined && d.status === "ok" && d.disk !== null;
  }

  /** Every device: numbered ones (configured or only known to the index), then unattached ones (number 0). */
  devices(): DeviceReport[] {
    const unattached: DeviceReport[] = [...this.#unattached.values()].map(({ spec, reason }) => ({
      device: 0,
      id: spec.id,
      path: spec.path,
      status: "offline",
      reason,
      capacityBytes: 0,
      usedBytes: 0,
      liveBytes: 0,
      segments: 0,
      segmentsFree: 0,
      writable: false,
    }));
    return [...this.#numbered(), ...unattached];
  }

  #numbered(): DeviceReport[] {
    return [...this.#devices.values()].map((d) => {
      const count = segmentCountOf(d);
      const span = spanOf(d);
      let live = 0;
      let free = count - span;
      for (let i = 0; i < span; i++) {
        const s = d.segments[i]!;
        live += s.liveBytes;
        if (s.state === SEGMENT_FREE) free++;
      }
      return {
        device: d.number,
        id: d.id,
        path: d.path,
        status: d.status,
        reason: d.reason,
        capacityBytes: count * d.segmentSizeBytes,
        usedBytes: usedBytesOf(d),
        liveBytes: live,
        segments: count,
        segmentsFree: free,
        writable: this.writable(d.number),
      };
    });
  }

  /** Marks a device failed (no more writes); reads are still tried. */
  fail(device: number, reason: string): void {
    const d = this.#devices.get(device);
    if (d === undefined || d.status !== "ok") return;
    d.status = "failed";
    d.reason = reason;
    this.#logger.error("chunk device failed", { pool: this.pool, path: d.path, reason });
  }

  // ---- writes ----------------------------------------------------------------------------

  /**
   * Runs `fn` with exclusive use of the staging buffers and append heads. `fn` may return
   * before the lmdb commit it staged is durable (return its promise wrapped in an object):
   * the next batch then overlaps with that commit.
   */
  batch<T>(fn: (batch: SegmentBatch) => Promise<T>): Promise<T> {
    return this.#exclusive(async () => {
      const batch = new SegmentBatch(this);
      try {
        return await fn(batch);
      } finally {
        batch.closed = true;
      }
    });
  }

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#closed) return Promise.reject(new SegmentStoreError("segment store is closed"));
    const previous = this.#batchTail;
    let release!: () => void;
    this.#batchTail = new Promise<void>((resolve) => (release = resolve));
    return previous.then(fn).finally(release);
  }

  /** Reserves a record for a batch (internal to SegmentBatch). */
  reserveIn(batch: SegmentBatch, device: number, fields: {
    chunkId: Uint8Array;
    fragmentIndex: number;
    payloadBytes: number;
  }): ReserveResult {
    const d = this.#devices.get(device);
    assert(d !== undefined && d.disk !== null && d.status === "ok", "reserve on a usable device");
    const recordBytes = recordBytesFor(fields.payloadBytes);
    assert(recordBytes <= d.segmentSizeBytes, "record larger than a segment");
    this.#recordBytesMax = Math.max(this.#recordBytesMax, recordBytes);
    const alignment = Math.max(d.disk.alignmentBytes, RECORD_ALIGN_BYTES);
    let run = batch.openRun(device);
    if (run !== null) {
      const at = run.usedBytes;
      const fitsSegment = run.startBytes + at + recordBytes <=
        segmentStart(d, run.segment) + d.segmentSizeBytes;
      const fitsBuffer = at + recordBytes <= run.buffer.length;
      if (!fitsSegment || !fitsBuffer) {
        if (fitsSegment && !fitsBuffer) return { ok: false, why: "staging" };
        run = null;
      }
    }
    if (run === null) {
      // A new run at the head's append offset, rounded up to the disk's alignment.
      let segment = d.head;
      let start = segment >= 0
        ? segmentStart(d, segment) + alignUp(d.segments[segment]!.appendBytes, alignment)
        : -1;
      if (segment < 0 || start + recordBytes > segmentStart(d, segment) + d.segmentSizeBytes) {
        const free = d.segments.findIndex((s, i) =>
          i < segmentCountOf(d) && s.state === SEGMENT_FREE
        );
        if (free < 0) return { ok: false, why: "device" };
        const space = this.#options.space;
        if (free >= d.highWater && space !== undefined) {
          // A segment never written costs filesystem blocks: only above the reserve.
          if (space.headroomBytes() < d.segmentSizeBytes) return { ok: false, why: "device" };
          space.noteAllocated(d.segmentSizeBytes);
        }
        d.highWater = Math.max(d.highWater, free + 1);
        if (segment >= 0) {
          d.segments[segment]!.state = SEGMENT_SEALED;
          d.usedCache = -1;
          batch.dirty(d.number, segment);
        }
        segment = free;
        d.head = free;
        d.segments[free] = { state: SEGMENT_OPEN, appendBytes: 0, liveBytes: 0, liveRecords: 0 };
        d.usedCache = -1;
        batch.dirty(d.number, free);
        start = segmentStart(d, free);
      }
      const used = batch.stagingUsed(device);
      const bufferStart = alignUp(used, alignment);
      const staging = this.#stagingOf(d);
      const segmentEnd = segmentStart(d, segment) + d.segmentSizeBytes;
      let buffer: Uint8Array;
      let bufferOffset: number;
      if (bufferStart + recordBytes <= staging.length) {
        buffer = staging.subarray(
          bufferStart,
          bufferStart + Math.min(staging.length - bufferStart, segmentEnd - start),
        );
        bufferOffset = bufferStart;
      } else if (used === 0) {
        // Larger than the staging buffer: this run gets a buffer of its own.
        buffer = d.disk.allocateAligned(1, alignUp(recordBytes, alignment))[0]!;
        bufferOffset = -1;
      } else {
        return { ok: false, why: "staging" };
      }
      run = batch.addRun({
        device: d,
        segment,
        startBytes: start,
        usedBytes: 0,
        buffer,
        bufferOffset,
        slots: [],
        flushed: false,
      });
    }
    const offsetInRun = run.usedBytes;
    const slot: Slot = {
      device,
      offsetBytes: run.startBytes + offsetInRun,
      chunkId: fields.chunkId,
      fragmentIndex: fields.fragmentIndex,
      payloadBytes: fields.payloadBytes,
      recordBytes,
      payload: run.buffer.subarray(
        offsetInRun + RECORD_HEADER_BYTES,
        offsetInRun + RECORD_HEADER_BYTES + fields.payloadBytes,
      ),
      payloadCrc: 0,
      state: "pending",
    };
    run.usedBytes += recordBytes;
    run.slots.push(slot);
    const seg = d.segments[run.segment]!;
    seg.appendBytes = Math.max(
      seg.appendBytes,
      run.startBytes + run.usedBytes - segmentStart(d, run.segment),
    );
    d.usedCache = -1;
    batch.dirty(d.number, run.segment);
    return { ok: true, slot };
  }

  #stagingOf(d: DeviceState): Uint8Array {
    if (d.staging === null) d.staging = d.disk!.allocateAligned(1, this.#stagingBytes)[0]!;
    return d.staging;
  }

  /** Writes and syncs runs (internal to SegmentBatch); returns the devices that failed. */
  async flushRuns(runs: readonly Run[]): Promise<Map<number, Error>> {
    const byDevice = new Map<number, Run[]>();
    for (const run of runs) {
      if (run.flushed) continue;
      run.flushed = true;
      const d = run.device;
      const alignment = Math.max(d.disk?.alignmentBytes ?? 1, RECORD_ALIGN_BYTES);
      let at = 0;
      for (const slot of run.slots) {
        const start = slot.offsetBytes - run.startBytes;
        run.buffer.fill(0, at, start);
        slot.payloadCrc = crc32c(slot.payload);
        encodeRecordHeader(run.buffer.subarray(start, start + RECORD_HEADER_BYTES), {
          chunkId: slot.chunkId,
          fragmentIndex: slot.fragmentIndex,
          payloadBytes: slot.payloadBytes,
          payloadCrc: slot.payloadCrc,
          device: d.number,
        });
        const end = start + RECORD_HEADER_BYTES + slot.payloadBytes;
        at = start + slot.recordBytes;
        run.buffer.fill(0, end, at);
      }
      const length = alignUp(run.usedBytes, alignment);
      assert(length <= run.buffer.length, "run padding exceeds its buffer");
      run.buffer.fill(0, run.usedBytes, length);
      run.usedBytes = length;
      const seg = d.segments[run.segment]!;
      seg.appendBytes = Math.max(
        seg.appendBytes,
        run.startBytes + length - segmentStart(d, run.segment),
      );
      d.usedCache = -1;
      const list = byDevice.get(d.number) ?? [];
      list.push(run);
      byDevice.set(d.number, list);
    }
    const failures = new Map<number, Error>();
    await Promise.all([...byDevice].map(async ([number, list]) => {
      const d = this.#devices.get(number)!;
      try {
        const disk = d.disk;
        if (disk === null || d.status !== "ok") {
          throw new DiskError("ENXIO", `${d.path}: device is ${d.status}`);
        }
        const ops: DiskOp[] = list.map((run) => ({
          kind: "write",
          offsetBytes: run.startBytes,
          buffer: run.buffer.subarray(0, run.usedBytes),
        }));
        // Writes and the sync queued together (the sync is a barrier behind them): a disk
        // that merges them runs both in one call.
        const steps: Promise<unknown>[] = [];
        for (let i = 0; i < ops.length; i += DISK_BATCH_OPS_MAX) {
          steps.push(disk.submit(ops.slice(i, i + DISK_BATCH_OPS_MAX)));
        }
        steps.push(disk.sync());
        await Promise.all(steps);
        for (const run of list) for (const slot of run.slots) slot.state = "durable";
      } catch (e) {
        for (const run of list) for (const slot of run.slots) slot.state = "failed";
        failures.set(number, e as Error);
        this.fail(number, `write failed: ${(e as Error).message}`);
      }
    }));
    return failures;
  }

  /** Stages an extent for a durable slot and counts it live in its segment. */
  stageLive(txn: KvTxn, slot: Slot): void {
    assert(slot.state === "durable", "only durable records become live");
    const d = this.#devices.get(slot.device)!;
    const segment = segmentOf(d, slot.offsetBytes);
    const s = d.segments[segment]!;
    s.liveBytes += slot.recordBytes;
    s.liveRecords++;
    txn.put(
      this.#extentsTable,
      extentKey(slot.device, slot.offsetBytes),
      encodeExtent(slot.chunkId, slot.fragmentIndex, slot.recordBytes),
    );
    txn.put(this.#segmentsTable, segmentKey(d.number, segment), encodeSegment(s));
  }

  /**
   * Stages removal of the record of `chunkId`'s fragment at `location` (the chunk is erased
   * or the fragment moved). Only an extent that still names that fragment is removed: a
   * fragment marked lost may point at space that has since been freed and reused.
   */
  stageDead(
    txn: KvTxn,
    location: FragmentLocation,
    chunkId: Uint8Array,
    fragmentIndex: number,
  ): void {
    const d = this.#devices.get(location.device);
    if (d === undefined) return;
    const key = extentKey(location.device, location.offsetBytes);
    const value = this.#extentsTable.getSync(key);
    if (value === undefined) return;
    const extent = decodeExtent(key, value);
    if (!bytesEqual(extent.chunkId, chunkId) || extent.fragmentIndex !== fragmentIndex) return;
    const segment = segmentOf(d, location.offsetBytes);
    ensureSegments(d, segment + 1);
    const s = d.segments[segment]!;
    s.liveBytes = Math.max(0, s.liveBytes - extent.recordBytes);
    s.liveRecords = Math.max(0, s.liveRecords - 1);
    txn.delete(this.#extentsTable, key);
    txn.put(this.#segmentsTable, segmentKey(d.number, segment), encodeSegment(s));
  }

  /** Stages the in-memory state of segments a batch touched (internal to SegmentBatch). */
  stageSegments(txn: KvTxn, segments: Iterable<[number, number]>): void {
    for (const [device, segment] of segments) {
      const d = this.#devices.get(device)!;
      txn.put(
        this.#segmentsTable,
        segmentKey(device, segment),
        encodeSegment(d.segments[segment]!),
      );
    }
  }

  // ---- reads -----------------------------------------------------------------------------

  /**
   * Reads and verifies records: magic, header CRC, chunk id, fragment index, length, device
   * and payload CRC (against the header and, when given, the index). One submit per device.
   */
  async read(requests: readonly ReadRequest[]): Promise<ReadOutcome[]> {
    const outcomes: ReadOutcome[] = new Array(requests.length);
    const byDevice = new Map<number, number[]>();
    requests.forEach((r, i) => {
      const list = byDevice.get(r.device) ?? [];
      list.push(i);
      byDevice.set(r.device, list);
    });
    await Promise.all([...byDevice].map(async ([number, indices]) => {
      const d = this.#devices.get(number);
      if (d === undefined || d.disk === null) {
        const why = d === undefined
          ? "unknown device"
          : `device ${d.path} is ${d.status}: ${d.reason}`;
        for (const i of indices) outcomes[i] = { ok: false, fault: "offline", detail: why };
        return;
      }
      for (let i = 0; i < indices.length; i += DISK_BATCH_OPS_MAX / 2) {
        const part = indices.slice(i, i + DISK_BATCH_OPS_MAX / 2);
        const results = await this.#readOn(d, d.disk, part.map((j) => requests[j]!));
        part.forEach((j, n) => (outcomes[j] = results[n]!));
      }
    }));
    return outcomes;
  }

  async #readOn(
    d: DeviceState,
    disk: Disk,
    requests: readonly ReadRequest[],
  ): Promise<ReadOutcome[]> {
    const alignment = disk.alignmentBytes;
    const prepared = requests.map((r) => {
      const recordEnd = r.offsetBytes + RECORD_HEADER_BYTES + r.payloadBytes;
      const payload = r.into ?? new Uint8Array(r.payloadBytes);
      assert(payload.length === r.payloadBytes, "read target length");
      if (alignment === 1) {
        const header = new Uint8Array(RECORD_HEADER_BYTES);
        const ops: DiskOp[] = [{ kind: "read", offsetBytes: r.offsetBytes, buffer: header }];
        if (r.payloadBytes > 0) {
          ops.push({
            kind: "read",
            offsetBytes: r.offsetBytes + RECORD_HEADER_BYTES,
            buffer: payload,
          });
        }
        return {
          header,
          payload,
          bounce: null as Uint8Array | null,
          ops,
          inRange: recordEnd <= disk.sizeBytes,
        };
      }
      const start = alignDown(r.offsetBytes, alignment);
      const end = alignUp(recordEnd, alignment);
      const bounce = this.#bounces.acquire(disk, end - start);
      return {
        header: bounce.subarray(r.offsetBytes - start, r.offsetBytes - start + RECORD_HEADER_BYTES),
        payload,
        bounce,
        ops: [{ kind: "read", offsetBytes: start, buffer: bounce }] as DiskOp[],
        inRange: end <= disk.sizeBytes,
      };
    });
    const failed = new Map<number, string>();
    const all = prepared.flatMap((p, i) => (p.inRange ? p.ops : []).map((op) => ({ op, i })));
    for (const [i, p] of prepared.entries()) {
      if (!p.inRange) failed.set(i, "record runs past the device end");
    }
    // Bounce buffers go back to the pool only when every read that used them has finished
    // (a failed disk may still have requests in flight on them).
    let reusable = true;
    try {
      if (all.length > 0) await disk.submit(all.map((x) => x.op));
    } catch {
      reusable = false;
      // Which op failed is all a batch says; retry each record alone to isolate it.
      for (const [i, p] of prepared.entries()) {
        if (!p.inRange) continue;
        try {
          await disk.submit(p.ops);
        } catch (e) {
          failed.set(i, (e as Error).message);
        }
      }
    }
    try {
      return this.#outcomes(d, disk, requests, prepared, failed);
    } finally {
      if (reusable) {
        for (const p of prepared) if (p.bounce !== null) this.#bounces.release(disk, p.bounce);
      }
    }
  }

  #outcomes(
    d: DeviceState,
    disk: Disk,
    requests: readonly ReadRequest[],
    prepared: readonly { header: Uint8Array; payload: Uint8Array; bounce: Uint8Array | null }[],
    failed: Map<number, string>,
  ): ReadOutcome[] {
    return requests.map((r, i): ReadOutcome => {
      const why = failed.get(i);
      if (why !== undefined) return { ok: false, fault: "io", detail: `${d.path}: ${why}` };
      const p = prepared[i]!;
      const header = decodeRecordHeader(p.header);
      const where = `${d.path} offset ${r.offsetBytes}`;
      if (header === null) {
        return { ok: false, fault: "header", detail: `${where}: no valid record header` };
      }
      if (
        !bytesEqual(header.chunkId, r.chunkId) || header.fragmentIndex !== r.fragmentIndex ||
        header.payloadBytes !== r.payloadBytes || header.device !== d.number
      ) {
        return { ok: false, fault: "mismatch", detail: `${where}: record of another fragment` };
      }
      if (p.bounce !== null && r.payloadBytes > 0) {
        const from = r.offsetBytes - alignDown(r.offsetBytes, disk.alignmentBytes) +
          RECORD_HEADER_BYTES;
        p.payload.set(p.bounce.subarray(from, from + r.payloadBytes));
      }
      const crc = crc32c(p.payload);
      if (crc !== header.payloadCrc || (r.payloadCrc !== undefined && crc !== r.payloadCrc)) {
        return { ok: false, fault: "checksum", detail: `${where}: payload CRC-32C mismatch` };
      }
      return { ok: true, payload: p.payload };
    });
  }

  // ---- compaction ------------------------------------------------------------------------

  /** Live records of `device` in [offsetBytes, offsetBytes + lengthBytes), at most `limit`. */
  extents(device: number, offsetBytes: number, lengthBytes: number, limit: number): Extent[] {
    const out: Extent[] = [];
    for (
      const { key, value } of this.#extentsTable.range({
        start: extentKey(device, offsetBytes),
        end: extentKey(device, offsetBytes + lengthBytes),
        limit,
      })
    ) out.push(decodeExtent(key, value));
    return out;
  }

  /** True when the extent table still says `location` holds that fragment. */
  holds(location: FragmentLocation, chunkId: Uint8Array, fragmentIndex: number): boolean {
    const value = this.#extentsTable.getSync(extentKey(location.device, location.offsetBytes));
    return value !== undefined && bytesEqual(value.subarray(0, 32), chunkId) &&
      value[32] === fragmentIndex;
  }

  /**
   * Segments whose records have all died, at most `limit`: sealed ones, and a head that
   * can restart empty. Freeing them moves no bytes.
   */
  emptySegments(limit: number): { device: number; segment: number }[] {
    const out: { device: number; segment: number }[] = [];
    for (const d of this.#devices.values()) {
      if (d.status !== "ok" || d.disk === null) continue;
      const span = spanOf(d);
      for (let i = 0; i < span && out.length < limit; i++) {
        const s = d.segments[i]!;
        const used = s.state === SEGMENT_SEALED || s.appendBytes > 0;
        if (s.state !== SEGMENT_FREE && s.liveRecords === 0 && used) {
          out.push({ device: d.number, segment: i });
        }
      }
    }
    return out;
  }

  /**
   * The sealed segment most worth compacting on a healthy device: the lowest share of live
   * bytes, either below SEGMENT_COMPACT_LIVE_PERCENT_MAX, or on a device whose sealed
   * segments (its open head included) hold more than one segment of dead bytes (so used
   * bytes follow live bytes within one segment per device) with at least
   * SEGMENT_COMPACT_DEAD_FRACTION_MIN of it dead, and more than twice the largest record,
   * so that a copy always frees more than it costs. Null when none qualifies.
   */
  compactionCandidate(): {
    device: number;
    segment: number;
    offsetBytes: number;
    lengthBytes: number;
    liveRecords: number;
  } | null {
    let best: {
      device: number;
      segment: number;
      offsetBytes: number;
      lengthBytes: number;
      liveRecords: number;
    } | null = null;
    let bestRatio = Infinity;
    for (const d of this.#devices.values()) {
      if (d.status !== "ok" || d.disk === null) continue;
      const span = spanOf(d);
      let deadBytes = 0;
      for (let i = 0; i < span; i++) {
        const s = d.segments[i]!;
        if (s.state === SEGMENT_SEALED) deadBytes += d.segmentSizeBytes - s.liveBytes;
        else if (s.state === SEGMENT_OPEN) deadBytes += s.appendBytes - s.liveBytes;
      }
      // Copying a segment forward can cost up to one record of slack when the head seals
      // on a record that does not fit: only segments with more dead bytes than twice that
      // are worth it (or the compaction would chase its own slack).
      const deadFractionMin = Math.max(
        SEGMENT_COMPACT_DEAD_FRACTION_MIN,
        (2 * this.#recordBytesMax) / d.segmentSizeBytes,
      );
      const ratioMax = Math.max(
        SEGMENT_COMPACT_LIVE_PERCENT_MAX / 100,
        deadBytes > d.segmentSizeBytes ? 1 - deadFractionMin : 0,
      );
      for (let i = 0; i < span; i++) {
        const s = d.segments[i]!;
        if (s.state !== SEGMENT_SEALED) continue;
        const ratio = s.liveBytes / d.segmentSizeBytes;
        if (ratio >= ratioMax || ratio >= bestRatio) continue;
        bestRatio = ratio;
        best = {
          device: d.number,
          segment: i,
          offsetBytes: segmentStart(d, i),
          lengthBytes: d.segmentSizeBytes,
          liveRecords: s.liveRecords,
        };
      }
    }
    return best;
  }

  /**
   * Frees a sealed segment with no live records (staged in `txn`); returns whether it did.
   * Its old records stay on the device until overwritten; nothing references them.
   */
  stageFreeIfEmpty(txn: KvTxn, device: number, segment: number): boolean {
    const d = this.#devices.get(device)!;
    const s = d.segments[segment]!;
    if (s.state === SEGMENT_FREE || s.liveRecords !== 0) return false;
    // Callers hold the batch lock, so no run is appending to an open head being freed.
    if (d.head === segment) d.head = -1;
    d.segments[segment] = { state: SEGMENT_FREE, appendBytes: 0, liveBytes: 0, liveRecords: 0 };
    d.usedCache = -1;
    txn.put(this.#segmentsTable, segmentKey(device, segment), encodeSegment(d.segments[segment]!));
    return true;
  }

  /**
   * Drops the in-memory segment state and reads it back from the index, after a commit of
   * the index failed: the batch that failed (and any that overlapped it) had already counted
   * its records in memory. Append heads come back from the segments table; live counts are
   * recounted from the extents, the records the index really holds, so nothing the failed
   * commit counted stays live. Records written to a device by the failed batch are past the
   * durable append head and are written over. Walks the whole extent table: for recovery.
   * `quiesce` runs first, inside the exclusive section (the caller waits out its commits).
   */
  resync(quiesce: () => Promise<void> = () => Promise.resolve()): Promise<void> {
    return this.#exclusive(async () => {
      await quiesce();
      for (const d of this.#devices.values()) {
        d.segments = [];
        d.head = -1;
        d.highWater = 0;
        d.usedCache = -1;
        d.freeWrittenCache = 0;
      }
      for (const { key, value } of this.#segmentsTable.range()) {
        const view = new DataView(key.buffer, key.byteOffset, 6);
        const device = this.#devices.get(view.getUint16(0));
        if (device === undefined) continue;
        const index = view.getUint32(2);
        const state = decodeSegment(value);
        state.liveBytes = 0;
        state.liveRecords = 0;
        ensureSegments(device, index + 1);
        device.segments[index] = state;
        device.highWater = Math.max(device.highWater, index + 1);
        if (state.state === SEGMENT_OPEN) device.head = index;
      }
      for (const d of this.#devices.values()) ensureSegments(d, segmentCountOf(d));
      for (const { key, value } of this.#extentsTable.range()) {
        const e = decodeExtent(key, value);
        const d = this.#devices.get(e.device);
        if (d === undefined) continue;
        const segment = segmentOf(d, e.offsetBytes);
        ensureSegments(d, segment + 1);
        const s = d.segments[segment]!;
        s.liveBytes += e.recordBytes;
        s.liveRecords++;
      }
    });
  }

  /**
   * Compares every segment's live counts with the extents recorded in it; returns one line
   * per disagreement (empty when consistent). Walks the whole extent table: for tests and
   * offline checks, not hot paths.
   */
  audit(): string[] {
    const counted = new Map<string, { bytes: number; records: number }>();
    for (const { key, value } of this.#extentsTable.range()) {
      const e = decodeExtent(key, value);
      const d = this.#devices.get(e.device);
      if (d === undefined) {
        counted.set(`unknown device ${e.device}`, { bytes: 0, records: 1 });
        continue;
      }
      const name = `${e.device}/${segmentOf(d, e.offsetBytes)}`;
      const c = counted.get(name) ?? { bytes: 0, records: 0 };
      c.bytes += e.recordBytes;
      c.records++;
      counted.set(name, c);
    }
    const problems: string[] = [];
    for (const d of this.#devices.values()) {
      d.segments.forEach((s, i) => {
        const name = `${d.number}/${i}`;
        const c = counted.get(name) ?? { bytes: 0, records: 0 };
        counted.delete(name);
        if (c.bytes !== s.liveBytes || c.records !== s.liveRecords) {
          problems.push(
            `segment ${name}: ${s.liveRecords} records / ${s.liveBytes} bytes counted live, ` +
              `${c.records} / ${c.bytes} in extents`,
          );
        }
        if (s.state === SEGMENT_FREE && c.records > 0) {
          problems.push(`segment ${name} is free but holds ${c.records} live records`);
        }
      });
    }
    for (const [name, c] of counted) {
      problems.push(`${name}: ${c.records} extents outside segments`);
    }
    return problems;
  }

  get env(): KvEnv {
    return this.#env;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#batchTail;
    this.#closed = true;
    await Promise.all([...this.#devices.values()].map(async (d) => {
      const disk = d.disk;
      d.disk = null;
      d.staging = null;
      if (disk !== null) await disk.close().catch(() => {});
    }));
  }
}

/** One batch of record writes; see SegmentStore.batch(). */
export class SegmentBatch {
  readonly #store: SegmentStore;
  readonly #runs: Run[] = [];
  readonly #openRun = new Map<number, Run>();
  readonly #stagingUsed = new Map<number, number>();
  readonly #dirty = new Map<string, [number, number]>();
  closed = false;

  constructor(store: SegmentStore) {
    this.#store = store;
  }

  /** Reserves a record for `chunkId`'s fragment on `device`; fill slot.payload next. */
  reserve(
    device: number,
    chunkId: Uint8Array,
    fragmentIndex: number,
    payloadBytes: number,
  ): ReserveResult {
    assert(!this.closed, "batch used after it ended");
    assert(chunkId.length === CHUNK_ID_LENGTH, "chunk id length");
    assert(
      Number.isInteger(fragmentIndex) && fragmentIndex >= 0 && fragmentIndex <= 255,
      "fragment index",
    );
    return this.#store.reserveIn(this, device, { chunkId, fragmentIndex, payloadBytes });
  }

  /** Writes every reserved, unflushed record: one submit and one sync per device. */
  flush(): Promise<Map<number, Error>> {
    assert(!this.closed, "batch used after it ended");
    const pending = this.#runs.filter((r) => !r.flushed);
    for (const run of pending) {
      if (this.#openRun.get(run.device.number) === run) this.#openRun.delete(run.device.number);
    }
    return this.#store.flushRuns(pending);
  }

  /** Stages the segment table rows this batch changed (append offsets, seals, opens). */
  stageSegments(txn: KvTxn): void {
    this.#store.stageSegments(txn, this.#dirty.values());
  }

  /** @internal */
  openRun(device: number): Run | null {
    return this.#openRun.get(device) ?? null;
  }

  /** @internal */
  addRun(run: Run): Run {
    this.#runs.push(run);
    this.#openRun.set(run.device.number, run);
    return run;
  }

  /** @internal Bytes of the device's staging buffer that runs of this batch occupy. */
  stagingUsed(device: number): number {
    let used = 0;
    for (const run of this.#runs) {
      if (run.device.number !== device || run.bufferOffset < 0) continue;
      used = Math.max(used, run.bufferOffset + run.usedBytes);
    }
    return used;
  }

  /** @internal */
  dirty(device: number, segment: number): void {
    this.#dirty.set(`${device}/${segment}`, [device, segment]);
  }
}

function segmentCountOf(d: { sizeBytes: number; segmentSizeBytes: number }): number {
  return Math.max(0, Math.floor((d.sizeBytes - LABEL_BYTES) / d.segmentSizeBytes));
}

/**
 * Segments that may be in use: those below the high-water mark (every segment above it has
 * never been opened, so it is free). Walks stop here, so their cost follows the space used,
 * not the size of a device file as large as its filesystem.
 */
function spanOf(d: DeviceState): number {
  return Math.min(segmentCountOf(d), d.highWater);
}

function segmentStart(d: DeviceState, segment: number): number {
  return LABEL_BYTES + segment * d.segmentSizeBytes;
}

function segmentOf(d: DeviceState, offsetBytes: number): number {
  return Math.floor((offsetBytes - LABEL_BYTES) / d.segmentSizeBytes);
}

function ensureSegments(d: DeviceState, count: number): void {
  while (d.segments.length < count) {
    d.segments.push({ state: SEGMENT_FREE, appendBytes: 0, liveBytes: 0, liveRecords: 0 });
  }
  d.usedCache = -1;
}

function usedBytesOf(d: DeviceState): number {
  if (d.usedCache >= 0) return d.usedCache;
  let used = 0;
  let freeWritten = 0;
  const span = spanOf(d);
  for (let i = 0; i < span; i++) {
    const s = d.segments[i]!;
    if (s.state !== SEGMENT_FREE) {
      used += s.state === SEGMENT_SEALED ? d.segmentSizeBytes : s.appendBytes;
    } else {
      freeWritten++;
    }
  }
  d.usedCache = used;
  d.freeWrittenCache = freeWritten;
  return used;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function randomBytes(length: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(length));
}

/** Bounce buffers kept per size class (powers of two from 16 KiB). */
const BOUNCE_CLASS_MIN_BYTES = 16 * 1024;
/** Largest bounce buffer kept for reuse; larger ones are allocated per read. */
const BOUNCE_CLASS_MAX_BYTES = 8 * 1024 * 1024;
/** Bytes of idle bounce buffers kept in all. */
const BOUNCE_POOL_BYTES_MAX = 64 * 1024 * 1024;

/**
 * Reuses the aligned buffers O_DIRECT reads land in: a fresh large buffer costs page faults
 * and a native call for its address, a reused one neither. Buffers are keyed by size class
 * and alignment; any disk of that alignment can use them.
 */
class BouncePool {
  readonly #free = new Map<string, Uint8Array[]>();
  #idleBytes = 0;

  acquire(disk: Disk, bytes: number): Uint8Array {
    const size = bounceClass(bytes);
    if (size === null) return disk.allocateAligned(1, bytes)[0]!;
    const key = `${disk.alignmentBytes}:${size}`;
    const reused = this.#free.get(key)?.pop();
    if (reused !== undefined) {
      this.#idleBytes -= reused.length;
      return reused.subarray(0, bytes);
    }
    return disk.allocateAligned(1, size)[0]!.subarray(0, bytes);
  }

  /** Gives back a buffer acquire() returned for `disk`, once no read uses it any more. */
  release(disk: Disk, buffer: Uint8Array): void {
    const size = bounceClass(buffer.length);
    if (size === null || this.#idleBytes + size > BOUNCE_POOL_BYTES_MAX) return;
    // The class-sized buffer behind the subarray handed out.
    const whole = new Uint8Array(buffer.buffer, buffer.byteOffset, size);
    const key = `${disk.alignmentBytes}:${size}`;
    let list = this.#free.get(key);
    if (list === undefined) this.#free.set(key, list = []);
    list.push(whole);
    this.#idleBytes += size;
  }
}

function bounceClass(bytes: number): number | null {
  if (bytes > BOUNCE_CLASS_MAX_BYTES) return null;
  let size = BOUNCE_CLASS_MIN_BYTES;
  while (size < bytes) size *= 2;
  return size;
}
