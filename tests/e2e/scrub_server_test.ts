// Background scrub in a real server: objects written over S3, bytes flipped in fragments on
// the device files while the node is stopped, and the node finds and repairs them by itself,
// paced by KISEKI_SCRUB_RATE; a restart in the middle of the pass resumes it from the
// persisted cursor; the findings show in /metrics and in `kiseki admin scrub`.

import assert from "node:assert/strict";
import { missingPart, Prng } from "../../mod/base/mod.ts";
import { loadPoolSpecs, LocalChunkStore } from "../../mod/chunk/mod.ts";
import { RECORD_HEADER_BYTES } from "../../mod/chunk/segment_store.ts";
import { selectErasureCodec } from "../../mod/ec/mod.ts";
import { selectAead } from "../../mod/crypto/mod.ts";
import { LocalKeyStore } from "../../mod/keys/mod.ts";
import { defaultShimOptions } from "../../ffi/loader.ts";
import { createLogger } from "../../mod/obs/mod.ts";
import { ROLE_TABLE } from "../../mod/role/mod.ts";
import { flagsFor, ROOT, run, startRole, testAddrs, waitForHttp } from "./_role.ts";

const AWS = "/usr/bin/aws";
const OBJECTS = 24;
/** Below the smallest CDC chunk and above the inline bound: one chunk per object. */
const OBJECT_BYTES = 200 * 1024;
const FLIPPED = 3;
const POLLS_MAX = 1_200;
const POLL_MS = 100;

const awsMissing = await Deno.stat(AWS).then(() => false, () => true);
const logger = createLogger({ level: "error", format: "text", sink: { write: () => {} } });

interface ScrubPassJson {
  chunksChecked: number;
  fragmentsChecked: number;
  fragmentsDamaged: number;
  fragmentsRepaired: number;
  chunksUnrecoverable: number;
  startedAtMs: number;
}
interface ScrubStatusJson {
  state: string;
  background: boolean;
  passProgress: number | null;
  pass: ScrubPassJson | null;
  lastPass: ScrubPassJson | null;
  passesCompleted: number;
}

