// The `aws-chunked` body encoding of streaming uploads: `hex-size[;chunk-signature=sig]\r\n`,
// the data, `\r\n`, a final zero-size chunk, then optional trailing headers (a checksum and,
// when signed, `x-amz-trailer-signature`) and an empty line. The decoder streams: data
// passes through as it arrives while the chunk's hash and the trailer checksum run, and a
// chunk's signature is checked when the chunk ends. Memory is one header line, never a
// chunk. Like every body stream in the gateway, a consumer must commit nothing until the
// stream has closed without error: a bad signature surfaces at the end of its chunk.

import { createHash, type Hash } from "node:crypto";
import { assert } from "../base/mod.ts";
import {
  type ChecksumAlgorithm,
  checksumAlgorithmOfHeader,
  createChecksum,
  type IncrementalHash,
  parseChecksumValue,
  toBase64,
} from "./checksums.ts";
import { S3Error } from "./errors.ts";
import { chunkSignature, EMPTY_SHA256_HEX, signaturesEqual, trailerSignature } from "./sigv4.ts";

/** The largest chunk a client may announce. SDKs send 8 KiB to 1 MiB; MinIO allows 16 MiB. */
export const AWS_CHUNK_BYTES_MAX = 16 << 20;
/** Longest chunk header line (`hex;chunk-signature=<64 hex>` is 90 bytes). */
export const AWS_CHUNK_HEADER_BYTES_MAX = 512;
/** Longest trailing header line, and most trailing headers. */
export const AWS_CHUNK_TRAILER_LINE_BYTES_MAX = 1024;
export const AWS_CHUNK_TRAILERS_MAX = 8;
/** Names a client may announce in x-amz-trailer. */
export const AWS_CHUNK_TRAILER_NAMES_MAX = 4;

const TRAILER_SIGNATURE = "x-amz-trailer-signature";
const CR = 0x0d;
const LF = 0x0a;

/** The seed of a signed stream, from the verified request (VerifiedSigV4). */
export interface AwsChunkedSigning {
  signingKey: Uint8Array;
  amzDate: string;
  scope: string;
  /** The request's own signature: the first chunk's "previous signature". */
  seedSignature: string;
}

export interface AwsChunkedOptions {
  /** Chunks and trailer signed (the two STREAMING-AWS4-HMAC-SHA256-* modes), or not. */
  signing: AwsChunkedSigning | null;
  /** Whether trailing headers follow the final chunk (the *-TRAILER modes). */
  trailer: boolean;
  /** The x-amz-trailer header: the trailing headers the client announced. */
  announcedTrailers?: string | null;
  /** x-amz-decoded-content-length, when sent: the decoded body must have this length. */
  decodedLengthBytes?: number;
  chunkBytesMax?: number;
}

export interface AwsChunkedResult {
  decodedBytes: number;
  /** Trailing headers as received (lowercase names), without the trailer signature. */
  trailers: Record<string, string>;
  /** The checksum the trailer carried and the body matched, base64. */
  checksum?: { algorithm: ChecksumAlgorithm; value: string };
}

const State = {
  Header: 0,
  Data: 1,
  DataCr: 2,
  DataLf: 3,
  Trailer: 4,
  Done: 5,
} as const;
type State = typeof State[keyof typeof State];

/** Parses the x-amz-trailer header: lowercase names, at most AWS_CHUNK_TRAILER_NAMES_MAX. */
export function parseAnnouncedTrailers(value: string | null | undefined): string[] {
  if (value === null || value === undefined || value.trim() === "") return [];
  const names = value.split(",").map((n) => n.trim().toLowerCase()).filter((n) => n !== "");
  if (names.length > AWS_CHUNK_TRAILER_NAMES_MAX) {
    throw new S3Error(
      "InvalidRequest",
      `x-amz-trailer names ${names.length} headers; at most ${AWS_CHUNK_TRAILER_NAMES_MAX}`,
    );
  }
  return names;
}

