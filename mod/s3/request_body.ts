// Reading a request body off the connection, with the two ways it fails that are the
// client's doing: the connection ends before Content-Length bytes arrived (half-closed or
// gone: IncompleteBody), or it stalls (RequestTimeout). Either is a 400, never a 500: the
// HTTP server reports both as plain errors ("Cannot read body as underlying resource
// unavailable", "connection closed before message completed"), which would otherwise be
// answered InternalError.

import { S3Error } from "./errors.ts";

/**
 * What the gateway reads of an HTTP request: a fetch Request has it, and so has the S3
 * listener's own (mod/s3/http1.ts), whose URL is the request target as sent.
 */
export interface S3HttpRequest {
  readonly method: string;
  /** The request URL, its path and query exactly as on the wire. */
  readonly url: string;
  readonly headers: Headers;
  readonly body: ReadableStream<Uint8Array> | null;
  /** Whether any of the body has been asked for. */
  readonly bodyUsed: boolean;
  bytes(): Promise<Uint8Array>;
}

/**
 * A body read that waits this long for its next bytes is given up (AWS answers such
 * uploads RequestTimeout after about 20 s of silence).
 */
export const S3_BODY_STALL_MS = 30_000;

function incomplete(cause: unknown): S3Error {
  return new S3Error("IncompleteBody", undefined, { cause });
}

function stalled(ms: number): S3Error {
  return new S3Error(
    "RequestTimeout",
    `Your socket connection to the server was not read from or written to within the ` +
      `timeout period (${Math.round(ms / 1000)} s).`,
  );
}

/** Races `read` against a stall timer; transport errors become IncompleteBody. */
async function guarded<T>(read: Promise<T>, stallMs: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(stalled(stallMs)), stallMs);
  });
  try {
    return await Promise.race([read, timeout]);
  } catch (e) {
    throw e instanceof S3Error ? e : incomplete(e);
  } finally {
    clearTimeout(timer);
  }
}

/** The whole body of `request` (a small one: the caller bounds its Content-Length). */
export function readRequestBytes(
  request: S3HttpRequest,
  stallMs: number = S3_BODY_STALL_MS,
): Promise<Uint8Array> {
  // bytes() of a request without a body is empty; asking for `body` first would make the
  // listener build a stream for nothing.
  const read = request.bytes();
  read.catch(() => {}); // observed through guarded(); a stall leaves it to the connection
  return guarded(read, stallMs);
}

/**
 * The body of `request` as a stream whose failures are S3 errors: a transport failure is
 * IncompleteBody, a read that waits `stallMs` is RequestTimeout. Cancelling it cancels the
 * request body.
 */
export function requestBodyStream(
  request: S3HttpRequest,
  stallMs: number = S3_BODY_STALL_MS,
): ReadableStream<Uint8Array> | null {
  const body = request.body;
  if (body === null) return null;
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await guarded(reader.read(), stallMs);
        if (done) controller.close();
        else controller.enqueue(value);
      } catch (e) {
        reader.cancel(e).catch(() => {});
        controller.error(e);
      }
    },
    cancel(reason) {
      return reader.cancel(reason).catch(() => {});
    },
  }, { highWaterMark: 0 });
}
