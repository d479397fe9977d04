// Room left on the filesystem that holds a pool's sparse device files. A pool that grows with
// its filesystem (deviceSize "auto") has device files as large as the filesystem itself and
// costs blocks only where segments were ever written; before it writes a segment that was
// never written, it asks here whether the filesystem still has that much room above the
// reserve kept for everything else (the Raft log, the views, the index, the system).

import { statfsSync } from "node:fs";
import { assert } from "../base/mod.ts";

/** How long one statfs(2) answer is trusted; writes in between are subtracted from it. */
export const SPACE_PROBE_INTERVAL_MS = 1_000;

export interface FilesystemStat {
  totalBytes: number;
  /** Bytes an unprivileged writer can still allocate (statfs f_bavail). */
  availableBytes: number;
}

/** The segment store's view of filesystem room (FilesystemSpace, or a test's own). */
export interface SpaceGuard {
  readonly reserveBytes: number;
  /** Bytes that may still be allocated without eating into the reserve (0 when none). */
  headroomBytes(): number;
  /** Notes `bytes` about to be allocated (until the next probe sees them). */
  noteAllocated(bytes: number): void;
}

/**
 * statfs(2) of the filesystem holding `path`, or of its nearest existing ancestor (device
 * files and their directory may not exist yet). Null when it cannot be asked (no
 * permission), so callers fall back to fixed sizes.
 */
export function statFilesystem(path: string): FilesystemStat | null {
  let at = path;
  for (;;) {
    try {
      const s = statfsSync(at);
      return { totalBytes: s.blocks * s.bsize, availableBytes: s.bavail * s.bsize };
    } catch (e) {
      const code = (e as { code?: string }).code;
      if ((code !== "ENOENT" && !(e instanceof Deno.errors.NotFound)) || at === "/") return null;
      at = at.replace(/\/+[^/]*\/*$/, "") || "/";
    }
  }
}

/** A SpaceGuard over statfs(2), probed at most every SPACE_PROBE_INTERVAL_MS. */
export class FilesystemSpace implements SpaceGuard {
  readonly path: string;
  readonly reserveBytes: number;
  readonly #probe: (path: string) => FilesystemStat | null;
  readonly #now: () => number;
  #probedAt = -Infinity;
  #available = Infinity;
  #allocatedSince = 0;

  constructor(options: {
    path: string;
    reserveBytes: number;
    probe?: (path: string) => FilesystemStat | null;
    now?: () => number;
  }) {
    assert(options.reserveBytes >= 0, "reserve is not negative");
    this.path = options.path;
    this.reserveBytes = options.reserveBytes;
    this.#probe = options.probe ?? statFilesystem;
    this.#now = options.now ?? (() => performance.now());
  }

  headroomBytes(): number {
    const now = this.#now();
    if (now - this.#probedAt >= SPACE_PROBE_INTERVAL_MS) {
      // A filesystem that cannot be asked is not guarded (fixed-size pools never are).
      this.#available = this.#probe(this.path)?.availableBytes ?? Infinity;
      this.#probedAt = now;
      this.#allocatedSince = 0;
    }
    return Math.max(0, this.#available - this.#allocatedSince - this.reserveBytes);
  }

  noteAllocated(bytes: number): void {
    this.#allocatedSince += bytes;
  }
}
