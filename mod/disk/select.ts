// Picks the Disk implementation for this process: UringDisk when the io_uring shim is built,
// loads and the kernel lets us use io_uring, else FileDisk. Says which one and why once per
// distinct outcome (including whether O_DIRECT held), so an operator can always tell how
// their devices are driven.

import { defaultShimOptions, type ShimOptions } from "../../ffi/loader.ts";
import { openUringShim, type UringShim } from "../../ffi/uring/bindings.ts";
import { gauge, log, type Logger } from "../obs/mod.ts";
import type { Disk } from "./device.ts";
import { FileDisk, type FileDiskOptions } from "./file_disk.ts";
import { probeUring, UringDisk, type UringDiskOptions, UringSetupError } from "./uring_disk.ts";

/** Distinct shim option sets remembered; a process normally has one. */
const SELECTIONS_CACHED_MAX = 8;
/** Distinct (implementation, reason) lines logged; beyond it repeats are not suppressed. */
const ANNOUNCEMENTS_MAX = 256;

export interface SelectDiskOptions extends UringDiskOptions, FileDiskOptions {
  path: string;
  /** Where the shim lives and whether FFI is allowed; defaults to the source checkout. */
  shim?: ShimOptions;
  logger?: Logger;
}

/** The mechanism chosen for a shim configuration: the loaded shim, or why not. */
export type DiskMechanism =
  | { kind: "io_uring"; shim: UringShim; reason: string }
  | { kind: "file"; reason: string };

const mechanisms = new Map<string, DiskMechanism>();
const announced = new Set<string>();

const implementationGauge = gauge<"impl">({
  name: "kiseki_disk_implementation",
  help: "1 for each disk I/O implementation in use (io_uring or file)",
  labelNames: ["impl"],
});

/** Loads and probes the shim once per shim options; never throws. */
export function chooseDiskMechanism(options: ShimOptions = defaultShimOptions()): DiskMechanism {
  const key = `${options.ffiMode}\u0000${options.ffiDir}`;
  const cached = mechanisms.get(key);
  if (cached !== undefined) return cached;
  const load = openUringShim(options);
  let mechanism: DiskMechanism;
  if (!load.ok) {
    mechanism = { kind: "file", reason: `io_uring shim not used: ${load.reason}` };
  } else {
    const unavailable = probeUring(load.lib);
    mechanism = unavailable === null
      ? { kind: "io_uring", shim: load.lib, reason: `shim loaded from ${load.path}` }
      : { kind: "file", reason: unavailable };
  }
  if (mechanisms.size >= SELECTIONS_CACHED_MAX) {
    mechanisms.delete(mechanisms.keys().next().value!);
  }
  mechanisms.set(key, mechanism);
  return mechanism;
}

/**
 * Opens the device at `options.path` with the best implementation available: UringDisk
 * (O_DIRECT when the file system allows) or FileDisk. Errors of the device itself (missing
 * directory, permissions, EBUSY) are thrown as DiskError, not hidden by a fallback.
 */
export async function selectDisk(options: SelectDiskOptions): Promise<Disk> {
  const logger = options.logger ?? log;
  const mechanism = chooseDiskMechanism(options.shim ?? defaultShimOptions());
  let disk: Disk;
  let why: string;
  let uringDisk: UringDisk | null = null;
  let setupFailed: string | null = null;
  if (mechanism.kind === "io_uring") {
    try {
      uringDisk = await UringDisk.open(mechanism.shim, options.path, options);
    } catch (e) {
      if (!(e instanceof UringSetupError)) throw e;
      setupFailed = `io_uring ring setup refused: ${e.message}`;
    }
  }
  if (uringDisk !== null) {
    disk = uringDisk;
    why = `${mechanism.reason}; ${disk.reason}`;
  } else if (setupFailed !== null) {
    disk = await FileDisk.open(options.path, options);
    why = `${setupFailed}; ${disk.reason}`;
  } else {
    disk = await FileDisk.open(options.path, options);
    why = `${mechanism.reason}; ${disk.reason}`;
  }
  const decision = `${disk.implementation}\u0000${why}`;
  if (!announced.has(decision)) {
    if (announced.size < ANNOUNCEMENTS_MAX) announced.add(decision);
    logger.info("disk implementation selected", {
      impl: disk.implementation,
      direct: disk.direct,
      reason: why,
      path: disk.path,
    });
    implementationGauge.set({ impl: disk.implementation }, 1);
  }
  return disk;
}
