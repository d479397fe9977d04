// Content-defined chunking (FastCDC with normalized chunking): cut points chosen by the
// content itself, so an edit in a large file moves only the boundaries near it and the
// chunks elsewhere keep their ids. Pure: no I/O, no clocks, no randomness.
//
// The hash is FastCDC's gear hash, h = (h << 1) + GEAR[byte] in 32 bits: bit k of h
// depends on the last k + 1 bytes, so the masks below take their bits from the top of a
// 31-bit window (bits 30 down), where the window is widest. Between minBytes and avgBytes
// a cut needs more zero bits (maskS, harder), past avgBytes fewer (maskL, easier), which
// pulls chunk sizes towards the average. The hot loop reads two bytes per step (FastCDC
// 2020's "rolling two bytes"); because no mask uses bit 31, that finds exactly the cut
// points of the byte-at-a-time definition (`referenceCutPoints` in the test checks it).

import { assert } from "../base/mod.ts";

/**
 * Defaults, chosen by tests/bench/cdc_bench.ts (2 shared cores; results/cdc.json). The
 * chunker runs at ~2.7-2.9 GB/s for every average (0.8 of a bare byte-reading loop), so
 * speed does not decide. What does: each chunk pays fixed costs downstream (chunk id, DEK
 * derivation and key import, one AEAD call, placement, index and refcount entries, k + m
 * fragment writes). Sealing 128 MiB: 64 KiB chunks 888 MB/s with the OpenSSL shim and
 * 394 MB/s with the WebCrypto twin; 256 KiB 972 / 546; 1 MiB 977 / 595; 4 MiB 967 / 589.
 * Edits cost about 1.2 x avg each: 32 edits in 512 MiB re-stored 95 KiB per edit at 64
 * KiB, 333 KiB at 256 KiB, 1.2 MiB at 1 MiB, 4.4 MiB at 4 MiB (dedup 0.994 / 0.980 /
 * 0.926 / 0.730). A composition's chunk list is 34 KiB per GiB at 1 MiB against 139 KiB
 * at 256 KiB. 1 MiB is the knee: per-chunk costs gone on both AEADs, metadata 4x smaller
 * than 256 KiB, an edit still re-stores ~1 MiB, and EC 4+2 fragments are ~256 KiB, a good
 * device I/O size; 4 MiB gains nothing more and dedups badly.
 */
export const CDC_AVG_BYTES_DEFAULT = 1 << 20;
/** avg / 4, as FastCDC recommends: the skipped prefix is also the speed-up of cut skipping. */
export const CDC_MIN_BYTES_DEFAULT = CDC_AVG_BYTES_DEFAULT / 4;
/** avg * 4: bounds the assembly buffer and the largest chunk a reader must hold. */
export const CDC_MAX_BYTES_DEFAULT = CDC_AVG_BYTES_DEFAULT * 4;
/** Normalization level: maskS has log2(avg) + level bits, maskL log2(avg) - level. */
export const CDC_NORMALIZATION_LEVEL_DEFAULT = 2;

/** Smallest average accepted; smaller chunks cost more in metadata than they save. */
export const CDC_AVG_BYTES_MIN = 256;
/** Largest average accepted: keeps maskS inside the 31-bit window (2^26 + level 3 = 29 bits). */
export const CDC_AVG_BYTES_MAX = 1 << 26;
/** Largest chunk accepted (the AEAD and EC layers size buffers from it). */
export const CDC_MAX_BYTES_MAX = 1 << 28;
export const CDC_NORMALIZATION_LEVEL_MAX = 3;

export interface CdcOptions {
  /** Every chunk but the last is at least this long. Default CDC_MIN_BYTES_DEFAULT. */
  minBytes?: number;
  /** Target average; a power of two. Default CDC_AVG_BYTES_DEFAULT. */
  avgBytes?: number;
  /** No chunk is longer. Default CDC_MAX_BYTES_DEFAULT. */
  maxBytes?: number;
  /** 0..3; default CDC_NORMALIZATION_LEVEL_DEFAULT. */
  normalizationLevel?: number;
}

/** The validated parameters a chunker runs with. */
export interface CdcParams {
  readonly minBytes: number;
  readonly avgBytes: number;
  readonly maxBytes: number;
  readonly normalizationLevel: number;
  readonly maskS: number;
  readonly maskL: number;
}

/** Builds the gear table from a fixed splitmix32 stream: part of the chunk format, never change. */
function buildGear(): Int32Array {
  const gear = new Int32Array(256);
  let x = 0x6b69_7365; // "kise"
  for (let i = 0; i < 256; i++) {
    x = (x + 0x9e37_79b9) | 0;
    let z = x;
    z = Math.imul(z ^ (z >>> 16), 0x85eb_ca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2_ae35);
    gear[i] = z ^ (z >>> 16);
  }
  return gear;
}

