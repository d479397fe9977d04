import assert from "node:assert/strict";
import { AdminApi } from "./http.ts";
import { poolsRoute } from "./pools.ts";
import type { PoolReport } from "../chunk/mod.ts";

const TOKEN = "t".repeat(40);

function report(name: string): PoolReport {
  return {
    name,
    durability: "ec:4+2",
    segmentSizeBytes: 64 << 20,
    fullPercent: 90,
    capacityBytes: 1000,
    usedBytes: 300,
    liveBytes: 200,
    writableDevices: 6,
    devices: [],
  };
}

Deno.test("poolsRoute() answers GET /api/v1/pools with each pool and its GC totals", async () => {
  const api = new AdminApi();
  api.setToken(TOKEN);
  const gc = {
    erased: 3,
    bytesErased: 30,
    segmentsFreed: 1,
    bytesMoved: 0,
    rounds: 1,
    failures: 0,
  };
  api.mount(
    "/api/v1/pools",
    poolsRoute(() => [{ report: () => report("default"), gc: () => gc }]),
  );
  const call = (method: string, path: string, token = TOKEN) =>
    api.handle(
      new Request(`http://node${path}`, { method, headers: { authorization: `Bearer ${token}` } }),
    );
  const ok = await call("GET", "/api/v1/pools");
  assert.equal(ok.status, 200);
  assert.deepEqual(await ok.json(), { pools: [{ ...report("default"), gc }] });
  const post = await call("POST", "/api/v1/pools");
  assert.equal(post.status, 405);
  await post.body?.cancel();
  const sub = await call("GET", "/api/v1/pools/default/x");
  assert.equal(sub.status, 404);
  await sub.body?.cancel();
  const denied = await call("GET", "/api/v1/pools", "u".repeat(40));
  assert.equal(denied.status, 401, "the admin token guards it like every operator route");
  await denied.body?.cancel();
});
