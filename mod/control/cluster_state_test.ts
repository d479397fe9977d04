import assert from "node:assert/strict";
import {
  CLUSTER_ACCESS_KEYS_PER_TENANT_MAX,
  type ClusterRecord,
  ClusterRecordError,
  ClusterStateMachine,
  decodeClusterRecord,
  encodeClusterRecord,
} from "./cluster_state.ts";

const TENANT = "0123456789abcdef0123456789abcdef";

function applier() {
  const sm = new ClusterStateMachine();
  let index = 1;
  const apply = (r: ClusterRecord) =>
    sm.apply(
      { term: 1, index: ++index, type: "normal", data: new Uint8Array(0) },
      encodeClusterRecord(r),
    );
  return { sm, apply };
}

const create: ClusterRecord = {
  type: "create",
  creation: {
    clusterUid: "u".repeat(32),
    keyCheck: "c".repeat(32),
    defaultTenant: TENANT,
    bootstrapNode: 1,
    createdAtMs: 1000,
  },
};

function accessKey(id: string, tenantId = TENANT): ClusterRecord {
  return {
    type: "access_key",
    key: { accessKeyId: id, tenantId, createdAtMs: 5, sealedSecret: Uint8Array.of(1, 2, 3) },
  };
}

Deno.test("encodeClusterRecord() round-trips every record kind, sealed bytes included", () => {
  const records: ClusterRecord[] = [
    create,
    { type: "tenant", tenantId: TENANT, name: "acme", createdAtMs: 7 },
    accessKey("KSKIAAAAAAAAAAAAAAAA"),
    { type: "access_key_revoke", accessKeyId: "KSKIAAAAAAAAAAAAAAAA" },
    { type: "key_epoch", epoch: { epoch: 1, createdAtMs: 9, sealedKey: Uint8Array.of(9, 8) } },
    { type: "tenant_kek", tenant: TENANT, createdAtMs: 3, sealedKek: Uint8Array.of(4) },
    { type: "tenant_kek_destroy", tenant: TENANT, atMs: 11 },
    { type: "node", node: { id: 2, addr: "10.0.0.2:9300", state: "draining", sinceMs: 12 } },
    { type: "node_evacuated", node: 2, by: 1, drainSinceMs: 12 },
  ];
  for (const r of records) assert.deepEqual(decodeClusterRecord(encodeClusterRecord(r)), r);
});

Deno.test("decodeClusterRecord() rejects other commands, versions and shapes", () => {
  assert.throws(() => decodeClusterRecord(Uint8Array.of(1, 1)), ClusterRecordError);
  const good = encodeClusterRecord(create);
  const newer = good.slice();
  newer[1] = 9;
  assert.throws(() => decodeClusterRecord(newer), /version 9/);
  const bad = new TextEncoder().encode(
    '{"type":"node","node":{"id":1,"addr":"a","state":"gone","sinceMs":0}}',
  );
  assert.throws(() => decodeClusterRecord(new Uint8Array([0xc5, 1, ...bad])), /node state/);
});

Deno.test("ClusterStateMachine takes the creation once and refuses a second one alike on every node", () => {
  const { sm, apply } = applier();
  assert.equal(sm.creation(), null);
  assert.deepEqual(apply(create), { ok: true, index: 2 });
  const second = apply({
    ...create,
    creation: { ...create.creation, defaultTenant: "f".repeat(32) },
  });
  assert.equal(second?.ok, false);
  assert.equal(sm.creation()!.defaultTenant, TENANT);
  assert.deepEqual(sm.tenants().map((t) => t.tenantId), [TENANT]);
});

Deno.test("ClusterStateMachine takes key epochs only as current + 1", () => {
  const { sm, apply } = applier();
  const epoch = (n: number): ClusterRecord => ({
    type: "key_epoch",
    epoch: { epoch: n, createdAtMs: n, sealedKey: Uint8Array.of(n) },
  });
  assert.equal(apply(epoch(2))?.ok, false);
  assert.equal(apply(epoch(1))?.ok, true);
  assert.equal(apply(epoch(1))?.ok, false, "a second epoch 1 (a racing rotation) is refused");
  assert.equal(apply(epoch(2))?.ok, true);
  assert.equal(sm.currentEpoch(), 2);
  assert.deepEqual(sm.keyEpochs().map((e) => e.epoch), [1, 2]);
});

Deno.test("ClusterStateMachine keeps access keys per tenant within the limit and forgets revoked ones", () => {
  const { sm, apply } = applier();
  const seen: string[] = [];
  sm.onRecord((r) => seen.push(r.type));
  for (let i = 0; i < CLUSTER_ACCESS_KEYS_PER_TENANT_MAX; i++) {
    assert.equal(apply(accessKey(`KSKI${String(i).padStart(16, "A")}`))?.ok, true);
  }
  const over = apply(accessKey("KSKIZZZZZZZZZZZZZZZZ"));
  assert.equal(over?.ok, false);
  assert.match((over as { refused: string }).refused, /ACCESS_KEYS_PER_TENANT_MAX/);
  assert.equal(apply(accessKey("KSKI" + "0".padStart(16, "A")))?.ok, false, "ids are unique");
  const id = `KSKI${"7".padStart(16, "A")}`;
  assert.equal(apply({ type: "access_key_revoke", accessKeyId: id })?.ok, true);
  assert.equal(sm.accessKey(id), undefined);
  assert.equal(sm.accessKeys(TENANT).length, CLUSTER_ACCESS_KEYS_PER_TENANT_MAX - 1);
  assert.equal(apply({ type: "access_key_revoke", accessKeyId: id })?.ok, false);
  assert.equal(
    seen.filter((t) => t === "access_key_revoke").length,
    1,
    "refusals are not announced",
  );
});

