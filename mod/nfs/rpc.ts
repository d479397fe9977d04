// ONC RPC v2 (RFC 5531) messages and TCP record marking, pure: the call header and its
// credentials decoded, replies encoded, records reassembled from fragments under a size
// limit. The server that owns sockets, concurrency and the duplicate request cache is
// rpc_server.ts.

import { XdrError, XdrReader, XdrWriter } from "./xdr.ts";

export const RPC_VERSION = 2;
export const CALL = 0;
export const REPLY = 1;
export const MSG_ACCEPTED = 0;
export const MSG_DENIED = 1;

// accept_stat
export const SUCCESS = 0;
export const PROG_UNAVAIL = 1;
export const PROG_MISMATCH = 2;
export const PROC_UNAVAIL = 3;
export const GARBAGE_ARGS = 4;
export const SYSTEM_ERR = 5;

// reject_stat
export const RPC_MISMATCH = 0;
export const AUTH_ERROR = 1;

// auth_stat
export const AUTH_OK = 0;
export const AUTH_BADCRED = 1;
export const AUTH_REJECTEDCRED = 2;
export const AUTH_BADVERF = 3;
export const AUTH_REJECTEDVERF = 4;
export const AUTH_TOOWEAK = 5;

// auth_flavor
export const AUTH_NONE = 0;
export const AUTH_SYS = 1;
export const AUTH_SHORT = 2;
export const AUTH_DH = 3;
export const RPCSEC_GSS = 6;

/** Credential and verifier bodies are at most 400 bytes (RFC 5531, opaque_auth). */
export const AUTH_BODY_BYTES_MAX = 400;
/** AUTH_SYS machine names are at most 255 bytes. */
export const AUTH_SYS_MACHINE_NAME_BYTES_MAX = 255;
/** AUTH_SYS carries at most 16 supplementary groups. */
export const AUTH_SYS_GIDS_MAX = 16;
/** The largest record (call) reassembled from fragments: a 1 MiB WRITE and its header. */
export const RPC_RECORD_BYTES_MAX = (1 << 20) + (64 << 10);
/** Fragments one record may arrive in (empty fragments included). */
export const RPC_FRAGMENTS_PER_RECORD_MAX = 1024;

const LAST_FRAGMENT = 0x8000_0000;

/** The caller's identity as AUTH_SYS states it (uid/gid are the POSIX owners). */
export interface AuthSys {
  stamp: number;
  machineName: string;
  uid: number;
  gid: number;
  gids: number[];
}

export type Credential =
  | { flavor: typeof AUTH_NONE }
  | { flavor: typeof AUTH_SYS; sys: AuthSys }
  | { flavor: number; unsupported: true };

export interface RpcCall {
  xid: number;
  prog: number;
  vers: number;
  proc: number;
  cred: Credential;
  /** The arguments: the rest of the record. */
  args: XdrReader;
}

/** What a record that is not a usable call gets. */
export type CallProblem =
  /** Not even an xid, or not a CALL: nothing to answer. */
  | { kind: "drop"; reason: string }
  | { kind: "rpc_mismatch"; xid: number }
  | { kind: "auth_error"; xid: number; stat: number; reason: string };

/** A record's call header, or why it cannot be served. */
export function decodeCall(record: Uint8Array): RpcCall | CallProblem {
  const r = new XdrReader(record);
  let xid: number;
  try {
    xid = r.u32();
    const type = r.u32();
    if (type !== CALL) return { kind: "drop", reason: `message type ${type} is not a call` };
  } catch {
    return { kind: "drop", reason: "record shorter than a call header" };
  }
  try {
    const rpcvers = r.u32();
    if (rpcvers !== RPC_VERSION) return { kind: "rpc_mismatch", xid };
    const prog = r.u32();
    const vers = r.u32();
    const proc = r.u32();
    const credFlavor = r.u32();
    const credBody = r.opaque(AUTH_BODY_BYTES_MAX);
    r.u32(); // verifier flavor: AUTH_NONE and AUTH_SYS carry no verifier worth checking
    r.opaque(AUTH_BODY_BYTES_MAX);
    let cred: Credential;
    if (credFlavor === AUTH_NONE) cred = { flavor: AUTH_NONE };
    else if (credFlavor === AUTH_SYS) cred = { flavor: AUTH_SYS, sys: decodeAuthSys(credBody) };
    else cred = { flavor: credFlavor, unsupported: true };
    return { xid, prog, vers, proc, cred, args: r };
  } catch (e) {
    return {
      kind: "auth_error",
      xid,
      stat: AUTH_BADCRED,
      reason: e instanceof XdrError ? e.message : String(e),
    };
  }
}

