// The NFSv4 COMPOUND procedure (RFC 8881 §16.2, §18.46; RFC 7862): decodes the operations
// one at a time, runs the session machinery (EXCHANGE_ID, CREATE_SESSION, SEQUENCE with its
// slot table and reply cache, DESTROY_*, BIND_CONN_TO_SESSION) and hands every other
// operation to the table of nfs4_ops.ts. Minor versions 1 and 2 are served; any other answers
// NFS4ERR_MINOR_VERS_MISMATCH, an operation without a handler NFS4ERR_NOTSUPP, and a number
// outside the minor version NFS4ERR_OP_ILLEGAL — never a dropped call.

import { counter } from "../obs/mod.ts";
import type { Logger } from "../obs/mod.ts";
import type { Caller } from "./bucket_fs.ts";
import {
  CDFS4_FORE,
  EXCHGID4_FLAG_CONFIRMED_R,
  EXCHGID4_FLAG_UPD_CONFIRMED_REC_A,
  EXCHGID4_FLAG_USE_NON_PNFS,
  NFS4_OK,
  NFS4ERR_BADSLOT,
  NFS4ERR_BADXDR,
  NFS4ERR_DELAY,
  NFS4ERR_INVAL,
  NFS4ERR_MINOR_VERS_MISMATCH,
  NFS4ERR_NOT_ONLY_OP,
  NFS4ERR_NOTSUPP,
  NFS4ERR_OP_ILLEGAL,
  NFS4ERR_OP_NOT_IN_SESSION,
  NFS4ERR_RETRY_UNCACHED_REP,
  NFS4ERR_SEQ_MISORDERED,
  NFS4ERR_SEQUENCE_POS,
  NFS4ERR_SERVERFAULT,
  NFS4ERR_TOO_MANY_OPS,
  OP_ACCESS,
  OP_BIND_CONN_TO_SESSION,
  OP_CREATE_SESSION,
  OP_DESTROY_CLIENTID,
  OP_DESTROY_SESSION,
  OP_EXCHANGE_ID,
  OP_ILLEGAL,
  OP_MAX,
  OP_RECLAIM_COMPLETE,
  OP_SEQUENCE,
  SP4_NONE,
} from "./nfs4_const.ts";
import { Nfs4Error, nfs4StatusOf } from "./nfs4_errors.ts";
import {
  type ClientRecordStore,
  NFS4_CACHED_REPLY_BYTES_MAX,
  NFS4_OPAQUE_LIMIT,
  NFS4_SLOTS_MAX,
  type Nfs4State,
  type Session,
} from "./nfs4_state.ts";
import type { OpContext, OpTable } from "./nfs4_ops.ts";
import { RPC_RECORD_BYTES_MAX } from "./rpc.ts";
import type { RpcContext } from "./rpc_server.ts";
import { XdrError, type XdrReader, XdrWriter } from "./xdr.ts";

/** A COMPOUND tag longer than this is garbage (clients send a few bytes, or none). */
export const NFS4_TAG_BYTES_MAX = 1024;
/** Operations one COMPOUND may hold (a session's maxoperations is at most this). */
export const NFS4_COMPOUND_OPS_MAX = 64;
/** Operations the minor versions define: 1 ends at RECLAIM_COMPLETE, 2 at CLONE. */
const OPS_OF_MINOR: Record<number, number> = { 1: OP_RECLAIM_COMPLETE, 2: OP_MAX };
const SERVER_OWNER = new TextEncoder().encode("kiseki");
const SERVER_SCOPE = new TextEncoder().encode("kiseki");

const opsTotal = counter<"op" | "status">({
  name: "kiseki_nfs4_ops_total",
  help: "NFSv4 operations answered, by operation number and nfsstat4 (ok or its number)",
  labelNames: ["op", "status"],
});

