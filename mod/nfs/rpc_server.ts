// ONC RPC over TCP: accepts connections, reassembles records, runs many calls of a connection
// at once (replies go out as each finishes, in any order), checks credentials, and keeps a
// duplicate request cache so a retransmitted non-idempotent call is answered, not redone.

import { crc32c } from "../base/mod.ts";
import type { Logger } from "../obs/mod.ts";
import {
  acceptedReply,
  AUTH_BADCRED,
  AUTH_NONE,
  AUTH_SYS,
  AUTH_TOOWEAK,
  authErrorReply,
  type AuthSys,
  decodeCall,
  frameRecord,
  GARBAGE_ARGS,
  PROC_UNAVAIL,
  PROG_UNAVAIL,
  progMismatchReply,
  RecordDecoder,
  RecordFramingError,
  RPC_RECORD_BYTES_MAX,
  rpcMismatchReply,
  successReply,
  SYSTEM_ERR,
} from "./rpc.ts";
import { XdrError, type XdrReader } from "./xdr.ts";

/** Connections served at once; more wait in the listen backlog. */
export const RPC_CONNECTIONS_MAX = 1024;
/** Calls of one connection in progress at once; past it, the connection is not read. */
export const RPC_CALLS_IN_FLIGHT_PER_CONNECTION_MAX = 128;
/** Bytes of calls (records) all connections have in progress at once. */
export const RPC_BYTES_IN_FLIGHT_MAX = 256 << 20;
/** Replies the duplicate request cache keeps (oldest first out). */
export const DRC_ENTRIES_MAX = 4096;
const READ_BUFFER_BYTES = 256 << 10;

/** Who is calling: the peer address and, for AUTH_SYS, the stated identity. */
export interface RpcContext {
  peerHost: string;
  peerPort: number;
  /** The local address the call arrived on. */
  localPort: number;
  auth: AuthSys | null;
  xid: number;
}

/** A procedure's refusal at the RPC level (PROC_UNAVAIL, GARBAGE_ARGS, SYSTEM_ERR). */
export class RpcAcceptError extends Error {
  override name = "RpcAcceptError";
  constructor(readonly stat: number, message: string) {
    super(message);
  }
}

export interface RpcProgram {
  prog: number;
  versLow: number;
  versHigh: number;
  /** The procedure's encoded results; throws RpcAcceptError or XdrError (GARBAGE_ARGS). */
  call(vers: number, proc: number, args: XdrReader, ctx: RpcContext): Promise<Uint8Array>;
  /** Whether a procedure may be called with AUTH_NONE (NULL always may). */
  allowsAuthNone?(proc: number): boolean;
  /** Whether a procedure's reply is kept for retransmissions (non-idempotent). */
  nonIdempotent?(vers: number, proc: number): boolean;
}

type DrcEntry = { state: "in_progress" } | { state: "done"; reply: Uint8Array };

/**
 * Replies of non-idempotent calls by (client address, xid, program, version, procedure,
 * argument checksum): a retransmission gets the reply again, or nothing while the first is
 * still running (the client retransmits again later).
 */
export class DuplicateRequestCache {
  readonly #entries = new Map<string, DrcEntry>();
  readonly #max: number;
  hits = 0;

  constructor(entriesMax = DRC_ENTRIES_MAX) {
    this.#max = entriesMax;
  }

  get size(): number {
    return this.#entries.size;
  }

  static keyOf(
    host: string,
    xid: number,
    prog: number,
    vers: number,
    proc: number,
    args: Uint8Array,
  ): string {
    return `${host}|${xid}|${prog}|${vers}|${proc}|${args.length}|${crc32c(args)}`;
  }

  /** The cached entry, or undefined after marking the call as in progress. */
  begin(key: string): DrcEntry | undefined {
    const found = this.#entries.get(key);
    if (found !== undefined) {
      this.hits++;
      return found;
    }
    this.#entries.set(key, { state: "in_progress" });
    while (this.#entries.size > this.#max) {
      this.#entries.delete(this.#entries.keys().next().value!);
    }
    return undefined;
  }

