import assert from "node:assert/strict";
import { type ClusterRecord, ClusterStateMachine, encodeClusterRecord } from "./cluster_state.ts";
import { cidrContains, type NfsExportSpec, parseCidr } from "./nfs_exports.ts";

const TENANT = "0123456789abcdef0123456789abcdef";

function spec(path: string, more: Partial<NfsExportSpec> = {}): NfsExportSpec {
  return {
    path,
    tenantId: TENANT,
    bucket: null,
    clients: ["10.0.0.0/8"],
    access: "rw",
    rootSquash: true,
    anonUid: 65534,
    anonGid: 65534,
    createdAtMs: 5,
    ...more,
  };
}

function applier() {
  const sm = new ClusterStateMachine();
  let index = 1;
  const apply = (r: ClusterRecord) =>
    sm.apply(
      { term: 1, index: ++index, type: "normal", data: new Uint8Array(0) },
      encodeClusterRecord(r),
    )!;
  return { sm, apply };
}

Deno.test("parseCidr() and cidrContains() match IPv4, IPv6 and IPv4-mapped clients", () => {
  const net = parseCidr("10.1.0.0/16")!;
  assert.ok(cidrContains(net, "10.1.200.3"));
  assert.ok(cidrContains(net, "::ffff:10.1.0.9"));
  assert.ok(!cidrContains(net, "10.2.0.1"));
  assert.ok(!cidrContains(net, "fd00::1"));
  const one = parseCidr("127.0.0.2")!;
  assert.equal(one.prefix, 32);
  assert.ok(cidrContains(one, "127.0.0.2") && !cidrContains(one, "127.0.0.1"));
  const v6 = parseCidr("fd00:ab::/32")!;
  assert.ok(cidrContains(v6, "[fd00:ab:1::7]"));
  assert.ok(!cidrContains(v6, "fd00:ac::1"));
  assert.ok(cidrContains(parseCidr("0.0.0.0/0")!, "192.168.1.1"));
  for (const bad of ["10.0.0.0/33", "10.0.0", "300.1.1.1", "fd00::/129", "x", "10.0.0.0/"]) {
    assert.equal(parseCidr(bad), null, bad);
  }
});

Deno.test("ClusterStateMachine applies NFS export records: ids, refusals, snapshot", () => {
  const { sm, apply } = applier();
  assert.deepEqual(apply({ type: "nfs_export", spec: spec("/a") }), { ok: true, index: 2 });
  assert.equal(apply({ type: "nfs_export", spec: spec("/b", { bucket: "data" }) }).ok, true);
  const again = apply({ type: "nfs_export", spec: spec("/a") });
  assert.equal(again.ok, false);
  assert.deepEqual(sm.nfsExports().map((e) => [e.path, e.id, e.bucket]), [
    ["/a", 1, null],
    ["/b", 2, "data"],
  ]);
  // A bad export is refused by every replica alike (decoded, then checked).
  const bad = apply({ type: "nfs_export", spec: spec("/c", { clients: ["nonsense"] }) });
  assert.equal(bad.ok, false);
  assert.equal(apply({ type: "nfs_export", spec: spec("../x") }).ok, false);
  // Removing and adding again gives a new id: handles of the old export do not carry over.
  assert.equal(apply({ type: "nfs_export_remove", path: "/a" }).ok, true);
  assert.equal(apply({ type: "nfs_export_remove", path: "/a" }).ok, false);
  assert.equal(apply({ type: "nfs_export", spec: spec("/a", { access: "ro" }) }).ok, true);
  const a = sm.nfsExports().find((e) => e.path === "/a")!;
  assert.equal(a.id, 3);
  assert.equal(a.access, "ro");
  // The snapshot keeps exports, ids and where ids go on.
  const copy = new ClusterStateMachine();
  copy.restore({
    meta: { index: 9, term: 1, conf: { voters: [1], learners: [] } },
    data: sm.snapshot(),
  });
  assert.deepEqual(copy.nfsExports(), sm.nfsExports());
  let index = 10;
  copy.apply(
    { term: 1, index: ++index, type: "normal", data: new Uint8Array(0) },
    encodeClusterRecord({ type: "nfs_export", spec: spec("/z") }),
  );
  assert.equal(copy.nfsExports().find((e) => e.path === "/z")!.id, 4);
});
