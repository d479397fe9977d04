// The erasure codec backed by Intel ISA-L through ffi/ec. TypeScript validates every
// argument and owns the table caches; each encode or decode is one FFI call carrying a
// packed descriptor of fragment addresses, blocking for small work and nonblocking (on
// Deno's thread pool) for large work so big stripes do not stall the event loop.

import { EC_SHIM_OK, type EcShim } from "../../ffi/ec/bindings.ts";
import { assert } from "../base/mod.ts";
import {
  asyncThresholdBytes,
  BoundedLru,
  carveFragments,
  checkEncodeArgs,
  checkGeometry,
  EC_DECODE_TABLES_BYTES_MAX,
  EC_DECODE_TABLES_ENTRIES_MAX,
  EC_FRAGMENT_ALIGN_BYTES,
  EC_GEOMETRIES_CACHED_MAX,
  type ErasureCodec,
  type ErasureCodecFactory,
  type ErasureCodecOptions,
  fragmentStride,
  planReconstruct,
  type ReconstructPlan,
} from "./codec.ts";

/** ISA-L expands each GF(2^8) coefficient into 32 bytes of lookup tables. */
const ISAL_TABLE_BYTES_PER_COEFFICIENT = 32;

interface IsalTables {
  k: number;
  m: number;
  /** (k+m) x k encode matrix from ISA-L's gf_gen_cauchy1_matrix. */
  matrix: Uint8Array;
  /** ec_init_tables() of the m parity rows. */
  encodeTables: Uint8Array;
  /** ec_init_tables() of the decode rows, keyed by ReconstructPlan.key. */
  decode: BoundedLru<Uint8Array>;
}

/**
 * Native address of every ArrayBuffer seen, so a fragment costs a map lookup and an add
 * instead of a Deno.UnsafePointer.of() call (~0.3 us each). Backing stores never move once
 * an ArrayBuffer exists; weak keys bound the map by what the program still holds. Addresses
 * are kept as numbers (user-space addresses fit in 53 bits) because BigInt arithmetic
 * allocates on every fragment of every call.
 */
// Addresses come from the shim itself: Deno.UnsafePointer.of() would need unscoped
// --allow-ffi, while the role's sandbox grants FFI only for the shim's own path.
const baseAddresses = new WeakMap<ArrayBufferLike, number>();
let shimForAddresses: EcShim | null = null;
const TWO_POW_32 = 0x1_0000_0000;

/** The descriptor is read by C as uint64_t; we write it as 32-bit halves, low word first. */
const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;
assert(LITTLE_ENDIAN, "the pointer descriptor is written for little-endian hosts");

function addressOf(view: Uint8Array): number {
  // Reading .buffer also moves a small on-heap typed array off the V8 heap, so the address
  // handed to C cannot be moved by the garbage collector.
  const buffer = view.buffer;
  let base = baseAddresses.get(buffer);
  if (base === undefined) {
    assert(shimForAddresses !== null, "addressOf() needs a loaded shim");
    const value = shimForAddresses.symbols.kiseki_ec_address_of(new Uint8Array(buffer));
    assert(value !== 0n && value < 2n ** 53n, "fragment buffer address out of range");
    base = Number(value);
    baseAddresses.set(buffer, base);
  }
  return base + view.byteOffset;
}

/** Writes the address of `view` into 64-bit slot `slot` of a descriptor seen as 32-bit words. */
function putAddress(words: Uint32Array, slot: number, view: Uint8Array): void {
  const address = addressOf(view);
  words[2 * slot] = address >>> 0;
  words[2 * slot + 1] = Math.floor(address / TWO_POW_32);
}

function pack(
  words: Uint32Array,
  sources: readonly Uint8Array[],
  dests: readonly Uint8Array[],
): void {
  const k = sources.length;
  for (let i = 0; i < k; i++) putAddress(words, i, sources[i]!);
  for (let i = 0; i < dests.length; i++) putAddress(words, k + i, dests[i]!);
}

