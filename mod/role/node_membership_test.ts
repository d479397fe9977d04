import assert from "node:assert/strict";
import { NODE_RETURN_STABLE_MS, nodesApi, nodeTransitions } from "./node_membership.ts";
import {
  type ClusterNode,
  ClusterStateMachine,
  ClusterStateService,
  encodeClusterRecord,
} from "../control/mod.ts";
import { WebCryptoAead } from "../crypto/mod.ts";
import { createLogger } from "../obs/mod.ts";

const quiet = createLogger({ level: "error", format: "json", sink: { write: () => {} } });

const node = (id: number, state: ClusterNode["state"]): ClusterNode => ({
  id,
  addr: `10.0.0.${id}:9300`,
  state,
  sinceMs: 0,
});

Deno.test("nodeTransitions() marks a node down only past the grace period, and up once it answers steadily", () => {
  const graceMs = 60_000;
  const nodes = [node(1, "up"), node(2, "up"), node(3, "down"), node(4, "draining")];
  // [id, down since, up since]
  const at = (nowMs: number, seen: [number, number | null, number | null][]) =>
    nodeTransitions({
      self: 1,
      nodes,
      seen: new Map(seen.map(([id, downSinceMs, upSinceMs]) => [id, { downSinceMs, upSinceMs }])),
      nowMs,
      graceMs,
    }).map((t) => `${t.id}:${t.state}`);
  // Node 2 away for less than the grace: nothing; node 3 answering for a moment: not yet.
  assert.deepEqual(at(59_999, [[2, 0, null], [3, null, 59_000], [4, 0, null]]), []);
  // Past the grace node 2 goes down; a draining node is never marked down or up.
  assert.deepEqual(at(60_000, [[2, 0, null], [4, 0, null]]), ["2:down"]);
  // Node 3 answered steadily for NODE_RETURN_STABLE_MS: back up.
  assert.deepEqual(at(59_000 + NODE_RETURN_STABLE_MS, [[3, null, 59_000]]), ["3:up"]);
  // A node seen up again is not marked down, however long it was away before.
  assert.deepEqual(at(1e9, [[2, null, 1e9 - 1]]), []);
  // A node never watched (no link record) is left alone, and so is this node itself.
  assert.deepEqual(at(1e9, [[1, 0, null]]), []);
});

/** A cluster state of one member whose log applies every proposal at once. */
function singleState(): ClusterStateService {
  const sm = new ClusterStateMachine();
  let index = 1;
  const state = new ClusterStateService({
    stateMachine: sm,
    aead: new WebCryptoAead(),
    nodeId: 1,
    logger: quiet,
  });
  state.attach({
    propose: (command) => {
      index++;
      const result = sm.apply({ term: 1, index, type: "normal", data: new Uint8Array(0) }, command);
      return Promise.resolve({ index, result });
    },
    readIndex: () => Promise.resolve(index),
  });
  return state;
}

Deno.test("nodesApi() refuses a drain that lowers the node losses chunks survive, and a removal before every node reported", async () => {
  const state = singleState();
  for (const id of [1, 2, 3, 4]) await state.setNode(id, `10.0.0.${id}:9300`, "up");
  const options = {
    state,
    configured: [1, 2, 3, 4],
    durability: { kind: "copies", copies: 3 } as const,
    store: () => undefined,
    link: (id: number) => id === 1 ? null : "up" as const,
    logger: quiet,
  };
  const post = async (path: string, body?: unknown) => {
    const url = new URL(`http://node${path}`);
    const r = await nodesApi(
      new Request(url, { method: "POST", body: body === undefined ? null : JSON.stringify(body) }),
      url,
      options,
    );
    return { status: r.status, body: await r.json() as { message?: string } };
  };
  // 4 nodes to 3: chunks of 3 copies still survive two node losses.
  assert.equal((await post("/api/v1/nodes/4/drain")).status, 200);
  // 3 to 2: they would survive one only.
  const refused = await post("/api/v1/nodes/3/drain");
  assert.equal(refused.status, 409);
  assert.match(refused.body.message!, /would leave 2 node\(s\) for copies:3/);
  // Removal waits for nodes 1, 2 and 3 (up) and node 4 itself (it answers).
  const early = await post("/api/v1/nodes/4/remove");
  assert.equal(early.status, 409);
  assert.match(early.body.message!, /node\(s\) 1, 2, 3, 4/);
  const since = state.nodes().find((n) => n.id === 4)!.sinceMs;
  for (const by of [2, 3, 4]) {
    const sm = state.stateMachine;
    sm.apply(
      { term: 1, index: sm.lastApplied + 1000 + by, type: "normal", data: new Uint8Array(0) },
      encodeClusterRecord({ type: "node_evacuated", node: 4, by, drainSinceMs: since }),
    );
  }
  assert.match((await post("/api/v1/nodes/4/remove")).body.message!, /node\(s\) 1 /);
  assert.equal(await state.reportEvacuated(4, since), true);
  assert.equal((await post("/api/v1/nodes/4/remove")).status, 200);
  assert.equal(state.nodes().find((n) => n.id === 4)!.state, "removed");
  // Only a configured node is added; a removed one comes back.
  assert.equal((await post("/api/v1/nodes/9/add", { addr: "10.0.0.9:9300" })).status, 409);
  assert.equal((await post("/api/v1/nodes/4/add")).status, 200);
  assert.equal(state.nodes().find((n) => n.id === 4)!.state, "up");
  assert.equal((await post("/api/v1/nodes/4/add")).status, 409, "a member already");
});
