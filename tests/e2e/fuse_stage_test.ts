// `kiseki client stage` against a real `kiseki server`: a dataset written through a
// kiseki-client-fuse mount (/bucket/prefix) is pinned into the node's L2 cache with its
// chunks sealed (no plaintext canary in the cache dir), only the files under the prefix;
// `--status` reports it staged, a second run moves nothing, `--release` unpins it.

import assert from "node:assert/strict";
import { missingPart } from "../../mod/base/testing.ts";
import { Prng } from "../../mod/base/mod.ts";
import { ROLE_TABLE } from "../../mod/role/mod.ts";
import { canary, filesUnder, report, scan } from "./_canaries.ts";
import { flagsFor, ROOT, run } from "./_role.ts";
import { fuseMissing, startMount } from "../fuse/_mount.ts";

const MiB = 1 << 20;
const FILE_BYTES = [3 * MiB + 17, 5 * MiB, 700_000];

/** Pseudo-random bytes with `marker` in clear every 64 KiB. */
function withCanary(size: number, marker: string, seed: number): Uint8Array {
  const out = new Prng(seed).bytes(size);
  const m = new TextEncoder().encode(marker);
  for (let at = 1000; at + m.length <= size; at += 64 * 1024) out.set(m, at);
  return out;
}

Deno.test({
  name: "kiseki client stage pins a dataset written through the mount into L2, sealed",
  ignore: missingPart("a FUSE mount (/dev/fuse as root)", fuseMissing()),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const m = await startMount({ hostOctet: 88 });
    const cacheDir = await Deno.makeTempDir({ prefix: "kiseki-stage-cache-" });
    const secret = canary();
    try {
      await Deno.mkdir(`${m.mountpoint}/dataset/train`, { recursive: true });
      await Deno.mkdir(`${m.mountpoint}/dataset/trainx`);
      for (const [i, size] of FILE_BYTES.entries()) {
        await Deno.writeFile(
          `${m.mountpoint}/dataset/train/f${i}`,
          withCanary(size, secret, i + 1),
        );
      }
      // Beside the prefix, not under it: never staged.
      await Deno.writeFile(`${m.mountpoint}/dataset/trainx/other`, withCanary(4 * MiB, secret, 9));

      const env = {
        KISEKI_DATA_ADDR: m.server.addrs.KISEKI_DATA_ADDR,
        KISEKI_CACHE_DIR: cacheDir,
        KISEKI_LOG_LEVEL: "warn",
      };
      const client = (...args: string[]) =>
        run(Deno.execPath(), [
          "run",
          "--quiet",
          ...flagsFor("client", env),
          `${ROOT}${ROLE_TABLE.client.entry}`,
          ...args,
        ], { env: { ...env, NO_COLOR: "1" }, clearEnv: true });

      const staged = await client("stage", "--dataset", "/dataset/train");
      assert.equal(staged.code, 0, staged.stderr);
      assert.match(staged.stdout, /\/dataset\/train {2}staged {2}3\/3 files/);
      const total = FILE_BYTES.reduce((a, b) => a + b, 0);
      const chunks = Number(staged.stdout.match(/(\d+) chunks pinned/)?.[1]);
      assert.ok(chunks >= 3, staged.stdout);

      // The L2 holds at least the dataset's bytes (sealed, so a little more), not trainx.
      let cached = 0;
      for (const f of await filesUnder(cacheDir)) cached += (await Deno.stat(f)).size;
      assert.ok(cached >= total, `the cache holds ${cached} bytes, the dataset ${total}`);
      assert.ok(cached < total + 4 * MiB, `only the dataset is staged (${cached} bytes)`);
      const findings = await scan([cacheDir], new Map([[secret, "client cache"]]));
      assert.equal(findings.length, 0, report(findings));

      const status = await client("stage", "--dataset", "/dataset/train", "--status");
      assert.equal(status.code, 0, status.stderr);
      assert.match(status.stdout, /staged {2}3\/3 files/);
      const again = await client("stage", "--dataset", "/dataset/train");
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout, new RegExp(`3/3 files .* ${chunks} chunks pinned`));

      const missing = await client("stage", "--dataset", "/no-such-bucket/x");
      assert.equal(missing.code, 1, missing.stdout + missing.stderr);
      assert.match(missing.stderr, /kiseki-client stage: /);

      const released = await client("stage", "--dataset", "/dataset/train", "--release");
      assert.equal(released.code, 0, released.stderr);
      assert.match(released.stdout, new RegExp(`released, ${chunks} chunks unpinned`));
      assert.equal(await m.stop("SIGTERM"), 0, m.stderr());
    } finally {
      await m.cleanup();
      await Deno.remove(cacheDir, { recursive: true }).catch(() => {});
    }
  },
});