export class IsalCodec implements ErasureCodec {
  readonly implementation = "isa-l" as const;
  readonly k: number;
  readonly m: number;
  readonly #shim: EcShim;
  readonly #tables: IsalTables;
  readonly #asyncThresholdBytes: number;
  /** Reused by the synchronous calls, which cannot interleave; async calls get their own. */
  readonly #descriptor: Uint32Array;

  constructor(shim: EcShim, tables: IsalTables, asyncThresholdBytes: number) {
    this.#shim = shim;
    this.#tables = tables;
    this.k = tables.k;
    this.m = tables.m;
    this.#asyncThresholdBytes = asyncThresholdBytes;
    this.#descriptor = new Uint32Array(2 * (tables.k + tables.m));
  }

  encode(data: readonly Uint8Array[], parity: readonly Uint8Array[]): void {
    const length = checkEncodeArgs(this.k, this.m, data, parity);
    this.#code(length, this.#tables.encodeTables, data, parity);
  }

  async encodeAsync(data: readonly Uint8Array[], parity: readonly Uint8Array[]): Promise<void> {
    const length = checkEncodeArgs(this.k, this.m, data, parity);
    if (this.k * length < this.#asyncThresholdBytes) {
      this.#code(length, this.#tables.encodeTables, data, parity);
      return;
    }
    await this.#codeAsync(length, this.#tables.encodeTables, data, parity);
  }

  reconstruct(
    fragments: readonly (Uint8Array | null)[],
    targets: ReadonlyMap<number, Uint8Array>,
  ): void {
    const plan = planReconstruct(this.k, this.m, fragments, targets);
    if (plan === null) return;
    const tables = this.#decodeTables(plan);
    // Packed straight from the plan: no operand arrays on the hot path.
    const descriptor = this.#descriptor;
    const { survivors, targets: order } = plan;
    const k = survivors.length;
    for (let i = 0; i < k; i++) putAddress(descriptor, i, fragments[survivors[i]!]!);
    for (let t = 0; t < order.length; t++) putAddress(descriptor, k + t, targets.get(order[t]!)!);
    const rc = this.#shim.symbols.kiseki_ec_encode(
      plan.length,
      k,
      order.length,
      tables,
      descriptor,
    );
    assert(rc === EC_SHIM_OK, `kiseki_ec_encode rejected checked arguments (${rc})`);
  }

  async reconstructAsync(
    fragments: readonly (Uint8Array | null)[],
    targets: ReadonlyMap<number, Uint8Array>,
  ): Promise<void> {
    const plan = planReconstruct(this.k, this.m, fragments, targets);
    if (plan === null) return;
    const { sources, dests } = this.#operands(plan, fragments, targets);
    const tables = this.#decodeTables(plan);
    if (this.k * plan.length < this.#asyncThresholdBytes) {
      this.#code(plan.length, tables, sources, dests);
      return;
    }
    await this.#codeAsync(plan.length, tables, sources, dests);
  }

  #operands(
    plan: ReconstructPlan,
    fragments: readonly (Uint8Array | null)[],
    targets: ReadonlyMap<number, Uint8Array>,
  ): { sources: Uint8Array[]; dests: Uint8Array[] } {
    return {
      sources: plan.survivors.map((i) => fragments[i]!),
      dests: plan.targets.map((i) => targets.get(i)!),
    };
  }

  #decodeTables(plan: ReconstructPlan): Uint8Array {
    const t = this.#tables;
    const cached = t.decode.get(plan.key);
    if (cached !== undefined) return cached;
    const { k, m } = this;
    const rows = plan.targets.length;
    const coefficients = new Uint8Array(rows * k);
    const rc = this.#shim.symbols.kiseki_ec_decode_matrix(
      k,
      m,
      t.matrix,
      Uint8Array.from(plan.survivors),
      Uint8Array.from(plan.targets),
      rows,
      coefficients,
    );
    // Any k distinct rows of a Cauchy encode matrix are independent.
    assert(rc === EC_SHIM_OK, `ISA-L could not invert survivors ${plan.survivors} (${rc})`);
    const tables = new Uint8Array(ISAL_TABLE_BYTES_PER_COEFFICIENT * k * rows);
    assert(
      this.#shim.symbols.kiseki_ec_init_tables(k, rows, coefficients, tables) === EC_SHIM_OK,
      "kiseki_ec_init_tables rejected checked arguments",
    );
    t.decode.set(plan.key, tables, tables.byteLength);
    return tables;
  }

  #code(
    length: number,
    tables: Uint8Array,
    sources: readonly Uint8Array[],
    dests: readonly Uint8Array[],
  ): void {
    const descriptor = this.#descriptor;
    pack(descriptor, sources, dests);
    const rc = this.#shim.symbols.kiseki_ec_encode(
      length,
      sources.length,
      dests.length,
      tables,
      descriptor,
    );
    assert(rc === EC_SHIM_OK, `kiseki_ec_encode rejected checked arguments (${rc})`);
  }

  async #codeAsync(
    length: number,
    tables: Uint8Array,
    sources: readonly Uint8Array[],
    dests: readonly Uint8Array[],
  ): Promise<void> {
    const descriptor = new Uint32Array(2 * (sources.length + dests.length));
    pack(descriptor, sources, dests);
    const rc = await this.#shim.symbols.kiseki_ec_encode_nonblocking(
      length,
      sources.length,
      dests.length,
      tables,
      descriptor,
    );
    // The C side read raw addresses; keep every buffer reachable until it has returned.
    keepAlive(sources, dests, tables, descriptor);
    assert(rc === EC_SHIM_OK, `kiseki_ec_encode rejected checked arguments (${rc})`);
  }
}

