import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { ManualClock } from "../base/mod.ts";
import { WebCryptoAead } from "../crypto/mod.ts";
import { createLogger } from "../obs/mod.ts";
import {
  clusterKeyCheck,
  TenantKeyDestroyedError,
  TenantKeyNotFoundError,
  UnknownEpochError,
} from "../keys/mod.ts";
import { ClusterStateMachine } from "./cluster_state.ts";
import {
  ClusterStateError,
  type ClusterStateGroup,
  ClusterStateService,
} from "./cluster_state_service.ts";

const aead = new WebCryptoAead();
const quiet = createLogger({ level: "error", format: "json", sink: { write: () => {} } });
const TENANT = "0123456789abcdef0123456789abcdef";

/**
 * One replicated log and its members: a proposal is appended and applied on the proposer at
 * once; the other members apply only when they ask for a read index (a lagging follower).
 */
class SharedLog {
  readonly commands: Uint8Array[] = [];

  member(sm: ClusterStateMachine): ClusterStateGroup {
    let applied = 0;
    const results = new Map<number, unknown>();
    const catchUp = () => {
      while (applied < this.commands.length) {
        const index = applied + 2; // index 1 is the bootstrap membership
        results.set(
          index,
          sm.apply(
            { term: 1, index, type: "normal", data: new Uint8Array(0) },
            this.commands[applied]!,
          ),
        );
        applied++;
      }
    };
    return {
      propose: (command) => {
        this.commands.push(command);
        const index = this.commands.length + 1;
        catchUp();
        return Promise.resolve({ index, result: results.get(index) });
      },
      readIndex: () => {
        catchUp();
        return Promise.resolve(applied + 1);
      },
    };
  }
}

async function node(log: SharedLog, nodeId: number, key: Uint8Array | null) {
  const sm = new ClusterStateMachine();
  const state = new ClusterStateService({
    stateMachine: sm,
    aead,
    nodeId,
    clock: new ManualClock(1_700_000_000_000),
    logger: quiet,
  });
  state.attach(log.member(sm));
  if (key !== null) await state.setClusterKey(key);
  return state;
}

async function createdCluster() {
  const log = new SharedLog();
  const key = crypto.getRandomValues(new Uint8Array(32));
  const a = await node(log, 1, key);
  await a.systemKeys.addEpoch(1, 1, null);
  await a.propose({
    type: "create",
    creation: {
      clusterUid: "u".repeat(32),
      keyCheck: await clusterKeyCheck(key),
      defaultTenant: TENANT,
      bootstrapNode: 1,
      createdAtMs: 1,
    },
  });
  const b = await node(log, 2, key);
  await b.sync();
  await a.ready();
  await b.ready();
  return { log, key, a, b };
}

Deno.test("ClusterCredentials: a key created on one node signs on another, and its revocation holds there", async () => {
  const { a, b } = await createdCluster();
  const created = await a.credentials.create(TENANT);
  assert.match(created.accessKeyId, /^KSKI[A-Z2-7]{16}$/);
  assert.equal(created.secretAccessKey.length, 40);
  // Node b has not applied it yet: its lookup believes the miss only after a read index.
  assert.deepEqual(await b.credentials.lookup(created.accessKeyId), {
    tenantId: TENANT,
    secretAccessKey: created.secretAccessKey,
  });
  assert.deepEqual((await b.credentials.list(TENANT)).map((k) => k.accessKeyId), [
    created.accessKeyId,
  ]);
  assert.equal(await b.credentials.revoke(created.accessKeyId), true);
  await a.sync();
  assert.equal(await a.credentials.lookup(created.accessKeyId), null);
  assert.equal(await a.credentials.revoke(created.accessKeyId), false);
  assert.equal(await a.credentials.lookup("not-a-key-id"), null);
});

Deno.test("ClusterCredentials: the secret is in the cluster state only sealed", async () => {
  const { a, log } = await createdCluster();
  const created = await a.credentials.create(TENANT);
  const secret = new TextEncoder().encode(created.secretAccessKey);
  for (const command of log.commands) {
    const text = new TextDecoder("latin1").decode(command);
    assert.ok(!text.includes(created.secretAccessKey), "secret in clear in a record");
    assert.ok(!Buffer.from(command).includes(Buffer.from(secret)));
  }
  const snapshot = new TextDecoder("latin1").decode(a.stateMachine.snapshot());
  assert.ok(!snapshot.includes(created.secretAccessKey));
});

Deno.test("ClusterSystemKeys: every node opens every epoch alike; rotation takes the next epoch", async () => {
  const { a, b } = await createdCluster();
  assert.equal(await b.systemKeys.currentEpoch(), 1);
  assert.deepEqual(await a.systemKeys.masterKey(1), await b.systemKeys.masterKey(1));
  assert.equal(await b.systemKeys.rotate(), 2);
  assert.deepEqual(await a.systemKeys.masterKey(2), await b.systemKeys.masterKey(2));
  assert.notDeepEqual(await a.systemKeys.masterKey(1), await a.systemKeys.masterKey(2));
  assert.equal(await a.systemKeys.currentEpoch(), 2);
  await assert.rejects(a.systemKeys.masterKey(7), UnknownEpochError);
  assert.deepEqual((await a.systemKeys.epochs()).map((e) => [e.epoch, e.current]), [[1, false], [
    2,
    true,
  ]]);
});

Deno.test("ClusterTenantKms: a KEK created on one node unwraps on another; destroying it holds on all", async () => {
  const { a, b } = await createdCluster();
  const destroyedOnA: string[] = [];
  a.kms.onKeyDestroyed((t) => destroyedOnA.push(t));
  await assert.rejects(b.kms.wrap("acme", Uint8Array.of(1)), TenantKeyNotFoundError);
  await a.kms.createKey("acme");
  await b.kms.createKey("acme"); // exists: a no-op, the same KEK
  const wrapped = await a.kms.wrap("acme", Uint8Array.of(1, 2, 3));
  assert.deepEqual(await b.kms.unwrap("acme", wrapped), Uint8Array.of(1, 2, 3));
  await b.kms.destroyKey("acme");
  await a.sync();
  assert.deepEqual(destroyedOnA, ["acme"]);
  await assert.rejects(a.kms.unwrap("acme", wrapped), TenantKeyDestroyedError);
  await assert.rejects(a.kms.createKey("acme"), TenantKeyDestroyedError);
  assert.deepEqual(a.kms.destroyedTenants(10), ["acme"]);
});

Deno.test("ClusterStateService refuses a cluster key that is not the cluster's", async () => {
  const { log } = await createdCluster();
  const stranger = await node(log, 3, null);
  await stranger.sync();
  await assert.rejects(
    stranger.setClusterKey(crypto.getRandomValues(new Uint8Array(32))),
    ClusterStateError,
  );
  assert.equal(stranger.isReady(), false);
});

Deno.test("ClusterStateService.nodes() names members and their state", async () => {
  const { a, b } = await createdCluster();
  await a.setNode(1, "10.0.0.1:9300", "up");
  await b.setNode(2, "10.0.0.2:9300", "up");
  await a.setNode(2, "10.0.0.2:9300", "draining");
  await b.sync();
  assert.deepEqual(b.nodes().map((n) => [n.id, n.state]), [[1, "up"], [2, "draining"]]);
});
