// A small ONC RPC client over TCP: many calls in flight on one connection, replies matched
// by xid in whatever order they come. Tests and tools speak to the gateway with it at the
// XDR level (the calls real clients never make included).

import {
  type AuthSys,
  decodeReply,
  encodeCall,
  frameRecord,
  RecordDecoder,
  type ReplyBody,
} from "./rpc.ts";

/** Calls one client may have waiting for replies. */
export const RPC_CLIENT_CALLS_MAX = 1024;

export class RpcClient {
  readonly #conn: Deno.Conn;
  readonly #waiting = new Map<number, (body: ReplyBody) => void>();
  readonly #decoder = new RecordDecoder(64 << 20);
  #nextXid = 1;
  #closed = false;
  readonly #reading: Promise<void>;
  #failure: Error | null = null;
  cred: AuthSys | null;

  private constructor(conn: Deno.Conn, cred: AuthSys | null) {
    this.#conn = conn;
    this.cred = cred;
    this.#reading = this.#read();
  }

  static async connect(
    host: string,
    port: number,
    cred: AuthSys | null = { stamp: 1, machineName: "test", uid: 0, gid: 0, gids: [] },
  ): Promise<RpcClient> {
    return new RpcClient(await Deno.connect({ hostname: host, port }), cred);
  }

  async #read(): Promise<void> {
    const buffer = new Uint8Array(256 << 10);
    try {
      for (;;) {
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        for (const record of this.#decoder.push(buffer.subarray(0, n))) {
          const reply = decodeReply(record);
          const resolve = this.#waiting.get(reply.xid);
          this.#waiting.delete(reply.xid);
          resolve?.(reply.body);
        }
      }
    } catch (e) {
      this.#failure = e as Error;
    } finally {
      this.#closed = true;
      for (const [, resolve] of this.#waiting) {
        resolve({ kind: "denied", stat: -1 });
      }
      this.#waiting.clear();
    }
  }

  /** Sends a call and resolves with its reply (a closed connection: denied, stat -1). */
  call(
    prog: number,
    vers: number,
    proc: number,
    args: Uint8Array = new Uint8Array(0),
    options: { xid?: number; cred?: AuthSys | null } = {},
  ): Promise<ReplyBody> {
    if (this.#closed) return Promise.reject(this.#failure ?? new Error("connection closed"));
    if (this.#waiting.size >= RPC_CLIENT_CALLS_MAX) {
      return Promise.reject(new Error(`more than ${RPC_CLIENT_CALLS_MAX} calls waiting`));
    }
    const xid = options.xid ?? this.#nextXid++;
    const cred = options.cred === undefined ? this.cred : options.cred;
    const record = encodeCall({ xid, prog, vers, proc, cred }, args);
    const reply = new Promise<ReplyBody>((resolve) => this.#waiting.set(xid, resolve));
    void this.sendRaw(frameRecord(record)).catch(() => {});
    return reply;
  }

  /** Writes bytes as they are (framing included). */
  async sendRaw(bytes: Uint8Array): Promise<void> {
    let at = 0;
    while (at < bytes.length) at += await this.#conn.write(bytes.subarray(at));
  }

  /** Whether the server closed the connection. */
  get closed(): boolean {
    return this.#closed;
  }

  async close(): Promise<void> {
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
    await this.#reading;
  }

  /** Resolves once the server closes the connection (or after `timeoutMs`: false). */
  async waitClosed(timeoutMs: number): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), timeoutMs)));
    const done = await Promise.race([this.#reading.then(() => true as const), timeout]);
    clearTimeout(timer);
    return done;
  }
}
