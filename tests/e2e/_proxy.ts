// A TCP proxy for tests: listens on one loopback host at the given ports, forwards each
// connection to the same port on the target host, and keeps a copy of every byte in both
// directions (up to a bound), so a test can search what crossed the network.

import { Buffer } from "node:buffer";

/** Bytes kept at most; past it the test fails (a capture that stopped early proves nothing). */
export const PROXY_CAPTURE_BYTES_MAX = 512 * 1024 * 1024;

export interface CapturingProxy {
  /** Everything captured so far, both directions, in one buffer. */
  captured(): Buffer;
  /** Closes the listeners and every forwarded connection (the node sees its client gone). */
  cut(): void;
  close(): Promise<void>;
}

export function startCapturingProxy(options: {
  listenHost: string;
  targetHost: string;
  ports: number[];
}): CapturingProxy {
  const pieces: Uint8Array[] = [];
  let bytes = 0;
  let overflow = false;
  const conns = new Set<Deno.Conn>();
  const listeners = options.ports.map((port) =>
    Deno.listen({ hostname: options.listenHost, port })
  );
  const record = (chunk: Uint8Array) => {
    if (bytes + chunk.length > PROXY_CAPTURE_BYTES_MAX) {
      overflow = true;
      return;
    }
    pieces.push(chunk.slice());
    bytes += chunk.length;
  };
  const pump = async (from: Deno.Conn, to: Deno.Conn) => {
    const buf = new Uint8Array(256 * 1024);
    try {
      for (;;) {
        const n = await from.read(buf);
        if (n === null) break;
        record(buf.subarray(0, n));
        let at = 0;
        while (at < n) at += await to.write(buf.subarray(at, n));
      }
    } catch { /* either side went away */ }
    try {
      await to.closeWrite();
    } catch { /* closed */ }
  };
  const accepting = listeners.map(async (listener, i) => {
    for await (const inbound of listener) {
      let outbound: Deno.Conn;
      try {
        outbound = await Deno.connect({ hostname: options.targetHost, port: options.ports[i]! });
      } catch {
        inbound.close();
        continue;
      }
      conns.add(inbound);
      conns.add(outbound);
      Promise.all([pump(inbound, outbound), pump(outbound, inbound)]).finally(() => {
        for (const c of [inbound, outbound]) {
          conns.delete(c);
          try {
            c.close();
          } catch { /* closed */ }
        }
      });
    }
  });
  const cut = () => {
    for (const c of conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    conns.clear();
  };
  return {
    captured() {
      if (overflow) {
        throw new Error(`the proxy captured more than ${PROXY_CAPTURE_BYTES_MAX} bytes`);
      }
      return Buffer.concat(pieces);
    },
    cut,
    async close() {
      for (const l of listeners) l.close();
      cut();
      await Promise.allSettled(accepting);
    },
  };
}
