// The Linux kernel NFS client (a Debian kernel booted under qemu, tests/kernel_nfs/guest.ts)
// mounts a real `kiseki server` with NFSv4.1 and NFSv4.2 and runs tests/kernel_nfs/v4_posix.sh:
// an object PUT over S3 read over NFS, a large file in and out with checksums, mkdir -p,
// renames, symlinks, chmod/chown/touch, truncate, flock, tar; then aws-cli GETs what the
// kernel client wrote.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { buildGuest, defaultGuestCache, guestUnavailable, runGuest } from "../kernel_nfs/guest.ts";
import { missingPart } from "../../mod/base/mod.ts";
import { ROOT, run, startRole, waitForHttp } from "./_role.ts";

const AWS = "/usr/bin/aws";
const SIZE_MIB = Number(Deno.env.get("KISEKI_NFS4_KERNEL_MIB") ?? "100");
// The guest reaches the host's 127.0.0.1 only (as 10.0.2.2): the server listens there, on
// ports no other test uses.
const ADDRS = {
  KISEKI_S3_ADDR: "127.0.0.1:37000",
  KISEKI_NFS_ADDR: "127.0.0.1:37049",
  KISEKI_METRICS_ADDR: "127.0.0.1:37090",
  KISEKI_DATA_ADDR: "127.0.0.1:37100",
  KISEKI_ADVISORY_ADDR: "127.0.0.1:37101",
  KISEKI_RAFT_ADDR: "127.0.0.1:37300",
};
/** What v4_posix.sh checks, each printed as "ok: ...". */
const CHECKS = 24;

const unavailable = await guestUnavailable();

