import assert from "node:assert/strict";
import { type EngineStack, startEngineStack } from "../role/engine_stack.ts";
import { toHex } from "../base/mod.ts";
import { createLogger } from "../obs/mod.ts";
import { type NfsExport, type NfsExportSpec, NfsExportTable } from "../control/nfs_exports.ts";
import { startNfsGateway } from "./gateway.ts";
import { RpcClient } from "./rpc_client.ts";
import { HandleTable } from "./file_handle.ts";
import { attrRequest, Nfs4Client, op, open, type Stateid4, writeStateid } from "./nfs4_client.ts";
import * as C from "./nfs4_const.ts";
import { FATTR4_FILEHANDLE, FATTR4_MODE, FATTR4_OWNER, FATTR4_TYPE } from "./nfs4_attrs.ts";
import { XdrReader, XdrWriter } from "./xdr.ts";

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

async function put(stack: EngineStack, tenant: Uint8Array, bucket: string, key: string) {
  await stack.engine.createNamespace(tenant, bucket, "bucket").catch(() => {});
  await stack.engine.putObject(
    stack.engine.namespace(tenant, bucket),
    key,
    ENCODER.encode(`${bucket}/${key}`),
  );
}

async function withExports(
  fn: (h: { stack: EngineStack; table: NfsExportTable; c: Nfs4Client }) => Promise<void>,
): Promise<void> {
  const dataDir = await Deno.makeTempDir({ prefix: "kiseki-nfs4-exports-" });
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
  const rpc = await RpcClient.connect("127.0.0.1", gateway.addr.port);
  try {
    const c = new Nfs4Client(rpc);
    await c.establish("exports-client");
    await fn({ stack, table, c });
  } finally {
    await rpc.close();
    await gateway.close();
    await stack.close();
    await Deno.remove(dataDir, { recursive: true });
  }
}

function exportOf(table: NfsExportTable, path: string): NfsExport {
  return table.list().find((e) => e.path === path)!;
}

const putroot = op(C.OP_PUTROOTFH);
const lookup = (name: string) => op(C.OP_LOOKUP, (w) => w.string(name));
const getfh = op(C.OP_GETFH);
const putfh = (fh: Uint8Array) => op(C.OP_PUTFH, (w) => w.opaque(fh));
const ANON: Stateid4 = { seqid: 0, other: new Uint8Array(12) };
const readdir = op(C.OP_READDIR, (w) => {
  w.u64(0n).fixed(new Uint8Array(8)).u32(8192).u32(8192);
  attrRequest(w, [FATTR4_TYPE]);
});
const read = (s: Stateid4) => op(C.OP_READ, (w) => writeStateid(w, s).u64(0).u32(100));
const mkdir = (name: string) =>
  op(C.OP_CREATE, (w) => {
    w.u32(C.NF4DIR).string(name);
    attrRequest(w, []);
    w.opaque(new Uint8Array(0));
  });
const setMode = op(C.OP_SETATTR, (w) => {
  writeStateid(w, ANON);
  attrRequest(w, [FATTR4_MODE]);
  w.opaque(new XdrWriter(4).u32(0o600).finish());
});
const getOwner = op(C.OP_GETATTR, (w) => attrRequest(w, [FATTR4_OWNER]));
const names = (r: { results: { value: { entries: { name: string }[] } }[] }, i: number) =>
  r.results[i]!.value.entries.map((e) => e.name);
const statuses = (r: { results: { status: number }[] }) => r.results.map((x) => x.status);

async function setUp(stack: EngineStack, table: NfsExportTable): Promise<void> {
  await put(stack, DEFAULT, "home", "a.txt");
  await put(stack, ACME, "projects", "plan.txt");
  await put(stack, BETA, "results", "r.txt");
  table.apply({ type: "nfs_export", spec: spec("/acme", ACME, { rootSquash: false }) });
  table.apply({
    type: "nfs_export",
    spec: spec("/beta", BETA, { bucket: "results", clients: ["127.0.0.2/32"] }),
  });
  table.apply({
    type: "nfs_export",
    spec: spec("/ro/acme", ACME, { bucket: "projects", access: "ro" }),
  });
}

