// The cluster chunk store over the chunk fabric: FabricFragmentPeers asks other nodes for
// fragments through a FabricClient, and fragmentHandler() serves this node's
// LocalFragmentStore to theirs. A put's fabric metadata names the device placement chose;
// the device inventory is a GET of a reserved fragment address (the all-zero chunk id at an
// index no chunk has), so it needs no operation of its own on the wire; likewise dropping a
// reference to a chunk on the node whose index counts it is a DELETE of the chunk id at
// another reserved index (a delete through a node that did not write the chunk), adding one
// a PUT there (its metadata the tenant tag), and a STAT there asks whether the node still
// indexes a chunk it wrote.

import {
  FabricBadRequestError,
  type FabricClient,
  FabricError,
  FabricNoSpaceError,
  FabricNotFoundError,
  FabricUnavailableError,
  type FragmentHandler,
} from "../transport/mod.ts";
import { ChunkStoreError } from "./chunk_store.ts";
import { CLUSTER_PLACEMENT_FRAGMENTS_MAX } from "./cluster_placement.ts";
import { REFERENCE_FRAGMENT_INDEX } from "./cluster_index.ts";
import { FragmentPeerError, type FragmentPeers } from "./cluster_nodes.ts";
import { checkInventory, type DeviceInventory, type LocalFragmentStore } from "./fragment_store.ts";

/** The fragment index the inventory is read at (with the all-zero chunk id). */
export const INVENTORY_FRAGMENT_INDEX = 0xffff_ffff;
/** Largest inventory answer read. */
export const INVENTORY_BYTES_MAX = 256 << 10;
const INVENTORY_CHUNK_ID = new Uint8Array(32);
/** Longest device id a put may name. */
export const FRAGMENT_DEVICE_ID_BYTES_MAX = 256;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

function isInventory(chunkId: Uint8Array, index: number): boolean {
  return index === INVENTORY_FRAGMENT_INDEX && chunkId.every((b) => b === 0);
}

function checkIndex(index: number): void {
  if (index >= CLUSTER_PLACEMENT_FRAGMENTS_MAX) {
    throw new FabricBadRequestError(
      `fragment index ${index} is not below ${CLUSTER_PLACEMENT_FRAGMENTS_MAX}`,
    );
  }
}

/** Fabric status for a local store failure: no space, bad request, or unavailable. */
function asFabricError(e: unknown): unknown {
  if (!(e instanceof ChunkStoreError)) return e;
  switch (e.code) {
    case "pool_full":
    case "insufficient_devices":
      return new FabricNoSpaceError(e.message);
    case "too_large":
    case "invalid_id":
    case "id_conflict":
      return new FabricBadRequestError(e.message);
    case "closed":
      return new FabricUnavailableError(e.message);
    default:
      return e;
  }
}

/** What a node's own chunk index does for the others: drop a reference it counts. */
export interface ChunkReferences {
  /** Drops one reference to chunk `id` if this node's index counts it; false if not. */
  dropOwn(id: Uint8Array): Promise<boolean>;
  /**
   * Adds one reference to chunk `id` (for the tenant tag, when given) if this node's index
   * counts it; false if not.
   */
  addOwn(id: Uint8Array, tenantTag: string | null): Promise<boolean>;
  /** Whether this node wrote chunk `id` and still indexes it (the owner of its references). */
  hasOwn(id: Uint8Array): Promise<boolean>;
}

