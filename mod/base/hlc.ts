// Hybrid logical clock (Kulkarni et al. 2014): physical milliseconds plus a logical counter,
// so timestamps are monotonic on a node, respect causality across nodes, and stay close to
// wall time. Time comes through the Clock port; pure code never reads the system clock.
// SystemClock, the one adapter, lives here too because it is a single line and every layer
// needs it; only roles and adapters construct it.

import { assert } from "./assert.ts";

/** The Clock port: wall time in milliseconds since the Unix epoch. */
export interface Clock {
  nowMs(): number;
}

/** Wall time from the operating system. */
export class SystemClock implements Clock {
  nowMs(): number {
    return Date.now();
  }
}

/** A clock that moves only when told to (tests and simulations); may be set backwards. */
export class ManualClock implements Clock {
  #nowMs: number;

  constructor(startMs = 0) {
    assert(Number.isSafeInteger(startMs) && startMs >= 0, "ManualClock start must be >= 0");
    this.#nowMs = startMs;
  }

  nowMs(): number {
    return this.#nowMs;
  }

  set(ms: number): void {
    assert(Number.isSafeInteger(ms) && ms >= 0, "ManualClock time must be >= 0");
    this.#nowMs = ms;
  }

  advance(deltaMs: number): void {
    this.set(this.#nowMs + deltaMs);
  }
}

export interface HlcTimestamp {
  /** Milliseconds since the Unix epoch (48 bits: good until the year 10889). */
  physicalMs: number;
  /** Orders events within one millisecond (16 bits). */
  logical: number;
}

export const HLC_LOGICAL_BITS = 16;
export const HLC_LOGICAL_MAX = 0xffff;
export const HLC_PHYSICAL_MS_MAX = 2 ** 48 - 1;
export const HLC_PACKED_BYTES = 8;
/** How far ahead of our wall clock a remote timestamp may be before we refuse it. */
export const HLC_DRIFT_MS_MAX_DEFAULT = 500;

export const HLC_ZERO: HlcTimestamp = Object.freeze({ physicalMs: 0, logical: 0 });

/** A timestamp from outside that is malformed. */
export class HlcError extends Error {
  override name = "HlcError";
}

/** A remote timestamp too far in the future: its sender's clock (or ours) is wrong. */
export class HlcDriftError extends HlcError {
  override name = "HlcDriftError";
  readonly remote: HlcTimestamp;
  readonly localMs: number;
  readonly driftMsMax: number;

  constructor(remote: HlcTimestamp, localMs: number, driftMsMax: number) {
    super(
      `remote HLC timestamp ${formatHlc(remote)} is ${
        remote.physicalMs - localMs
      } ms ahead of the local clock (limit ${driftMsMax} ms)`,
    );
    this.remote = remote;
    this.localMs = localMs;
    this.driftMsMax = driftMsMax;
  }
}

export function isHlcTimestamp(value: HlcTimestamp): boolean {
  return Number.isSafeInteger(value.physicalMs) && value.physicalMs >= 0 &&
    value.physicalMs <= HLC_PHYSICAL_MS_MAX && Number.isInteger(value.logical) &&
    value.logical >= 0 && value.logical <= HLC_LOGICAL_MAX;
}

/** Negative, zero or positive as `a` is before, equal to or after `b`. */
export function compareHlc(a: HlcTimestamp, b: HlcTimestamp): number {
  return a.physicalMs !== b.physicalMs ? a.physicalMs - b.physicalMs : a.logical - b.logical;
}

/** The 64-bit packing: physical in the high 48 bits, logical in the low 16; orders like compareHlc. */
export function packHlc(ts: HlcTimestamp): bigint {
  assert(isHlcTimestamp(ts), "packHlc: timestamp out of range");
  return (BigInt(ts.physicalMs) << 16n) | BigInt(ts.logical);
}

export function unpackHlc(packed: bigint): HlcTimestamp {
  assert(packed >= 0n && packed < 1n << 64n, "unpackHlc: not an unsigned 64-bit value");
  return { physicalMs: Number(packed >> 16n), logical: Number(packed & 0xffffn) };
}

/** Writes the packed form big-endian (so byte order sorts like time). */
export function writeHlc(view: DataView, offset: number, ts: HlcTimestamp): void {
  assert(isHlcTimestamp(ts), "writeHlc: timestamp out of range");
  view.setUint32(offset, Math.floor(ts.physicalMs / 0x10000));
  view.setUint16(offset + 4, ts.physicalMs % 0x10000);
  view.setUint16(offset + 6, ts.logical);
}

export function readHlc(view: DataView, offset: number): HlcTimestamp {
  return {
    physicalMs: view.getUint32(offset) * 0x10000 + view.getUint16(offset + 4),
    logical: view.getUint16(offset + 6),
  };
}

export function formatHlc(ts: HlcTimestamp): string {
  return `${ts.physicalMs}.${ts.logical}`;
}

export interface HybridLogicalClockOptions {
  clock: Clock;
  /** Remote timestamps further ahead of our clock than this are refused (HlcDriftError). */
  driftMsMax?: number;
  /** The last timestamp issued before a restart, so time never runs backwards across it. */
  last?: HlcTimestamp;
}

export class HybridLogicalClock {
  readonly #clock: Clock;
  readonly #driftMsMax: number;
  #physicalMs: number;
  #logical: number;

