// A simulated durable Raft log: writes are staged in a live store that the core reads at
// once, and become durable only at persist(). A crash keeps the durable image and loses the
// rest, except that a torn write may keep a prefix of the last, never-acknowledged batch.
// Faults are injected by wrapping the real store (FoundationDB's AsyncFileNonDurable).

import { assert, type Prng } from "../../mod/base/mod.ts";
import { MemoryRaftLogStore } from "../../mod/raft/memory_storage.ts";
import {
  CompactedError,
  type ConfState,
  type Entry,
  type HardState,
  type RaftLogStore,
  type Snapshot,
  UnavailableError,
} from "../../mod/raft/types.ts";

/** What survives a crash: enough to rebuild a store. Entries start at offset + 1. */
export interface DurableImage {
  hardState: HardState;
  snapshot: Snapshot;
  /** Index of the last compacted entry (>= 0); entries below offset + 1 are gone. */
  offset: number;
  /** Term of the entry at `offset`. */
  offsetTerm: number;
  entries: Entry[];
}

/**
 * Builds the live store the core reads from a durable image (at start and at every restart).
 * Its persist() must take effect synchronously; SimDisk owns durability and ignores it.
 */
export type LiveStoreFactory = (image: DurableImage) => RaftLogStore;

export interface DiskFaults {
  /** Chance one persist() fails with an I/O error; the host then crashes, as a real one would. */
  persistFailProbability: number;
  /** Chance a crash with staged writes keeps a prefix of them (a torn last write). */
  tornWriteProbability: number;
  persistLatencyMinMs: number;
  persistLatencyMaxMs: number;
  /** Chance of a slow fsync, uniform in (persistLatencyMaxMs, persistLatencyTailMaxMs]. */
  persistLatencyTailProbability: number;
  persistLatencyTailMaxMs: number;
}

export const NO_DISK_FAULTS: DiskFaults = {
  persistFailProbability: 0,
  tornWriteProbability: 0,
  persistLatencyMinMs: 0,
  persistLatencyMaxMs: 0,
  persistLatencyTailProbability: 0,
  persistLatencyTailMaxMs: 0,
};

/** Deliberate bugs, only for proving that the simulator catches a broken system. */
export interface DiskBugs {
  /** A crash also loses the last batch that persist() acknowledged. */
  loseLastPersistedBatch: boolean;
}

/** The simulated I/O error persist() throws; the host must treat it as fatal. */
export class DiskFaultError extends Error {
  override name = "DiskFaultError";
}

type StagedWrite =
  | { kind: "append"; entries: Entry[] }
  | { kind: "hard_state"; state: HardState }
  | { kind: "apply_snapshot"; snapshot: Snapshot }
  | { kind: "create_snapshot"; index: number; conf: ConfState; data: Uint8Array }
  | { kind: "compact"; index: number };

export interface CrashReport {
  /** Staged writes lost. */
  lostWrites: number;
  /** Entries of the torn batch that survived anyway (0 when the write was not torn). */
  tornEntriesKept: number;
}

/** Writes staged and not yet durable at once; more means the host forgot to persist. */
export const STAGED_WRITES_MAX = 10_000;

export interface SimDiskOptions {
  prng: Prng;
  /** Membership the group starts with, held by a fresh disk's snapshot. */
  initialConf: ConfState;
  /**
   * Index (taken in term 1) of that bootstrap snapshot; 1 by default, as the core requires
   * (a snapshot at 0 is never sent, so later members could not learn the first membership).
   */
  bootstrapIndex?: number;
  faults: DiskFaults;
  liveStore?: LiveStoreFactory;
  bugs?: Partial<DiskBugs>;
}

export class SimDisk implements RaftLogStore {
  #prng: Prng;
  #faults: DiskFaults;
  #bugs: DiskBugs;
  #factory: LiveStoreFactory;
  #durable: DurableImage;
  #previousDurable: DurableImage | null = null;
  #staged: StagedWrite[] = [];
  #live: RaftLogStore;
  #crashed = false;
  readonly stats = { persists: 0, persistFailures: 0, crashes: 0, tornWrites: 0 };