  finish(key: string, reply: Uint8Array): void {
    if (this.#entries.has(key)) this.#entries.set(key, { state: "done", reply });
  }

  forget(key: string): void {
    this.#entries.delete(key);
  }
}

export interface RpcServerOptions {
  hostname: string;
  port: number;
  programs: RpcProgram[];
  logger?: Logger;
  drc?: DuplicateRequestCache;
  connectionsMax?: number;
  callsInFlightPerConnectionMax?: number;
  recordBytesMax?: number;
  bytesInFlightMax?: number;
}

export interface RpcServerStats {
  connections: number;
  calls: number;
  framingErrors: number;
  garbageArgs: number;
  drcHits: number;
}

/** Serves RPC programs over TCP; the dispatcher is usable without a socket (tests, fuzzing). */
export class RpcDispatcher {
  readonly #programs = new Map<number, RpcProgram>();
  readonly #drc: DuplicateRequestCache;
  readonly #log: Logger | undefined;
  calls = 0;
  garbageArgs = 0;

  constructor(programs: RpcProgram[], drc = new DuplicateRequestCache(), logger?: Logger) {
    for (const p of programs) this.#programs.set(p.prog, p);
    this.#drc = drc;
    this.#log = logger;
  }

  get drc(): DuplicateRequestCache {
    return this.#drc;
  }

  /** The reply to one record (null: nothing to send). Never throws for any input. */
  async dispatch(
    record: Uint8Array,
    peer: { host: string; port: number; localPort: number },
  ): Promise<Uint8Array | null> {
    const call = decodeCall(record);
    if ("kind" in call) {
      if (call.kind === "drop") return null;
      if (call.kind === "rpc_mismatch") return rpcMismatchReply(call.xid);
      return authErrorReply(call.xid, call.stat);
    }
    this.calls++;
    const program = this.#programs.get(call.prog);
    if (program === undefined) return acceptedReply(call.xid, PROG_UNAVAIL);
    if (call.vers < program.versLow || call.vers > program.versHigh) {
      return progMismatchReply(call.xid, program.versLow, program.versHigh);
    }
    let auth: AuthSys | null = null;
    if (call.cred.flavor === AUTH_SYS && "sys" in call.cred) auth = call.cred.sys;
    else if (call.cred.flavor === AUTH_NONE) {
      if (call.proc !== 0 && !(program.allowsAuthNone?.(call.proc) ?? false)) {
        return authErrorReply(call.xid, AUTH_TOOWEAK);
      }
    } else {
      // RPCSEC_GSS, AUTH_DH and others: a flavor this server does not speak.
      return authErrorReply(call.xid, AUTH_BADCRED);
    }
    const ctx: RpcContext = {
      peerHost: peer.host,
      peerPort: peer.port,
      localPort: peer.localPort,
      auth,
      xid: call.xid,
    };
    let drcKey: string | null = null;
    if (program.nonIdempotent?.(call.vers, call.proc)) {
      const args = record.subarray(call.args.offset);
      drcKey = DuplicateRequestCache.keyOf(
        peer.host,
        call.xid,
        call.prog,
        call.vers,
        call.proc,
        args,
      );
      const cached = this.#drc.begin(drcKey);
      if (cached !== undefined) return cached.state === "done" ? cached.reply : null;
    }
    let reply: Uint8Array;
    try {
      reply = successReply(call.xid, await program.call(call.vers, call.proc, call.args, ctx));
    } catch (e) {
      if (e instanceof XdrError) {
        this.garbageArgs++;
        reply = acceptedReply(call.xid, GARBAGE_ARGS);
      } else if (e instanceof RpcAcceptError) {
        reply = acceptedReply(call.xid, e.stat);
      } else {
        this.#log?.error("rpc: a procedure failed", {
          prog: call.prog,
          vers: call.vers,
          proc: call.proc,
          error: e,
        });
        reply = acceptedReply(call.xid, SYSTEM_ERR);
      }
    }
    if (drcKey !== null) this.#drc.finish(drcKey, reply);
    return reply;
  }
}

export { PROC_UNAVAIL };

export interface RpcServer {
  addr: Deno.NetAddr;
  stats(): RpcServerStats;
  close(): Promise<void>;
}