/**
 * Decodes an aws-chunked body into its payload. Errors (all S3Error): IncompleteBody when
 * the body ends early or is shorter than x-amz-decoded-content-length, InvalidRequest for
 * malformed framing, SignatureDoesNotMatch for a chunk or trailer signature that does not
 * verify, MalformedTrailerError for bad trailing headers, BadDigest for a trailing checksum
 * the payload does not match. `result` resolves once the body ended and verified.
 */
export class AwsChunkedDecoder extends TransformStream<Uint8Array, Uint8Array> {
  readonly result: Promise<AwsChunkedResult>;

  constructor(options: AwsChunkedOptions) {
    const parser = new ChunkParser(options);
    let resolve!: (r: AwsChunkedResult) => void;
    let reject!: (e: unknown) => void;
    const result = new Promise<AwsChunkedResult>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    result.catch(() => {});
    const guard = <T>(fn: () => T): T => {
      try {
        return fn();
      } catch (e) {
        reject(e);
        throw e;
      }
    };
    super({
      transform(chunk, controller) {
        guard(() => parser.push(chunk, (data) => controller.enqueue(data)));
      },
      flush() {
        resolve(guard(() => parser.finish()));
      },
      cancel(reason) {
        reject(reason);
      },
    });
    this.result = result;
  }
}

class ChunkParser {
  readonly #signing: AwsChunkedSigning | null;
  readonly #trailer: boolean;
  readonly #announced: string[];
  readonly #decodedLength: number | undefined;
  readonly #chunkBytesMax: number;
  readonly #checksumAlgorithm: ChecksumAlgorithm | null;
  readonly #checksum: IncrementalHash | null;

  #state: State = State.Header;
  readonly #line: Uint8Array;
  #lineLength = 0;
  #remaining = 0;
  #chunkHash: Hash | null = null;
  #chunkSignature = "";
  #previousSignature: string;
  #decoded = 0;
  readonly #trailers = new Map<string, string>();
  #trailerSignature: string | null = null;

  constructor(options: AwsChunkedOptions) {
    this.#signing = options.signing;
    this.#trailer = options.trailer;
    this.#announced = parseAnnouncedTrailers(options.announcedTrailers);
    this.#decodedLength = options.decodedLengthBytes;
    this.#chunkBytesMax = options.chunkBytesMax ?? AWS_CHUNK_BYTES_MAX;
    assert(this.#chunkBytesMax >= 1, "chunkBytesMax must be positive");
    this.#previousSignature = options.signing?.seedSignature ?? "";
    this.#line = new Uint8Array(
      Math.max(AWS_CHUNK_HEADER_BYTES_MAX, AWS_CHUNK_TRAILER_LINE_BYTES_MAX),
    );
    if (this.#announced.length > 0 && !this.#trailer) {
      throw new S3Error(
        "InvalidRequest",
        "x-amz-trailer was sent but x-amz-content-sha256 does not announce trailing headers",
      );
    }
    let algorithm: ChecksumAlgorithm | null = null;
    for (const name of this.#announced) {
      const found = checksumAlgorithmOfHeader(name);
      if (found === null) {
        throw new S3Error("InvalidRequest", `x-amz-trailer names an unsupported header ${name}`);
      }
      if (algorithm !== null) {
        throw new S3Error("InvalidRequest", "x-amz-trailer may name one checksum only");
      }
      algorithm = found;
    }
    this.#checksumAlgorithm = algorithm;
    this.#checksum = algorithm === null ? null : createChecksum(algorithm);
  }

