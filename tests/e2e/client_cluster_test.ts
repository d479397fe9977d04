// The client library against a real three-node cluster: the node the client talks to is
// killed (SIGKILL) in the middle of a large write; the write completes through another node
// without an error reaching the caller, and reads back byte for byte, also by a fresh client
// that knows only the surviving nodes. Then, with the node back, the node a reader streams
// from is killed mid-read, and the stream goes on from another node, byte for byte.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { connectClusterClient } from "../../mod/client/mod.ts";
import { type HostPort, Prng } from "../../mod/base/mod.ts";
import { log } from "../../mod/obs/mod.ts";
import { type RunningRole, startRole, waitForHttp } from "./_role.ts";

const MiB = 1 << 20;
const OCTET = 163;
const PORTS = { data: 29100, raft: 29300, metrics: 29090, s3: 29000, nfs: 22049, advisory: 29101 };

function md5(bytes: Uint8Array): string {
  return createHash("md5").update(bytes).digest("hex");
}

Deno.test({
  name: "client library: a write and a read survive the loss of the node they talk to (3 nodes)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const ids = [1, 2, 3];
    const hostOf = (id: number) => `127.0.${OCTET}.${id}`;
    const peers = ids.map((id) => `${id}=${hostOf(id)}:${PORTS.raft}`).join(",");
    const dirs: string[] = [];
    const roles = new Map<number, RunningRole>();
    const envs = new Map<number, Record<string, string>>();
    try {
      for (const id of ids) {
        const dir = await Deno.makeTempDir({ prefix: `kiseki-e2e-client-n${id}-` });
        dirs.push(dir);
        const on = (port: number) => `${hostOf(id)}:${port}`;
        envs.set(id, {
          KISEKI_NODE_ID: String(id),
          KISEKI_RAFT_PEERS: peers,
          // Failover, not authentication (client_test.ts covers mTLS): plain TCP, said so.
          KISEKI_ALLOW_INSECURE: "true",
          KISEKI_BOOTSTRAP: id === 1 ? "true" : "false",
          KISEKI_RAFT_ADDR: on(PORTS.raft),
          KISEKI_DATA_ADDR: on(PORTS.data),
          KISEKI_METRICS_ADDR: on(PORTS.metrics),
          KISEKI_S3_ADDR: on(PORTS.s3),
          KISEKI_NFS_ADDR: on(PORTS.nfs),
          KISEKI_ADVISORY_ADDR: on(PORTS.advisory),
          KISEKI_DATA_DIR: dir,
          KISEKI_LOG_LEVEL: "warn",
        });
        roles.set(id, startRole("server", envs.get(id)!));
      }
      for (const id of ids) {
        await waitForHttp(`http://${hostOf(id)}:${PORTS.metrics}/health`, "OK", 120_000);
      }
      const addrs: HostPort[] = ids.map((id) => ({ host: hostOf(id), port: PORTS.data }));
      const client = await connectClusterClient({ addrs, tls: null, logger: log });
      const body = new Prng(11).bytes(40 * MiB + 321);
      let victim: number | null = null;
      try {
        const fs = client.backend;
        await fs.createNamespace(client.tenantId, "failover");
        const ns = fs.namespace(client.tenantId, "failover");
        const first = client.node!;
        // The body is handed over 1 MiB at a time; after 16 MiB the node the client talks
        // to is killed, while the rest of the body is still to come.
        let at = 0;
        const stream = new ReadableStream<Uint8Array>({
          async pull(controller) {
            if (at >= body.length) {
              controller.close();
              return;
            }
            if (at >= 16 * MiB && victim === null) {
              victim = ids.find((id) => hostOf(id) === client.node!.host)!;
              await roles.get(victim)!.stop("SIGKILL");
            }
            controller.enqueue(body.slice(at, at + MiB));
            at += MiB;
          },
        }, { highWaterMark: 0 });
        const put = await fs.putObject(ns, "big.bin", stream);
        assert.ok(victim !== null, "the node was killed during the write");
        assert.equal(put.etag, md5(body));
        assert.equal(put.size, body.length);
        assert.notEqual(client.node!.host, first.host, "the write finished on another node");
        const back = await fs.getObject(ns, "big.bin");
        assert.equal(md5(new Uint8Array(await new Response(back.body).arrayBuffer())), md5(body));
      } finally {
        await client.close();
      }
      // A client that knows only the survivors reads the object too.
      const survivors = addrs.filter((a) => a.host !== hostOf(victim!));
      const fresh = await connectClusterClient({ addrs: survivors, tls: null, logger: log });
      try {
        const ns = fresh.backend.namespace(fresh.tenantId, "failover");
        const got = await fresh.backend.getObject(ns, "big.bin");
        assert.equal(got.size, body.length);
        assert.equal(md5(new Uint8Array(await new Response(got.body).arrayBuffer())), md5(body));
      } finally {
        await fresh.close();
      }

      // The killed node comes back; then the node a reader streams from is killed mid-read,
      // and the read goes on from another node.
      roles.set(victim!, startRole("server", envs.get(victim!)!));
      await waitForHttp(`http://${hostOf(victim!)}:${PORTS.metrics}/health`, "OK", 120_000);
      const reader = await connectClusterClient({ addrs, tls: null, logger: log });
      try {
        const ns = reader.backend.namespace(reader.tenantId, "failover");
        const got = await reader.backend.getObject(ns, "big.bin");
        const hash = createHash("md5");
        let read = 0;
        let killed: number | null = null;
        for await (const piece of got.body) {
          hash.update(piece);
          read += piece.length;
          if (read >= 8 * MiB && killed === null) {
            killed = ids.find((id) => hostOf(id) === reader.node!.host)!;
            await roles.get(killed)!.stop("SIGKILL");
          }
        }
        assert.ok(killed !== null, "a node was killed during the read");
        assert.equal(read, body.length);
        assert.equal(hash.digest("hex"), md5(body));
        assert.notEqual(reader.node!.host, hostOf(killed), "the read finished on another node");
      } finally {
        await reader.close();
      }
    } finally {
      for (const r of roles.values()) await r.stop("SIGKILL");
      for (const d of dirs) {
        await Deno.remove(d, { recursive: true }).catch(() => {});
        await Deno.remove(`${d}.s3-credentials`).catch(() => {});
      }
    }
  },
});
