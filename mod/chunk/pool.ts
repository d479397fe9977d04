// Pools: named sets of data devices with one durability rule (EC k+m or N copies) and a
// capacity threshold. Parses the pool specification (KISEKI_POOLS) and supplies the
// default for a node with no configuration. Pure apart from loadPoolSpecs() reading a file
// and asking the filesystem its size (for "auto" device sizes).
//
// KISEKI_POOLS is JSON, inline or in a file (`@/etc/kiseki/pools.json`, or any value not
// starting with `[` or `{`):
//
//   [{"name": "fast-nvme", "durability": "ec:4+2", "deviceSize": "64GiB",
//     "devices": ["/dev/nvme0n1", "/dev/nvme1n1", ...]},
//    {"name": "bulk-ssd", "devices": 3, "deviceSize": "8GiB", "fullPercent": 85},
//    {"name": "cold-hdd", "durability": "copies:2", "segmentSize": "128MiB",
//     "devices": [{"path": "/srv/hdd0.dev", "id": "hdd0", "node": "n1", "weight": 2}]}]
//
// A single object is taken as a one-pool list. `devices` is a count (that many sparse files
// `$KISEKI_DATA_DIR/chunks/devices/<pool>-<i>.dev`) or a list of paths or objects.
//
// `"deviceSize": "auto"` (the default pool's) makes each device file as large as the
// filesystem it lives on: the files are sparse, so the pool grows with the filesystem, and a
// segment never written before is opened only while the filesystem keeps `reserve` bytes
// free (default POOL_RESERVE_PERCENT_DEFAULT of it, within the MIN/MAX bounds).

import { assert } from "../base/mod.ts";
import { statFilesystem } from "./space.ts";

export const POOLS_ENV = "KISEKI_POOLS";
export const POOL_NAME_DEFAULT = "default";
/** Names the documentation uses; any name matching POOL_NAME_PATTERN is accepted. */
export const POOL_NAMES_KNOWN: readonly string[] = Object.freeze([
  "fast-nvme",
  "bulk-ssd",
  "cold-hdd",
  POOL_NAME_DEFAULT,
]);
export const POOL_NAME_PATTERN = /^[a-z][a-z0-9-]{0,31}$/;
export const POOLS_MAX = 16;
export const POOL_DEVICES_MAX = 1024;
/** Device files the default pool gets: six, so one node starts with EC 4+2. */
export const POOL_DEVICES_DEFAULT = 6;
/** Size of a device file when none is given and the filesystem cannot be asked. */
export const POOL_DEVICE_SIZE_BYTES_DEFAULT = 4 * 1024 ** 3;
/**
 * Largest "auto" device file: bounds the per-segment state a store keeps in memory (64 Ki
 * segments of 64 MiB per device).
 */
export const POOL_DEVICE_SIZE_BYTES_AUTO_MAX = 4 * 1024 ** 4;
/** Share of the filesystem an "auto" pool leaves free for everything else on it. */
export const POOL_RESERVE_PERCENT_DEFAULT = 5;
export const POOL_RESERVE_BYTES_MIN = 1024 ** 3;
export const POOL_RESERVE_BYTES_MAX = 64 * 1024 ** 3;
/** New chunks are refused on a device above this fill level; the rest is room to repair. */
export const POOL_FULL_PERCENT_DEFAULT = 90;
export const POOL_SEGMENT_SIZE_BYTES_DEFAULT = 64 << 20;
export const POOL_SEGMENT_SIZE_BYTES_MIN = 64 << 10;
/** Device sizes, segment sizes and device offsets are multiples of this (O_DIRECT). */
export const POOL_ALIGNMENT_BYTES = 4096;
/** Widest EC stripe and most copies a pool may ask for. */
export const POOL_EC_FRAGMENTS_MAX = 32;
export const POOL_COPIES_MAX = 8;
/** Longest KISEKI_POOLS text (inline or file). */
export const POOL_SPEC_BYTES_MAX = 1 << 20;

export type Durability =
  | { kind: "ec"; k: number; m: number }
  | { kind: "copies"; copies: number };

export interface DeviceSpec {
  /** Stable identity used by placement (default `<pool>-<i>` or the path). */
  id: string;
  path: string;
  /** Node the device is attached to. */
  node: string;
  sizeBytes: number;
  /** Placement weight; default the size in GiB. */
  weight: number;
}