Deno.test({
  name: "the Linux kernel NFS client mounts v4.1 and v4.2 and passes the POSIX script",
  ignore: missingPart("a kernel NFS client guest (root and Debian apt)", unavailable),
  async fn() {
    const guest = await buildGuest(defaultGuestCache());
    const dataDir = await Deno.makeTempDir({ prefix: "kiseki-e2e-knfs4-" });
    const work = await Deno.makeTempDir({ prefix: "kiseki-e2e-knfs4-work-" });
    const env = { ...ADDRS, KISEKI_DATA_DIR: dataDir };
    const clientEnv = {
      AWS_SHARED_CREDENTIALS_FILE: `${dataDir}.s3-credentials`,
      AWS_DEFAULT_REGION: "us-east-1",
    };
    const aws = (...args: string[]) =>
      run(AWS, ["--endpoint-url", `http://${env.KISEKI_S3_ADDR}`, ...args], { env: clientEnv });
    const server = startRole("server", env);
    try {
      await waitForHttp(`http://${env.KISEKI_METRICS_ADDR}/health`, "OK", 60_000);
      const script = await Deno.readTextFile(`${ROOT}tests/kernel_nfs/v4_posix.sh`);
      const port = env.KISEKI_NFS_ADDR.split(":")[1]!;
      for (const minor of [1, 2]) {
        const bucket = `kernel-v4${minor}`;
        assert.equal((await aws("s3", "mb", `s3://${bucket}`)).code, 0);
        await Deno.writeTextFile(`${work}/hello.txt`, "hello from s3");
        const put = await aws("s3", "cp", `${work}/hello.txt`, `s3://${bucket}/from-s3/hello.txt`);
        assert.equal(put.code, 0, put.stderr);

        const guestRun = await runGuest(guest, script, {
          args: [port, bucket, String(SIZE_MIB), String(minor)],
          timeoutMs: 900_000,
        });
        console.log(guestRun.output);
        assert.equal(
          guestRun.status,
          0,
          guestRun.status === null ? guestRun.console.slice(-4000) : "",
        );
        assert.doesNotMatch(guestRun.output, /FAIL:/);
        assert.equal((guestRun.output.match(/^ok: /gm) ?? []).length, CHECKS);

        // What the kernel client wrote is there over S3.
        const get = await aws("s3", "cp", `s3://${bucket}/big.bin`, `${work}/big.bin`);
        assert.equal(get.code, 0, get.stderr);
        const big = await Deno.readFile(`${work}/big.bin`);
        assert.equal(big.length, SIZE_MIB << 20);
        const sum = await aws("s3", "cp", `s3://${bucket}/big.sha256`, "-");
        assert.equal(createHash("sha256").update(big).digest("hex"), sum.stdout.trim());
        await Deno.remove(`${work}/big.bin`);
        const text = await aws("s3", "cp", `s3://${bucket}/from-nfs.txt`, "-");
        assert.equal(text.stdout, "written by the kernel client\n");
        const head = await aws("s3api", "head-object", "--bucket", bucket, "--key", "a/leaf2");
        const meta = JSON.parse(head.stdout);
        assert.equal(meta.ContentLength, 8192);
        assert.deepEqual(
          { mode: meta.Metadata.mode, uid: meta.Metadata.uid, gid: meta.Metadata.gid },
          { mode: String(0o100640), uid: "1000", gid: "100" },
        );
        const link = await aws("s3", "cp", `s3://${bucket}/link`, "-");
        assert.equal(link.stdout, "a/leaf2");
        const listed = await aws(
          "s3api",
          "list-objects-v2",
          "--bucket",
          bucket,
          "--prefix",
          "moved/",
        );
        assert.match(listed.stdout, /moved\/c\/d\/e\/f\/g\/h\//);
      }
    } finally {
      const code = await server.stop();
      if (code !== 0) console.error(server.stderr().slice(-4000));
      await Deno.remove(dataDir, { recursive: true });
      await Deno.remove(work, { recursive: true });
    }
  },
});

Deno.test({
  name: "a kernel client's flock survives a SIGKILL of the server: reclaimed in the grace period",
  ignore: missingPart("a kernel NFS client guest (root and Debian apt)", unavailable),
  async fn() {
    const guest = await buildGuest(defaultGuestCache());
    const dataDir = await Deno.makeTempDir({ prefix: "kiseki-e2e-knfs4r-" });
    const env = { ...ADDRS, KISEKI_DATA_DIR: dataDir };
    const clientEnv = {
      AWS_SHARED_CREDENTIALS_FILE: `${dataDir}.s3-credentials`,
      AWS_DEFAULT_REGION: "us-east-1",
    };
    const aws = (...args: string[]) =>
      run(AWS, ["--endpoint-url", `http://${env.KISEKI_S3_ADDR}`, ...args], { env: clientEnv });
    let server = startRole("server", env);
    try {
      await waitForHttp(`http://${env.KISEKI_METRICS_ADDR}/health`, "OK", 60_000);
      assert.equal((await aws("s3", "mb", "s3://reclaim")).code, 0);
      const script = await Deno.readTextFile(`${ROOT}tests/kernel_nfs/v4_reclaim.sh`);
      const port = env.KISEKI_NFS_ADDR.split(":")[1]!;
      const guestRun = runGuest(guest, script, { args: [port, "reclaim"], timeoutMs: 600_000 });
      let seen = false;
      for (let i = 0; i < 300 && !seen; i++) {
        seen = (await aws("s3api", "head-object", "--bucket", "reclaim", "--key", "restart-now"))
          .code === 0;
        if (!seen) await new Promise((r) => setTimeout(r, 1000));
      }
      assert.ok(seen, "the guest never asked for the restart");
      const records = await Deno.readTextFile(`${dataDir}/config/nfs4-clients`);
      assert.match(records, /^[0-9a-f]{64}$/m);
      await server.stop("SIGKILL");
      server = startRole("server", env);
      await waitForHttp(`http://${env.KISEKI_METRICS_ADDR}/health`, "OK", 60_000);
      const marker = await aws("s3api", "put-object", "--bucket", "reclaim", "--key", "restarted");
      assert.equal(marker.code, 0, marker.stderr);
      const done = await guestRun;
      console.log(done.output);
      assert.equal(done.status, 0, done.status === null ? done.console.slice(-4000) : "");
      assert.doesNotMatch(done.output, /FAIL:/);
      assert.equal((done.output.match(/^ok: /gm) ?? []).length, 6);
    } finally {
      const code = await server.stop();
      if (code !== 0) console.error(server.stderr().slice(-4000));
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});
