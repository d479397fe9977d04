// Wipes the client cache after the client has reached no node for longer than
// KISEKI_CACHE_DISCONNECT_WIPE_S: a compute node cut off from the cluster cannot learn of a
// crypto-shred, so what it holds must not outlive the bound. The time of last contact is
// stamped in the L2 directory, so a client that restarts after a long absence wipes at start.

import { assert } from "../../base/mod.ts";
import type { ChunkCache } from "../cache_port.ts";
import type { DiskL2Store } from "./l2_store.ts";

/** Most time between two contact stamps while connected. */
export const CONTACT_STAMP_INTERVAL_MS_MAX = 60_000;

export interface DisconnectTimers {
  nowMs(): number;
  setTimeout(fn: () => void, ms: number): number;
  clearTimeout(id: number): void;
}

export const SYSTEM_TIMERS: DisconnectTimers = {
  nowMs: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms) as unknown as number,
  clearTimeout: (id) => clearTimeout(id as unknown as ReturnType<typeof setTimeout>),
};

export interface DisconnectWipeOptions {
  cache: ChunkCache;
  /** Where the contact stamp lives; null keeps it in memory only (no L2). */
  l2: DiskL2Store | null;
  boundMs: number;
  timers?: DisconnectTimers;
}

/**
 * Told by the cluster client when it reaches a node (connected) and when it has lost all of
 * them (disconnected); wipes the cache once a disconnect has lasted `boundMs`.
 */
export class DisconnectWipe {
  readonly boundMs: number;
  readonly #cache: ChunkCache;
  readonly #l2: DiskL2Store | null;
  readonly #timers: DisconnectTimers;
  #wipeTimer: number | null = null;
  #stampTimer: number | null = null;
  #connected = false;
  #closed = false;
  #pending: Promise<void> = Promise.resolve();

  constructor(options: DisconnectWipeOptions) {
    assert(Number.isSafeInteger(options.boundMs) && options.boundMs >= 1, "boundMs");
    this.boundMs = options.boundMs;
    this.#cache = options.cache;
    this.#l2 = options.l2;
    this.#timers = options.timers ?? SYSTEM_TIMERS;
  }

  /**
   * At start-up: wipes when the stamp says the last contact is older than the bound (the
   * client was down, or cut off, for longer). Returns whether it wiped.
   */
  async checkAtStart(): Promise<boolean> {
    const last = await this.#l2?.lastContactMs() ?? null;
    if (last === null) return false;
    if (this.#timers.nowMs() - last <= this.boundMs) return false;
    await this.#cache.wipe("disconnected past KISEKI_CACHE_DISCONNECT_WIPE_S (before start)");
    return true;
  }

  connected(): void {
    if (this.#closed) return;
    if (this.#wipeTimer !== null) this.#timers.clearTimeout(this.#wipeTimer);
    this.#wipeTimer = null;
    if (this.#connected) return;
    this.#connected = true;
    this.#stamp();
  }

  disconnected(): void {
    if (this.#closed || !this.#connected) return;
    this.#connected = false;
    if (this.#stampTimer !== null) this.#timers.clearTimeout(this.#stampTimer);
    this.#stampTimer = null;
    this.#wipeTimer = this.#timers.setTimeout(() => {
      this.#wipeTimer = null;
      this.#pending = this.#pending.then(() =>
        this.#cache.wipe("disconnected past KISEKI_CACHE_DISCONNECT_WIPE_S")
      );
    }, this.boundMs);
  }

  #stamp(): void {
    if (this.#l2 !== null) {
      const l2 = this.#l2;
      this.#pending = this.#pending.then(() => l2.markContact(this.#timers.nowMs())).catch(
        () => {},
      );
    }
    const every = Math.min(
      CONTACT_STAMP_INTERVAL_MS_MAX,
      Math.max(1, Math.floor(this.boundMs / 2)),
    );
    this.#stampTimer = this.#timers.setTimeout(() => {
      this.#stampTimer = null;
      if (this.#connected && !this.#closed) this.#stamp();
    }, every);
  }

  /** Stops the timers; a pending wipe or stamp finishes first. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#wipeTimer !== null) this.#timers.clearTimeout(this.#wipeTimer);
    if (this.#stampTimer !== null) this.#timers.clearTimeout(this.#stampTimer);
    this.#wipeTimer = this.#stampTimer = null;
    await this.#pending;
  }
}