export interface Nfs4CompoundOptions {
  state: Nfs4State;
  ops: OpTable;
  store?: ClientRecordStore | null;
  logger?: Logger;
  /** Resolves when the client records of earlier starts are known. */
  ready?: Promise<void>;
}

function channelAttrs(r: XdrReader) {
  const a = {
    headerPad: r.u32(),
    maxRequestBytes: r.u32(),
    maxResponseBytes: r.u32(),
    maxCachedBytes: r.u32(),
    maxOps: r.u32(),
    maxRequests: r.u32(),
    rdmaIrd: [] as number[],
  };
  const n = r.u32();
  if (n > 1) throw new XdrError(`ca_rdma_ird of ${n}`);
  for (let i = 0; i < n; i++) a.rdmaIrd.push(r.u32());
  return a;
}

function writeChannelAttrs(w: XdrWriter, a: ReturnType<typeof channelAttrs>): void {
  w.u32(0).u32(a.maxRequestBytes).u32(a.maxResponseBytes).u32(a.maxCachedBytes).u32(a.maxOps)
    .u32(a.maxRequests).u32(0);
}

/** callback_sec_parms4 entries: checked for shape, not used (no callbacks are made). */
function skipCallbackSec(r: XdrReader): void {
  const n = r.u32();
  if (n > 16) throw new XdrError(`${n} callback security parameters`);
  for (let i = 0; i < n; i++) {
    const flavor = r.u32();
    if (flavor === 0) continue;
    if (flavor === 1) {
      r.u32();
      r.opaque(255);
      r.u32();
      r.u32();
      const gids = r.u32();
      if (gids > 16) throw new XdrError(`${gids} gids`);
      for (let g = 0; g < gids; g++) r.u32();
    } else if (flavor === 6) {
      r.u32();
      r.opaque(NFS4_OPAQUE_LIMIT);
      r.opaque(NFS4_OPAQUE_LIMIT);
    } else throw new XdrError(`callback flavor ${flavor}`);
  }
}

export class Nfs4Compound {
  readonly #state: Nfs4State;
  readonly #ops: OpTable;
  readonly #store: ClientRecordStore | null;
  readonly #log: Logger | undefined;
  #ready: Promise<void> | null;

  constructor(options: Nfs4CompoundOptions) {
    this.#ready = options.ready ?? null;
    this.#ready?.then(() => (this.#ready = null));
    this.#state = options.state;
    this.#ops = options.ops;
    this.#store = options.store ?? null;
    this.#log = options.logger;
  }