  push(input: Uint8Array, emit: (data: Uint8Array) => void): void {
    let at = 0;
    while (at < input.length) {
      switch (this.#state) {
        case State.Header:
        case State.Trailer: {
          const lf = input.indexOf(LF, at);
          const end = lf < 0 ? input.length : lf + 1;
          this.#appendLine(input.subarray(at, end));
          at = end;
          if (lf >= 0) this.#endLine();
          break;
        }
        case State.Data: {
          const n = Math.min(this.#remaining, input.length - at);
          const data = input.subarray(at, at + n);
          this.#chunkHash?.update(data);
          this.#checksum?.update(data);
          this.#decoded += n;
          this.#remaining -= n;
          at += n;
          if (this.#decodedLength !== undefined && this.#decoded > this.#decodedLength) {
            throw new S3Error(
              "InvalidRequest",
              `The aws-chunked body decodes to more than the ${this.#decodedLength} bytes ` +
                `of x-amz-decoded-content-length`,
            );
          }
          emit(data);
          if (this.#remaining === 0) this.#state = State.DataCr;
          break;
        }
        case State.DataCr:
        case State.DataLf: {
          const expected = this.#state === State.DataCr ? CR : LF;
          if (input[at] !== expected) throw malformed("a chunk's data is not followed by CRLF");
          at++;
          if (this.#state === State.DataCr) {
            this.#state = State.DataLf;
          } else {
            this.#endChunk();
            this.#state = State.Header;
          }
          break;
        }
        case State.Done:
          throw malformed("data follows the end of the aws-chunked body");
      }
    }
  }

  finish(): AwsChunkedResult {
    if (this.#state !== State.Done) {
      throw new S3Error(
        "IncompleteBody",
        `The aws-chunked body ended before its final chunk${this.#trailer ? " and trailer" : ""}`,
      );
    }
    if (this.#decodedLength !== undefined && this.#decoded !== this.#decodedLength) {
      throw new S3Error(
        "IncompleteBody",
        `The aws-chunked body decodes to ${this.#decoded} bytes, x-amz-decoded-content-length ` +
          `says ${this.#decodedLength}`,
      );
    }
    const result: AwsChunkedResult = {
      decodedBytes: this.#decoded,
      trailers: Object.fromEntries(this.#trailers),
    };
    if (this.#checksumAlgorithm !== null) {
      result.checksum = {
        algorithm: this.#checksumAlgorithm,
        value: this.#trailers.get(this.#announced[0]!)!,
      };
    }
    return result;
  }

  #appendLine(bytes: Uint8Array): void {
    const max = this.#state === State.Header
      ? AWS_CHUNK_HEADER_BYTES_MAX
      : AWS_CHUNK_TRAILER_LINE_BYTES_MAX;
    if (this.#lineLength + bytes.length > max) {
      throw this.#state === State.Header
        ? malformed(`a chunk header is longer than ${max} bytes`)
        : trailerError(`a trailing header is longer than ${max} bytes`);
    }
    this.#line.set(bytes, this.#lineLength);
    this.#lineLength += bytes.length;
  }

  #takeLine(): string {
    const n = this.#lineLength;
    this.#lineLength = 0;
    if (n < 2 || this.#line[n - 2] !== CR) {
      throw this.#state === State.Header
        ? malformed("a chunk header does not end with CRLF")
        : trailerError("a trailing header does not end with CRLF");
    }
    // Latin-1: framing is ASCII, and a stray byte must not turn into a valid character.
    let text = "";
    for (let i = 0; i < n - 2; i++) text += String.fromCharCode(this.#line[i]!);
    return text;
  }

  #endLine(): void {
    const line = this.#takeLine();
    if (this.#state === State.Header) this.#startChunk(line);
    else this.#trailerLine(line);
  }

  #startChunk(line: string): void {
    const semi = line.indexOf(";");
    const sizeText = semi < 0 ? line : line.slice(0, semi);
    if (!/^[0-9a-fA-F]{1,8}$/.test(sizeText)) {
      throw malformed(`chunk size ${JSON.stringify(sizeText.slice(0, 32))} is not hex`);
    }
    const size = parseInt(sizeText, 16);
    if (size > this.#chunkBytesMax) {
      throw malformed(`a chunk of ${size} bytes exceeds the ${this.#chunkBytesMax}-byte limit`);
    }
    if (this.#signing !== null) {
      const extension = semi < 0 ? "" : line.slice(semi + 1);
      const m = /^chunk-signature=([0-9a-f]{64})$/.exec(extension);
      if (m === null) throw malformed("a signed chunk has no valid chunk-signature");
      this.#chunkSignature = m[1]!;
      this.#chunkHash = createHash("sha256");
    } else if (semi >= 0) {
      throw malformed("an unsigned chunk carries an extension");
    }
    this.#remaining = size;
    if (size === 0) {
      this.#endChunk();
      this.#state = State.Trailer;
      return;
    }
    this.#state = State.Data;
  }

  /** Verifies the chunk just read (signed streams); the chain moves on to it. */
  #endChunk(): void {
    if (this.#signing === null) return;
    const hash = this.#chunkHash!;
    this.#chunkHash = null;
    const expected = chunkSignature({
      signingKey: this.#signing.signingKey,
      amzDate: this.#signing.amzDate,
      scope: this.#signing.scope,
      previousSignature: this.#previousSignature,
      chunkSha256Hex: hash.digest("hex"),
    });
    if (!signaturesEqual(expected, this.#chunkSignature)) {
      throw new S3Error(
        "SignatureDoesNotMatch",
        "The chunk signature we calculated does not match the chunk-signature you provided " +
          `(chunk ending at decoded byte ${this.#decoded}).`,
      );
    }
    this.#previousSignature = this.#chunkSignature;
  }

  #trailerLine(line: string): void {
    if (line === "") {
      this.#endTrailer();
      return;
    }
    if (!this.#trailer) throw malformed("the final chunk is not followed by an empty line");
    if (this.#trailerSignature !== null) {
      throw trailerError("x-amz-trailer-signature must be the last trailing header");
    }
    const colon = line.indexOf(":");
    if (colon <= 0) throw trailerError(`${JSON.stringify(line.slice(0, 64))} is not name:value`);
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === TRAILER_SIGNATURE) {
      if (this.#signing === null) {
        throw trailerError("an unsigned stream carries x-amz-trailer-signature");
      }
      if (!/^[0-9a-f]{64}$/.test(value)) {
        throw trailerError("x-amz-trailer-signature is not 64 lowercase hex digits");
      }
      this.#trailerSignature = value;
      return;
    }
    if (!this.#announced.includes(name)) {
      throw trailerError(`the trailing header ${name} was not announced in x-amz-trailer`);
    }
    if (this.#trailers.has(name)) throw trailerError(`the trailing header ${name} appears twice`);
    if (this.#trailers.size >= AWS_CHUNK_TRAILERS_MAX) {
      throw trailerError(`more than ${AWS_CHUNK_TRAILERS_MAX} trailing headers`);
    }
    this.#trailers.set(name, value);
  }

  #endTrailer(): void {
    for (const name of this.#announced) {
      if (!this.#trailers.has(name)) {
        throw trailerError(`the trailing header ${name} announced in x-amz-trailer is missing`);
      }
    }
    if (this.#signing !== null && this.#trailer) {
      if (this.#trailerSignature === null) {
        throw trailerError("a signed stream's trailer has no x-amz-trailer-signature");
      }
      const canonical = [...this.#trailers].map(([n, v]) => `${n}:${v}\n`).join("");
      const expected = trailerSignature({
        signingKey: this.#signing.signingKey,
        amzDate: this.#signing.amzDate,
        scope: this.#signing.scope,
        previousSignature: this.#previousSignature,
        trailerSha256Hex: canonical === ""
          ? EMPTY_SHA256_HEX
          : createHash("sha256").update(canonical).digest("hex"),
      });
      if (!signaturesEqual(expected, this.#trailerSignature)) {
        throw new S3Error(
          "SignatureDoesNotMatch",
          "The trailer signature we calculated does not match the x-amz-trailer-signature " +
            "you provided.",
        );
      }
    }
    if (this.#checksumAlgorithm !== null) {
      const name = this.#announced[0]!;
      const claimed = parseChecksumValue(this.#checksumAlgorithm, this.#trailers.get(name)!);
      const actual = this.#checksum!.digest();
      if (toBase64(actual) !== toBase64(claimed)) {
        throw new S3Error(
          "BadDigest",
          `The ${this.#checksumAlgorithm} you specified did not match the calculated checksum.`,
        );
      }
    }
    this.#state = State.Done;
  }
}

function malformed(message: string): S3Error {
  return new S3Error("InvalidRequest", `Malformed aws-chunked body: ${message}`);
}

function trailerError(message: string): S3Error {
  return new S3Error("MalformedTrailerError", `Malformed trailing headers: ${message}`);
}
