import assert from "node:assert/strict";
import type { HostPort } from "../base/mod.ts";
import { createLogger } from "../obs/mod.ts";
import { genCerts, OPENSSL, tlsMaterial } from "../transport/_testing.ts";
import { TcpRaftTransport, type TlsMaterial } from "../transport/raft_transport.ts";
import {
  KeyExchangeError,
  PeerClusterKeySource,
  requestClusterKey,
  serveClusterKey,
} from "./cluster_key_exchange.ts";

const quiet = createLogger({ level: "error", format: "json", sink: { write: () => {} } });
const HOSTS = ["127.0.215.1", "127.0.215.2", "127.0.215.3"];

async function holder(options: {
  tls: TlsMaterial | null;
  key: Uint8Array | null;
  members: Map<number, HostPort>;
}): Promise<TcpRaftTransport> {
  const transport = await TcpRaftTransport.listen({
    nodeId: 1,
    clusterId: "kiseki",
    listen: { host: HOSTS[0]!, port: 0 },
    peers: [],
    tls: options.tls,
    logger: quiet,
  });
  serveClusterKey({
    transport,
    nodeId: 1,
    key: () => options.key,
    memberAddr: (id) => options.members.get(id),
    tls: options.tls !== null,
    logger: quiet,
  });
  return transport;
}

Deno.test({
  name:
    "requestClusterKey() over mutual TLS hands the key to a member whose certificate names its address, and to nobody else",
  ignore: !OPENSSL,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "kiseki-kex-" });
    try {
      await genCerts(dir, HOSTS.flatMap((h, i) => ["--node", `node${i + 1}:${h}`]));
      const key = crypto.getRandomValues(new Uint8Array(32));
      const members = new Map(HOSTS.map((h, i) => [i + 1, { host: h, port: 9300 }]));
      const t = await holder({ tls: await tlsMaterial(dir, "node1"), key, members });
      try {
        const got = await requestClusterKey({
          nodeId: 2,
          holder: 1,
          addr: t.addr,
          tls: await tlsMaterial(dir, "node2"),
        });
        assert.deepEqual(got, key);
        // Node 3's certificate does not name node 2's address: no key for a node posing as 2.
        await assert.rejects(
          requestClusterKey({
            nodeId: 2,
            holder: 1,
            addr: t.addr,
            tls: await tlsMaterial(dir, "node3"),
          }),
          /does not name 127\.0\.215\.2/,
        );
        // A node id that is not a member.
        await assert.rejects(
          requestClusterKey({
            nodeId: 9,
            holder: 1,
            addr: t.addr,
            tls: await tlsMaterial(dir, "node2"),
          }),
          /not a member/,
        );
        // Asking the wrong node.
        await assert.rejects(
          requestClusterKey({
            nodeId: 2,
            holder: 5,
            addr: t.addr,
            tls: await tlsMaterial(dir, "node2"),
          }),
          KeyExchangeError,
        );
      } finally {
        await t.close();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("requestClusterKey() answers null while the holder has no key; the source keeps asking until it has", async () => {
  let key: Uint8Array | null = null;
  const members = new Map([[2, { host: HOSTS[1]!, port: 9300 }]]);
  const transport = await TcpRaftTransport.listen({
    nodeId: 1,
    clusterId: "kiseki",
    listen: { host: "127.0.0.1", port: 0 },
    peers: [],
    tls: null,
    logger: quiet,
  });
  serveClusterKey({
    transport,
    nodeId: 1,
    key: () => key,
    memberAddr: (id) => members.get(id),
    tls: false,
    logger: quiet,
  });
  try {
    assert.equal(
      await requestClusterKey({ nodeId: 2, holder: 1, addr: transport.addr, tls: null }),
      null,
    );
    const wanted = crypto.getRandomValues(new Uint8Array(32));
    const wrong = crypto.getRandomValues(new Uint8Array(32));
    key = wrong;
    setTimeout(() => key = wanted, 300);
    const source = new PeerClusterKeySource({
      nodeId: 2,
      peers: [{ id: 1, addr: transport.addr }],
      tls: null,
      logger: quiet,
      // Only the key the cluster names (its key check) is taken.
      verify: (k) => Promise.resolve(k.every((b, i) => b === wanted[i])),
    });
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 10_000);
    try {
      assert.deepEqual(await source.fetch(abort.signal), wanted);
    } finally {
      clearTimeout(timer);
    }
  } finally {
    await transport.close();
  }
});