export function decodeAuthSys(body: Uint8Array): AuthSys {
  const r = new XdrReader(body);
  const stamp = r.u32();
  const machineName = new TextDecoder().decode(r.opaque(AUTH_SYS_MACHINE_NAME_BYTES_MAX));
  const uid = r.u32();
  const gid = r.u32();
  const count = r.u32();
  if (count > AUTH_SYS_GIDS_MAX) {
    throw new XdrError(`AUTH_SYS carries ${count} groups, more than ${AUTH_SYS_GIDS_MAX}`);
  }
  const gids = [];
  for (let i = 0; i < count; i++) gids.push(r.u32());
  if (r.remaining !== 0) throw new XdrError("AUTH_SYS credential has trailing bytes");
  return { stamp, machineName, uid, gid, gids };
}

export function encodeAuthSys(a: AuthSys): Uint8Array {
  const w = new XdrWriter(64).u32(a.stamp).string(a.machineName).u32(a.uid).u32(a.gid);
  w.u32(a.gids.length);
  for (const g of a.gids) w.u32(g);
  return w.finish();
}

function acceptedHead(xid: number, stat: number): XdrWriter {
  return new XdrWriter(128).u32(xid).u32(REPLY).u32(MSG_ACCEPTED).u32(AUTH_NONE).u32(0).u32(stat);
}

/** A SUCCESS reply; `body` is the procedure's encoded results. */
export function successReply(xid: number, body: Uint8Array): Uint8Array {
  // Results are whole XDR (a multiple of four bytes): one allocation, one copy.
  const head = acceptedHead(xid, SUCCESS).finish();
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}

/** An accepted reply of another status (PROG_UNAVAIL, PROC_UNAVAIL, GARBAGE_ARGS, ...). */
export function acceptedReply(xid: number, stat: number): Uint8Array {
  return acceptedHead(xid, stat).finish();
}

export function progMismatchReply(xid: number, low: number, high: number): Uint8Array {
  return acceptedHead(xid, PROG_MISMATCH).u32(low).u32(high).finish();
}

export function rpcMismatchReply(xid: number): Uint8Array {
  return new XdrWriter(32).u32(xid).u32(REPLY).u32(MSG_DENIED).u32(RPC_MISMATCH)
    .u32(RPC_VERSION).u32(RPC_VERSION).finish();
}

export function authErrorReply(xid: number, stat: number): Uint8Array {
  return new XdrWriter(32).u32(xid).u32(REPLY).u32(MSG_DENIED).u32(AUTH_ERROR).u32(stat)
    .finish();
}

/** Encodes a call (for clients in tests and tools): header, AUTH_SYS or AUTH_NONE, args. */
export function encodeCall(
  call: { xid: number; prog: number; vers: number; proc: number; cred?: AuthSys | null },
  args: Uint8Array,
): Uint8Array {
  const w = new XdrWriter(args.length + 128).u32(call.xid).u32(CALL).u32(RPC_VERSION)
    .u32(call.prog).u32(call.vers).u32(call.proc);
  if (call.cred) w.u32(AUTH_SYS).opaque(encodeAuthSys(call.cred));
  else w.u32(AUTH_NONE).u32(0);
  w.u32(AUTH_NONE).u32(0);
  return w.fixed(args).finish();
}

export type ReplyBody =
  | { kind: "success"; results: XdrReader }
  | { kind: "accepted"; stat: number; low?: number; high?: number }
  | { kind: "denied"; stat: number; authStat?: number };