Deno.test("ClusterStateMachine keeps the first tenant KEK and never revives a destroyed one", () => {
  const { sm, apply } = applier();
  const kek = (b: number): ClusterRecord => ({
    type: "tenant_kek",
    tenant: TENANT,
    createdAtMs: b,
    sealedKek: Uint8Array.of(b),
  });
  assert.equal(apply(kek(1))?.ok, true);
  assert.equal(apply(kek(2))?.ok, false, "a racing create loses");
  const held = sm.tenantKek(TENANT);
  assert.equal(held?.state, "active");
  assert.deepEqual((held as { sealedKek: Uint8Array }).sealedKek, Uint8Array.of(1));
  assert.equal(apply({ type: "tenant_kek_destroy", tenant: TENANT, atMs: 5 })?.ok, true);
  assert.equal(apply(kek(3))?.ok, false);
  assert.equal(sm.tenantKek(TENANT)?.state, "destroyed");
  assert.deepEqual(sm.destroyedTenants(10), [TENANT]);
});

Deno.test("ClusterStateMachine records node membership and state for nodes()", () => {
  const { sm, apply } = applier();
  apply({ type: "node", node: { id: 2, addr: "b:9300", state: "up", sinceMs: 1 } });
  apply({ type: "node", node: { id: 1, addr: "a:9300", state: "up", sinceMs: 1 } });
  apply({ type: "node", node: { id: 2, addr: "b:9300", state: "draining", sinceMs: 2 } });
  assert.deepEqual(sm.nodes().map((n) => [n.id, n.addr, n.state]), [
    [1, "a:9300", "up"],
    [2, "b:9300", "draining"],
  ]);
});

Deno.test("ClusterStateMachine counts evacuation reports for a node's current drain only", () => {
  const { sm, apply } = applier();
  apply({ type: "node", node: { id: 1, addr: "a:9300", state: "up", sinceMs: 1 } });
  apply({ type: "node", node: { id: 2, addr: "b:9300", state: "up", sinceMs: 1 } });
  const early = apply({ type: "node_evacuated", node: 2, by: 1, drainSinceMs: 1 });
  assert.equal(early?.ok, false, "not draining: refused");
  apply({ type: "node", node: { id: 2, addr: "b:9300", state: "draining", sinceMs: 5 } });
  assert.equal(apply({ type: "node_evacuated", node: 2, by: 9, drainSinceMs: 5 })?.ok, false);
  assert.equal(apply({ type: "node_evacuated", node: 2, by: 1, drainSinceMs: 4 })?.ok, false);
  assert.equal(apply({ type: "node_evacuated", node: 2, by: 1, drainSinceMs: 5 })?.ok, true);
  assert.equal(apply({ type: "node_evacuated", node: 2, by: 1, drainSinceMs: 5 })?.ok, false);
  apply({ type: "node_evacuated", node: 2, by: 2, drainSinceMs: 5 });
  assert.deepEqual(sm.evacuatedBy(2), [1, 2]);
  // A new state (back up, or drained again) starts the count over.
  apply({ type: "node", node: { id: 2, addr: "b:9300", state: "up", sinceMs: 6 } });
  assert.deepEqual(sm.evacuatedBy(2), []);
});

Deno.test("ClusterStateMachine.snapshot() restores the same state, sealed fields still sealed", () => {
  const { sm, apply } = applier();
  apply(create);
  apply(accessKey("KSKIAAAAAAAAAAAAAAAB"));
  apply({ type: "key_epoch", epoch: { epoch: 1, createdAtMs: 9, sealedKey: Uint8Array.of(9, 8) } });
  apply({ type: "tenant_kek", tenant: "t1", createdAtMs: 3, sealedKek: Uint8Array.of(4) });
  apply({ type: "tenant_kek", tenant: "t2", createdAtMs: 3, sealedKek: Uint8Array.of(5) });
  apply({ type: "tenant_kek_destroy", tenant: "t2", atMs: 6 });
  apply({ type: "node", node: { id: 1, addr: "a:9300", state: "up", sinceMs: 1 } });
  apply({ type: "node", node: { id: 2, addr: "b:9300", state: "draining", sinceMs: 7 } });
  apply({ type: "node_evacuated", node: 2, by: 1, drainSinceMs: 7 });
  const copy = new ClusterStateMachine();
  copy.restore({
    meta: { index: sm.lastApplied, term: 1, conf: { voters: [1], learners: [] } },
    data: sm.snapshot(),
  });
  assert.deepEqual(copy.snapshot(), sm.snapshot());
  assert.equal(copy.lastApplied, sm.lastApplied);
  assert.deepEqual(copy.accessKey("KSKIAAAAAAAAAAAAAAAB")?.sealedSecret, Uint8Array.of(1, 2, 3));
  assert.equal(copy.tenantKek("t2")?.state, "destroyed");
  assert.deepEqual(copy.evacuatedBy(2), [1]);
  // The one-byte bootstrap snapshot is an empty state.
  copy.restore({
    meta: { index: 1, term: 1, conf: { voters: [1], learners: [] } },
    data: Uint8Array.of(0),
  });
  assert.equal(copy.creation(), null);
  assert.deepEqual(copy.nodes(), []);
});