  /** One COMPOUND call: its COMPOUND4res. XdrError in the header is GARBAGE_ARGS. */
  async call(args: XdrReader, rpc: RpcContext, caller: Caller): Promise<Uint8Array> {
    const tag = args.opaque(NFS4_TAG_BYTES_MAX);
    const minor = args.u32();
    const count = args.u32();
    if (OPS_OF_MINOR[minor] === undefined) {
      return new XdrWriter(16 + tag.length).u32(NFS4ERR_MINOR_VERS_MISMATCH).opaque(tag).u32(0)
        .finish();
    }
    const results = new XdrWriter(512);
    let done = 0;
    let status = NFS4_OK;
    const head = (st: number) => {
      const w = new XdrWriter(16 + tag.length + results.length);
      w.u32(st).opaque(tag).u32(done).fixed(results.finish());
      return w.finish();
    };
    if (this.#ready !== null) await this.#ready;
    this.#state.tick();
    if (count > NFS4_COMPOUND_OPS_MAX) {
      return new XdrWriter(16 + tag.length).u32(NFS4ERR_TOO_MANY_OPS).opaque(tag).u32(0).finish();
    }
    const ctx: OpContext = {
      caller,
      rpc,
      minor,
      session: null,
      client: null,
      cfh: null,
      sfh: null,
      cfs: null,
      sfs: null,
      cst: null,
      sst: null,
    };
    let slot: Session["slots"][number] | null = null;
    try {
      for (let i = 0; i < count; i++) {
        let op: number;
        try {
          op = args.u32();
        } catch (e) {
          if (!(e instanceof XdrError)) throw e;
          // The operation number itself is missing: the call is cut short.
          results.u32(OP_ILLEGAL).u32(NFS4ERR_BADXDR);
          done++;
          status = NFS4ERR_BADXDR;
          break;
        }
        const body = new XdrWriter(op === 25 || op === 26 ? 4096 : 128);
        let st = NFS4_OK;
        let fail: Uint8Array | null = null;
        let resop = op;
        try {
          if (op < OP_ACCESS || op > OPS_OF_MINOR[minor]!) {
            resop = OP_ILLEGAL;
            throw new Nfs4Error(NFS4ERR_OP_ILLEGAL, `operation ${op}`);
          }
          if (i === 0) {
            if (op === OP_SEQUENCE) {
              const seq = this.#sequence(args, body, ctx, count);
              if (seq.replay !== null) return seq.replay;
              slot = seq.slot;
            } else if (SESSIONLESS.has(op)) {
              if (count > 1) throw new Nfs4Error(NFS4ERR_NOT_ONLY_OP, "must be alone");
              await this.#sessionless(op, args, body, ctx);
            } else {
              throw new Nfs4Error(NFS4ERR_OP_NOT_IN_SESSION, "no SEQUENCE first");
            }
          } else if (op === OP_SEQUENCE) {
            throw new Nfs4Error(NFS4ERR_SEQUENCE_POS, "SEQUENCE not first");
          } else if (op === OP_DESTROY_SESSION) {
            this.#destroySession(args, ctx);
          } else if (SESSIONLESS.has(op) && op !== OP_DESTROY_CLIENTID) {
            throw new Nfs4Error(NFS4ERR_NOT_ONLY_OP, "must be alone");
          } else if (op === OP_DESTROY_CLIENTID) {
            await this.#sessionless(op, args, body, ctx);
          } else {
            const handler = this.#ops[op];
            if (handler === undefined) throw new Nfs4Error(NFS4ERR_NOTSUPP, `operation ${op}`);
            await handler(args, body, ctx);
          }
        } catch (e) {
          if (e instanceof XdrError) {
            st = NFS4ERR_BADXDR;
          } else {
            st = nfs4StatusOf(e);
            if (st === NFS4_OK) st = NFS4ERR_SERVERFAULT;
            if (e instanceof Nfs4Error) fail = failBodyOf(e);
            else if (st === NFS4ERR_SERVERFAULT) {
              this.#log?.warn("nfs4: an operation failed", { op, error: e });
            }
          }
        }
        results.u32(resop).u32(st);
        if (st === NFS4_OK) results.fixed(body.finish());
        else if (fail !== null) results.fixed(fail);
        done++;
        opsTotal.inc({ op: String(resop), status: st === NFS4_OK ? "ok" : String(st) });
        if (st !== NFS4_OK) {
          status = st;
          break;
        }
      }
      const reply = head(status);
      if (slot !== null) {
        slot.reply =
          reply.length <= Math.min(ctx.session!.maxCachedBytes, NFS4_CACHED_REPLY_BYTES_MAX)
            ? reply.slice()
            : null;
      }
      return reply;
    } finally {
      if (slot !== null) slot.inProgress = false;
      await this.#forgetRecords();
    }
  }

  async #forgetRecords(): Promise<void> {
    const owners = this.#state.forgotten.splice(0);
    if (this.#store === null) return;
    for (const owner of owners) {
      await this.#store.remove(owner).catch((error) =>
        this.#log?.warn("nfs4: a client record was not removed", { error })
      );
    }
  }

