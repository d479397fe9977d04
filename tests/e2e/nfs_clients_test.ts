// A real NFS client (Debian's libnfs-utils: nfs-ls, nfs-cp, nfs-cat) and aws-cli against a
// real `kiseki server`: one namespace over both protocols, MOUNT and NFS on the one port,
// committed writes surviving kill -9, and a write verifier that changes on restart.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { missingPart } from "../../mod/base/mod.ts";
import { Nfs3Client } from "../../mod/nfs/nfs3_client.ts";
import { RpcClient } from "../../mod/nfs/rpc_client.ts";
import { run, startRole, testAddrs, waitForHttp } from "./_role.ts";

const AWS = "/usr/bin/aws";
const NFS_LS = "/usr/bin/nfs-ls";
const NFS_CP = "/usr/bin/nfs-cp";
const NFS_CAT = "/usr/bin/nfs-cat";
const MiB = 1 << 20;

function randomBytes(size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let at = 0; at < size; at += 65536) crypto.getRandomValues(out.subarray(at, at + 65536));
  return out;
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

Deno.test({
  name: "libnfs-utils and aws-cli see one namespace on a real kiseki server",
  ignore: missingPart(
    "libnfs-utils (Debian libnfs-utils)",
    !(await Deno.stat(NFS_CP).then(() => true, () => false)) && `${NFS_CP} not found`,
  ),
  async fn(t) {
    const dataDir = await Deno.makeTempDir({ prefix: "kiseki-e2e-nfs-" });
    const work = await Deno.makeTempDir({ prefix: "kiseki-e2e-nfs-work-" });
    const env = { ...testAddrs(212), KISEKI_DATA_DIR: dataDir };
    const [host, port] = env.KISEKI_NFS_ADDR.split(":") as [string, string];
    const url = (path: string, version = 3) =>
      `nfs://${host}${path}?version=${version}&nfsport=${port}&mountport=${port}`;
    const clientEnv = {
      AWS_SHARED_CREDENTIALS_FILE: `${dataDir}.s3-credentials`,
      AWS_DEFAULT_REGION: "us-east-1",
    };
    const aws = (...args: string[]) =>
      run(AWS, ["--endpoint-url", `http://${env.KISEKI_S3_ADDR}`, ...args], { env: clientEnv });
    const nfs = (cmd: string, ...args: string[]) => run("/usr/bin/timeout", ["60", cmd, ...args]);
    let server = startRole("server", env);
    try {
      await waitForHttp(`http://${env.KISEKI_METRICS_ADDR}/health`, "OK", 60_000);

      await t.step("an object PUT over S3 lists and reads over NFS", async () => {
        assert.equal((await aws("s3", "mb", "s3://share")).code, 0);
        await Deno.writeTextFile(`${work}/s3.txt`, "written by s3\n");
        const put = await aws("s3", "cp", `${work}/s3.txt`, "s3://share/dir/sub/s3.txt");
        assert.equal(put.code, 0, put.stderr);
        const root = await nfs(NFS_LS, url("/"));
        assert.equal(root.code, 0, root.stderr);
        assert.match(root.stdout, /^d.* share$/m);
        const tree = await nfs(NFS_LS, "-R", url("/share"));
        assert.equal(tree.code, 0, tree.stderr);
        assert.match(tree.stdout, /^d.* dir$/m);
        assert.match(tree.stdout, /^-rw-r--r-- .* 14 dir\/sub\/s3\.txt$/m);
        const cat = await nfs(NFS_CAT, url("/share/dir/sub/s3.txt"));
        assert.equal(cat.stdout, "written by s3\n");
      });

      const big = randomBytes(24 * MiB + 12345);
      await t.step(
        "a 24 MiB file written over NFS is a GET-able object with its MD5 ETag",
        async () => {
          await Deno.writeFile(`${work}/big.bin`, big);
          const cp = await nfs(NFS_CP, `${work}/big.bin`, url("/share/dir/big.bin"));
          assert.equal(cp.code, 0, cp.stderr);
          const head = await aws(
            "s3api",
            "head-object",
            "--bucket",
            "share",
            "--key",
            "dir/big.bin",
          );
          assert.equal(head.code, 0, head.stderr);
          const info = JSON.parse(head.stdout);
          assert.equal(info.ContentLength, big.length);
          assert.equal(info.ETag, `"${createHash("md5").update(big).digest("hex")}"`);
          assert.ok(Math.abs(Date.parse(info.LastModified) - Date.now()) < 120_000);
          const get = await aws("s3", "cp", "s3://share/dir/big.bin", `${work}/big.s3`);
          assert.equal(get.code, 0, get.stderr);
          assert.equal(sha256(await Deno.readFile(`${work}/big.s3`)), sha256(big));
          const back = await nfs(NFS_CP, url("/share/dir/big.bin"), `${work}/big.nfs`);
          assert.equal(back.code, 0, back.stderr);
          assert.equal(sha256(await Deno.readFile(`${work}/big.nfs`)), sha256(big));
        },
      );

      await t.step("an S3 delete shows over NFS at once", async () => {
        assert.equal((await aws("s3", "rm", "s3://share/dir/sub/s3.txt")).code, 0);
        const tree = await nfs(NFS_LS, "-R", url("/share"));
        assert.equal(tree.code, 0, tree.stderr);
        assert.doesNotMatch(tree.stdout, /s3\.txt/);
        assert.match(tree.stdout, /big\.bin/);
      });

      // libnfs speaks NFSv4.0 only, which is not served (4.1 and 4.2 are).
      await t.step(
        "libnfs's NFSv4.0 is refused with MINOR_VERS_MISMATCH, not dropped",
        async () => {
          const v4 = await nfs(NFS_LS, url("/", 4));
          assert.notEqual(v4.code, 0);
          assert.notEqual(v4.code, 124, "no hang");
          assert.match(v4.stderr, /NFS4ERR_MINOR_VERS_MISMATCH/);
        },
      );

      let verifier: Uint8Array;
      await t.step("committed writes survive kill -9 and the write verifier changes", async () => {
        const rpc = await RpcClient.connect(host, Number(port));
        const client = new Nfs3Client(rpc);
        try {
          const share = (await client.mount("/share")).fh!;
          const made = await client.create(share, "durable.txt", { mode: 1, attr: {} });
          assert.equal(made.status, 0);
          const w = await client.write(made.fh!, 0, new TextEncoder().encode("kept"), 0);
          assert.equal(w.status, 0);
          verifier = w.verifier!;
          assert.equal((await client.commit(made.fh!)).status, 0);
        } finally {
          await rpc.close();
        }
        await server.stop("SIGKILL");
        server = startRole("server", env);
        await waitForHttp(`http://${env.KISEKI_METRICS_ADDR}/health`, "OK", 60_000);
        const cat = await nfs(NFS_CAT, url("/share/durable.txt"));
        assert.equal(cat.stdout, "kept");
        const rpc2 = await RpcClient.connect(host, Number(port));
        const client2 = new Nfs3Client(rpc2);
        try {
          const share = (await client2.mount("/share")).fh!;
          const f = await client2.lookup(share, "durable.txt");
          const w = await client2.write(f.fh!, 4, new TextEncoder().encode("!"), 0);
          assert.equal(w.status, 0);
          assert.notDeepEqual(w.verifier, verifier, "a restart changes the write verifier");
          assert.equal((await client2.commit(f.fh!)).status, 0);
        } finally {
          await rpc2.close();
        }
        const get = await aws("s3", "cp", "s3://share/durable.txt", `${work}/durable`);
        assert.equal(get.code, 0, get.stderr);
        assert.equal(await Deno.readTextFile(`${work}/durable`), "kept!");
      });
    } finally {
      const code = await server.stop();
      if (code !== 0 && code !== 143) console.error(server.stderr().slice(-4000));
      await Deno.remove(dataDir, { recursive: true });
      await Deno.remove(work, { recursive: true });
    }
  },
});
