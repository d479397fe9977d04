import assert from "node:assert/strict";
import { type EngineStack, startEngineStack } from "../role/engine_stack.ts";
import { toHex } from "../base/mod.ts";
import { createLogger } from "../obs/mod.ts";
import { type NfsExport, type NfsExportSpec, NfsExportTable } from "../control/nfs_exports.ts";
import { startNfsGateway } from "./gateway.ts";
import { NF3DIR, Nfs3Client } from "./nfs3_client.ts";
import { RpcClient } from "./rpc_client.ts";
import { HandleTable } from "./file_handle.ts";
import { NFS3ERR_ACCES, NFS3ERR_NOENT, NFS3ERR_ROFS, NFS3ERR_XDEV } from "./errors.ts";
import { MNT3ERR_ACCES, MNT3ERR_NOENT } from "./mount.ts";

const quiet = createLogger({ level: "error", format: "text", sink: { write: () => {} } });
const DEFAULT = new Uint8Array(16).fill(0x11);
const ACME = new Uint8Array(16).fill(0xac);
const BETA = new Uint8Array(16).fill(0xbe);
const ENCODER = new TextEncoder();
const DECODER = new TextDecoder();

function spec(path: string, tenant: Uint8Array, more: Partial<NfsExportSpec> = {}): NfsExportSpec {
  return {
    path,
    tenantId: toHex(tenant),
    bucket: null,
    clients: ["127.0.0.1/32"],
    access: "rw",
    rootSquash: true,
    anonUid: 65534,
    anonGid: 65534,
    createdAtMs: 1,
    ...more,
  };
}

async function withGateway(
  fn: (
    h: { stack: EngineStack; table: NfsExportTable; connect: () => Promise<Nfs3Client> },
  ) => Promise<void>,
): Promise<void> {
  const dataDir = await Deno.makeTempDir({ prefix: "kiseki-nfs-exports-" });
  const stack = await startEngineStack({
    dataDir,
    logger: quiet,
    pool: { deviceSizeBytes: 256 << 20, segmentSizeBytes: 4 << 20 },
  });
  const table = new NfsExportTable();
  const gateway = startNfsGateway({
    backend: stack.engine,
    tenantId: DEFAULT,
    exports: () => table.list(),
    addr: { host: "127.0.0.1", port: 0 },
    logger: quiet,
  });
  const rpcs: RpcClient[] = [];
  try {
    await fn({
      stack,
      table,
      connect: async () => {
        const rpc = await RpcClient.connect("127.0.0.1", gateway.addr.port);
        rpcs.push(rpc);
        return new Nfs3Client(rpc);
      },
    });
  } finally {
    for (const rpc of rpcs) await rpc.close();
    await gateway.close();
    await stack.close();
    await Deno.remove(dataDir, { recursive: true });
  }
}

async function put(stack: EngineStack, tenant: Uint8Array, bucket: string, key: string) {
  const ns = stack.engine.namespace(tenant, bucket);
  await stack.engine.createNamespace(tenant, bucket, "bucket").catch(() => {});
  await stack.engine.putObject(ns, key, ENCODER.encode(`${bucket}/${key}`));
}

function exportOf(table: NfsExportTable, path: string): NfsExport {
  return table.list().find((e) => e.path === path)!;
}

Deno.test("NFS exports: with none configured, the default tenant is served under / to loopback", async () => {
  await withGateway(async ({ stack, connect }) => {
    await put(stack, DEFAULT, "home", "a.txt");
    await put(stack, ACME, "secret", "s.txt");
    const c = await connect();
    const root = await c.mount("/");
    assert.equal(root.status, 0);
    assert.deepEqual(await c.list(root.fh!), [".", "..", "home"]);
  });
});