/** The 256 gear values. Changing one changes every boundary (and so every chunk id). */
export const CDC_GEAR: Readonly<Int32Array> = buildGear();
// gear << 1, for the first byte of each two-byte step.
const GEAR_SHIFTED = CDC_GEAR.map((g) => g << 1);

/** `bits` one-bits ending at bit 30: the top of the 31-bit window. */
export function cdcMask(bits: number): number {
  assert(Number.isInteger(bits) && bits >= 1 && bits <= 30, "cdcMask: 1..30 bits");
  return (((1 << bits) - 1) << (31 - bits)) | 0;
}

/** Validates options (RangeError naming the bad one) and fills in defaults. */
export function cdcParams(options: CdcOptions = {}): CdcParams {
  const avgBytes = options.avgBytes ?? CDC_AVG_BYTES_DEFAULT;
  const minBytes = options.minBytes ??
    (options.avgBytes === undefined ? CDC_MIN_BYTES_DEFAULT : Math.floor(avgBytes / 4));
  const maxBytes = options.maxBytes ??
    (options.avgBytes === undefined ? CDC_MAX_BYTES_DEFAULT : avgBytes * 4);
  const level = options.normalizationLevel ?? CDC_NORMALIZATION_LEVEL_DEFAULT;
  if (
    !Number.isInteger(avgBytes) || avgBytes < CDC_AVG_BYTES_MIN || avgBytes > CDC_AVG_BYTES_MAX ||
    (avgBytes & (avgBytes - 1)) !== 0
  ) {
    throw new RangeError(
      `CDC avgBytes must be a power of two in [${CDC_AVG_BYTES_MIN}, ${CDC_AVG_BYTES_MAX}], ` +
        `got ${avgBytes}`,
    );
  }
  if (!Number.isInteger(minBytes) || minBytes < 0 || minBytes >= avgBytes) {
    throw new RangeError(`CDC minBytes must be an integer in [0, avgBytes), got ${minBytes}`);
  }
  if (!Number.isInteger(maxBytes) || maxBytes <= avgBytes || maxBytes > CDC_MAX_BYTES_MAX) {
    throw new RangeError(
      `CDC maxBytes must be an integer in (avgBytes, ${CDC_MAX_BYTES_MAX}], got ${maxBytes}`,
    );
  }
  if (!Number.isInteger(level) || level < 0 || level > CDC_NORMALIZATION_LEVEL_MAX) {
    throw new RangeError(
      `CDC normalizationLevel must be 0..${CDC_NORMALIZATION_LEVEL_MAX}, got ${level}`,
    );
  }
  const bits = Math.log2(avgBytes);
  return Object.freeze({
    minBytes,
    avgBytes,
    maxBytes,
    normalizationLevel: level,
    maskS: cdcMask(bits + level),
    maskL: cdcMask(Math.max(1, bits - level)),
  });
}

/**
 * Finds chunk boundaries in a stream fed in pieces of any size. Holds no data, only the
 * hash and the length of the chunk in progress, so memory does not grow with the stream;
 * boundaries do not depend on how the stream is split into pushes.
 */
export class ContentDefinedChunker {
  readonly params: CdcParams;
  /** Stream offset of the next byte pushed. */
  #offset = 0;
  /** Bytes of the chunk in progress seen so far. */
  #length = 0;
  #hash = 0;

  constructor(options: CdcOptions = {}) {
    this.params = cdcParams(options);
  }

  /** Bytes pushed so far. */
  get offset(): number {
    return this.#offset;
  }

  /** Bytes of the chunk in progress (pushed, not yet cut). */
  get pendingBytes(): number {
    return this.#length;
  }

