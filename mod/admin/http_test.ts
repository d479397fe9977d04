import assert from "node:assert/strict";
import { adminHandler, ReadinessFlag } from "./http.ts";
import { counter } from "../obs/mod.ts";

Deno.test("adminHandler() answers 503 with the reason until ready, then OK", async () => {
  const readiness = new ReadinessFlag();
  const handle = adminHandler(readiness);
  readiness.set(false, "preparing data directory");
  let r = await handle(new Request("http://x/health"));
  assert.equal(r.status, 503);
  assert.equal(await r.text(), "NOT READY: preparing data directory");
  readiness.set(true, "ready");
  r = await handle(new Request("http://x/health"));
  assert.equal(r.status, 200);
  assert.equal(await r.text(), "OK");
});

Deno.test("adminHandler() serves registered kiseki_ metrics in Prometheus text", async () => {
  counter({ name: "kiseki_test_events_total", help: "test counter" }).inc({}, 3);
  const r = await adminHandler(new ReadinessFlag())(new Request("http://x/metrics"));
  assert.equal(r.status, 200);
  assert.match(r.headers.get("content-type") ?? "", /text\/plain; version=0\.0\.4/);
  assert.match(await r.text(), /^kiseki_test_events_total 3$/m);
});
