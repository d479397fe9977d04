import assert from "node:assert/strict";
import { AdminApi, adminHandler, adminJson, ReadinessFlag } from "./http.ts";
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

Deno.test("AdminApi.handle() answers 503 before its token, 401 without it, 404 off its routes", async () => {
  const api = new AdminApi();
  api.mount(
    "/api/v1/things",
    (_req, url) => Promise.resolve(adminJson(200, { path: url.pathname })),
  );
  const token = "t".repeat(40);
  const call = (path: string, auth?: string) =>
    api.handle(new Request(`http://x${path}`, { headers: auth ? { authorization: auth } : {} }));
  assert.equal((await call("/api/v1/things", `Bearer ${token}`)).status, 503);
  api.setToken(token);
  assert.equal((await call("/api/v1/things")).status, 401);
  assert.equal((await call("/api/v1/things", `Bearer ${token}x`)).status, 401);
  const ok = await call("/api/v1/things/a/b", `Bearer ${token}`);
  assert.equal(ok.status, 200);
  assert.deepEqual(await ok.json(), { path: "/api/v1/things/a/b" });
  assert.equal((await call("/api/v1/thingsx", `Bearer ${token}`)).status, 404);
  assert.equal((await call("/api/v1/other", `Bearer ${token}`)).status, 404);
});