export function listenRpc(options: RpcServerOptions & { dispatcher?: RpcDispatcher }): RpcServer {
  const log = options.logger;
  const dispatcher = options.dispatcher ??
    new RpcDispatcher(options.programs, options.drc, options.logger);
  const connectionsMax = options.connectionsMax ?? RPC_CONNECTIONS_MAX;
  const inFlightMax = options.callsInFlightPerConnectionMax ??
    RPC_CALLS_IN_FLIGHT_PER_CONNECTION_MAX;
  const recordBytesMax = options.recordBytesMax ?? RPC_RECORD_BYTES_MAX;
  const listener = Deno.listen({
    hostname: options.hostname,
    port: options.port,
    transport: "tcp",
  });
  const conns = new Set<Deno.Conn>();
  const served = new Set<Promise<void>>();
  let framingErrors = 0;
  let closing = false;
  let slotWaiter: (() => void) | null = null;
  const bytesInFlightMax = options.bytesInFlightMax ?? RPC_BYTES_IN_FLIGHT_MAX;
  let bytesInFlight = 0;
  const bytesWaiters: (() => void)[] = [];

  async function serve(conn: Deno.Conn): Promise<void> {
    const remote = conn.remoteAddr as Deno.NetAddr;
    const local = conn.localAddr as Deno.NetAddr;
    const peer = { host: remote.hostname, port: remote.port, localPort: local.port };
    const decoder = new RecordDecoder(recordBytesMax);
    const buffer = new Uint8Array(READ_BUFFER_BYTES);
    let inFlight = 0;
    let wake: (() => void) | null = null;
    let writing: Promise<void> = Promise.resolve();
    let broken = false;
    const send = (reply: Uint8Array): void => {
      const framed = frameRecord(reply);
      writing = writing.then(async () => {
        if (broken) return;
        try {
          let at = 0;
          while (at < framed.length) at += await conn.write(framed.subarray(at));
        } catch {
          broken = true;
        }
      });
    };
    try {
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) break;
        let records: Uint8Array[];
        try {
          records = decoder.push(buffer.subarray(0, n));
        } catch (e) {
          if (!(e instanceof RecordFramingError)) throw e;
          framingErrors++;
          log?.warn("rpc: connection closed for a framing error", {
            peer: `${peer.host}:${peer.port}`,
            error: e.message,
          });
          break;
        }
        for (const record of records) {
          while (inFlight >= inFlightMax) await new Promise<void>((r) => (wake = r));
          // Past the server-wide bound, a connection waits (its socket is not read) until
          // calls of any connection finish; one call alone always runs.
          while (bytesInFlight > 0 && bytesInFlight + record.length > bytesInFlightMax) {
            await new Promise<void>((r) => bytesWaiters.push(r));
          }
          inFlight++;
          bytesInFlight += record.length;
          dispatcher.dispatch(record, peer).then((reply) => {
            if (reply !== null) send(reply);
          }).catch((e) => {
            log?.error("rpc: dispatch failed", { error: e });
          }).finally(() => {
            inFlight--;
            bytesInFlight -= record.length;
            for (const w of bytesWaiters.splice(0)) w();
            const w = wake;
            wake = null;
            w?.();
          });
        }
      }
    } catch (e) {
      if (!closing && !(e instanceof Deno.errors.ConnectionReset)) {
        log?.debug?.("rpc: connection ended", { error: e });
      }
    } finally {
      // Calls in progress finish and their replies are written before the socket closes.
      while (inFlight > 0) await new Promise<void>((r) => (wake = r));
      await writing;
      broken = true;
      try {
        conn.close();
      } catch {
        // Already closed.
      }
      conns.delete(conn);
      const w = slotWaiter;
      slotWaiter = null;
      w?.();
    }
  }

  const accepting = (async () => {
    for (;;) {
      while (conns.size >= connectionsMax && !closing) {
        await new Promise<void>((r) => (slotWaiter = r));
      }
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      if (closing) {
        conn.close();
        return;
      }
      (conn as Deno.TcpConn).setNoDelay?.(true);
      conns.add(conn);
      const p = serve(conn);
      served.add(p);
      p.finally(() => served.delete(p));
    }
  })();

  return {
    addr: listener.addr as Deno.NetAddr,
    stats: () => ({
      connections: conns.size,
      calls: dispatcher.calls,
      framingErrors,
      garbageArgs: dispatcher.garbageArgs,
      drcHits: dispatcher.drc.hits,
    }),
    async close() {
      closing = true;
      const w = slotWaiter;
      slotWaiter = null;
      w?.();
      try {
        listener.close();
      } catch {
        // Already closed.
      }
      await accepting;
      for (const c of conns) {
        try {
          c.closeWrite();
        } catch {
          // Already closed.
        }
        try {
          c.close();
        } catch {
          // Already closed.
        }
      }
      await Promise.allSettled([...served]);
    },
  };
}
