// Byte-range (fcntl) and whole-file (flock) locks of one mount, per node: who holds what,
// the conflict a GETLK reports, and waiters of SETLKW woken when a range frees. Pure: the
// caller gives an AbortSignal for a wait an INTERRUPT ends. Locks are local to this client
// (another mount or protocol does not see them), as with most network file systems' FUSE
// clients without a lock service.

import { EAGAIN, EDEADLK, EINTR, ENOLCK, F_RDLCK, F_UNLCK, F_WRLCK } from "./abi.ts";
import { FuseError } from "./fs_api.ts";

/** Locks held on one mount at once (each range of each owner counts). */
export const LOCKS_MAX = 65_536;
/** SETLKW calls waiting at once. */
export const LOCK_WAITERS_MAX = 1024;

const OFFSET_MAX = 0xffff_ffff_ffff_ffffn;

export interface HeldLock {
  owner: bigint;
  flock: boolean;
  start: bigint;
  /** Inclusive end (OFFSET_MAX: to the end of file). */
  end: bigint;
  type: number;
  pid: number;
}

export interface LockAsk {
  owner: bigint;
  flock: boolean;
  start: bigint;
  end: bigint;
  type: number;
  pid: number;
}

function overlaps(a: { start: bigint; end: bigint }, b: { start: bigint; end: bigint }): boolean {
  return a.start <= b.end && b.start <= a.end;
}

function conflicts(held: HeldLock, ask: LockAsk): boolean {
  if (held.flock !== ask.flock) return false; // flock and fcntl locks do not interact on Linux
  if (held.owner === ask.owner) return false;
  if (held.type === F_RDLCK && ask.type === F_RDLCK) return false;
  return overlaps(held, ask);
}

export class LockTable {
  readonly #byNode = new Map<bigint, HeldLock[]>();
  readonly #waiters = new Map<bigint, Set<() => void>>();
  #count = 0;
  #waiting = 0;

  get count(): number {
    return this.#count;
  }

  /** The first lock that conflicts with `ask`, or one of type F_UNLCK. */
  test(node: bigint, ask: LockAsk): HeldLock {
    const found = (this.#byNode.get(node) ?? []).find((h) => conflicts(h, ask));
    return found ?? { ...ask, type: F_UNLCK };
  }

  /** Takes, changes or (F_UNLCK) drops a lock; EAGAIN on a conflict. */
  set(node: bigint, ask: LockAsk): void {
    if (ask.type !== F_UNLCK) {
      const c = this.test(node, ask);
      if (c.type !== F_UNLCK) throw new FuseError(EAGAIN, "the range is locked");
    }
    const list = this.#byNode.get(node) ?? [];
    const kept: HeldLock[] = [];
    for (const h of list) {
      if (h.owner !== ask.owner || h.flock !== ask.flock || !overlaps(h, ask)) {
        kept.push(h);
        continue;
      }
      // The part of an own lock outside the new range stays (POSIX splits ranges).
      if (h.start < ask.start) kept.push({ ...h, end: ask.start - 1n });
      if (h.end > ask.end) kept.push({ ...h, start: ask.end + 1n });
    }
    if (ask.type !== F_UNLCK) {
      kept.push({ ...ask, end: ask.end > OFFSET_MAX ? OFFSET_MAX : ask.end });
    }
    const delta = kept.length - list.length;
    if (delta > 0 && this.#count + delta > LOCKS_MAX) {
      throw new FuseError(ENOLCK, `more than ${LOCKS_MAX} locks`);
    }
    this.#count += delta;
    if (kept.length === 0) this.#byNode.delete(node);
    else this.#byNode.set(node, kept);
    this.#wake(node);
  }

  /** Like set(), waiting while the range is locked; EINTR when `signal` aborts. */
  async setWait(node: bigint, ask: LockAsk, signal: AbortSignal): Promise<void> {
    for (;;) {
      try {
        this.set(node, ask);
        return;
      } catch (e) {
        if (!(e instanceof FuseError) || e.errno !== EAGAIN) throw e;
      }
      if (this.#waiting >= LOCK_WAITERS_MAX) {
        throw new FuseError(EDEADLK, `more than ${LOCK_WAITERS_MAX} lock waiters`);
      }
      await this.#changed(node, signal);
    }
  }

  #changed(node: bigint, signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(new FuseError(EINTR, "interrupted"));
      const set = this.#waiters.get(node) ?? new Set();
      this.#waiters.set(node, set);
      this.#waiting++;
      const done = () => {
        set.delete(wake);
        if (set.size === 0) this.#waiters.delete(node);
        this.#waiting--;
        signal.removeEventListener("abort", onAbort);
      };
      const wake = () => {
        done();
        resolve();
      };
      const onAbort = () => {
        done();
        reject(new FuseError(EINTR, "interrupted"));
      };
      set.add(wake);
      signal.addEventListener("abort", onAbort);
    });
  }

  #wake(node: bigint): void {
    const set = this.#waiters.get(node);
    if (set === undefined) return;
    for (const w of [...set]) w();
  }

  /** Drops every lock `owner` holds on `node` of the kind given (close, release). */
  releaseOwner(node: bigint, owner: bigint, flock: boolean): void {
    const list = this.#byNode.get(node);
    if (list === undefined) return;
    const kept = list.filter((h) => h.owner !== owner || h.flock !== flock);
    if (kept.length === list.length) return;
    this.#count -= list.length - kept.length;
    if (kept.length === 0) this.#byNode.delete(node);
    else this.#byNode.set(node, kept);
    this.#wake(node);
  }
}

export { F_RDLCK, F_UNLCK, F_WRLCK };
