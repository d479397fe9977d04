// Test helpers for the chunk store: pools of simulated devices that survive reopening,
// index environments in temp directories, and random chunks. Used only by tests.

import { createHash } from "node:crypto";
import { assert, Prng } from "../base/mod.ts";
import { type Disk, FaultyDisk, type KvEnv, openKvEnv, SimDisk } from "../disk/mod.ts";
import { createLogger, type Logger } from "../obs/mod.ts";
import { selectErasureCodec } from "../ec/mod.ts";
import { LocalChunkStore, type LocalChunkStoreOptions } from "./chunk_store.ts";
import type { DeviceSpec, Durability, PoolSpec } from "./pool.ts";

export const TEST_MAP_BYTES = 64 << 20;

/** A logger that keeps its lines (so tests stay quiet and can look at them). */
export function quietLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    logger: createLogger({ level: "info", format: "text", sink: { write: (l) => lines.push(l) } }),
  };
}

export async function openTestEnv(dir: string): Promise<KvEnv> {
  return await openKvEnv({ path: `${dir}/index`, pageKeys: null, mapSizeBytes: TEST_MAP_BYTES });
}

export interface SimPoolOptions {
  devices: number;
  durability: Durability;
  deviceSizeBytes?: number;
  segmentSizeBytes?: number;
  fullPercent?: number;
  alignmentBytes?: number;
  name?: string;
  /** Node of device i (default all on one node). */
  nodeOf?: (i: number) => string;
}

/**
 * Simulated devices for a pool. Each path keeps its medium across close and reopen;
 * wipe() swaps in a blank device (a replaced disk), faulty() wraps the next open in a
 * FaultyDisk the test can arm, and failOpen() makes opening a path fail.
 */
export class SimPool {
  readonly spec: PoolSpec;
  readonly #disks = new Map<string, SimDisk>();
  readonly #faulty = new Map<string, FaultyDisk>();
  readonly #failOpen = new Set<string>();
  readonly #wipeOnOpen = new Set<string>();
  readonly #alignment: number;

  constructor(options: SimPoolOptions) {
    const size = options.deviceSizeBytes ?? 4 << 20;
    const name = options.name ?? "test";
    this.#alignment = options.alignmentBytes ?? 1;
    const devices: DeviceSpec[] = Array.from({ length: options.devices }, (_, i) => ({
      id: `${name}-${i}`,
      path: `/sim/${name}-${i}.dev`,
      node: options.nodeOf?.(i) ?? "local",
      sizeBytes: size,
      weight: 1,
    }));
    this.spec = {
      name,
      devices,
      durability: options.durability,
      durabilitySource: "configured",
      fullPercent: options.fullPercent ?? 90,
      segmentSizeBytes: options.segmentSizeBytes ?? 256 << 10,
      growth: null,
    };
  }

  readonly open = (spec: DeviceSpec): Promise<Disk> => {
    if (this.#failOpen.has(spec.path)) {
      return Promise.reject(new Error(`${spec.path}: injected open failure`));
    }
    let disk = this.#disks.get(spec.path);
    if (this.#wipeOnOpen.delete(spec.path)) disk = undefined;
    if (disk === undefined) {
      disk = SimDisk.create({
        sizeBytes: spec.sizeBytes,
        path: spec.path,
        alignmentBytes: this.#alignment,
      });
    } else if (disk.closed) {
      disk = disk.reopen();
    }
    this.#disks.set(spec.path, disk);
    const faulty = new FaultyDisk(disk);
    this.#faulty.set(spec.path, faulty);
    return Promise.resolve(faulty);
  };

  /** The FaultyDisk wrapping the current handle of device `i`. */
  faulty(i: number): FaultyDisk {
    const disk = this.#faulty.get(this.spec.devices[i]!.path);
    assert(disk !== undefined, `device ${i} was never opened`);
    return disk;
  }

  sim(i: number): SimDisk {
    const disk = this.#disks.get(this.spec.devices[i]!.path);
    assert(disk !== undefined, `device ${i} was never opened`);
    return disk;
  }

  /** Replaces device `i` with a blank one (its old handle must be closed). */
  wipe(i: number): void {
    const path = this.spec.devices[i]!.path;
    const old = this.#disks.get(path);
    assert(old === undefined || old.closed, "wipe() a closed device");
    this.#disks.delete(path);
  }

  /** The next open of device `i` finds a blank device (a disk swapped while running). */
  wipeOnNextOpen(i: number): void {
    this.#wipeOnOpen.add(this.spec.devices[i]!.path);
  }

  failOpen(i: number, fail = true): void {
    const path = this.spec.devices[i]!.path;
    if (fail) this.#failOpen.add(path);
    else this.#failOpen.delete(path);
  }
}

export interface TestChunk {
  id: Uint8Array;
  bytes: Uint8Array;
}

/** Random bytes of `length` and their SHA-256 as the chunk id. */
export function randomChunk(prng: Prng, length: number): TestChunk {
  const bytes = prng.bytes(length);
  return { id: sha256(bytes), bytes };
}

export function sha256(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(bytes).digest());
}

export const codecs = selectErasureCodec();

/** A LocalChunkStore on a SimPool with its index in a temp dir; reopenable. */
export class SimHarness {
  store!: LocalChunkStore;
  readonly pool: SimPool;
  readonly dir: string;
  readonly extra: Partial<LocalChunkStoreOptions>;
  readonly log = quietLogger();

  private constructor(pool: SimPool, dir: string, extra: Partial<LocalChunkStoreOptions>) {
    this.pool = pool;
    this.dir = dir;
    this.extra = extra;
  }

  static async create(
    pool: SimPool,
    extra: Partial<LocalChunkStoreOptions> = {},
  ): Promise<SimHarness> {
    const h = new SimHarness(pool, await Deno.makeTempDir({ prefix: "kiseki-chunk-" }), extra);
    await h.#open();
    return h;
  }

  async #open(): Promise<void> {
    this.store = await LocalChunkStore.open({
      pool: this.pool.spec,
      codecs,
      indexDir: `${this.dir}/index`,
      indexPageKeys: null,
      indexMapBytes: 64 << 20,
      openDevice: this.pool.open,
      logger: this.log.logger,
      ...this.extra,
    });
  }

  async reopen(): Promise<void> {
    await this.store.close();
    await this.#open();
  }

  async close(): Promise<void> {
    await this.store.close();
    await Deno.remove(this.dir, { recursive: true });
  }

  /** Device index in the pool (0..n-1) of a device number. */
  poolIndex(device: number): number {
    const id = this.store.devices().find((d) => d.device === device)!.id;
    return this.pool.spec.devices.findIndex((d) => d.id === id);
  }
}

export function ecPool(
  devices = 6,
  extra: Partial<ConstructorParameters<typeof SimPool>[0]> = {},
): SimPool {
  return new SimPool({
    devices,
    durability: { kind: "ec", k: 4, m: 2 },
    deviceSizeBytes: 8 << 20,
    segmentSizeBytes: 1 << 20,
    ...extra,
  });
}

export { Prng };