/** Decodes a reply (clients in tests): its xid and what it says. */
export function decodeReply(record: Uint8Array): { xid: number; body: ReplyBody } {
  const r = new XdrReader(record);
  const xid = r.u32();
  if (r.u32() !== REPLY) throw new XdrError("not a reply");
  if (r.u32() === MSG_DENIED) {
    const stat = r.u32();
    return {
      xid,
      body: { kind: "denied", stat, authStat: stat === AUTH_ERROR ? r.u32() : undefined },
    };
  }
  r.u32();
  r.opaque(AUTH_BODY_BYTES_MAX);
  const stat = r.u32();
  if (stat === SUCCESS) return { xid, body: { kind: "success", results: r } };
  if (stat === PROG_MISMATCH) {
    return { xid, body: { kind: "accepted", stat, low: r.u32(), high: r.u32() } };
  }
  return { xid, body: { kind: "accepted", stat } };
}

/** A stream that broke record marking: the connection is closed. */
export class RecordFramingError extends Error {
  override name = "RecordFramingError";
}

/** Frames one record as a single last fragment. */
export function frameRecord(record: Uint8Array): Uint8Array {
  const out = new Uint8Array(record.length + 4);
  new DataView(out.buffer).setUint32(0, (LAST_FRAGMENT | record.length) >>> 0);
  out.set(record, 4);
  return out;
}

/**
 * Reassembles records from a TCP byte stream (RFC 5531 §11): fragments of one record are
 * joined until the last-fragment bit; a record over `recordBytesMax` is a framing error.
 */
export class RecordDecoder {
  readonly #recordBytesMax: number;
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  /** Fragments of the record being assembled (complete ones). */
  #fragments: Uint8Array[] = [];
  #fragmentsBytes = 0;

  constructor(recordBytesMax = RPC_RECORD_BYTES_MAX) {
    this.#recordBytesMax = recordBytesMax;
  }

  /** Bytes held that are not yet a whole record. */
  get bufferedBytes(): number {
    return this.#pendingBytes + this.#fragmentsBytes;
  }

  /** Feeds received bytes; returns the records they completed (copies). */
  push(chunk: Uint8Array): Uint8Array[] {
    if (chunk.length > 0) {
      this.#pending.push(chunk.slice());
      this.#pendingBytes += chunk.length;
    }
    const records: Uint8Array[] = [];
    for (;;) {
      if (this.#pendingBytes < 4) break;
      const head = this.#peek(4);
      const word = new DataView(head.buffer, head.byteOffset, 4).getUint32(0);
      const length = word & 0x7fff_ffff;
      const last = (word & LAST_FRAGMENT) !== 0;
      if (this.#fragmentsBytes + length > this.#recordBytesMax) {
        throw new RecordFramingError(
          `record of more than ${this.#recordBytesMax} bytes (fragment of ${length})`,
        );
      }
      if (this.#fragments.length >= RPC_FRAGMENTS_PER_RECORD_MAX) {
        throw new RecordFramingError(
          `record in more than ${RPC_FRAGMENTS_PER_RECORD_MAX} fragments`,
        );
      }
      if (this.#pendingBytes < 4 + length) break;
      this.#take(4);
      const fragment = this.#take(length);
      this.#fragments.push(fragment);
      this.#fragmentsBytes += length;
      if (last) {
        records.push(
          this.#fragments.length === 1
            ? this.#fragments[0]!
            : join(this.#fragments, this.#fragmentsBytes),
        );
        this.#fragments = [];
        this.#fragmentsBytes = 0;
      }
    }
    return records;
  }

  #peek(n: number): Uint8Array {
    const first = this.#pending[0]!;
    if (first.length >= n) return first.subarray(0, n);
    return join(this.#pending, this.#pendingBytes).subarray(0, n);
  }

  #take(n: number): Uint8Array {
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const first = this.#pending[0]!;
      const want = n - filled;
      if (first.length <= want) {
        out.set(first, filled);
        filled += first.length;
        this.#pending.shift();
      } else {
        out.set(first.subarray(0, want), filled);
        this.#pending[0] = first.subarray(want);
        filled += want;
      }
    }
    this.#pendingBytes -= n;
    return out;
  }
}

function join(parts: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