export interface PoolSpec {
  name: string;
  devices: DeviceSpec[];
  durability: Durability;
  /** "default" when the durability came from defaultDurability(). */
  durabilitySource: "configured" | "default";
  fullPercent: number;
  segmentSizeBytes: number;
  /**
   * Set for "auto" device sizes: the device files are sparse and as large as their
   * filesystem, which must keep `reserveBytes` free (checked at `path`).
   */
  growth: { path: string; reserveBytes: number } | null;
}

export interface PoolContext {
  /** $KISEKI_DATA_DIR: generated device files live under `<dataDir>/chunks/devices/`. */
  dataDir: string;
  /** This node's name for devices that do not give one (default "local"). */
  nodeId?: string;
  /** Nodes in the cluster; picks the default durability (default 1). */
  nodes?: number;
  /**
   * Size of the filesystem holding `path` (statfs), or null when it cannot be asked; sizes
   * "auto" devices. Without it they get POOL_DEVICE_SIZE_BYTES_DEFAULT.
   */
  filesystemBytes?: (path: string) => number | null;
}

export class PoolSpecError extends Error {
  override name = "PoolSpecError";
}

/** Fragments a chunk has under `durability`: k+m, or the copy count. */
export function fragmentCount(durability: Durability): number {
  return durability.kind === "ec" ? durability.k + durability.m : durability.copies;
}

/** Fragments any of which can be lost without losing the chunk. */
export function toleratedLosses(durability: Durability): number {
  return durability.kind === "ec" ? durability.m : durability.copies - 1;
}

export function formatDurability(durability: Durability): string {
  return durability.kind === "ec"
    ? `ec:${durability.k}+${durability.m}`
    : `copies:${durability.copies}`;
}

/** Parses `ec:K+M` or `copies:N`; throws PoolSpecError. */
export function parseDurability(text: string): Durability {
  const ec = /^ec:(\d{1,3})\+(\d{1,3})$/.exec(text);
  if (ec !== null) {
    const k = Number(ec[1]);
    const m = Number(ec[2]);
    if (k < 1 || m < 1 || k + m > POOL_EC_FRAGMENTS_MAX) {
      throw new PoolSpecError(
        `durability ${
          JSON.stringify(text)
        }: need k >= 1, m >= 1, k + m <= ${POOL_EC_FRAGMENTS_MAX}`,
      );
    }
    return { kind: "ec", k, m };
  }
  const copies = /^copies:(\d{1,2})$/.exec(text);
  if (copies !== null) {
    const n = Number(copies[1]);
    if (n < 1 || n > POOL_COPIES_MAX) {
      throw new PoolSpecError(
        `durability ${JSON.stringify(text)}: copies must be 1..${POOL_COPIES_MAX}`,
      );
    }
    return { kind: "copies", copies: n };
  }
  throw new PoolSpecError(
    `durability ${JSON.stringify(text)} is not "ec:K+M" (e.g. "ec:4+2") or "copies:N"`,
  );
}

/**
 * The durability a pool gets when its spec names none (DESIGN.md, "Durability defaults by
 * cluster size"): 6+ nodes EC 4+2, 3-5 nodes 3 copies, 2 nodes 2 copies, the fragments on
 * distinct nodes whatever each node's device count; one node EC 4+2 across its own devices
 * when the pool has at least 6, else 2 copies (1 with one device).
 */
export function defaultDurability(devices: number, nodes = 1): Durability {
  assert(Number.isInteger(devices) && devices >= 1, "a pool has at least one device");
  assert(Number.isInteger(nodes) && nodes >= 1, "a cluster has at least one node");
  if (nodes >= 6) return { kind: "ec", k: 4, m: 2 };
  if (nodes >= 3) return { kind: "copies", copies: 3 };
  if (nodes === 2) return { kind: "copies", copies: 2 };
  if (devices >= 6) return { kind: "ec", k: 4, m: 2 };
  return { kind: "copies", copies: Math.min(devices, 2) };
}

/**
 * The pool a node runs with no KISEKI_POOLS: POOL_DEVICES_DEFAULT sparse files in the data
 * dir, each as large as its filesystem ("auto"), so the pool grows with the filesystem.
 */