/**
 * Called after an await with everything a nonblocking call read by address: the use after
 * resumption makes the values live across the suspension, so the collector cannot free them.
 */
function keepAlive(..._values: unknown[]): void {}

export class IsalCodecFactory implements ErasureCodecFactory {
  readonly implementation = "isa-l" as const;
  readonly reason: string;
  readonly #shim: EcShim;
  readonly #tables = new BoundedLru<IsalTables>(EC_GEOMETRIES_CACHED_MAX, Infinity);

  constructor(shim: EcShim, reason: string) {
    this.#shim = shim;
    shimForAddresses ??= shim;
    this.reason = reason;
  }

  create(options: ErasureCodecOptions): ErasureCodec {
    checkGeometry(options);
    const threshold = asyncThresholdBytes(options);
    const { k, m } = options;
    const key = `${k}+${m}`;
    let tables = this.#tables.get(key);
    if (tables === undefined) {
      const s = this.#shim.symbols;
      const matrix = new Uint8Array((k + m) * k);
      assert(s.kiseki_ec_gen_matrix(k, m, matrix) === EC_SHIM_OK, "gen_matrix rejected k, m");
      const encodeTables = new Uint8Array(ISAL_TABLE_BYTES_PER_COEFFICIENT * k * m);
      assert(
        s.kiseki_ec_init_tables(k, m, matrix.subarray(k * k), encodeTables) === EC_SHIM_OK,
        "init_tables rejected k, m",
      );
      tables = {
        k,
        m,
        matrix,
        encodeTables,
        decode: new BoundedLru(EC_DECODE_TABLES_ENTRIES_MAX, EC_DECODE_TABLES_BYTES_MAX),
      };
      this.#tables.set(key, tables, matrix.byteLength + encodeTables.byteLength);
    }
    return new IsalCodec(this.#shim, tables, threshold);
  }

  allocateFragments(count: number, length: number): Uint8Array[] {
    const stride = fragmentStride(count, length);
    // The allocator aligns to 16 bytes; over-allocate and start at the next 64-byte address.
    const slab = new Uint8Array(count * stride + EC_FRAGMENT_ALIGN_BYTES);
    const skew = (EC_FRAGMENT_ALIGN_BYTES - (addressOf(slab) % EC_FRAGMENT_ALIGN_BYTES)) %
      EC_FRAGMENT_ALIGN_BYTES;
    return carveFragments(slab, skew, stride, count, length);
  }
}