Deno.test({
  name:
    "a real server scrubs by itself: flipped bytes found and repaired, the pass resumes after a restart",
  ignore: missingPart("aws-cli (Debian awscli)", awsMissing && `${AWS} not found`),
  async fn() {
    const dataDir = await Deno.makeTempDir({ prefix: "kiseki-e2e-scrub-" });
    const work = await Deno.makeTempDir({ prefix: "kiseki-e2e-scrub-work-" });
    const addrs = testAddrs(173);
    const base = { ...addrs, KISEKI_DATA_DIR: dataDir };
    const metricsUrl = `http://${addrs.KISEKI_METRICS_ADDR}`;
    const clientEnv = {
      AWS_SHARED_CREDENTIALS_FILE: `${dataDir}.s3-credentials`,
      AWS_CONFIG_FILE: "/dev/null",
      AWS_DEFAULT_REGION: "us-east-1",
    };
    const aws = (...args: string[]) =>
      run(AWS, ["--endpoint-url", `http://${addrs.KISEKI_S3_ADDR}`, ...args], { env: clientEnv });
    const status = async (): Promise<ScrubStatusJson> => {
      const token = (await Deno.readTextFile(`${dataDir}/config/admin-token`)).trim();
      const r = await fetch(`${metricsUrl}/api/v1/scrub`, {
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(r.status, 200);
      return await r.json() as ScrubStatusJson;
    };
    const poll = async (what: string, done: (s: ScrubStatusJson) => boolean) => {
      let last: ScrubStatusJson | undefined;
      for (let i = 0; i < POLLS_MAX; i++) {
        last = await status();
        if (done(last)) return last;
        await new Promise((r) => setTimeout(r, POLL_MS));
      }
      throw new Error(`${what}: not within ${POLLS_MAX * POLL_MS} ms (${JSON.stringify(last)})`);
    };
    const admin = (...args: string[]) =>
      run(Deno.execPath(), [
        "run",
        "--quiet",
        ...flagsFor("admin", base),
        `${ROOT}${ROLE_TABLE.admin.entry}`,
        ...args,
        "--node",
        addrs.KISEKI_METRICS_ADDR,
      ], { env: base });
    let server = startRole("server", { ...base, KISEKI_SCRUB_RATE: "0" });
    try {
      // 1. Objects, written with background scrub off.
      await waitForHttp(`${metricsUrl}/health`, "OK", 60_000);
      const prng = new Prng(173);
      await Deno.mkdir(`${work}/up`);
      const bodies = new Map<string, Uint8Array>();
      for (let i = 0; i < OBJECTS; i++) {
        const bytes = prng.bytes(OBJECT_BYTES);
        bodies.set(`o-${i}`, bytes);
        await Deno.writeFile(`${work}/up/o-${i}`, bytes);
      }
      assert.equal((await aws("s3", "mb", "s3://scrubbed")).code, 0);
      const up = await aws("s3", "cp", "--recursive", `${work}/up`, "s3://scrubbed/");
      assert.equal(up.code, 0, up.stderr);
      const off = await status();
      assert.equal(off.state, "off");
      assert.equal(off.passesCompleted, 0);
      assert.equal(await server.stop(), 0);

      // 2. With the node stopped: flip a payload byte in one fragment of three chunks.
      // The chunk index is page-encrypted under a key sealed by the node's key store.
      const [pool] = await loadPoolSpecs(undefined, { dataDir, nodes: 1 });
      const keyStore = await LocalKeyStore.open({
        dir: `${dataDir}/keys`,
        aead: selectAead(defaultShimOptions()),
      });
      const store = await LocalChunkStore.open({
        pool: pool!,
        codecs: selectErasureCodec(),
        indexDir: `${dataDir}/chunks/index`,
        indexPageKeys: keyStore.pageKeys,
        logger,
      });
      const victims = store.index.scan(null, 1000).filter((_, i) => i % 7 === 3).slice(0, FLIPPED);
      assert.equal(victims.length, FLIPPED);
      const flips: { path: string; offset: number }[] = [];
      for (const [n, { id }] of victims.entries()) {
        const f = (await store.stat(id))!.fragments[n % 2 === 0 ? 0 : 5]!;
        const path = store.devices().find((d) => d.device === f.device)!.path;
        flips.push({ path, offset: f.offsetBytes + RECORD_HEADER_BYTES + 11 });
      }
      await store.close();
      await keyStore.close();
      for (const { path, offset } of flips) {
        const file = await Deno.open(path, { read: true, write: true });
        const one = new Uint8Array(1);
        await file.seek(offset, Deno.SeekMode.Start);
        await file.read(one);
        one[0]! ^= 0x5a;
        await file.seek(offset, Deno.SeekMode.Start);
        await file.write(one);
        file.close();
      }

      // 3. Background scrub at 1 MiB/s (about 4 chunks a second): stopped mid-pass.
      server = startRole("server", { ...base, KISEKI_SCRUB_RATE: "1MiB" });
      await waitForHttp(`${metricsUrl}/health`, "OK", 60_000);
      const midway = await poll("a pass starts by itself", (s) => (s.pass?.chunksChecked ?? 0) > 0);
      assert.equal(midway.state, "scanning");
      assert.ok(midway.pass!.chunksChecked < OBJECTS, "stopped before the pass ends");
      assert.ok(midway.passProgress! > 0 && midway.passProgress! < 1, `${midway.passProgress}`);
      assert.equal(await server.stop(), 0);

      // 4. Restarted at full pace: the pass resumes where it stopped and repairs everything.
      server = startRole("server", { ...base, KISEKI_SCRUB_RATE: "64MiB" });
      await waitForHttp(`${metricsUrl}/health`, "OK", 60_000);
      const done = await poll("the pass completes", (s) => s.passesCompleted === 1);
      const last = done.lastPass!;
      assert.equal(last.startedAtMs, midway.pass!.startedAtMs, "the same pass, resumed");
      assert.equal(last.chunksChecked, OBJECTS, "every chunk checked once: resumed, not restarted");
      assert.equal(last.fragmentsChecked, OBJECTS * 6);
      assert.equal(last.fragmentsDamaged, FLIPPED);
      assert.equal(last.fragmentsRepaired, FLIPPED);
      assert.equal(last.chunksUnrecoverable, 0);
      assert.equal(done.state, "waiting", "the next pass waits for KISEKI_SCRUB_INTERVAL_S");

      const metrics = await (await fetch(`${metricsUrl}/metrics`)).text();
      const value = (name: string) =>
        Number(new RegExp(`^${name}\\{pool="${pool!.name}"\\} (\\S+)$`, "m").exec(metrics)?.[1]);
      assert.equal(value("kiseki_scrub_last_pass_fragments_damaged"), FLIPPED);
      assert.equal(value("kiseki_scrub_last_pass_fragments_repaired"), FLIPPED);
      assert.equal(value("kiseki_scrub_last_pass_chunks_unrecoverable"), 0);
      assert.equal(value("kiseki_scrub_passes_completed"), 1);
      assert.equal(value("kiseki_scrub_rate_limit_bytes_per_second"), 64 << 20);
      assert.ok(value("kiseki_scrub_last_pass_end_timestamp_seconds") > 1.7e9);
      assert.ok(value("kiseki_scrub_chunks_checked_total") > 0, "this process scrubbed too");

      // 5. The operator's view, and a pass started by hand finds nothing left to repair.
      const shown = await admin("scrub");
      assert.equal(shown.code, 0, shown.stderr);
      assert.match(shown.stdout, /^state +waiting \(64\.0 MiB\/s, a pass every 86400 s\)$/m);
      assert.match(
        shown.stdout,
        new RegExp(
          `^last pass +${OBJECTS} chunks, ${
            OBJECTS * 6
          } fragments, ${FLIPPED} damaged, ${FLIPPED} repaired, 0 unrecoverable;`,
          "m",
        ),
      );
      const started = await admin("scrub", "start");
      assert.equal(started.code, 0, started.stderr);
      assert.match(started.stdout, /^scrub pass started$/m);
      const clean = await poll("the requested pass completes", (s) => s.passesCompleted === 2);
      assert.equal(clean.lastPass!.fragmentsDamaged, 0, "the repairs held");
      assert.equal(clean.lastPass!.chunksChecked, OBJECTS);

      const down = await aws("s3", "cp", "--recursive", "s3://scrubbed/", `${work}/down`);
      assert.equal(down.code, 0, down.stderr);
      for (const [key, bytes] of bodies) {
        assert.deepEqual(await Deno.readFile(`${work}/down/${key}`), bytes);
      }
    } finally {
      await server.stop();
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});
