// A short run of the S3 bad-input campaign (`deno task fuzz:s3` runs the long one): a few
// thousand cases against a real server, a new seed each run (printed; KISEKI_FUZZ_SEED
// replays one).

import assert from "node:assert/strict";
import { campaign } from "./s3_fuzz_main.ts";

/** Cases of the short run, and the time it may take at most. */
const SHORT_RUN_CASES = 5000;
const SHORT_RUN_SECONDS = 40;

Deno.test("the S3 gateway answers every case of a short bad-input campaign with a protocol-shaped answer", async () => {
  const fixed = Deno.env.get("KISEKI_FUZZ_SEED");
  const seed = fixed !== undefined ? Number(fixed) : crypto.getRandomValues(new Uint32Array(1))[0]!;
  const result = await campaign({
    seed,
    cases: SHORT_RUN_CASES,
    seconds: SHORT_RUN_SECONDS,
    concurrency: 8,
    hostOctet: 134,
    log: (line) => console.log(line),
  });
  assert.ok(result.ok, `replay with KISEKI_FUZZ_SEED=${seed}:\n${result.text}`);
  const ran = Number(/: (\d+) cases in/.exec(result.text)?.[1] ?? 0);
  assert.ok(ran >= 1000, `only ${ran} cases ran in ${SHORT_RUN_SECONDS} s`);
});