/** Serves `local` (and `references`, when given) to the other nodes' fabric clients. */
export function fragmentHandler(
  local: LocalFragmentStore,
  references: ChunkReferences | null = null,
): FragmentHandler {
  return {
    async put(request) {
      if (request.index === REFERENCE_FRAGMENT_INDEX) {
        if (references === null) {
          throw new FabricBadRequestError("this node keeps no chunk references for others");
        }
        let tag: string;
        try {
          tag = decoder.decode(request.meta);
        } catch {
          throw new FabricBadRequestError("the tenant tag of a reference is not UTF-8");
        }
        if (tag !== "" && !/^[0-9a-f]{16}$/.test(tag)) {
          throw new FabricBadRequestError("a reference names its tenant by a 16-hex-digit tag");
        }
        let added: boolean;
        try {
          added = await references.addOwn(request.chunkId, tag === "" ? null : tag);
        } catch (e) {
          throw asFabricError(e);
        }
        if (!added) throw new FabricNotFoundError("this node indexes no such chunk");
        return;
      }
      checkIndex(request.index);
      let device: string;
      try {
        device = decoder.decode(request.meta);
      } catch {
        throw new FabricBadRequestError("the device id in the put's metadata is not UTF-8");
      }
      if (device.length === 0 || device.length > FRAGMENT_DEVICE_ID_BYTES_MAX) {
        throw new FabricBadRequestError("a fragment put names its device in its metadata");
      }
      try {
        await local.put(request.chunkId, request.index, request.bytes, device);
      } catch (e) {
        throw asFabricError(e);
      }
    },
    async get(request) {
      let bytes: Uint8Array | null;
      if (isInventory(request.chunkId, request.index)) {
        bytes = encoder.encode(JSON.stringify(local.inventory()));
      } else {
        checkIndex(request.index);
        try {
          bytes = await local.get(request.chunkId, request.index);
        } catch (e) {
          throw asFabricError(e);
        }
      }
      if (bytes === null) return null;
      if (request.offset > bytes.length) {
        throw new FabricBadRequestError(`offset ${request.offset} past ${bytes.length} bytes`);
      }
      return {
        bytes: bytes.subarray(request.offset, request.offset + request.lengthMax),
        sizeBytes: bytes.length,
      };
    },
    async stat(request) {
      if (request.index === REFERENCE_FRAGMENT_INDEX) {
        if (references === null) {
          throw new FabricBadRequestError("this node keeps no chunk references for others");
        }
        const own = await references.hasOwn(request.chunkId);
        return own ? { sizeBytes: 0, meta: new Uint8Array(0) } : null;
      }
      checkIndex(request.index);
      const size = await local.size(request.chunkId, request.index);
      return size === null ? null : { sizeBytes: size, meta: new Uint8Array(0) };
    },
    async delete(request) {
      if (request.index === REFERENCE_FRAGMENT_INDEX) {
        if (references === null) {
          throw new FabricBadRequestError("this node keeps no chunk references for others");
        }
        try {
          return await references.dropOwn(request.chunkId);
        } catch (e) {
          throw asFabricError(e);
        }
      }
      checkIndex(request.index);
      try {
        return await local.release(request.chunkId, request.index);
      } catch (e) {
        throw asFabricError(e);
      }
    },
  };
}

/** Other nodes' fragments through `client`. */
export class FabricFragmentPeers implements FragmentPeers {
  readonly #client: FabricClient;
  readonly #timeoutMs: number;

  constructor(options: { client: FabricClient; timeoutMs: number }) {
    this.#client = options.client;
    this.#timeoutMs = options.timeoutMs;
  }

  async put(
    node: number,
    chunkId: Uint8Array,
    index: number,
    bytes: Uint8Array,
    device: string,
  ): Promise<void> {
    await this.#call(
      node,
      () =>
        this.#client.put(node, { chunkId, index, bytes, meta: encoder.encode(device) }, {
          timeoutMs: this.#timeoutMs,
        }),
    );
  }

  async get(
    node: number,
    chunkId: Uint8Array,
    index: number,
    sizeBytes: number,
  ): Promise<Uint8Array | null> {
    try {
      const result = await this.#call(
        node,
        () =>
          this.#client.get(node, { chunkId, index, length: sizeBytes }, {
            timeoutMs: this.#timeoutMs,
          }),
      );
      return result.bytes;
    } catch (e) {
      if (e instanceof FragmentPeerError && e.cause instanceof FabricNotFoundError) return null;
      throw e;
    }
  }

  async has(node: number, chunkId: Uint8Array, index: number): Promise<boolean> {
    const stat = await this.#call(
      node,
      () => this.#client.stat(node, { chunkId, index }, { timeoutMs: this.#timeoutMs }),
    );
    return stat !== null;
  }

  async release(node: number, chunkId: Uint8Array, index: number): Promise<boolean> {
    return await this.#call(
      node,
      () => this.#client.delete(node, { chunkId, index }, { timeoutMs: this.#timeoutMs }),
    );
  }

  async inventory(node: number): Promise<DeviceInventory> {
    const result = await this.#call(node, () =>
      this.#client.get(node, {
        chunkId: INVENTORY_CHUNK_ID,
        index: INVENTORY_FRAGMENT_INDEX,
        length: INVENTORY_BYTES_MAX,
      }, { timeoutMs: this.#timeoutMs }));
    try {
      return checkInventory(JSON.parse(decoder.decode(result.bytes)));
    } catch (e) {
      throw new FragmentPeerError("refused", node, `inventory: ${(e as Error).message}`);
    }
  }

  /** Runs a fabric call; its failure becomes "unreachable" or "refused" (with the cause). */
  async #call<T>(node: number, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof FabricError)) throw e;
      const kind = e.code === "unavailable" || e.code === "timeout" || e.code === "cancelled"
        ? "unreachable"
        : "refused";
      const error = new FragmentPeerError(kind, node, e.message);
      (error as { cause?: unknown }).cause = e;
      throw error;
    }
  }
}
