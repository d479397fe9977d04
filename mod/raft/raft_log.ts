// The log as the core sees it: the durable part (RaftStorage) followed by an unstable tail
// (entries and possibly a snapshot not yet handed to the host, or handed but not yet
// persisted), with the committed and applied marks over both.

import { assert } from "../base/mod.ts";
import { CompactedError, UnavailableError } from "./types.ts";
import type { Entry, RaftStorage, Snapshot } from "./types.ts";

/** Bytes of an entry that count toward message, Ready and uncommitted limits. */
export function entrySizeBytes(entry: Entry): number {
  return entry.data.byteLength;
}

/** Sum of entrySizeBytes over `entries`. */
export function entriesSizeBytes(entries: readonly Entry[]): number {
  let total = 0;
  for (const entry of entries) total += entrySizeBytes(entry);
  return total;
}

/** The longest prefix of `entries` within `maxBytes`, but never less than one entry. */
export function limitSize(entries: Entry[], maxBytes: number): Entry[] {
  if (entries.length === 0) return entries;
  let size = entrySizeBytes(entries[0]);
  let count = 1;
  while (count < entries.length) {
    size += entrySizeBytes(entries[count]);
    if (size > maxBytes) break;
    count++;
  }
  return count === entries.length ? entries : entries.slice(0, count);
}

/**
 * Entries and a snapshot not yet durable. `entries[i]` has index `offset + i`; a snapshot,
 * when present, sits at `offset - 1`.
 */
export class Unstable {
  snapshot: Snapshot | null = null;
  entries: Entry[] = [];
  offset: number;

  constructor(offset: number) {
    this.offset = offset;
  }

  /** Index of the first unstable entry, when only a snapshot bounds it. */
  maybeFirstIndex(): number | null {
    return this.snapshot === null ? null : this.snapshot.meta.index + 1;
  }

  maybeLastIndex(): number | null {
    if (this.entries.length > 0) return this.offset + this.entries.length - 1;
    if (this.snapshot !== null) return this.snapshot.meta.index;
    return null;
  }

  maybeTerm(index: number): number | null {
    if (index < this.offset) {
      if (this.snapshot !== null && this.snapshot.meta.index === index) {
        return this.snapshot.meta.term;
      }
      return null;
    }
    const last = this.maybeLastIndex();
    if (last === null || index > last) return null;
    return this.entries[index - this.offset].term;
  }

  /** Entries up to (index, term) are durable: drop them, unless that entry was replaced. */
  stableTo(index: number, term: number): void {
    const t = this.maybeTerm(index);
    if (t === null || t !== term) return;
    if (index < this.offset) return; // the snapshot's own index: handled by stableSnapTo
    this.entries = this.entries.slice(index + 1 - this.offset);
    this.offset = index + 1;
  }

  stableSnapTo(index: number): void {
    if (this.snapshot !== null && this.snapshot.meta.index === index) this.snapshot = null;
  }

  restore(snapshot: Snapshot): void {
    this.offset = snapshot.meta.index + 1;
    this.entries = [];
    this.snapshot = snapshot;
  }

  truncateAndAppend(entries: readonly Entry[]): void {
    const after = entries[0].index;
    if (after === this.offset + this.entries.length) {
      this.entries = this.entries.concat(entries);
    } else if (after <= this.offset) {
      // Replaces the whole unstable tail; the host truncates storage from `after` on append.
      this.offset = after;
      this.entries = entries.slice();
    } else {
      this.entries = this.entries.slice(0, after - this.offset).concat(entries);
    }
  }

  /** Entries in [lo, hi), all within the unstable tail. */
  slice(lo: number, hi: number): Entry[] {
    assert(lo <= hi, `unstable slice lo ${lo} > hi ${hi}`);
    const upper = this.offset + this.entries.length;
    assert(lo >= this.offset && hi <= upper, `unstable slice [${lo}, ${hi}) out of bounds`);
    return this.entries.slice(lo - this.offset, hi - this.offset);
  }
}

/** The log: durable storage plus the unstable tail, with commit and apply marks. */
export class RaftLog {
  readonly storage: RaftStorage;
  readonly unstable: Unstable;
  /** Highest index known committed. Never decreases. */
  committed: number;
  /** Highest index the host has applied. applied <= committed. */
  applied: number;
  /** Upper bound on entry bytes returned as committed entries in one Ready. */
  readonly maxCommittedSizePerReadyBytes: number;

