// The Linux kernel NFS client (a Debian kernel booted under qemu, tests/kernel_nfs/guest.ts)
// mounts a real `kiseki server` with NFSv3 and runs tests/kernel_nfs/v3_posix.sh: an object
// PUT over S3 read over NFS, 100 MiB in and out with checksums, mkdir -p, renames, symlinks,
// chmod/chown/touch, truncate, tar; then aws-cli GETs what the kernel client wrote.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { buildGuest, defaultGuestCache, guestUnavailable, runGuest } from "../kernel_nfs/guest.ts";
import { missingPart } from "../../mod/base/mod.ts";
import { ROOT, run, startRole, waitForHttp } from "./_role.ts";

const AWS = "/usr/bin/aws";
const SIZE_MIB = 100;
// The guest reaches the host's 127.0.0.1 only (as 10.0.2.2): the server listens there, on
// ports no other test uses.
const ADDRS = {
  KISEKI_S3_ADDR: "127.0.0.1:36000",
  KISEKI_NFS_ADDR: "127.0.0.1:36049",
  KISEKI_METRICS_ADDR: "127.0.0.1:36090",
  KISEKI_DATA_ADDR: "127.0.0.1:36100",
  KISEKI_ADVISORY_ADDR: "127.0.0.1:36101",
  KISEKI_RAFT_ADDR: "127.0.0.1:36300",
};

const unavailable = await guestUnavailable();

Deno.test({
  name: "the Linux kernel NFS client mounts v3 and passes the POSIX script",
  ignore: missingPart("a kernel NFS client guest (root and Debian apt)", unavailable),
  async fn() {
    const guest = await buildGuest(defaultGuestCache());
    const dataDir = await Deno.makeTempDir({ prefix: "kiseki-e2e-knfs-" });
    const work = await Deno.makeTempDir({ prefix: "kiseki-e2e-knfs-work-" });
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
      assert.equal((await aws("s3", "mb", "s3://kernel")).code, 0);
      await Deno.writeTextFile(`${work}/hello.txt`, "hello from s3");
      const put = await aws("s3", "cp", `${work}/hello.txt`, "s3://kernel/from-s3/hello.txt");
      assert.equal(put.code, 0, put.stderr);

      const script = await Deno.readTextFile(`${ROOT}tests/kernel_nfs/v3_posix.sh`);
      const port = env.KISEKI_NFS_ADDR.split(":")[1]!;
      const guestRun = await runGuest(guest, script, {
        args: [port, "kernel", String(SIZE_MIB)],
        timeoutMs: 600_000,
      });
      console.log(guestRun.output);
      assert.equal(
        guestRun.status,
        0,
        guestRun.status === null ? guestRun.console.slice(-4000) : "",
      );
      assert.doesNotMatch(guestRun.output, /FAIL:/);
      assert.equal((guestRun.output.match(/^ok: /gm) ?? []).length, 19);

      // What the kernel client wrote is there over S3.
      const get = await aws("s3", "cp", "s3://kernel/big.bin", `${work}/big.bin`);
      assert.equal(get.code, 0, get.stderr);
      const big = await Deno.readFile(`${work}/big.bin`);
      assert.equal(big.length, SIZE_MIB << 20);
      const sum = await aws("s3", "cp", "s3://kernel/big.sha256", "-");
      assert.equal(createHash("sha256").update(big).digest("hex"), sum.stdout.trim());
      const text = await aws("s3", "cp", "s3://kernel/from-nfs.txt", "-");
      assert.equal(text.stdout, "written by the kernel client\n");
      const head = await aws("s3api", "head-object", "--bucket", "kernel", "--key", "a/leaf2");
      const meta = JSON.parse(head.stdout);
      assert.equal(meta.ContentLength, 8192);
      assert.deepEqual(
        { mode: meta.Metadata.mode, uid: meta.Metadata.uid, gid: meta.Metadata.gid },
        { mode: String(0o100640), uid: "1000", gid: "100" },
      );
      // Truncated after the touch: its mtime moved on. The other file touched keeps it.
      assert.ok(Number(meta.Metadata.mtime) > 1577934245);
      const stamp = await aws("s3api", "head-object", "--bucket", "kernel", "--key", "a/stamp");
      assert.equal(Math.round(Number(JSON.parse(stamp.stdout).Metadata.mtime)), 1577934245);
      const link = await aws("s3", "cp", "s3://kernel/link", "-");
      assert.equal(link.stdout, "a/leaf2");
      // Directories are key prefixes.
      const listed = await aws(
        "s3api",
        "list-objects-v2",
        "--bucket",
        "kernel",
        "--prefix",
        "moved/",
      );
      assert.match(listed.stdout, /moved\/c\/d\/e\/f\/g\/h\//);
    } finally {
      const code = await server.stop();
      if (code !== 0) console.error(server.stderr().slice(-4000));
      await Deno.remove(dataDir, { recursive: true });
      await Deno.remove(work, { recursive: true });
    }
  },
});