Deno.test("NFSv4 exports: the pseudo root shows only the exports the client's network may use", async () => {
  await withExports(async ({ stack, table, c }) => {
    await setUp(stack, table);
    const root = await c.call([putroot, readdir, getfh]);
    assert.deepEqual(statuses(root), [0, 0, 0, 0]);
    assert.deepEqual(names(root, 2), ["acme", "ro"]);
    const ro = await c.call([putroot, lookup("ro"), readdir]);
    assert.deepEqual(names(ro, 3), ["acme"]);
    // Another network's export is not there, and its handles reach nothing.
    assert.equal((await c.call([putroot, lookup("beta")])).status, C.NFS4ERR_NOENT);
    const betaRoot = new HandleTable().encode({ kind: "root" }, exportOf(table, "/beta").id);
    const denied = await c.call([putfh(betaRoot), readdir]);
    assert.deepEqual(statuses(denied), [0, C.NFS4ERR_ACCESS]);
    // Through an export into a tenant's bucket and back out to the pseudo root.
    const into = await c.call([
      putroot,
      lookup("acme"),
      lookup("projects"),
      lookup("plan.txt"),
      read(ANON),
    ]);
    assert.equal(into.status, 0);
    assert.equal(DECODER.decode(into.results[5]!.value.data), "projects/plan.txt");
    const out = await c.call([
      putroot,
      lookup("acme"),
      lookup("projects"),
      op(C.OP_LOOKUPP),
      op(C.OP_LOOKUPP),
      getfh,
    ]);
    assert.equal(out.status, 0);
    assert.deepEqual(out.results[6]!.value, root.results[3]!.value);
    // READDIR of the pseudo root hands out the export's own handle for its entry.
    const fhs = await c.call([
      putroot,
      op(C.OP_READDIR, (w) => {
        w.u64(0n).fixed(new Uint8Array(8)).u32(8192).u32(8192);
        attrRequest(w, [FATTR4_FILEHANDLE]);
      }),
      lookup("acme"),
      getfh,
    ]);
    const acme = fhs.results[2]!.value.entries.find((e: { name: string }) => e.name === "acme");
    assert.deepEqual(new XdrReader(acme.attrs.values).opaque(128), fhs.results[4]!.value);
    // A pseudo handle works again by PUTFH, and the pseudo-file system is read-only.
    const again = await c.call([putfh(root.results[3]!.value), readdir]);
    assert.deepEqual(names(again, 2), ["acme", "ro"]);
    assert.equal((await c.call([putroot, mkdir("new")])).status, C.NFS4ERR_ROFS);
    // The default tenant is not shown once exports exist.
    assert.equal((await c.call([putroot, lookup("home")])).status, C.NFS4ERR_NOENT);
  });
});

Deno.test("NFSv4 exports: a forged handle of another tenant's bucket reaches nothing", async () => {
  await withExports(async ({ stack, table, c }) => {
    await setUp(stack, table);
    const betaNs = stack.engine.namespace(BETA, "results").id;
    for (const path of ["/acme", "/ro/acme"]) {
      const forged = new HandleTable().encode(
        { kind: "object", ns: betaNs, path: "r.txt" },
        exportOf(table, path).id,
      );
      const got = await c.call([putfh(forged), read(ANON)]);
      assert.notEqual(got.status, 0, path);
      assert.ok(got.results.every((r) => r.op !== C.OP_READ || r.value === null), path);
    }
    // The same handle under its own export's id: this client's network is not BETA's.
    const own = new HandleTable().encode(
      { kind: "object", ns: betaNs, path: "r.txt" },
      exportOf(table, "/beta").id,
    );
    assert.deepEqual(statuses(await c.call([putfh(own), read(ANON)])), [0, C.NFS4ERR_ACCESS]);
    // A pseudo handle of no pseudo directory is stale.
    const stale = new Uint8Array(17).fill(7);
    stale[0] = 0xf0;
    assert.deepEqual(statuses(await c.call([putfh(stale)])), [0, C.NFS4ERR_STALE]);
  });
});