Deno.test("NFS exports: tenants, client networks, root squash and read-only", async (t) => {
  await withGateway(async ({ stack, table, connect }) => {
    await put(stack, DEFAULT, "home", "a.txt");
    await put(stack, ACME, "projects", "plan.txt");
    await put(stack, BETA, "results", "r.txt");
    await put(stack, BETA, "other", "o.txt");
    table.apply({ type: "nfs_export", spec: spec("/acme", ACME) });
    table.apply({
      type: "nfs_export",
      spec: spec("/beta", BETA, { bucket: "results", clients: ["127.0.0.2/32", "10.0.0.0/8"] }),
    });
    const c = await connect();

    await t.step("the built-in export is gone once exports exist", async () => {
      assert.equal((await c.mount("/")).status, MNT3ERR_NOENT);
    });

    await t.step(
      "a client outside an export's networks gets ACCES from MNT and calls",
      async () => {
        assert.equal((await c.mount("/beta")).status, MNT3ERR_ACCES);
        // A handle of that export (as a client elsewhere would hold it) is refused too.
        const forged = new HandleTable().encode({ kind: "root" }, exportOf(table, "/beta").id);
        assert.equal((await c.getattr(forged)).status, NFS3ERR_ACCES);
        assert.equal((await c.lookup(forged, "r.txt")).status, NFS3ERR_ACCES);
      },
    );

    await t.step("an export shows its tenant's buckets and no other tenant's", async () => {
      const m = await c.mount("/acme");
      assert.equal(m.status, 0);
      assert.deepEqual(await c.list(m.fh!), [".", "..", "projects"]);
      const p = await c.lookup(m.fh!, "projects");
      assert.equal(p.attr!.type, NF3DIR);
      const f = await c.lookup(p.fh!, "plan.txt");
      assert.equal(DECODER.decode((await c.read(f.fh!, 0, 100)).data), "projects/plan.txt");
      // BETA's bucket named through ACME's export (a forged handle) reaches nothing.
      const betaNs = stack.engine.namespace(BETA, "results").id;
      const forged = new HandleTable().encode(
        { kind: "object", ns: betaNs, path: "r.txt" },
        exportOf(table, "/acme").id,
      );
      const got = await c.getattr(forged);
      assert.notEqual(got.status, 0);
      const read = await c.read(forged, 0, 100);
      assert.notEqual(read.status, 0);
      assert.equal(read.data, undefined);
      assert.equal((await c.lookup(m.fh!, "results")).status, NFS3ERR_NOENT);
      // A mount path below the export names a directory in it.
      const sub = await c.mount("/acme/projects");
      assert.equal(sub.status, 0);
      assert.deepEqual(await c.list(sub.fh!), [".", "..", "plan.txt"]);
    });

    await t.step("root squash takes root's privilege; AUTH_SYS uid/gid are owners", async () => {
      const m = await c.mount("/acme/projects");
      // Squashed, root is nobody: the bucket directory (root's, 0755) is closed to it.
      assert.equal((await c.create(m.fh!, "by-root", { mode: 0, attr: {} })).status, NFS3ERR_ACCES);
      // Through an export without root squash, root opens a directory up.
      table.apply({ type: "nfs_export", spec: spec("/acme-admin", ACME, { rootSquash: false }) });
      const admin = await c.mount("/acme-admin/projects");
      assert.equal(admin.status, 0);
      const shared = await c.mkdir(admin.fh!, "shared", { mode: 0o777 });
      assert.equal(shared.status, 0);
      assert.equal(shared.attr!.uid, 0);
      const dir = (await c.lookup(m.fh!, "shared")).fh!;
      const squashed = await c.create(dir, "by-root", { mode: 0, attr: {} });
      assert.equal(squashed.status, 0);
      assert.equal(squashed.attr!.uid, 65534);
      assert.equal(squashed.attr!.gid, 65534);
      const user = await connect();
      user.rpc.cred = { stamp: 2, machineName: "hpc", uid: 1234, gid: 500, gids: [] };
      const made = await user.create(dir, "mine", { mode: 0, attr: {} });
      assert.equal(made.status, 0);
      assert.equal(made.attr!.uid, 1234);
      assert.equal(made.attr!.gid, 500);
    });

    await t.step("a bucket export is rooted at the bucket; read-only refuses changes", async () => {
      table.apply({ type: "nfs_export_remove", path: "/beta" });
      table.apply({
        type: "nfs_export",
        spec: spec("/beta", BETA, { bucket: "results", access: "ro", rootSquash: false }),
      });
      const m = await c.mount("/beta");
      assert.equal(m.status, 0);
      assert.deepEqual(await c.list(m.fh!), [".", "..", "r.txt"]);
      const up = await c.lookup(m.fh!, "..");
      assert.equal(up.status, 0);
      assert.equal(up.attr!.fileid, (await c.getattr(m.fh!)).attr!.fileid, ".. stays at the root");
      assert.equal((await c.create(m.fh!, "x", { mode: 0, attr: {} })).status, NFS3ERR_ROFS);
      const r = await c.lookup(m.fh!, "r.txt");
      assert.equal((await c.write(r.fh!, 0, ENCODER.encode("no"), 2)).status, NFS3ERR_ROFS);
      assert.equal((await c.remove(m.fh!, "r.txt")).status, NFS3ERR_ROFS);
      assert.equal(DECODER.decode((await c.read(r.fh!, 0, 100)).data), "results/r.txt");
      // ACCESS grants no change on a read-only export.
      assert.equal((await c.access(r.fh!, 0x3f)).granted! & 0x1c, 0);
      // The tenant's other bucket is outside this export, even with a handle naming it.
      const otherNs = stack.engine.namespace(BETA, "other").id;
      const forged = new HandleTable().encode(
        { kind: "dir", ns: otherNs, path: "" },
        exportOf(table, "/beta").id,
      );
      assert.equal((await c.getattr(forged)).status, NFS3ERR_ACCES);
      // Handles of two exports never meet in one call.
      const acme = await c.mount("/acme");
      const p = await c.lookup(acme.fh!, "projects");
      const mine = await c.lookup((await c.lookup(p.fh!, "shared")).fh!, "mine");
      assert.equal((await c.link(mine.fh!, m.fh!, "l")).status, NFS3ERR_XDEV);
    });

    await t.step("a removed export's handles are stale, its mounts gone", async () => {
      const m = await c.mount("/acme");
      table.apply({ type: "nfs_export_remove", path: "/acme" });
      assert.notEqual((await c.getattr(m.fh!)).status, 0);
      assert.equal((await c.mount("/acme")).status, MNT3ERR_NOENT);
    });
  });
});
