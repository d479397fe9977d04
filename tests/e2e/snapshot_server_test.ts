// Catch-up by snapshot between real server processes: three `kiseki server`s on loopback;
// node 3 is killed, S3 PUTs through node 1 move every shard's log past where node 3 stopped
// (default compaction: a snapshot every 1,024 entries, 1,024 kept behind it), and node 3,
// restarted, gets its shards' state streamed over the Raft port: its metrics count the
// streams received and /ui/api/cluster shows its logs starting past a snapshot it never
// logged itself.

import assert from "node:assert/strict";
import type { ClusterView } from "../../mod/admin/mod.ts";
import {
  pollUntil,
  readS3Credentials,
  ROOT,
  run,
  type RunningRole,
  startRole,
  waitForHttp,
} from "./_role.ts";

const HOST = "127.44.14";
const SHARDS = 1;
/** More than a snapshot interval and its margin past node 3's stop (every PUT is one entry). */
const PUTS = 3_500;
const DEADLINE_MS = 120_000;

function addrs(id: number) {
  const host = `${HOST}.${id}`;
  return {
    KISEKI_S3_ADDR: `${host}:29000`,
    KISEKI_NFS_ADDR: `${host}:22049`,
    KISEKI_METRICS_ADDR: `${host}:29090`,
    KISEKI_DATA_ADDR: `${host}:29100`,
    KISEKI_ADVISORY_ADDR: `${host}:29101`,
    KISEKI_RAFT_ADDR: `${host}:29300`,
  };
}

async function view(id: number): Promise<ClusterView> {
  const r = await fetch(`http://${addrs(id).KISEKI_METRICS_ADDR}/ui/api/cluster`);
  assert.equal(r.status, 200);
  return await r.json() as ClusterView;
}

async function metric(id: number, pattern: RegExp): Promise<number> {
  const text = await (await fetch(`http://${addrs(id).KISEKI_METRICS_ADDR}/metrics`)).text();
  const m = text.match(pattern);
  return m === null ? 0 : Number(m[1]);
}

function until<T>(what: string, get: () => Promise<T | null>): Promise<T> {
  return pollUntil(what, get, DEADLINE_MS, 250);
}

Deno.test("a server back after the log moved past it catches up by a snapshot from a real leader", async () => {
  const peers = [1, 2, 3].map((id) => `${id}=${addrs(id).KISEKI_RAFT_ADDR}`).join(",");
  const dirs: string[] = [];
  const nodes: (RunningRole | null)[] = [];
  const envOf = (id: number) => ({
    ...addrs(id),
    KISEKI_NODE_ID: String(id),
    KISEKI_RAFT_PEERS: peers,
    KISEKI_BOOTSTRAP: id === 1 ? "true" : "false",
    // Loopback only; mTLS between nodes is data_path_auth_test.ts's subject.
    KISEKI_ALLOW_INSECURE: "true",
    KISEKI_DATA_DIR: dirs[id - 1]!,
    KISEKI_SHARDS: String(SHARDS),
    KISEKI_RAFT_TICK_MS: "50",
    KISEKI_LOG_LEVEL: "warn",
  });
  try {
    for (const id of [1, 2, 3]) {
      dirs.push(await Deno.makeTempDir({ prefix: `kiseki-snapsrv-n${id}-` }));
      nodes.push(startRole("server", envOf(id)));
    }
    for (const id of [1, 2, 3]) {
      await waitForHttp(`http://${addrs(id).KISEKI_METRICS_ADDR}/health`, "OK", 60_000);
    }
    await until("a leader", async () => (await view(3)).shards[0]!.leader > 0 ? true : null);
    const stoppedAt = (await view(3)).shards[0]!.log.lastIndex;
    await nodes[2]!.stop("SIGKILL");
    nodes[2] = null;

    // Writes through node 1 while node 3 is away.
    const c = await readS3Credentials(`${dirs[0]}.s3-credentials`);
    const endpoint = `http://${addrs(1).KISEKI_S3_ADDR}`;
    const mb = await run("aws", ["--endpoint-url", endpoint, "s3", "mb", "s3://catchup"], {
      env: {
        AWS_ACCESS_KEY_ID: c.accessKeyId,
        AWS_SECRET_ACCESS_KEY: c.secretAccessKey,
        AWS_DEFAULT_REGION: "us-east-1",
      },
    });
    assert.equal(mb.code, 0, mb.stderr);
    const load = await run(Deno.execPath(), [
      "run",
      "-A",
      "--quiet",
      `${ROOT}tests/bench/s3_load.ts`,
      `--endpoint=${endpoint}`,
      "--bucket=catchup",
      `--access-key=${c.accessKeyId}`,
      `--secret-key=${c.secretAccessKey}`,
      "--op=put",
      "--size=512",
      "--concurrency=16",
      "--seconds=600",
      `--count=${PUTS}`,
      "--keys=16",
      "--warmup-ms=0",
    ]);
    assert.equal(load.code, 0, load.stderr);
    const leader = await until("the others' logs to move past node 3", async () => {
      const vs = await Promise.all([view(1), view(2)]);
      return vs.every((v) => v.shards[0]!.log.firstIndex > stoppedAt + 1) ? vs[0]! : null;
    });
    const leaderSnapshot = leader.shards[0]!.log.snapshotIndex;

    // Node 3 returns and is brought up to date by a snapshot, not by the log.
    nodes[2] = startRole("server", envOf(3));
    await waitForHttp(`http://${addrs(3).KISEKI_METRICS_ADDR}/health`, "OK", 60_000);
    const received = /^kiseki_raft_snapshot_streams\{direction="received",outcome="ok"\} (\d+)$/m;
    await until("node 3 to receive a snapshot", async () => await metric(3, received) >= 1 || null);
    const back = await until("node 3 to catch up", async () => {
      const v = await view(3);
      const s = v.shards[0]!;
      return s.commit >= leader.shards[0]!.commit && s.applied >= leader.shards[0]!.commit
        ? v
        : null;
    });
    const log = back.shards[0]!.log;
    assert(log.snapshotIndex > stoppedAt, `node 3's snapshot ${log.snapshotIndex}`);
    assert(log.firstIndex > stoppedAt + 1, `node 3's log starts at ${log.firstIndex}`);
    assert(leaderSnapshot > stoppedAt);
    const sent =
      await metric(1, /^kiseki_raft_snapshot_streams\{direction="sent",outcome="ok"\} (\d+)$/m) +
      await metric(2, /^kiseki_raft_snapshot_streams\{direction="sent",outcome="ok"\} (\d+)$/m);
    assert(sent >= 1, "a leader sent the snapshot");
  } catch (e) {
    for (const [i, n] of nodes.entries()) {
      if (n !== null) console.error(`node ${i + 1}:\n${n.stderr().slice(-4000)}`);
    }
    throw e;
  } finally {
    for (const n of nodes) await n?.stop("SIGKILL").catch(() => {});
    for (const d of dirs) await Deno.remove(d, { recursive: true }).catch(() => {});
  }
});
