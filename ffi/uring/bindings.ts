// Symbol table of the disk I/O shim (ffi/uring/kiseki_uring.c), its constants and descriptor
// layout, and the one way to open it. Signatures here and in the C file change together,
// with KISEKI_URING_ABI_VERSION bumped.

import { openShim, type ShimLoad, type ShimOptions } from "../loader.ts";

/** Must equal KISEKI_URING_ABI_VERSION in kiseki_uring.c; a stale build is refused. */
export const URING_SHIM_ABI_VERSION = 3;

/** u64 words per op in a submit descriptor, and the word of each field. */
export const URING_OP_WORDS = 4;
export const URING_OP_KIND = 0;
export const URING_OP_OFFSET = 1;
export const URING_OP_ADDRESS = 2;
export const URING_OP_LENGTH = 3;
export const URING_READ = 0;
export const URING_WRITE = 1;

/** Mirrors KISEKI_URING_BATCH_OPS_MAX: the C side refuses larger batches. */
export const URING_SHIM_BATCH_OPS_MAX = 1024;
/** Mirrors KISEKI_URING_DEPTH_MAX: ring entries. */
export const URING_SHIM_DEPTH_MAX = 4096;

/** kiseki_uring_open() flags. */
export const URING_WANT_DIRECT = 1;

/** int32 slots of kiseki_uring_open()'s info array. */
export const URING_INFO_ERRNO = 0;
export const URING_INFO_DIRECT = 1;
export const URING_INFO_DIRECT_ERRNO = 2;
export const URING_INFO_STAGE = 3;
export const URING_INFO_SLOTS = 4;

/** KISEKI_URING_STAGE_QUEUE_INIT: the kernel refused the ring itself. */
export const URING_STAGE_QUEUE_INIT = 2;

/** Where open failed or O_DIRECT was ruled out (KISEKI_URING_STAGE_*). */
export const URING_STAGE_TEXT: Record<number, string> = {
  0: "",
  1: "open(2)",
  2: "io_uring_queue_init",
  3: "O_DIRECT test read",
  4: "O_DIRECT test write",
  5: "test buffer allocation",
};

/** A batch's status in kiseki_uring_run(): 0, -errno for a refused batch, or one of these. */
export const URING_EBROKEN = -1000;
export const URING_EWEDGED = -1001;
/** kiseki_uring_run(): the sync of an entry whose batch left its ring unusable was not run. */
export const URING_ENOTRUN = -1002;

/** kiseki_uring_run() plan: uint64 words per entry (one ring each), and their slots. */
export const URING_PLAN_WORDS = 5;
export const URING_PLAN_RING = 0;
export const URING_PLAN_DESC = 1;
export const URING_PLAN_COUNT = 2;
export const URING_PLAN_RESULTS = 3;
export const URING_PLAN_FLAGS = 4;
/** Plan flag: fdatasync the ring's file after its ops. */
export const URING_PLAN_SYNC = 1;
/** Rings one kiseki_uring_run() call may drive. */
export const URING_SHIM_PLAN_ENTRIES_MAX = 256;

export const URING_SYMBOLS = {
  kiseki_uring_abi_version: { parameters: [], result: "i32" },
  kiseki_uring_address_of: { parameters: ["buffer"], result: "u64" },
  kiseki_uring_depth_max: { parameters: [], result: "i32" },
  kiseki_uring_batch_ops_max: { parameters: [], result: "i32" },
  kiseki_uring_plan_entries_max: { parameters: [], result: "i32" },
  /** (ring) -> its address, for kiseki_uring_run() plans. */
  kiseki_uring_ring_address: { parameters: ["pointer"], result: "u64" },
  /** () -> 0 or -errno: can this process use io_uring with READ, WRITE and FSYNC? */
  kiseki_uring_probe: { parameters: [], result: "i32" },
  /** (path\0, flags, depth, info[4]) -> ring or null; does a test read and write: nonblocking. */
  kiseki_uring_open: {
    parameters: ["buffer", "u32", "u32", "buffer"],
    result: "pointer",
    nonblocking: true,
  },
  /**
   * (plan, entries, status[2 * entries]) -> 0 | -EINVAL | -ENOMEM: the batches (and syncs)
   * of several rings in one call, all rings working at once. status per entry: the batch's
   * (0 | -EINVAL | EBROKEN | EWEDGED; results per op hold bytes or -errno), then the
   * fdatasync's (0 | -errno | EBROKEN | ENOTRUN).
   */
  kiseki_uring_run: {
    parameters: ["buffer", "u32", "buffer"],
    result: "i32",
    nonblocking: true,
  },
  /** (ring) -> 0 or -errno from close(2); frees the ring. */
  kiseki_uring_close: { parameters: ["pointer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

export type UringShimSymbols = typeof URING_SYMBOLS;
export type UringShim = Deno.DynamicLibrary<UringShimSymbols>;
/** A native ring and its file descriptor (struct kiseki_ring *). */
export type UringRing = Deno.PointerObject;

/** Opens libkiseki_uring.so and checks its ABI version and limits; never throws. */
export function openUringShim(options: ShimOptions): ShimLoad<UringShimSymbols> {
  const load = openShim("uring", URING_SYMBOLS, options);
  if (!load.ok) return load;
  const s = load.lib.symbols;
  const version = s.kiseki_uring_abi_version();
  let mismatch: string | null = null;
  if (version !== URING_SHIM_ABI_VERSION) {
    mismatch = `shim ABI ${version} at ${load.path}, expected ${URING_SHIM_ABI_VERSION}`;
  } else if (
    s.kiseki_uring_batch_ops_max() !== URING_SHIM_BATCH_OPS_MAX ||
    s.kiseki_uring_depth_max() !== URING_SHIM_DEPTH_MAX ||
    s.kiseki_uring_plan_entries_max() !== URING_SHIM_PLAN_ENTRIES_MAX
  ) {
    mismatch = `shim limits at ${load.path} differ from bindings.ts`;
  }
  if (mismatch !== null) {
    load.lib.close();
    return { ok: false, reason: `${mismatch} (rebuild ffi)`, path: load.path };
  }
  return load;
}
