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

Deno.test("adminHandler() serves the operator API to loopback callers only, before the token; /health and /metrics to anyone", async () => {
  const api = new AdminApi();
  api.mount("/api/v1/things", () => Promise.resolve(adminJson(200, { secret: "s3-secret" })));
  const token = "t".repeat(40);
  api.setToken(token);
  const readiness = new ReadinessFlag();
  readiness.set(true, "ready");
  const handle = adminHandler(readiness, api);
  const from = (hostname: string) => ({ remoteAddr: { hostname } });
  const call = (path: string, info?: { remoteAddr: { hostname: string } }) =>
    handle(new Request(`http://x${path}`, { headers: { authorization: `Bearer ${token}` } }), info);

  for (const local of ["127.0.0.1", "127.3.4.5", "::1", "::ffff:127.0.0.1"]) {
    const r = await call("/api/v1/things", from(local));
    assert.equal(r.status, 200, local);
    assert.deepEqual(await r.json(), { secret: "s3-secret" });
  }
  // The right token from elsewhere still gets nothing: the secret would cross the network
  // in clear, and so would the token.
  for (const remote of ["10.0.0.7", "192.168.1.2", "fe80::1", "::ffff:10.0.0.7"]) {
    const r = await call("/api/v1/things", from(remote));
    assert.equal(r.status, 403, remote);
    const body = await r.json();
    assert.equal(body.error, "forbidden");
    assert.match(body.message, new RegExp(`${remote.replaceAll(".", "\\.")} is not loopback`));
    assert.match(body.message, /ssh -L 9090:127\.0\.0\.1:9090/);
    assert.equal((await call("/health", from(remote))).status, 200);
    assert.equal((await call("/metrics", from(remote))).status, 200);
  }
  // A caller whose address is unknown is not trusted either.
  assert.equal((await call("/api/v1/things")).status, 403);
});
