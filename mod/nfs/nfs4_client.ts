// An NFSv4.1/4.2 client at the XDR level, over RpcClient: what tests and the fuzzer use to
// build any COMPOUND (including those real clients never send) and read every result. The
// session helpers put SEQUENCE first with the slot and sequence id the caller chooses.

import {
  NFS4_OK,
  NFS4ERR_DENIED,
  NFSPROC4_COMPOUND,
  OP_ACCESS,
  OP_BIND_CONN_TO_SESSION,
  OP_CLOSE,
  OP_COMMIT,
  OP_COPY,
  OP_CREATE,
  OP_CREATE_SESSION,
  OP_EXCHANGE_ID,
  OP_GETATTR,
  OP_GETFH,
  OP_LINK,
  OP_LOCK,
  OP_LOCKT,
  OP_LOCKU,
  OP_OPEN,
  OP_OPEN_DOWNGRADE,
  OP_READ,
  OP_READDIR,
  OP_READLINK,
  OP_REMOVE,
  OP_RENAME,
  OP_SECINFO,
  OP_SECINFO_NO_NAME,
  OP_SEEK,
  OP_SEQUENCE,
  OP_SETATTR,
  OP_TEST_STATEID,
  OP_WRITE,
} from "./nfs4_const.ts";
import { NFS_PROGRAM } from "./nfs3.ts";
import type { RpcClient } from "./rpc_client.ts";
import { XdrReader, XdrWriter } from "./xdr.ts";

export interface Stateid4 {
  seqid: number;
  other: Uint8Array;
}

/** One operation of a COMPOUND: its number and arguments. */
export interface Op4 {
  op: number;
  args?: (w: XdrWriter) => void;
}

export interface OpResult4 {
  op: number;
  status: number;
  // deno-lint-ignore no-explicit-any
  value: any;
}

export interface Compound4Reply {
  status: number;
  tag: string;
  results: OpResult4[];
  /** The raw COMPOUND4res. */
  bytes: Uint8Array;
}

export const stateid = (r: XdrReader): Stateid4 => ({ seqid: r.u32(), other: r.fixed(12).slice() });
const cinfo = (r: XdrReader) => ({ atomic: r.bool(), before: r.u64(), after: r.u64() });
export const bitmap = (r: XdrReader): number[] => {
  const n = r.u32();
  const bits: number[] = [];
  for (let w = 0; w < n; w++) {
    const word = r.u32();
    for (let b = 0; b < 32; b++) if ((word >>> b) & 1) bits.push(w * 32 + b);
  }
  return bits;
};
const fattr = (r: XdrReader) => ({ bits: bitmap(r), values: r.opaque(1 << 20).slice() });

