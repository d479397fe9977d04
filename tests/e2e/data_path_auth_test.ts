// Every data-path call against a real `kiseki server` (the role table's flags), tried by
// each kind of caller: no certificate, another CA's, a tenant's own and another tenant's, a
// node's and an operator's, with TLS material from scripts/gen_certs.sh. Then the same node
// without TLS, called from a network namespace (a caller that is not loopback), and a
// three-node peer list without mTLS that must refuse to start.

import assert from "node:assert/strict";
import {
  createGrpcClient,
  type GrpcClient,
  GrpcStatusError,
  LOG_SERVICE,
  type LogServiceMethods,
} from "../../mod/transport/mod.ts";
import { ROOT, run, type RunningRole, startRole, testAddrs, waitForHttp } from "./_role.ts";

const GEN_CERTS = `${ROOT}scripts/gen_certs.sh`;
const OPENSSL = (() => {
  try {
    return new Deno.Command("openssl", { args: ["version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
})();
const TENANT_A = "6b697365-6b69-4000-8000-0000000000a1";
const TENANT_B = "6b697365-6b69-4000-8000-0000000000b2";
const SHARD = 0;

type LogClient = GrpcClient<LogServiceMethods>;
interface Tls {
  ca: string;
  cert?: string;
  key?: string;
}

async function genCerts(dir: string, args: string[]): Promise<void> {
  const r = await run("bash", [GEN_CERTS, "--out", dir, ...args]);
  assert.equal(r.code, 0, r.stderr);
}

async function clientTls(dir: string, folder: string, base: string): Promise<Tls> {
  return {
    ca: await Deno.readTextFile(`${dir}/ca.crt`),
    cert: await Deno.readTextFile(`${dir}/${folder}/${base}.crt`),
    key: await Deno.readTextFile(`${dir}/${folder}/${base}.key`),
  };
}

/** The status a call ends with; fails the test when it succeeds. */
async function refusal(call: Promise<unknown>): Promise<GrpcStatusError> {
  try {
    await call;
  } catch (e) {
    assert.ok(e instanceof GrpcStatusError, String(e));
    return e;
  }
  assert.fail("the call was expected to be refused");
}

async function expectRefused(
  call: Promise<unknown>,
  code: "UNAUTHENTICATED" | "PERMISSION_DENIED" | "FAILED_PRECONDITION",
  message: RegExp,
): Promise<void> {
  const e = await refusal(call);
  assert.equal(e.codeName, code, e.message);
  assert.match(e.message, message);
}

const key = (n: number) => new Uint8Array(32).fill(n);
const append = (tenantId: string, n: number, chunkRefs: Uint8Array[] = []) => ({
  shardId: SHARD,
  tenantId,
  operation: "DELTA_OPERATION_CREATE" as const,
  hashedKey: key(n),
  chunkRefs,
  payload: new TextEncoder().encode(`sealed-${n}`),
});

async function startServer(env: Record<string, string>): Promise<RunningRole> {
  const role = startRole("server", env);
  try {
    await waitForHttp(`http://${env.KISEKI_METRICS_ADDR}/health`, "OK", 60_000);
  } catch (e) {
    await role.stop("SIGKILL");
    throw new Error(`${(e as Error).message}\n${role.stderr()}`);
  }
  return role;
}

Deno.test({
  name: "data path under mTLS: each call answers only the identity allowed to make it" +
    (OPENSSL ? "" : " (IGNORED: openssl missing, Debian package openssl)"),
  ignore: !OPENSSL,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "kiseki-data-auth-" });
    const addrs = testAddrs(93);
    const host = addrs.KISEKI_DATA_ADDR.split(":")[0]!;
    const target = { host, port: Number(addrs.KISEKI_DATA_ADDR.split(":")[1]) };
    const clients: LogClient[] = [];
    let role: RunningRole | null = null;
    try {
      const tls = `${dir}/tls`;
      await genCerts(tls, [
        "--node",
        `node1:${host}`,
        "--node",
        `node2:${host}`,
        "--admin",
        "--tenant",
        TENANT_A,
        "--tenant",
        TENANT_B,
        "--tenant",
        "acme",
      ]);
      await genCerts(`${dir}/foreign`, ["--tenant", TENANT_A]);
      role = await startServer({
        ...addrs,
        KISEKI_DATA_DIR: `${dir}/data`,
        KISEKI_CA_PATH: `${tls}/node1/ca.crt`,
        KISEKI_CERT_PATH: `${tls}/node1/server.crt`,
        KISEKI_KEY_PATH: `${tls}/node1/server.key`,
      });
      const connect = (t: Tls): LogClient => {
        const c = createGrpcClient(LOG_SERVICE, target, { tls: t, deadlineMs: 15_000 });
        clients.push(c);
        return c;
      };
      const ca = await Deno.readTextFile(`${tls}/ca.crt`);
      const anonymous = connect({ ca });
      // Tenant A's name, from another CA (the client still trusts the cluster's CA).
      const foreign = connect({
        ...await clientTls(`${dir}/foreign`, `tenant-${TENANT_A}`, "client"),
        ca,
      });
      const tenantA = connect(await clientTls(tls, `tenant-${TENANT_A}`, "client"));
      const tenantB = connect(await clientTls(tls, `tenant-${TENANT_B}`, "client"));
      const acme = connect(await clientTls(tls, "tenant-acme", "client"));
      // Another node of the cluster: the server presents node1, the caller is node2.
      const node = connect(await clientTls(tls, "node2", "server"));
      const admin = connect(await clientTls(tls, "admin", "admin"));

      // No certificate, or one the cluster CA did not sign: no call, whatever it is.
      for (const c of [anonymous, foreign]) {
        const noIdentity = /requires a client certificate signed by the cluster CA/;
        await expectRefused(c.AppendDelta(append(TENANT_A, 1)), "UNAUTHENTICATED", noIdentity);
        await expectRefused(
          c.ReadDeltas({ shardId: SHARD, fromSequence: 0, maxCount: 0 }),
          "UNAUTHENTICATED",
          noIdentity,
        );
        await expectRefused(c.ShardHealth({ shardId: SHARD }), "UNAUTHENTICATED", noIdentity);
        await expectRefused(
          c.SetMaintenance({ shardId: SHARD, enabled: true }),
          "UNAUTHENTICATED",
          noIdentity,
        );
      }

      // AppendDelta: a tenant for itself (without chunk references), a node for anyone.
      const a1 = await tenantA.AppendDelta(append(TENANT_A, 1));
      assert.ok(a1.sequence > 0 && a1.term > 0);
      assert.equal(a1.timestamp?.nodeId, 1, "the node that took the append stamped it");
      await expectRefused(
        tenantA.AppendDelta(append(TENANT_B, 2)),
        "PERMISSION_DENIED",
        new RegExp(
          `tenant ${TENANT_A}'s client certificate may not append deltas of tenant ${TENANT_B}`,
        ),
      );
      await expectRefused(
        tenantA.AppendDelta(append(TENANT_A, 3, [key(9)])),
        "PERMISSION_DENIED",
        /may not append chunk_refs/,
      );
      await expectRefused(
        tenantB.AppendDelta(append(TENANT_A, 4)),
        "PERMISSION_DENIED",
        /may not append deltas of tenant/,
      );
      await expectRefused(
        acme.AppendDelta(append(TENANT_A, 5)),
        "PERMISSION_DENIED",
        /its id 'acme' is not a tenant id \(a UUID\)/,
      );
      await expectRefused(
        admin.AppendDelta(append(TENANT_A, 6)),
        "PERMISSION_DENIED",
        /operator certificate kiseki-admin may not append deltas/,
      );
      const b1 = await node.AppendDelta(append(TENANT_B, 7, [key(8)]));
      const a2 = await node.AppendDelta(append(TENANT_A, 10));

      // ReadDeltas: a tenant sees its own deltas only; a node sees all, with real terms.
      const page = (c: LogClient) => c.ReadDeltas({ shardId: SHARD, fromSequence: 0, maxCount: 0 });
      const seenByA = await page(tenantA);
      assert.deepEqual(seenByA.deltas.map((d) => d.sequence), [a1.sequence, a2.sequence]);
      assert.ok(seenByA.deltas.every((d) => d.tenantId === TENANT_A));
      assert.equal(
        seenByA.nextSequence,
        b1.sequence > a2.sequence ? b1.sequence + 1 : a2.sequence + 1,
      );
      const seenByB = await page(tenantB);
      assert.deepEqual(seenByB.deltas.map((d) => d.sequence), [b1.sequence]);
      assert.equal(seenByB.deltas[0]!.chunkRefs.length, 1);
      const all = await page(node);
      assert.deepEqual(all.deltas.map((d) => d.sequence), [a1.sequence, b1.sequence, a2.sequence]);
      for (const [d, acked] of all.deltas.map((d, i) => [d, [a1, b1, a2][i]!] as const)) {
        assert.equal(d.term, acked.term, `delta ${d.sequence}: the term that appended it`);
        assert.ok(d.term > 0);
        assert.deepEqual(d.timestamp, acked.timestamp, `delta ${d.sequence}: stamp and node`);
      }
      await expectRefused(
        page(admin),
        "PERMISSION_DENIED",
        /operator certificate .* may not read deltas/,
      );
      await expectRefused(page(acme), "PERMISSION_DENIED", /is not a tenant id/);

      // ShardHealth: every identity.
      for (const c of [tenantA, tenantB, node, admin]) {
        const h = await c.ShardHealth({ shardId: SHARD });
        assert.equal(h.reportingNodeId, 1);
        assert.equal(h.leaderId, 1);
      }

      // SetMaintenance: operators only; it takes effect for everyone.
      for (
        const [c, who] of [[tenantA, `tenant ${TENANT_A}`], [
          node,
          "node certificate node2",
        ]] as const
      ) {
        await expectRefused(
          c.SetMaintenance({ shardId: SHARD, enabled: true }),
          "PERMISSION_DENIED",
          new RegExp(`${who}.* may not set maintenance mode`),
        );
      }
      assert.equal((await node.ShardHealth({ shardId: SHARD })).maintenance, false);
      const on = await admin.SetMaintenance({ shardId: SHARD, enabled: true });
      assert.equal(on.maintenance, true);
      await expectRefused(
        node.AppendDelta(append(TENANT_A, 11)),
        "FAILED_PRECONDITION",
        /maintenance/,
      );
      const off = await admin.SetMaintenance({ shardId: SHARD, enabled: false });
      assert.equal(off.maintenance, false);
      await tenantA.AppendDelta(append(TENANT_A, 12));

      // Refusals are counted where an operator looks.
      const metrics = await (await fetch(`http://${addrs.KISEKI_METRICS_ADDR}/metrics`)).text();
      const refused = (method: string, code: string): number =>
        Number(
          new RegExp(
            `^kiseki_grpc_calls_refused_total\\{method="kiseki\\.v1\\.LogService/${method}",code="${code}"\\} (\\d+)$`,
            "m",
          ).exec(metrics)?.[1] ?? 0,
        );
      assert.equal(refused("AppendDelta", "UNAUTHENTICATED"), 2);
      assert.equal(refused("AppendDelta", "PERMISSION_DENIED"), 5);
      assert.equal(refused("SetMaintenance", "PERMISSION_DENIED"), 2);

      // The operator API answers this loopback caller (its token decides), /health anyone.
      const api = await fetch(`http://${addrs.KISEKI_METRICS_ADDR}/api/v1/s3-credentials`);
      assert.equal(api.status, 401, await api.text());
    } catch (e) {
      if (role !== null) console.error(role.stderr().slice(-4000));
      throw e;
    } finally {
      for (const c of clients) c.close();
      await role?.stop("SIGKILL");
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