  constructor(options: HybridLogicalClockOptions) {
    const driftMsMax = options.driftMsMax ?? HLC_DRIFT_MS_MAX_DEFAULT;
    assert(Number.isSafeInteger(driftMsMax) && driftMsMax >= 0, "driftMsMax must be >= 0");
    const last = options.last ?? HLC_ZERO;
    assert(isHlcTimestamp(last), "HybridLogicalClock: last timestamp out of range");
    this.#clock = options.clock;
    this.#driftMsMax = driftMsMax;
    this.#physicalMs = last.physicalMs;
    this.#logical = last.logical;
  }

  get driftMsMax(): number {
    return this.#driftMsMax;
  }

  /** The last timestamp issued (or the starting point). */
  last(): HlcTimestamp {
    return { physicalMs: this.#physicalMs, logical: this.#logical };
  }

  /** A timestamp for a local event or a message we send: after every one issued before. */
  now(): HlcTimestamp {
    const wallMs = this.#wallMs();
    if (wallMs > this.#physicalMs) {
      this.#physicalMs = wallMs;
      this.#logical = 0;
    } else {
      this.#tick();
    }
    return this.last();
  }

  /**
   * Merges a timestamp received from another node and returns one after both it and every
   * timestamp issued here. Refuses (and changes nothing) when the remote is malformed or
   * more than driftMsMax ahead of our wall clock.
   */
  update(remote: HlcTimestamp): HlcTimestamp {
    if (!isHlcTimestamp(remote)) {
      throw new HlcError(`remote HLC timestamp ${formatHlc(remote)} is out of range`);
    }
    const wallMs = this.#wallMs();
    if (remote.physicalMs - wallMs > this.#driftMsMax) {
      throw new HlcDriftError(remote, wallMs, this.#driftMsMax);
    }
    const localMs = this.#physicalMs;
    const physicalMs = Math.max(localMs, remote.physicalMs, wallMs);
    if (physicalMs === localMs && physicalMs === remote.physicalMs) {
      this.#logical = Math.max(this.#logical, remote.logical);
      this.#tick();
    } else if (physicalMs === localMs) {
      this.#tick();
    } else if (physicalMs === remote.physicalMs) {
      this.#physicalMs = physicalMs;
      this.#logical = remote.logical;
      this.#tick();
    } else {
      this.#physicalMs = physicalMs;
      this.#logical = 0;
    }
    return this.last();
  }

  /** Next logical value; on counter overflow borrow the next millisecond instead. */
  #tick(): void {
    if (this.#logical < HLC_LOGICAL_MAX) {
      this.#logical++;
    } else {
      this.#physicalMs++;
      this.#logical = 0;
    }
    assert(this.#physicalMs <= HLC_PHYSICAL_MS_MAX, "HLC physical time overflow");
  }

  #wallMs(): number {
    const ms = this.#clock.nowMs();
    assert(
      Number.isSafeInteger(ms) && ms >= 0 && ms <= HLC_PHYSICAL_MS_MAX,
      `Clock returned ${ms}, not a millisecond time in range`,
    );
    return ms;
  }
}
