// A node's fragments of cluster chunks: each fragment (chunk id, fragment index) is kept as a
// one-record chunk of the node's LocalChunkStore (a pool of one copy per chunk) under an id
// derived from both, on the device the cluster placement chose. A fragment written twice
// (two nodes storing the same chunk) takes two references; release() drops one and the
// node's own GC erases the record at zero. Also the node's device inventory, which other
// nodes place fragments by.

import { createHash } from "node:crypto";
import { assert } from "../base/mod.ts";
import { ChunkStoreError, type LocalChunkStore } from "./chunk_store.ts";
import { fragmentCount } from "./pool.ts";

const FRAGMENT_ID_DOMAIN = new TextEncoder().encode("kiseki fragment id v1\0");
/** Devices one inventory lists at most (a pool's device bound). */
export const INVENTORY_DEVICES_MAX = 1024;

const WRITER_DOMAIN = new TextEncoder().encode("kiseki writer chunk id v1\0");

/**
 * The chunk id fragments are exchanged and kept under: the chunk id scoped by the node that
 * wrote it, SHA-256(domain | chunk id | u32 writer). Two nodes storing the same chunk seal it
 * apart (each envelope has its own nonce), so their fragments are different bytes and must
 * not be taken for one another: each writer's are its own.
 */
export function writerChunkId(chunkId: Uint8Array, writer: number): Uint8Array {
  assert(Number.isInteger(writer) && writer >= 1 && writer <= 0xffff_ffff, "writer node id");
  const suffix = new Uint8Array(4);
  new DataView(suffix.buffer).setUint32(0, writer);
  return new Uint8Array(
    createHash("sha256").update(WRITER_DOMAIN).update(chunkId).update(suffix).digest(),
  );
}

/** The id a fragment is kept under on its node: SHA-256(domain | chunk id | u32 index). */
export function fragmentId(chunkId: Uint8Array, index: number): Uint8Array {
  assert(Number.isInteger(index) && index >= 0 && index <= 0xffff_ffff, "fragment index");
  const suffix = new Uint8Array(4);
  new DataView(suffix.buffer).setUint32(0, index);
  return new Uint8Array(
    createHash("sha256").update(FRAGMENT_ID_DOMAIN).update(chunkId).update(suffix).digest(),
  );
}

export interface InventoryDevice {
  /** The device's id on its node. */
  id: string;
  /** Placement weight (the pool spec's: capacity in GiB by default). */
  weight: number;
  capacityBytes: number;
  usedBytes: number;
  /** Takes new fragments now (healthy, below the pool's fill threshold). */
  writable: boolean;
}

/** What a node offers for placement: its devices of one pool. */
export interface DeviceInventory {
  node: number;
  pool: string;
  devices: InventoryDevice[];
}

/** Checks an inventory that came off the wire; throws a TypeError naming what is wrong. */
export function checkInventory(value: unknown): DeviceInventory {
  const v = value as DeviceInventory;
  if (
    typeof v !== "object" || v === null || !Number.isInteger(v.node) || v.node < 1 ||
    typeof v.pool !== "string" || !Array.isArray(v.devices) ||
    v.devices.length > INVENTORY_DEVICES_MAX
  ) {
    throw new TypeError("inventory: not {node, pool, devices[]}");
  }
  for (const d of v.devices) {
    if (
      typeof d !== "object" || d === null || typeof d.id !== "string" || d.id.length === 0 ||
      !(d.weight > 0) || !Number.isFinite(d.weight) || typeof d.writable !== "boolean" ||
      !Number.isFinite(d.capacityBytes) || !Number.isFinite(d.usedBytes)
    ) {
      throw new TypeError(`inventory of node ${v.node}: a device is malformed`);
    }
  }
  return v;
}

/** Fragments of cluster chunks on this node's devices. */
export class LocalFragmentStore {
  readonly node: number;
  readonly store: LocalChunkStore;
  readonly #weights: Map<string, number>;

  constructor(options: { node: number; store: LocalChunkStore }) {
    assert(Number.isInteger(options.node) && options.node >= 1, "node id");
    assert(
      fragmentCount(options.store.durability) === 1,
      "a fragment store keeps one record per fragment (copies:1)",
    );
    this.node = options.node;
    this.store = options.store;
    this.#weights = new Map(options.store.pool.devices.map((d) => [d.id, d.weight]));
  }

  /**
   * Stores a fragment durably on `device` (or only adds a reference when it is here).
   * Fails pool_full or insufficient_devices when that device cannot take it.
   */
  async put(chunkId: Uint8Array, index: number, bytes: Uint8Array, device: string): Promise<void> {
    await this.store.put(fragmentId(chunkId, index), bytes, { device });
  }

  /** The fragment, verified, or null when this node does not hold it. */
  async get(chunkId: Uint8Array, index: number): Promise<Uint8Array | null> {
    try {
      return await this.store.get(fragmentId(chunkId, index));
    } catch (e) {
      if (e instanceof ChunkStoreError && e.code === "not_found") return null;
      throw e;
    }
  }

  /** The fragment's length when this node holds it (referenced), else null. */
  async size(chunkId: Uint8Array, index: number): Promise<number | null> {
    const stat = await this.store.stat(fragmentId(chunkId, index));
    return stat === null || stat.refcount === 0 ? null : stat.lengthBytes;
  }

  /** The device holding the fragment, or null. */
  async deviceOf(chunkId: Uint8Array, index: number): Promise<string | null> {
    const stat = await this.store.stat(fragmentId(chunkId, index));
    return stat === null || stat.refcount === 0 ? null : stat.fragments[0]!.deviceId;
  }

  /** Drops one reference to the fragment; false when it was not here. */
  async release(chunkId: Uint8Array, index: number): Promise<boolean> {
    try {
      await this.store.decRef(fragmentId(chunkId, index));
      return true;
    } catch (e) {
      if (
        e instanceof ChunkStoreError && (e.code === "not_found" || e.code === "refcount_underflow")
      ) return false;
      throw e;
    }
  }

  inventory(): DeviceInventory {
    return {
      node: this.node,
      pool: this.store.pool.name,
      devices: this.store.devices().map((d) => ({
        id: d.id,
        weight: this.#weights.get(d.id) ?? 1,
        capacityBytes: d.capacityBytes,
        usedBytes: d.usedBytes,
        writable: d.writable,
      })),
    };
  }
}