  /**
   * Consumes `bytes` and returns the stream offsets (ascending, absolute since the start
   * or the last reset) at which chunks completed inside them: each is the end of a chunk.
   */
  push(bytes: Uint8Array): number[] {
    const { minBytes, avgBytes, maxBytes, maskS, maskL } = this.params;
    const cuts: number[] = [];
    const n = bytes.length;
    let i = 0;
    while (i < n) {
      // Cut-point skipping: the first minBytes of a chunk are never hashed.
      if (this.#length < minBytes) {
        const skip = Math.min(minBytes - this.#length, n - i);
        i += skip;
        this.#length += skip;
        if (this.#length < minBytes) break;
      }
      let cut = -1;
      if (this.#length < avgBytes) {
        const end = i + Math.min(avgBytes - this.#length, n - i);
        cut = this.#scan(bytes, i, end, maskS);
        this.#length += (cut < 0 ? end : cut) - i;
        i = cut < 0 ? end : cut;
      }
      if (cut < 0 && i < n) {
        const end = i + Math.min(maxBytes - this.#length, n - i);
        cut = this.#scan(bytes, i, end, maskL);
        this.#length += (cut < 0 ? end : cut) - i;
        i = cut < 0 ? end : cut;
        if (cut < 0 && this.#length === maxBytes) cut = i;
      }
      if (cut >= 0) {
        cuts.push(this.#offset + cut);
        this.#length = 0;
        this.#hash = 0;
      }
    }
    this.#offset += n;
    return cuts;
  }

  /** Ends the stream: the offset ending the last chunk, or null when nothing is pending. */
  finish(): number | null {
    const pending = this.#length;
    this.#length = 0;
    this.#hash = 0;
    return pending > 0 ? this.#offset : null;
  }

  /** Starts a new stream at offset 0. */
  reset(): void {
    this.#offset = 0;
    this.#length = 0;
    this.#hash = 0;
  }

  /**
   * Hashes bytes[i, end) and returns the index just past the first byte whose hash has no
   * bit of `mask` set, or -1 (the hash carried on in #hash).
   */
  #scan(bytes: Uint8Array, i: number, end: number, mask: number): number {
    const gear = CDC_GEAR;
    const gearShifted = GEAR_SHIFTED;
    const maskShifted = mask << 1;
    let h = this.#hash;
    // Two bytes per step: (h << 2) + (g[a] << 1) is the one-byte hash after `a`, shifted
    // left once; masks never use bit 31, so testing it against mask << 1 is the same test.
    for (; i + 1 < end; i += 2) {
      h = ((h << 2) + gearShifted[bytes[i]!]!) | 0;
      if ((h & maskShifted) === 0) return i + 1;
      h = (h + gear[bytes[i + 1]!]!) | 0;
      if ((h & mask) === 0) return i + 2;
    }
    if (i < end) {
      h = ((h << 1) + gear[bytes[i]!]!) | 0;
      if ((h & mask) === 0) return i + 1;
    }
    this.#hash = h;
    return -1;
  }
}

/** Chunk boundaries of a whole buffer: the end offset of every chunk, the last = length. */
export function cutPoints(bytes: Uint8Array, options: CdcOptions = {}): number[] {
  const chunker = new ContentDefinedChunker(options);
  const cuts = chunker.push(bytes);
  const last = chunker.finish();
  if (last !== null) cuts.push(last);
  return cuts;
}

/** A whole buffer split into chunks: views of `bytes`, no copies. */
export function splitChunks(bytes: Uint8Array, options: CdcOptions = {}): Uint8Array[] {
  let start = 0;
  return cutPoints(bytes, options).map((end) => {
    const chunk = bytes.subarray(start, end);
    start = end;
    return chunk;
  });
}

export interface StreamChunk {
  /** Offset of the chunk's first byte in the stream. */
  offset: number;
  /**
   * The chunk's bytes: a view of the pushed piece when the chunk lies inside one piece,
   * else of the stream's assembly buffer. Valid only until the next chunk is asked for;
   * copy to keep.
   */
  bytes: Uint8Array;
}

export interface ChunkStreamOptions extends CdcOptions {
  /**
   * Assembly buffer for chunks that span pieces, at least maxBytes long (e.g. from a
   * BufferPool); allocated once per stream when absent.
   */
  buffer?: Uint8Array;
}

/**
 * Splits a byte stream into chunks as it arrives. Holds at most one chunk (maxBytes) of
 * the stream, so a stream of any size is chunked in bounded memory. Pieces must not be
 * changed by the source until the chunks cut from them have been consumed.
 */
export async function* chunkStream(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  options: ChunkStreamOptions = {},
): AsyncGenerator<StreamChunk, void, undefined> {
  const chunker = new ContentDefinedChunker(options);
  const { maxBytes } = chunker.params;
  let buffer = options.buffer;
  if (buffer !== undefined && buffer.length < maxBytes) {
    throw new RangeError(`chunkStream buffer holds ${buffer.length} bytes, needs ${maxBytes}`);
  }
  let pending = 0; // bytes of the chunk in progress held in `buffer`
  let chunkStart = 0;
  for await (const piece of source) {
    const pieceStart = chunker.offset;
    const cuts = chunker.push(piece);
    let at = 0; // index in piece of the first byte not yet yielded or buffered
    for (const cut of cuts) {
      const end = cut - pieceStart;
      if (pending > 0) {
        buffer!.set(piece.subarray(at, end), pending);
        const length = pending + end - at;
        pending = 0;
        yield { offset: chunkStart, bytes: buffer!.subarray(0, length) };
      } else {
        yield { offset: chunkStart, bytes: piece.subarray(at, end) };
      }
      at = end;
      chunkStart = cut;
    }
    if (at < piece.length) {
      buffer ??= new Uint8Array(maxBytes);
      assert(pending + piece.length - at <= maxBytes, "chunk in progress exceeds maxBytes");
      buffer.set(piece.subarray(at), pending);
      pending += piece.length - at;
    }
  }
  const last = chunker.finish();
  if (last !== null) {
    assert(last - chunkStart === pending, "pending bytes match the chunker");
    yield { offset: chunkStart, bytes: buffer!.subarray(0, pending) };
  }
}