Deno.test("NFSv4 exports: a read-only export answers NFS4ERR_ROFS to every change", async () => {
  await withExports(async ({ stack, table, c }) => {
    await setUp(stack, table);
    const at = [putroot, lookup("ro"), lookup("acme")];
    const reading = await c.call([...at, open("plan.txt", { access: 1 }), read(ANON)]);
    assert.equal(reading.status, 0);
    assert.equal(DECODER.decode(reading.results[5]!.value.data), "projects/plan.txt");
    const plan = [...at, lookup("plan.txt")];
    const refused = [
      [...at, open("plan.txt", { access: 2 })],
      [...at, open("plan.txt", { access: 3 })],
      [...at, open("new.txt", { access: 1, create: true })],
      [...at, mkdir("d")],
      [...at, op(C.OP_REMOVE, (w) => w.string("plan.txt"))],
      [...at, op(C.OP_SAVEFH), op(C.OP_RENAME, (w) => w.string("plan.txt").string("p2"))],
      [...plan, op(C.OP_SAVEFH), ...at, op(C.OP_LINK, (w) => w.string("p3"))],
      [...plan, setMode],
      [
        ...plan,
        op(C.OP_WRITE, (w) => writeStateid(w, ANON).u64(0).u32(2).opaque(ENCODER.encode("x"))),
      ],
    ];
    for (const ops of refused) {
      const r = await c.call(ops);
      assert.equal(r.status, C.NFS4ERR_ROFS, `ops ${ops.map((o) => o.op).join(",")}`);
    }
    // 4.2's ALLOCATE inside the file's size changes nothing, and is still a change.
    const allocate = op(C.OP_ALLOCATE, (w) => writeStateid(w, ANON).u64(0).u64(1));
    assert.equal((await c.call([...plan, allocate], { minor: 2 })).status, C.NFS4ERR_ROFS);
    // Nothing changed: the bucket still holds just the one object, as it was.
    const list = await c.call([...at, readdir]);
    assert.deepEqual(names(list, 4), ["plan.txt"]);
    // The same bucket through the read-write export takes a change.
    const rw = await c.call([putroot, lookup("acme"), lookup("projects"), mkdir("d")]);
    assert.equal(rw.status, 0);
  });
});

Deno.test("NFSv4 exports: root squash makes AUTH_SYS uid 0 the export's anonymous user", async () => {
  await withExports(async ({ stack, table, c }) => {
    await setUp(stack, table);
    table.apply({
      type: "nfs_export",
      spec: spec("/squash", ACME, { bucket: "projects", rootSquash: true }),
    });
    const mode777 = op(C.OP_SETATTR, (w) => {
      writeStateid(w, ANON);
      attrRequest(w, [FATTR4_MODE]);
      w.opaque(new XdrWriter(4).u32(0o777).finish());
    });
    const access = op(C.OP_ACCESS, (w) => w.u32(0x3f));
    // The test client calls as uid 0: as itself through /acme, as 65534 through /squash.
    const prep = await c.call([
      putroot,
      lookup("acme"),
      lookup("projects"),
      mkdir("open"),
      mode777,
    ]);
    assert.equal(prep.status, 0);
    const asRoot = await c.call([putroot, lookup("acme"), lookup("projects"), access]);
    const asNobody = await c.call([putroot, lookup("squash"), access]);
    assert.equal(asRoot.results[4]!.value.access & 0x4, 0x4);
    assert.equal(asNobody.results[3]!.value.access & 0x4, 0);
    assert.equal((await c.call([putroot, lookup("squash"), mkdir("s0")])).status, C.NFS4ERR_ACCESS);
    const squashed = await c.call([
      putroot,
      lookup("squash"),
      lookup("open"),
      mkdir("s1"),
      getOwner,
    ]);
    assert.equal(squashed.status, 0);
    const plain = await c.call([
      putroot,
      lookup("acme"),
      lookup("projects"),
      lookup("open"),
      mkdir("s2"),
      getOwner,
    ]);
    assert.equal(plain.status, 0);
    const owner = (v: { values: Uint8Array }) => new XdrReader(v.values).string(1024);
    assert.equal(owner(squashed.results[5]!.value), "65534");
    assert.equal(owner(plain.results[6]!.value), "0");
  });
});
