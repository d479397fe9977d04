// NFS version 4 (RFC 8881, 7862), program 100003 version 4: NULL, and COMPOUND for minor
// versions 1 and 2 (nfs4_compound.ts); v4.0 and unknown minor versions answer
// NFS4ERR_MINOR_VERS_MISMATCH with the tag and no results (RFC 8881 §16.2.3).

import type { Caller } from "./bucket_fs.ts";
import { NFSPROC4_COMPOUND, NFSPROC4_NULL } from "./nfs4_const.ts";
import type { Nfs4Compound } from "./nfs4_compound.ts";
import { PROC_UNAVAIL } from "./rpc.ts";
import { RpcAcceptError, type RpcContext, type RpcProgram } from "./rpc_server.ts";
import type { XdrReader } from "./xdr.ts";

export {
  NFS4_VERSION,
  NFS4ERR_MINOR_VERS_MISMATCH,
  NFSPROC4_COMPOUND,
  NFSPROC4_NULL,
} from "./nfs4_const.ts";
export { NFS4_TAG_BYTES_MAX } from "./nfs4_compound.ts";

/** What NFSv4 serves: the NFS program's version 4 procedures. */
export class Nfs4Program {
  readonly #compound: Nfs4Compound;

  constructor(compound: Nfs4Compound) {
    this.#compound = compound;
  }

  async call(proc: number, args: XdrReader, ctx: RpcContext): Promise<Uint8Array> {
    if (proc === NFSPROC4_NULL) return new Uint8Array(0);
    if (proc !== NFSPROC4_COMPOUND) {
      throw new RpcAcceptError(PROC_UNAVAIL, `NFSv4 procedure ${proc}`);
    }
    const auth = ctx.auth;
    // AUTH_NONE callers are nobody (65534), as the protocol's anonymous user.
    const caller: Caller = auth === null
      ? { uid: 65534, gid: 65534, gids: [] }
      : { uid: auth.uid, gid: auth.gid, gids: auth.gids };
    return await this.#compound.call(args, ctx, caller);
  }
}

/** The NFS program (100003): version 3 by `v3`, version 4 by Nfs4Program. */
export class NfsProgram implements RpcProgram {
  readonly prog: number;
  readonly versLow = 3;
  readonly versHigh = 4;
  readonly #v3: RpcProgram;
  readonly #v4: Nfs4Program;

  constructor(v3: RpcProgram, v4: Nfs4Program) {
    this.#v3 = v3;
    this.#v4 = v4;
    this.prog = v3.prog;
  }

  nonIdempotent(vers: number, proc: number): boolean {
    // v4 retransmissions are answered by the session's slot reply cache, not the DRC.
    return vers === 3 && (this.#v3.nonIdempotent?.(vers, proc) ?? false);
  }

  call(vers: number, proc: number, args: XdrReader, ctx: RpcContext): Promise<Uint8Array> {
    if (vers === 4) return this.#v4.call(proc, args, ctx);
    return this.#v3.call(vers, proc, args, ctx);
  }
}
