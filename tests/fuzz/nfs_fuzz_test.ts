import assert from "node:assert/strict";
import { judgeNfsFuzz, runNfsFuzz } from "./nfs_fuzz.ts";

Deno.test("fuzz:nfs: a short campaign of mutated NFSv3, MOUNT, NFSv4 and portmap calls finds no server fault", async () => {
  const report = await runNfsFuzz({ seed: 0x4e46_5333, inputs: 5_000 });
  const { ok, text } = judgeNfsFuzz(report);
  assert.ok(ok, text);
  assert.equal(report.inputs, 5_000);
  // The mutations reach past decoding: most inputs get an answer, some are dropped.
  assert.ok(report.answered > 4_000, text);
  // NFSv4 inputs get past SEQUENCE into the COMPOUND dispatcher's operations.
  assert.ok((report.compoundOps ?? 0) > 500, text);
});

Deno.test("judgeNfsFuzz() fails a campaign with a fault, a hang or an unhealthy gateway", () => {
  const base = {
    seed: 1,
    inputs: 10,
    answered: 10,
    dropped: 0,
    faults: 0,
    slowest: { ms: 5, input: 3 },
    healthy: true,
    ms: 100,
  };
  assert.equal(judgeNfsFuzz(base).ok, true);
  assert.equal(judgeNfsFuzz({ ...base, faults: 1 }).ok, false);
  assert.equal(judgeNfsFuzz({ ...base, healthy: false }).ok, false);
  assert.equal(judgeNfsFuzz({ ...base, slowest: { ms: 60_000, input: 2 } }).ok, false);
});