/** Result decoders of the operations tests read; others must have no result body. */
const RESULTS: Record<number, (r: XdrReader) => unknown> = {
  [OP_SEQUENCE]: (r) => ({
    session: r.fixed(16).slice(),
    seq: r.u32(),
    slot: r.u32(),
    highest: r.u32(),
    target: r.u32(),
    flags: r.u32(),
  }),
  [OP_EXCHANGE_ID]: (r) => {
    const v = { clientId: r.u64(), seq: r.u32(), flags: r.u32(), protect: r.u32() };
    r.u64();
    r.opaque(1024);
    r.opaque(1024);
    const impl = r.u32();
    for (let i = 0; i < impl; i++) {
      r.opaque(1024);
      r.opaque(1024);
      r.u64();
      r.u32();
    }
    return v;
  },
  [OP_CREATE_SESSION]: (r) => {
    const v = { session: r.fixed(16).slice(), seq: r.u32(), flags: r.u32(), fore: [] as number[] };
    for (let k = 0; k < 2; k++) {
      const a = [r.u32(), r.u32(), r.u32(), r.u32(), r.u32(), r.u32()];
      const n = r.u32();
      for (let i = 0; i < n; i++) r.u32();
      if (k === 0) v.fore = a;
    }
    return v;
  },
  [OP_BIND_CONN_TO_SESSION]: (r) => ({ session: r.fixed(16), dir: r.u32(), rdma: r.bool() }),
  [OP_GETFH]: (r) => r.opaque(128).slice(),
  [OP_GETATTR]: fattr,
  [OP_SETATTR]: bitmap,
  [OP_ACCESS]: (r) => ({ supported: r.u32(), access: r.u32() }),
  [OP_OPEN]: (r) => {
    const v = { stateid: stateid(r), cinfo: cinfo(r), rflags: r.u32(), attrset: bitmap(r) };
    const deleg = r.u32();
    if (deleg !== 0) throw new Error(`a delegation of type ${deleg}`);
    return v;
  },
  [OP_CLOSE]: stateid,
  [OP_OPEN_DOWNGRADE]: stateid,
  [OP_LOCK]: stateid,
  [OP_LOCKU]: stateid,
  [OP_READ]: (r) => ({ eof: r.bool(), data: r.opaque(1 << 21).slice() }),
  [OP_WRITE]: (r) => ({ count: r.u32(), committed: r.u32(), verifier: r.fixed(8).slice() }),
  [OP_COMMIT]: (r) => r.fixed(8).slice(),
  [OP_READDIR]: (r) => {
    const verifier = r.fixed(8).slice();
    const entries: { cookie: bigint; name: string; attrs: ReturnType<typeof fattr> }[] = [];
    while (r.bool()) entries.push({ cookie: r.u64(), name: r.string(4096), attrs: fattr(r) });
    return { verifier, entries, eof: r.bool() };
  },
  [OP_CREATE]: (r) => ({ cinfo: cinfo(r), attrset: bitmap(r) }),
  [OP_LINK]: cinfo,
  [OP_REMOVE]: cinfo,
  [OP_RENAME]: (r) => ({ source: cinfo(r), target: cinfo(r) }),
  [OP_READLINK]: (r) => r.string(8192),
  [OP_TEST_STATEID]: (r) => {
    const n = r.u32();
    return Array.from({ length: n }, () => r.u32());
  },
  [OP_SECINFO_NO_NAME]: (r) => {
    const n = r.u32();
    return Array.from({ length: n }, () => r.u32());
  },
  [OP_SECINFO]: (r) => {
    const n = r.u32();
    return Array.from({ length: n }, () => r.u32());
  },
  [OP_SEEK]: (r) => ({ eof: r.bool(), offset: r.u64() }),
  [OP_COPY]: (r) => {
    const ids = r.u32();
    for (let i = 0; i < ids; i++) stateid(r);
    return {
      count: r.u64(),
      committed: r.u32(),
      verifier: r.fixed(8).slice(),
      consecutive: r.bool(),
      synchronous: r.bool(),
    };
  },
};

/** LOCK4denied: what LOCK and LOCKT carry when they fail with NFS4ERR_DENIED. */
function lockDenied(r: XdrReader) {
  return {
    offset: r.u64(),
    length: r.u64(),
    type: r.u32(),
    clientId: r.u64(),
    owner: r.opaque(1024).slice(),
  };
}

export class Nfs4Client {
  readonly rpc: RpcClient;
  clientId = 0n;
  session: Uint8Array | null = null;
  /** The last sequence id sent per slot. */
  readonly slots: number[] = [];

  constructor(rpc: RpcClient) {
    this.rpc = rpc;
  }

  /** A COMPOUND with these operations as they are (no SEQUENCE added). */
  async compound(
    ops: Op4[],
    options: { minor?: number; tag?: string } = {},
  ): Promise<Compound4Reply> {
    const w = new XdrWriter(256).string(options.tag ?? "").u32(options.minor ?? 1).u32(ops.length);
    for (const o of ops) {
      w.u32(o.op);
      o.args?.(w);
    }
    return await this.raw(w.finish());
  }