  constructor(storage: RaftStorage, maxCommittedSizePerReadyBytes: number) {
    assert(maxCommittedSizePerReadyBytes > 0, "committed size per Ready must be positive");
    this.storage = storage;
    this.maxCommittedSizePerReadyBytes = maxCommittedSizePerReadyBytes;
    const firstIndex = storage.firstIndex();
    const lastIndex = storage.lastIndex();
    assert(firstIndex >= 1 && lastIndex >= firstIndex - 1, "storage bounds are inconsistent");
    this.unstable = new Unstable(lastIndex + 1);
    // Everything up to the snapshot is committed and applied by definition.
    this.committed = firstIndex - 1;
    this.applied = firstIndex - 1;
  }

  firstIndex(): number {
    return this.unstable.maybeFirstIndex() ?? this.storage.firstIndex();
  }

  lastIndex(): number {
    return this.unstable.maybeLastIndex() ?? this.storage.lastIndex();
  }

  lastTerm(): number {
    return this.term(this.lastIndex());
  }

  /**
   * The last index known durable: entries before the unstable tail. While an unstable
   * snapshot is pending nothing of the new log is durable yet.
   */
  persistedLastIndex(): number {
    if (this.unstable.snapshot !== null) return 0;
    return this.unstable.offset - 1;
  }

  /**
   * Term of the entry at `index`. Throws CompactedError below firstIndex() - 1 and
   * UnavailableError past lastIndex().
   */
  term(index: number): number {
    const dummyIndex = this.firstIndex() - 1;
    if (index < dummyIndex) {
      throw new CompactedError(`term(${index}): compacted, first index is ${dummyIndex + 1}`);
    }
    if (index > this.lastIndex()) {
      throw new UnavailableError(`term(${index}): past last index ${this.lastIndex()}`);
    }
    return this.unstable.maybeTerm(index) ?? this.storage.term(index);
  }

  /** Term of `index`, or 0 when it is compacted or past the end. */
  termOrZero(index: number): number {
    if (index < this.firstIndex() - 1 || index > this.lastIndex()) return 0;
    return this.term(index);
  }

  matchTerm(index: number, term: number): boolean {
    if (index < this.firstIndex() - 1 || index > this.lastIndex()) return false;
    return this.term(index) === term;
  }