  constructor(options: SimDiskOptions) {
    this.#prng = options.prng;
    this.#faults = { ...options.faults };
    this.#bugs = { loseLastPersistedBatch: false, ...options.bugs };
    this.#factory = options.liveStore ?? memoryStoreFromImage;
    const index = options.bootstrapIndex ?? 1;
    const term = index > 0 ? 1 : 0;
    this.#durable = {
      hardState: { term, vote: 0, commit: index },
      snapshot: {
        meta: { index, term, conf: cloneConf(options.initialConf) },
        data: new Uint8Array(0),
      },
      offset: index,
      offsetTerm: term,
      entries: [],
    };
    this.#live = this.#factory(cloneImage(this.#durable));
  }

  setFaults(faults: DiskFaults): void {
    this.#faults = { ...faults };
  }

  /** A copy of what would survive a crash right now (no torn write). */
  durableImage(): DurableImage {
    return cloneImage(this.#durable);
  }

  /** The hard state a crash would leave. */
  durableHardState(): HardState {
    return { ...this.#durable.hardState };
  }

  get stagedWrites(): number {
    return this.#staged.length;
  }

  /** Virtual time one persist() takes. */
  sampleLatencyMs(): number {
    const f = this.#faults;
    if (
      f.persistLatencyTailProbability > 0 &&
      this.#prng.nextFloat() < f.persistLatencyTailProbability
    ) {
      const span = f.persistLatencyTailMaxMs - f.persistLatencyMaxMs;
      if (span > 0) return f.persistLatencyMaxMs + 1 + this.#prng.nextInt(span);
    }
    return f.persistLatencyMinMs +
      this.#prng.nextInt(f.persistLatencyMaxMs - f.persistLatencyMinMs + 1);
  }

  // --- RaftStorage: reads see staged writes at once.

  initialState(): { hardState: HardState; confState: ConfState } {
    this.#assertUp();
    return this.#live.initialState();
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    this.#assertUp();
    return this.#live.entries(lo, hi, maxBytes);
  }

  term(index: number): number {
    this.#assertUp();
    return this.#live.term(index);
  }

  firstIndex(): number {
    this.#assertUp();
    return this.#live.firstIndex();
  }

  lastIndex(): number {
    this.#assertUp();
    return this.#live.lastIndex();
  }

  snapshot(): Snapshot {
    this.#assertUp();
    return this.#live.snapshot();
  }

  // --- Writes: applied to the live store now, durable at persist().

  append(entries: Entry[]): void {
    this.#assertUp();
    if (entries.length === 0) return;
    this.#live.append(entries);
    this.#stage({ kind: "append", entries: entries.map((e) => ({ ...e })) });
  }

  setHardState(state: HardState): void {
    this.#assertUp();
    this.#live.setHardState(state);
    this.#stage({ kind: "hard_state", state: { ...state } });
  }

  applySnapshot(snapshot: Snapshot): void {
    this.#assertUp();
    this.#live.applySnapshot(snapshot);
    this.#stage({ kind: "apply_snapshot", snapshot: cloneSnapshot(snapshot) });
  }

  createSnapshot(index: number, conf: ConfState, data: Uint8Array): Snapshot {
    this.#assertUp();
    const snapshot = this.#live.createSnapshot(index, conf, data);
    this.#stage({ kind: "create_snapshot", index, conf: cloneConf(conf), data });
    return snapshot;
  }

  compact(index: number): void {
    this.#assertUp();
    this.#live.compact(index);
    this.#stage({ kind: "compact", index });
  }

  /** Makes staged writes durable; throws DiskFaultError on an injected I/O error. */
  persistNow(): void {
    this.#assertUp();
    if (this.#staged.length === 0) return;
    if (
      this.#faults.persistFailProbability > 0 &&
      this.#prng.nextFloat() < this.#faults.persistFailProbability
    ) {
      this.stats.persistFailures++;
      throw new DiskFaultError("simulated I/O error in persist()");
    }
    if (this.#bugs.loseLastPersistedBatch) this.#previousDurable = cloneImage(this.#durable);
    for (const write of this.#staged) applyWrite(this.#durable, write);
    this.#staged = [];
    // The live store keeps its own journal; let it drop what is now durable.
    this.#live.persist().catch(() => {});
    this.stats.persists++;
  }

  persist(): Promise<void> {
    try {
      this.persistNow();
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** The host dies: staged writes are lost, or a prefix of them survives a torn write. */
  crash(): CrashReport {
    this.#assertUp();
    this.#crashed = true;
    this.stats.crashes++;
    const report: CrashReport = { lostWrites: this.#staged.length, tornEntriesKept: 0 };
    if (
      this.#staged.length > 0 && this.#faults.tornWriteProbability > 0 &&
      this.#prng.nextFloat() < this.#faults.tornWriteProbability
    ) {
      const kept = this.#applyTornPrefix();
      report.tornEntriesKept = kept.entries;
      if (kept.units > 0) this.stats.tornWrites++;
    }
    this.#staged = [];
    if (this.#bugs.loseLastPersistedBatch && this.#previousDurable !== null) {
      this.#durable = this.#previousDurable;
      this.#previousDurable = null;
    }
    return report;
  }

  /** Comes back with what the disk kept. */
  restart(): void {
    assert(this.#crashed, "restart() of a disk that did not crash");
    this.#crashed = false;
    this.#live = this.#factory(cloneImage(this.#durable));
  }

  /** Keeps the first k write units of the batch; an append counts one unit per entry. */
  #applyTornPrefix(): { units: number; entries: number } {
    let units = 0;
    for (const w of this.#staged) units += w.kind === "append" ? w.entries.length : 1;
    if (units < 2) return { units: 0, entries: 0 }; // one write cannot tear
    const keepUnits = 1 + this.#prng.nextInt(units - 1); // some, never all: it is torn
    let keep = keepUnits;
    let kept = 0;
    for (const w of this.#staged) {
      if (keep === 0) break;
      if (w.kind === "append") {
        const k = Math.min(keep, w.entries.length);
        applyWrite(this.#durable, { kind: "append", entries: w.entries.slice(0, k) });
        keep -= k;
        kept += k;
      } else {
        applyWrite(this.#durable, w);
        keep--;
      }
    }
    return { units: keepUnits, entries: kept };
  }

  #stage(write: StagedWrite): void {
    assert(this.#staged.length < STAGED_WRITES_MAX, "too many staged writes: persist() forgotten?");
    this.#staged.push(write);
  }

  #assertUp(): void {
    assert(!this.#crashed, "disk used while its host is down");
  }
}

/** Applies one write to a durable image with the semantics RaftLogStore documents. */
function applyWrite(image: DurableImage, write: StagedWrite): void {
  switch (write.kind) {
    case "append":
      imageAppend(image, write.entries);
      return;
    case "hard_state":
      image.hardState = { ...write.state };
      return;
    case "apply_snapshot": {
      const meta = write.snapshot.meta;
      if (meta.index <= image.snapshot.meta.index) return;
      image.snapshot = cloneSnapshot(write.snapshot);
      image.offset = meta.index;
      image.offsetTerm = meta.term;
      image.entries = [];
      return;
    }
    case "create_snapshot":
      image.snapshot = {
        meta: {
          index: write.index,
          term: imageTerm(image, write.index),
          conf: cloneConf(write.conf),
        },
        data: write.data,
      };
      return;
    case "compact": {
      if (write.index <= image.offset) return;
      assert(write.index <= image.snapshot.meta.index, "compact() past the snapshot");
      const term = imageTerm(image, write.index);
      image.entries = image.entries.slice(write.index - image.offset);
      image.offset = write.index;
      image.offsetTerm = term;
      return;
    }
  }
}

function imageLast(image: DurableImage): number {
  return image.offset + image.entries.length;
}

function imageTerm(image: DurableImage, index: number): number {
  if (index === image.offset) return image.offsetTerm;
  if (index === image.snapshot.meta.index) return image.snapshot.meta.term;
  if (index < image.offset) throw new CompactedError(`index ${index} compacted`);
  if (index > imageLast(image)) throw new UnavailableError(`index ${index} past the log`);
  return image.entries[index - image.offset - 1].term;
}

function imageAppend(image: DurableImage, entries: Entry[]): void {
  if (entries.length === 0) return;
  const first = entries[0].index;
  entries.forEach((e, i) => assert(e.index === first + i, "append() of non-contiguous entries"));
  assert(
    first <= imageLast(image) + 1,
    `append() at ${first} leaves a gap after ${imageLast(image)}`,
  );
  // Entries at or below the compaction point are already covered.
  const fresh = entries.filter((e) => e.index > image.offset);
  if (fresh.length === 0) return;
  image.entries = image.entries.slice(0, fresh[0].index - image.offset - 1);
  for (const e of fresh) image.entries.push({ ...e });
}

function cloneConf(conf: ConfState): ConfState {
  return { voters: [...conf.voters], learners: [...conf.learners] };
}

function cloneSnapshot(s: Snapshot): Snapshot {
  return {
    meta: { index: s.meta.index, term: s.meta.term, conf: cloneConf(s.meta.conf) },
    data: s.data,
  };
}

export function cloneImage(image: DurableImage): DurableImage {
  return {
    hardState: { ...image.hardState },
    snapshot: cloneSnapshot(image.snapshot),
    offset: image.offset,
    offsetTerm: image.offsetTerm,
    entries: image.entries.map((e) => ({ ...e })),
  };
}

/**
 * Rebuilds the core's MemoryRaftLogStore from a durable image: the real store under the
 * simulated durability. A torn write can keep an installed snapshot but lose the hard state
 * written after it; a snapshot holds only committed state, so commit is raised to cover it.
 */
export function memoryStoreFromImage(image: DurableImage): RaftLogStore {
  const snapshot = image.snapshot;
  const base: Snapshot = image.offset === snapshot.meta.index ? snapshot : {
    meta: { index: image.offset, term: image.offsetTerm, conf: cloneConf(snapshot.meta.conf) },
    data: new Uint8Array(0),
  };
  const commit = Math.max(image.hardState.commit, snapshot.meta.index);
  const store = new MemoryRaftLogStore({
    snapshot: base,
    hardState: { ...image.hardState, commit },
  });
  store.append(image.entries.map((e) => ({ ...e })));
  if (base !== snapshot) {
    store.createSnapshot(snapshot.meta.index, snapshot.meta.conf, snapshot.data);
  }
  store.persist();
  return store;
}