  /** A COMPOUND of these argument bytes; its reply decoded. */
  async raw(args: Uint8Array): Promise<Compound4Reply> {
    const body = await this.rpc.call(NFS_PROGRAM, 4, NFSPROC4_COMPOUND, args);
    if (body.kind !== "success") throw new Error(`COMPOUND refused: ${JSON.stringify(body)}`);
    const bytes = body.results.rest().slice();
    const r = new XdrReader(bytes);
    const status = r.u32();
    const tag = r.string(1024);
    const n = r.u32();
    const results: OpResult4[] = [];
    for (let i = 0; i < n; i++) {
      const op = r.u32();
      const st = r.u32();
      let value: unknown = null;
      if (st === NFS4_OK) value = RESULTS[op]?.(r) ?? null;
      else if (st === NFS4ERR_DENIED && (op === OP_LOCK || op === OP_LOCKT)) value = lockDenied(r);
      else if (op === OP_SETATTR) value = bitmap(r);
      results.push({ op, status: st, value });
    }
    if (r.remaining !== 0) throw new Error(`${r.remaining} bytes after the results`);
    return { status, tag, results, bytes };
  }

  /** EXCHANGE_ID then CREATE_SESSION: the client is confirmed and has a session. */
  async establish(owner: string, verifier = new Uint8Array(8).fill(1), slots = 8): Promise<void> {
    const ex = await this.compound([exchangeId(owner, verifier)]);
    if (ex.status !== NFS4_OK) throw new Error(`EXCHANGE_ID: ${ex.status}`);
    this.clientId = ex.results[0]!.value.clientId;
    const cs = await this.compound([createSession(this.clientId, ex.results[0]!.value.seq, slots)]);
    if (cs.status !== NFS4_OK) throw new Error(`CREATE_SESSION: ${cs.status}`);
    this.session = cs.results[0]!.value.session;
    this.slots.length = 0;
  }

  /** SEQUENCE (next id of `slot`, or `seq` as given) followed by `ops`. */
  async call(
    ops: Op4[],
    options: { slot?: number; seq?: number; minor?: number } = {},
  ): Promise<Compound4Reply> {
    const slot = options.slot ?? 0;
    const seq = options.seq ?? (this.slots[slot] ?? 0) + 1;
    this.slots[slot] = seq;
    return await this.compound([sequence(this.session!, seq, slot), ...ops], options);
  }
}

// ---- operation builders ------------------------------------------------------------------------

export const op = (n: number, args?: (w: XdrWriter) => void): Op4 => ({ op: n, args });

export function exchangeId(owner: string, verifier: Uint8Array, flags = 0): Op4 {
  return op(OP_EXCHANGE_ID, (w) => w.fixed(verifier).string(owner).u32(flags).u32(0).u32(0));
}

export function createSession(clientId: bigint, seq: number, slots = 8): Op4 {
  return op(OP_CREATE_SESSION, (w) => {
    w.u64(clientId).u32(seq).u32(0);
    w.u32(0).u32(1 << 20).u32(1 << 20).u32(8192).u32(16).u32(slots).u32(0);
    w.u32(0).u32(4096).u32(4096).u32(0).u32(2).u32(1).u32(0);
    w.u32(0x40000001).u32(1).u32(0); // cb_program, one AUTH_NONE security parameter
  });
}

export function sequence(session: Uint8Array, seq: number, slot: number, highest = slot): Op4 {
  return op(OP_SEQUENCE, (w) => w.fixed(session).u32(seq).u32(slot).u32(highest).bool(false));
}

export function writeStateid(w: XdrWriter, s: Stateid4): XdrWriter {
  return w.u32(s.seqid).fixed(s.other);
}

export function attrRequest(w: XdrWriter, bits: number[]): void {
  const words: number[] = [];
  for (const b of bits) {
    while (words.length <= b >>> 5) words.push(0);
    words[b >>> 5] = (words[b >>> 5]! | (1 << (b & 31))) >>> 0;
  }
  w.u32(words.length);
  for (const word of words) w.u32(word);
}

/** OPEN by name in the current directory (create: UNCHECKED4 with a mode). */
export function open(
  name: string,
  options: { access?: number; deny?: number; owner?: string; create?: boolean; mode?: number } = {},
): Op4 {
  return op(OP_OPEN, (w) => {
    w.u32(0).u32(options.access ?? 3).u32(options.deny ?? 0).u64(0n)
      .string(options.owner ?? "owner");
    if (options.create) {
      w.u32(1).u32(0);
      attrRequest(w, [33]);
      w.opaque(new XdrWriter(4).u32(options.mode ?? 0o644).finish());
    } else w.u32(0);
    w.u32(0).string(name);
  });
}