  /** A candidate's log (lastIndex, lastTerm) is at least as up to date as ours (§5.4.1). */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const ourTerm = this.lastTerm();
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex());
  }

  /**
   * Index of the first entry in `entries` that is missing from or conflicts with our log
   * (same index, different term), or 0 when all of them are already present.
   */
  findConflict(entries: readonly Entry[]): number {
    for (const entry of entries) {
      if (!this.matchTerm(entry.index, entry.term)) return entry.index;
    }
    return 0;
  }

  /**
   * Fast backtracking: the largest index <= `index` whose term is <= `term`, with that term.
   * Entries in (result, index] cannot match a leader whose entry at `index` has `term`.
   * An index whose term is unknown (compacted) is returned with term 0: it may match.
   */
  findConflictByTerm(index: number, term: number): { index: number; term: number } {
    const first = this.firstIndex() - 1;
    for (let i = Math.min(index, this.lastIndex()); i > 0; i--) {
      if (i < first) return { index: i, term: 0 };
      const ourTerm = this.term(i);
      if (ourTerm <= term) return { index: i, term: ourTerm };
    }
    return { index: 0, term: 0 };
  }

  /**
   * Appends `entries` sent by a leader after (index, logTerm), if our log matches there, and
   * commits up to min(leaderCommit, last new index). Returns the last new index, or null on a
   * mismatch.
   */
  maybeAppend(
    index: number,
    logTerm: number,
    leaderCommit: number,
    entries: readonly Entry[],
  ): number | null {
    if (!this.matchTerm(index, logTerm)) return null;
    const lastNewIndex = index + entries.length;
    const conflict = this.findConflict(entries);
    if (conflict !== 0) {
      assert(
        conflict > this.committed,
        `entry ${conflict} conflicts with committed entry (committed ${this.committed})`,
      );
      this.append(entries.slice(conflict - (index + 1)));
    }
    this.commitTo(Math.min(leaderCommit, lastNewIndex));
    return lastNewIndex;
  }

  /** Appends entries (truncating a conflicting suffix); returns the new last index. */
  append(entries: readonly Entry[]): number {
    if (entries.length === 0) return this.lastIndex();
    const after = entries[0].index - 1;
    assert(after >= this.committed, `cannot truncate committed entries (after ${after})`);
    assert(after <= this.lastIndex(), `append leaves a gap after ${this.lastIndex()}`);
    for (let i = 1; i < entries.length; i++) {
      assert(entries[i].index === entries[i - 1].index + 1, "appended entries must be contiguous");
    }
    this.unstable.truncateAndAppend(entries);
    return this.lastIndex();
  }

  commitTo(index: number): void {
    if (index <= this.committed) return; // never decrease
    assert(
      index <= this.lastIndex(),
      `commit ${index} is past the last index ${this.lastIndex()}`,
    );
    this.committed = index;
  }

  appliedTo(index: number): void {
    if (index === 0) return;
    assert(
      index >= this.applied && index <= this.committed,
      `applied ${index} outside [${this.applied}, ${this.committed}]`,
    );
    this.applied = index;
  }

  /** Advances commit to `index` if its entry has `term` (only current-term entries count). */
  maybeCommit(index: number, term: number): boolean {
    if (index > this.committed && this.termOrZero(index) === term) {
      this.commitTo(index);
      return true;
    }
    return false;
  }

  stableTo(index: number, term: number): void {
    this.unstable.stableTo(index, term);
  }

  stableSnapTo(index: number): void {
    this.unstable.stableSnapTo(index);
  }

  /** Replaces the log with `snapshot` (becomes the unstable snapshot until persisted). */
  restore(snapshot: Snapshot): void {
    assert(snapshot.meta.index > this.committed, "restored snapshot must be past commit");
    this.committed = snapshot.meta.index;
    this.unstable.restore(snapshot);
  }

  unstableEntries(): Entry[] {
    return this.unstable.entries;
  }

  hasPendingSnapshot(): boolean {
    return this.unstable.snapshot !== null;
  }

  /** The snapshot to send a lagging follower: the unstable one, else the storage's. */
  snapshot(): Snapshot {
    return this.unstable.snapshot ?? this.storage.snapshot();
  }

  /** Committed entries not yet applied, bounded by maxCommittedSizePerReadyBytes. */
  nextCommittedEntries(): Entry[] {
    if (this.hasPendingSnapshot()) return []; // the snapshot is applied first
    const lo = Math.max(this.applied + 1, this.firstIndex());
    const hi = this.committed + 1;
    if (lo >= hi) return [];
    return this.slice(lo, hi, this.maxCommittedSizePerReadyBytes);
  }

  hasNextCommittedEntries(): boolean {
    if (this.hasPendingSnapshot()) return false;
    return this.committed > Math.max(this.applied, this.firstIndex() - 1);
  }

  /** Entries from `lo` to the end, bounded by `maxBytes` (at least one entry). */
  entriesFrom(lo: number, maxBytes: number): Entry[] {
    const last = this.lastIndex();
    if (lo > last) return [];
    return this.slice(lo, last + 1, maxBytes);
  }

  /** Entries in [lo, hi), at most `maxBytes` (at least one). Throws CompactedError below firstIndex. */
  slice(lo: number, hi: number, maxBytes: number): Entry[] {
    assert(lo <= hi, `slice lo ${lo} > hi ${hi}`);
    if (lo < this.firstIndex()) {
      throw new CompactedError(`slice(${lo}): compacted, first index is ${this.firstIndex()}`);
    }
    assert(hi <= this.lastIndex() + 1, `slice hi ${hi} past last index ${this.lastIndex()}`);
    if (lo === hi) return [];
    const offset = this.unstable.offset;
    let result: Entry[] = [];
    if (lo < offset) {
      const storedHi = Math.min(hi, offset);
      const stored = this.storage.entries(lo, storedHi, maxBytes);
      assert(stored.length > 0, "storage returned no entries");
      if (stored.length < storedHi - lo) return stored; // size limit reached
      result = stored;
    }
    if (hi > offset) {
      const tail = this.unstable.slice(Math.max(lo, offset), hi);
      result = result.length > 0 ? result.concat(tail) : tail;
    }
    return limitSize(result, maxBytes);
  }
}