export function defaultPoolSpecs(context: PoolContext): PoolSpec[] {
  return parsePoolSpecs(
    JSON.stringify([{
      name: POOL_NAME_DEFAULT,
      devices: POOL_DEVICES_DEFAULT,
      deviceSize: "auto",
    }]),
    context,
  );
}

/**
 * The pools for KISEKI_POOLS `value`: the default pool when unset or empty, inline JSON when
 * it starts with `[` or `{`, otherwise the path of a JSON file (a leading `@` is dropped).
 */
export async function loadPoolSpecs(
  value: string | undefined,
  context: PoolContext,
  readTextFile: (path: string) => Promise<string> = (path) => Deno.readTextFile(path),
): Promise<PoolSpec[]> {
  context = {
    ...context,
    filesystemBytes: context.filesystemBytes ??
      ((path) => statFilesystem(path)?.totalBytes ?? null),
  };
  const trimmed = value?.trim() ?? "";
  if (trimmed === "") return defaultPoolSpecs(context);
  if (trimmed.startsWith("[") || trimmed.startsWith("{")) return parsePoolSpecs(trimmed, context);
  const path = trimmed.startsWith("@") ? trimmed.slice(1) : trimmed;
  let text: string;
  try {
    text = await readTextFile(path);
  } catch (e) {
    throw new PoolSpecError(`${POOLS_ENV}: cannot read ${path}: ${(e as Error).message}`);
  }
  return parsePoolSpecs(text, context);
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Parses and validates a pool specification; every error names the field at fault. */
export function parsePoolSpecs(text: string, context: PoolContext): PoolSpec[] {
  if (text.length > POOL_SPEC_BYTES_MAX) {
    throw new PoolSpecError(`${POOLS_ENV}: longer than ${POOL_SPEC_BYTES_MAX} bytes`);
  }
  let parsed: Json;
  try {
    parsed = JSON.parse(text) as Json;
  } catch (e) {
    throw new PoolSpecError(`${POOLS_ENV}: not valid JSON: ${(e as Error).message}`);
  }
  const list = Array.isArray(parsed) ? parsed : [parsed];
  if (list.length === 0 || list.length > POOLS_MAX) {
    throw new PoolSpecError(`${POOLS_ENV}: give 1..${POOLS_MAX} pools, got ${list.length}`);
  }
  const pools = list.map((item, i) => parsePool(item, `${POOLS_ENV}[${i}]`, context));
  const names = new Set<string>();
  const paths = new Map<string, string>();
  for (const pool of pools) {
    if (names.has(pool.name)) {
      throw new PoolSpecError(`${POOLS_ENV}: pool name ${JSON.stringify(pool.name)} is repeated`);
    }
    names.add(pool.name);
    for (const device of pool.devices) {
      const other = paths.get(device.path);
      if (other !== undefined) {
        throw new PoolSpecError(
          `${POOLS_ENV}: device ${device.path} is listed in pool ${other} and ${pool.name}`,
        );
      }
      paths.set(device.path, pool.name);
    }
  }
  return pools;
}

const POOL_FIELDS = new Set([
  "name",
  "devices",
  "durability",
  "deviceSize",
  "fullPercent",
  "segmentSize",
  "reserve",
]);
const DEVICE_FIELDS = new Set(["path", "id", "node", "weight", "size"]);

function parsePool(item: Json, where: string, context: PoolContext): PoolSpec {
  if (typeof item !== "object" || item === null || Array.isArray(item)) {
    throw new PoolSpecError(`${where}: a pool is an object with "name" and "devices"`);
  }
  for (const key of Object.keys(item)) {
    if (!POOL_FIELDS.has(key)) {
      throw new PoolSpecError(
        `${where}: unknown field ${JSON.stringify(key)} (known: ${[...POOL_FIELDS].join(", ")})`,
      );
    }
  }
  const name = item.name ?? POOL_NAME_DEFAULT;
  if (typeof name !== "string" || !POOL_NAME_PATTERN.test(name)) {
    throw new PoolSpecError(
      `${where}.name: ${JSON.stringify(name)} must match ${POOL_NAME_PATTERN} ` +
        `(e.g. ${POOL_NAMES_KNOWN.join(", ")})`,
    );
  }
  const at = `${where} (${name})`;
  const segmentSizeBytes = item.segmentSize === undefined
    ? POOL_SEGMENT_SIZE_BYTES_DEFAULT
    : byteSize(item.segmentSize, `${at}.segmentSize`);
  const auto = item.deviceSize === "auto";
  const deviceDir = `${context.dataDir.replace(/\/+$/, "")}/chunks/devices`;
  let deviceSize = POOL_DEVICE_SIZE_BYTES_DEFAULT;
  let growth: PoolSpec["growth"] = null;
  if (auto) {
    if (Array.isArray(item.devices)) {
      throw new PoolSpecError(
        `${at}.deviceSize: "auto" is for device files the pool creates (a device count)`,
      );
    }
    const fsBytes = context.filesystemBytes?.(deviceDir) ?? null;
    const reserveBytes = item.reserve === undefined
      ? reserveFor(fsBytes)
      : byteSize(item.reserve, `${at}.reserve`);
    if (fsBytes !== null) {
      const fitted = Math.floor(
            Math.min(fsBytes, POOL_DEVICE_SIZE_BYTES_AUTO_MAX) /
              segmentSizeBytes,
          ) * segmentSizeBytes + POOL_ALIGNMENT_BYTES;
      deviceSize = Math.max(fitted, 2 * segmentSizeBytes + POOL_ALIGNMENT_BYTES);
    }
    growth = { path: deviceDir, reserveBytes };
  } else {
    if (item.reserve !== undefined) {
      throw new PoolSpecError(`${at}.reserve: only for "deviceSize": "auto" pools`);
    }
    if (item.deviceSize !== undefined) deviceSize = byteSize(item.deviceSize, `${at}.deviceSize`);
  }
  if (segmentSizeBytes < POOL_SEGMENT_SIZE_BYTES_MIN) {
    throw new PoolSpecError(
      `${at}.segmentSize: ${segmentSizeBytes} bytes is below ${POOL_SEGMENT_SIZE_BYTES_MIN}`,
    );
  }
  const fullPercent = item.fullPercent ?? POOL_FULL_PERCENT_DEFAULT;
  if (typeof fullPercent !== "number" || !(fullPercent > 0 && fullPercent <= 100)) {
    throw new PoolSpecError(`${at}.fullPercent: ${String(fullPercent)} must be in (0, 100]`);
  }
  const nodeDefault = context.nodeId ?? "local";
  const devices = parseDevices(item.devices, at, name, deviceSize, nodeDefault, context);
  const ids = new Set<string>();
  for (const d of devices) {
    if (ids.has(d.id)) throw new PoolSpecError(`${at}.devices: id ${d.id} is repeated`);
    ids.add(d.id);
    if (d.sizeBytes < 2 * segmentSizeBytes + POOL_ALIGNMENT_BYTES) {
      throw new PoolSpecError(
        `${at}: device ${d.path} of ${d.sizeBytes} bytes cannot hold two ` +
          `${segmentSizeBytes}-byte segments`,
      );
    }
  }
  let durability: Durability;
  let durabilitySource: PoolSpec["durabilitySource"];
  if (item.durability === undefined) {
    durability = defaultDurability(devices.length, context.nodes ?? 1);
    durabilitySource = "default";
  } else {
    if (typeof item.durability !== "string") {
      throw new PoolSpecError(`${at}.durability: a string like "ec:4+2" or "copies:3"`);
    }
    try {
      durability = parseDurability(item.durability);
    } catch (e) {
      throw new PoolSpecError(`${at}.durability: ${(e as Error).message}`);
    }
    durabilitySource = "configured";
  }
  const needed = fragmentCount(durability);
  // A cluster places fragments on distinct nodes' devices: only a lone node needs them all.
  if ((context.nodes ?? 1) <= 1 && needed > devices.length) {
    throw new PoolSpecError(
      `${at}: ${formatDurability(durability)} puts ${needed} fragments on distinct devices; ` +
        `the pool has ${devices.length}`,
    );
  }
  return { name, devices, durability, durabilitySource, fullPercent, segmentSizeBytes, growth };
}

/** The reserve an "auto" pool keeps free on a filesystem of `fsBytes` (unknown: the minimum). */
function reserveFor(fsBytes: number | null): number {
  if (fsBytes === null) return POOL_RESERVE_BYTES_MIN;
  const share = Math.floor((fsBytes * POOL_RESERVE_PERCENT_DEFAULT) / 100);
  const bounded = Math.min(POOL_RESERVE_BYTES_MAX, Math.max(POOL_RESERVE_BYTES_MIN, share));
  return Math.floor(bounded / POOL_ALIGNMENT_BYTES) * POOL_ALIGNMENT_BYTES;
}

function parseDevices(
  value: Json | undefined,
  at: string,
  pool: string,
  deviceSize: number,
  nodeDefault: string,
  context: PoolContext,
): DeviceSpec[] {
  const weightOf = (size: number) => size / 1024 ** 3;
  if (value === undefined || typeof value === "number") {
    const count = value ?? POOL_DEVICES_DEFAULT;
    if (!Number.isInteger(count) || count < 1 || count > POOL_DEVICES_MAX) {
      throw new PoolSpecError(`${at}.devices: count ${count} must be 1..${POOL_DEVICES_MAX}`);
    }
    const dir = `${context.dataDir.replace(/\/+$/, "")}/chunks/devices`;
    return Array.from({ length: count }, (_, i) => ({
      id: `${pool}-${i}`,
      path: `${dir}/${pool}-${i}.dev`,
      node: nodeDefault,
      sizeBytes: deviceSize,
      weight: weightOf(deviceSize),
    }));
  }
  if (!Array.isArray(value) || value.length === 0 || value.length > POOL_DEVICES_MAX) {
    throw new PoolSpecError(
      `${at}.devices: a count or a list of 1..${POOL_DEVICES_MAX} paths or device objects`,
    );
  }
  return value.map((entry, i) => {
    const where = `${at}.devices[${i}]`;
    const object: Json = typeof entry === "string" ? { path: entry } : entry;
    if (typeof object !== "object" || object === null || Array.isArray(object)) {
      throw new PoolSpecError(`${where}: a path or an object with "path"`);
    }
    for (const key of Object.keys(object)) {
      if (!DEVICE_FIELDS.has(key)) {
        throw new PoolSpecError(`${where}: unknown field ${JSON.stringify(key)}`);
      }
    }
    const path = object.path;
    if (typeof path !== "string" || !path.startsWith("/") || path.includes("\0")) {
      throw new PoolSpecError(`${where}.path: ${JSON.stringify(path)} is not an absolute path`);
    }
    const id = object.id ?? path;
    if (typeof id !== "string" || id.length === 0 || id.length > 128) {
      throw new PoolSpecError(`${where}.id: a string of 1..128 characters`);
    }
    const node = object.node ?? nodeDefault;
    if (typeof node !== "string" || node.length === 0 || node.length > 64) {
      throw new PoolSpecError(`${where}.node: a string of 1..64 characters`);
    }
    const sizeBytes = object.size === undefined
      ? deviceSize
      : byteSize(object.size, `${where}.size`);
    const weight = object.weight ?? weightOf(sizeBytes);
    if (typeof weight !== "number" || !(weight > 0) || !Number.isFinite(weight)) {
      throw new PoolSpecError(`${where}.weight: ${String(weight)} must be a number > 0`);
    }
    return { id, path, node, sizeBytes, weight };
  });
}

/** A byte count: a number, or a string like "64MiB", "4GiB", "4096"; a multiple of 4 KiB. */
function byteSize(value: Json, where: string): number {
  let bytes: number;
  if (typeof value === "number") {
    bytes = value;
  } else if (typeof value === "string") {
    const m = /^\s*(\d+)\s*([KMGTP]?)(i?B?)\s*$/i.exec(value);
    if (m === null) {
      throw new PoolSpecError(`${where}: ${JSON.stringify(value)} is not a size like "64MiB"`);
    }
    const exponent = m[2] === "" ? 0 : "KMGTP".indexOf(m[2]!.toUpperCase()) + 1;
    bytes = Number(m[1]) * 1024 ** exponent;
  } else {
    throw new PoolSpecError(`${where}: a number of bytes or a string like "64MiB"`);
  }
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % POOL_ALIGNMENT_BYTES !== 0) {
    throw new PoolSpecError(
      `${where}: ${bytes} bytes must be a positive multiple of ${POOL_ALIGNMENT_BYTES}`,
    );
  }
  return bytes;
}