  /** SEQUENCE (RFC 8881 §18.46): the slot's reply when this is a retransmission. */
  #sequence(
    r: XdrReader,
    w: XdrWriter,
    ctx: OpContext,
    count: number,
  ): { replay: Uint8Array | null; slot: Session["slots"][number] } {
    const sessionId = r.fixed(16);
    const seq = r.u32();
    const slotId = r.u32();
    const highest = r.u32();
    r.bool(); // cachethis: every reply small enough is kept
    const session = this.#state.session(sessionId);
    if (slotId >= session.slots.length) throw new Nfs4Error(NFS4ERR_BADSLOT, `slot ${slotId}`);
    if (highest >= session.slots.length) throw new Nfs4Error(NFS4ERR_BADSLOT, "highest slot");
    const slot = session.slots[slotId]!;
    if (seq === slot.seq) {
      if (slot.inProgress) throw new Nfs4Error(NFS4ERR_DELAY, "the first is still running");
      if (slot.reply === null) {
        throw new Nfs4Error(NFS4ERR_RETRY_UNCACHED_REP, "the reply was not kept");
      }
      return { replay: slot.reply, slot };
    }
    if (slot.inProgress) {
      // The next request on a slot before the last one is answered: the client is ahead.
      throw new Nfs4Error(NFS4ERR_DELAY, `slot ${slotId} is still busy`);
    }
    if (seq !== ((slot.seq + 1) >>> 0)) {
      throw new Nfs4Error(NFS4ERR_SEQ_MISORDERED, `slot ${slotId}: ${seq} after ${slot.seq}`);
    }
    if (count > session.maxOps) {
      throw new Nfs4Error(NFS4ERR_TOO_MANY_OPS, `${count} operations`);
    }
    slot.seq = seq;
    slot.inProgress = true;
    slot.reply = null;
    this.#state.renew(session.client);
    ctx.session = session;
    ctx.client = session.client;
    w.fixed(session.id).u32(seq).u32(slotId).u32(session.slots.length - 1)
      .u32(session.slots.length - 1).u32(0);
    return { replay: null, slot };
  }

  #destroySession(r: XdrReader, ctx: OpContext): void {
    const id = r.fixed(16);
    const s = this.#state.session(id);
    if (ctx.client !== null && s.client !== ctx.client) {
      throw new Nfs4Error(NFS4ERR_INVAL, "another client's session");
    }
    this.#state.destroySession(id);
  }

  async #sessionless(op: number, r: XdrReader, w: XdrWriter, ctx: OpContext): Promise<void> {
    const state = this.#state;
    switch (op) {
      case OP_EXCHANGE_ID: {
        const verifier = r.fixed(8);
        const owner = r.opaque(NFS4_OPAQUE_LIMIT);
        const flags = r.u32();
        const how = r.u32();
        if (how !== SP4_NONE) {
          // Machine credentials and SSV protect state under RPCSEC_GSS, which is not spoken.
          throw new Nfs4Error(NFS4ERR_NOTSUPP, `state protection ${how}`);
        }
        const impl = r.u32();
        if (impl > 1) throw new XdrError(`${impl} implementation ids`);
        for (let i = 0; i < impl; i++) {
          r.opaque(NFS4_OPAQUE_LIMIT);
          r.opaque(NFS4_OPAQUE_LIMIT);
          r.u64();
          r.u32();
        }
        const client = state.exchangeId(
          owner,
          verifier,
          (flags & EXCHGID4_FLAG_UPD_CONFIRMED_REC_A) !== 0,
        );
        let out = EXCHGID4_FLAG_USE_NON_PNFS;
        if (client.confirmed) out |= EXCHGID4_FLAG_CONFIRMED_R;
        w.u64(client.id).u32(client.csSeq).u32(out >>> 0).u32(SP4_NONE);
        w.u64(0).opaque(SERVER_OWNER).opaque(SERVER_SCOPE);
        w.u32(0); // server_impl_id: none
        return;
      }
      case OP_CREATE_SESSION: {
        const clientId = r.u64();
        const seq = r.u32();
        r.u32(); // flags: neither persistent replies nor a back channel are offered
        const fore = channelAttrs(r);
        const back = channelAttrs(r);
        r.u32(); // cb_program
        skipCallbackSec(r);
        const client = state.client(clientId);
        if (seq === ((client.csSeq - 1) >>> 0) && client.csReply !== null) {
          w.fixed(client.csReply);
          return;
        }
        if (seq !== client.csSeq) {
          throw new Nfs4Error(NFS4ERR_SEQ_MISORDERED, `create_session ${seq}`);
        }
        const slots = Math.max(1, Math.min(fore.maxRequests, NFS4_SLOTS_MAX));
        const attrs = {
          ...fore,
          maxRequestBytes: Math.min(fore.maxRequestBytes, RPC_RECORD_BYTES_MAX),
          maxResponseBytes: Math.min(fore.maxResponseBytes, RPC_RECORD_BYTES_MAX),
          maxCachedBytes: Math.min(fore.maxCachedBytes, NFS4_CACHED_REPLY_BYTES_MAX),
          maxOps: Math.max(2, Math.min(fore.maxOps, NFS4_COMPOUND_OPS_MAX)),
          maxRequests: slots,
        };
        if (attrs.maxRequestBytes < 512 || attrs.maxResponseBytes < 512) {
          throw new Nfs4Error(NFS4ERR_INVAL, "a channel too small for any call");
        }
        const wasConfirmed = client.confirmed;
        const session = state.createSession(client, { ...attrs, slots });
        if (!wasConfirmed) {
          state.confirm(client);
          // Recorded before the client may hold state: a restart lets it reclaim.
          if (this.#store !== null) {
            try {
              await this.#store.save(client.record);
            } catch (e) {
              state.destroySession(session.id);
              client.confirmed = false;
              this.#log?.warn("nfs4: a client record was not stored", { error: e });
              throw new Nfs4Error(NFS4ERR_DELAY, "the client record is not stored yet");
            }
          }
        }
        const res = new XdrWriter(128);
        res.fixed(session.id).u32(seq).u32(0);
        writeChannelAttrs(res, attrs);
        writeChannelAttrs(res, {
          ...back,
          maxRequests: Math.max(1, Math.min(back.maxRequests, 1)),
        });
        const bytes = res.finish();
        client.csSeq = (client.csSeq + 1) >>> 0;
        client.csReply = bytes.slice();
        w.fixed(bytes);
        return;
      }
      case OP_DESTROY_SESSION:
        this.#destroySession(r, ctx);
        return;
      case OP_BIND_CONN_TO_SESSION: {
        const id = r.fixed(16);
        const dir = r.u32();
        r.bool();
        if (dir !== 1 && dir !== 2 && dir !== 3 && dir !== 7) {
          throw new Nfs4Error(NFS4ERR_INVAL, `direction ${dir}`);
        }
        const s = state.session(id);
        // Every connection carries the fore channel; no back channel is kept.
        w.fixed(s.id).u32(CDFS4_FORE).bool(false);
        return;
      }
      case OP_DESTROY_CLIENTID: {
        const id = r.u64();
        const client = state.destroyClient(id);
        if (client.confirmed && this.#store !== null) {
          await this.#store.remove(client.record).catch((error) =>
            this.#log?.warn("nfs4: a client record was not removed", { error })
          );
        }
        return;
      }
    }
  }
}

const SESSIONLESS = new Set([
  OP_EXCHANGE_ID,
  OP_CREATE_SESSION,
  OP_DESTROY_SESSION,
  OP_BIND_CONN_TO_SESSION,
  OP_DESTROY_CLIENTID,
]);

/** What follows a failed operation's status, when its result has more than the status. */
function failBodyOf(e: Nfs4Error): Uint8Array | null {
  const body = (e as Nfs4Error & { failBody?: Uint8Array }).failBody;
  return body ?? null;
}
