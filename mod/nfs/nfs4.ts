// NFS version 4 (RFC 8881, 7862), program 100003 version 4: NULL, and COMPOUND decoded as far
// as its header. No minor version is served yet, so every COMPOUND answers
// NFS4ERR_MINOR_VERS_MISMATCH with its tag and no results (RFC 8881 §16.2.3) — a clean refusal
// that the Linux client turns into EPROTONOSUPPORT, falling back to v3 when no version is set.

import { PROC_UNAVAIL } from "./rpc.ts";
import { RpcAcceptError, type RpcContext, type RpcProgram } from "./rpc_server.ts";
import { type XdrReader, XdrWriter } from "./xdr.ts";

export const NFS4_VERSION = 4;
export const NFSPROC4_NULL = 0;
export const NFSPROC4_COMPOUND = 1;
export const NFS4ERR_MINOR_VERS_MISMATCH = 10021;
/** A COMPOUND tag longer than this is garbage (clients send a few bytes, or none). */
export const NFS4_TAG_BYTES_MAX = 1024;

/** What NFSv4 serves: the NFS program's version 4 procedures. */
export class Nfs4Program {
  call(proc: number, args: XdrReader, _ctx: RpcContext): Uint8Array {
    if (proc === NFSPROC4_NULL) return new Uint8Array(0);
    if (proc !== NFSPROC4_COMPOUND) {
      throw new RpcAcceptError(PROC_UNAVAIL, `NFSv4 procedure ${proc}`);
    }
    const tag = args.opaque(NFS4_TAG_BYTES_MAX);
    args.u32(); // minorversion: none is served
    return new XdrWriter(16 + tag.length).u32(NFS4ERR_MINOR_VERS_MISMATCH).opaque(tag).u32(0)
      .finish();
  }
}

/** The NFS program (100003): version 3 by `v3`, version 4 by Nfs4Program. */
export class NfsProgram implements RpcProgram {
  readonly prog: number;
  readonly versLow = 3;
  readonly versHigh = 4;
  readonly #v3: RpcProgram;
  readonly #v4 = new Nfs4Program();

  constructor(v3: RpcProgram) {
    this.#v3 = v3;
    this.prog = v3.prog;
  }

  nonIdempotent(vers: number, proc: number): boolean {
    return vers === 3 && (this.#v3.nonIdempotent?.(vers, proc) ?? false);
  }

  call(vers: number, proc: number, args: XdrReader, ctx: RpcContext): Promise<Uint8Array> {
    if (vers === NFS4_VERSION) {
      try {
        return Promise.resolve(this.#v4.call(proc, args, ctx));
      } catch (e) {
        return Promise.reject(e);
      }
    }
    return this.#v3.call(vers, proc, args, ctx);
  }
}
