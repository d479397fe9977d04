import assert from "node:assert/strict";
import { createLogger } from "../obs/mod.ts";
import { LocalChunkStore, parsePoolSpecs } from "../chunk/mod.ts";
import { selectErasureCodec } from "../ec/mod.ts";
import { SCRUB_API_PREFIX, startScrub } from "./scrub.ts";

const logger = createLogger({ level: "error", format: "text", sink: { write: () => {} } });

Deno.test("the scrub route answers status, starts a pass once, and refuses other methods and paths", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-scrub-api-" });
  const [pool] = parsePoolSpecs(
    JSON.stringify({
      name: "p",
      devices: 3,
      durability: "copies:2",
      deviceSize: "8MiB",
      segmentSize: "1MiB",
    }),
    { dataDir: dir },
  );
  const store = await LocalChunkStore.open({
    pool: pool!,
    codecs: selectErasureCodec(),
    indexDir: `${dir}/index`,
    indexPageKeys: null,
    logger,
  });
  const scrub = startScrub({
    config: { scrubRateBytesPerSecond: 0, scrubIntervalMs: 3_600_000 },
    store,
    logger,
  });
  const call = async (method: string, path: string) => {
    const url = new URL(`http://node${SCRUB_API_PREFIX}${path}`);
    const r = await scrub.api(new Request(url, { method }), url);
    return { status: r.status, allow: r.headers.get("allow"), body: await r.json() };
  };
  try {
    const status = await call("GET", "");
    assert.equal(status.status, 200);
    assert.equal(status.body.pool, "p");
    assert.equal(status.body.state, "off");
    assert.equal(status.body.background, false);
    assert.equal(status.body.passesCompleted, 0);
    assert.deepEqual((await call("GET", "/start")).status, 405);
    assert.deepEqual((await call("GET", "/start")).allow, "POST");
    assert.deepEqual((await call("POST", "")).status, 405);
    assert.deepEqual((await call("GET", "/nope")).status, 404);
    // Two requests in one turn: the second finds the first pending.
    const [started, again] = await Promise.all([call("POST", "/start"), call("POST", "/start")]);
    assert.equal(started.status, 202);
    assert.equal(started.body.started, true);
    assert.equal(again.status, 409, "a second request before the first pass ends");
    for (let i = 0; i < 2_000 && scrub.runner.status().passesCompleted === 0; i++) {
      await new Promise((r) => setTimeout(r, 1));
    }
    assert.equal((await call("GET", "/")).body.passesCompleted, 1);
  } finally {
    await scrub.stop();
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
