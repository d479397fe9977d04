import assert from "node:assert/strict";
import { NODE_RETURN_STABLE_MS, nodeTransitions } from "./node_membership.ts";
import type { ClusterNode } from "../control/mod.ts";

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
