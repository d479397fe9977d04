// A kiseki-client-fuse mount against a real three-node cluster: the node the client talks to
// is killed (SIGKILL) in the middle of a large `cp` onto the mount; the copy completes
// without an error reaching cp, and the file compares equal through the same mount and
// through a fresh client that knows only the surviving nodes.

import assert from "node:assert/strict";
import { missingPart } from "../../mod/base/testing.ts";
import { Prng } from "../../mod/base/mod.ts";
import { fuseMissing, lazyUnmount, startClient } from "../fuse/_mount.ts";
import { run, type RunningRole, startRole, waitForHttp } from "./_role.ts";

const MiB = 1 << 20;
const OCTET = 86;
const PORTS = { data: 29100, raft: 29300, metrics: 29090, s3: 29000, nfs: 22049, advisory: 29101 };
const FILE_BYTES = 64 * MiB + 4321;
/** How much of the file cp has read when the node is killed. */
const KILL_AT_BYTES = 20 * MiB;

/** Bytes `pid` has read so far (/proc/PID/io rchar), or null once it is gone. */
async function bytesRead(pid: number): Promise<number | null> {
  try {
    const io = await Deno.readTextFile(`/proc/${pid}/io`);
    return Number(io.match(/^rchar: (\d+)/m)?.[1] ?? 0);
  } catch {
    return null;
  }
}

Deno.test({
  name: "a cp onto a FUSE mount completes and verifies when its node dies (3 nodes)",
  ignore: missingPart("a FUSE mount (/dev/fuse as root)", fuseMissing()),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const ids = [1, 2, 3];
    const hostOf = (id: number) => `127.0.${OCTET}.${id}`;
    const dataOf = (id: number) => `${hostOf(id)}:${PORTS.data}`;
    const peers = ids.map((id) => `${id}=${hostOf(id)}:${PORTS.raft}`).join(",");
    const base = await Deno.makeTempDir({ prefix: "kiseki-fuse-cluster-" });
    const roles = new Map<number, RunningRole>();
    const clients: RunningRole[] = [];
    const mountpoints = [`${base}/mnt`, `${base}/mnt2`];
    try {
      for (const id of ids) {
        const dir = `${base}/n${id}`;
        await Deno.mkdir(dir);
        const on = (port: number) => `${hostOf(id)}:${port}`;
        roles.set(
          id,
          startRole("server", {
            KISEKI_NODE_ID: String(id),
            KISEKI_RAFT_PEERS: peers,
            // Failover, not authentication: plain TCP, said so.
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
          }),
        );
      }
      for (const id of ids) {
        await waitForHttp(`http://${hostOf(id)}:${PORTS.metrics}/health`, "OK", 120_000);
      }
      const src = `${base}/src.bin`;
      await Deno.writeFile(src, new Prng(5).bytes(FILE_BYTES));
      for (const m of mountpoints) await Deno.mkdir(m);
      // Info level: the client names the node it talks to when it mounts.
      const client = await startClient({
        dataAddr: ids.map(dataOf).join(","),
        mountpoint: mountpoints[0]!,
        cacheDir: `${base}/cache`,
        logLevel: "info",
      });
      clients.push(client);
      const node = client.stderr().match(/ mounted .*node=(127\.0\.\d+\.\d+):/)?.[1];
      assert.ok(node, `the client names its node:\n${client.stderr()}`);
      const victim = ids.find((id) => hostOf(id) === node)!;
      await Deno.mkdir(`${mountpoints[0]}/failover`);

      const cp = new Deno.Command("cp", {
        args: [src, `${mountpoints[0]}/failover/big.bin`],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const done = cp.output();
      let read: number | null = 0;
      for (let i = 0; i < 1200 && read !== null && read < KILL_AT_BYTES; i++) {
        await new Promise((r) => setTimeout(r, 50));
        read = await bytesRead(cp.pid);
      }
      assert.ok(read !== null && read >= KILL_AT_BYTES, `cp is still copying (read ${read})`);
      await roles.get(victim)!.stop("SIGKILL");
      const out = await done;
      assert.equal(out.code, 0, `cp: ${new TextDecoder().decode(out.stderr)}\n${client.stderr()}`);
      const same = await run("cmp", [src, `${mountpoints[0]}/failover/big.bin`]);
      assert.equal(same.code, 0, same.stdout + same.stderr);
      assert.match(client.stderr(), /trying another/, "the client failed over");

      // A fresh client (empty cache) that knows only the survivors reads the same bytes.
      const survivors = ids.filter((id) => id !== victim).map(dataOf).join(",");
      const fresh = await startClient({
        dataAddr: survivors,
        mountpoint: mountpoints[1]!,
        cacheDir: `${base}/cache2`,
      });
      clients.push(fresh);
      const again = await run("cmp", [src, `${mountpoints[1]}/failover/big.bin`]);
      assert.equal(again.code, 0, again.stdout + again.stderr + fresh.stderr());
      for (const c of clients) assert.equal(await c.stop("SIGTERM"), 0, c.stderr());
    } finally {
      for (const c of clients) await c.stop("SIGKILL");
      for (const m of mountpoints) await lazyUnmount(m);
      for (const r of roles.values()) await r.stop("SIGKILL");
      await Deno.remove(base, { recursive: true }).catch(() => {});
    }
  },
});
