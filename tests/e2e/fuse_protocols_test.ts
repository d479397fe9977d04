// One namespace, three doors: a file written through a kiseki-client-fuse mount is an object
// over S3 (aws-cli) and a file over NFS (the project's NFSv3 client), both served by the
// kiseki server role the client talks to, and what S3 and NFS write shows through the mount.

import assert from "node:assert/strict";
import { missingPart } from "../../mod/base/testing.ts";
import { Nfs3Client } from "../../mod/nfs/nfs3_client.ts";
import { RpcClient } from "../../mod/nfs/rpc_client.ts";
import { fuseMissing, startMount } from "../fuse/_mount.ts";
import { readS3Credentials } from "./_role.ts";

const AWS = "/usr/bin/aws";

function awsMissing(): string | null {
  try {
    Deno.statSync(AWS);
    return fuseMissing();
  } catch {
    return "aws-cli is not installed";
  }
}

function bytes(n: number, seed: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) b[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
  return b;
}

Deno.test({
  name: "a file written through the FUSE mount reads over S3 and NFS, and theirs through it",
  ignore: missingPart("aws-cli and a FUSE mount", awsMissing()),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const m = await startMount({ hostOctet: 85 });
    const work = await Deno.makeTempDir({ prefix: "kiseki-fuse-proto-" });
    const key = await readS3Credentials(m.server.s3CredentialsFile);
    const aws = async (...args: string[]) => {
      const out = await new Deno.Command(AWS, {
        args: ["--endpoint-url", `http://${m.server.addrs.KISEKI_S3_ADDR}`, ...args],
        env: {
          AWS_ACCESS_KEY_ID: key.accessKeyId,
          AWS_SECRET_ACCESS_KEY: key.secretAccessKey,
          AWS_DEFAULT_REGION: "us-east-1",
          AWS_CONFIG_FILE: "/dev/null",
          AWS_SHARED_CREDENTIALS_FILE: "/dev/null",
        },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      assert.ok(out.success, `aws ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
      return text;
    };
    const [nfsHost, nfsPort] = m.server.addrs.KISEKI_NFS_ADDR.split(":") as [string, string];
    const rpc = await RpcClient.connect(nfsHost, Number(nfsPort));
    let code = -1;
    try {
      const nfs = new Nfs3Client(rpc);
      // Through the mount: a bucket, a directory, a file with a mode.
      const fromFuse = bytes(1_500_000, 7);
      await Deno.mkdir(`${m.mountpoint}/shared/dir`, { recursive: true });
      await Deno.writeFile(`${m.mountpoint}/shared/dir/from-fuse.bin`, fromFuse, { mode: 0o640 });
      await Deno.chmod(`${m.mountpoint}/shared/dir/from-fuse.bin`, 0o640);

      // Over S3: the same bytes under the key, listed under the prefix.
      await aws("s3", "cp", "s3://shared/dir/from-fuse.bin", `${work}/via-s3`);
      assert.deepEqual(await Deno.readFile(`${work}/via-s3`), fromFuse);
      assert.match(await aws("s3", "ls", "s3://shared/dir/"), /from-fuse\.bin/);

      // Over NFS: the same bytes and the mode set through the mount.
      const root = (await nfs.mount("/")).fh!;
      const bucket = (await nfs.lookup(root, "shared")).fh!;
      const dir = (await nfs.lookup(bucket, "dir")).fh!;
      const file = await nfs.lookup(dir, "from-fuse.bin");
      assert.equal(file.status, 0);
      assert.equal((file.attr!.mode as number) & 0o777, 0o640);
      const parts: Uint8Array<ArrayBuffer>[] = [];
      for (let off = 0; off < fromFuse.length;) {
        const r = await nfs.read(file.fh!, off, 1 << 20);
        assert.equal(r.status, 0);
        parts.push(r.data!.slice());
        off += r.data!.length;
        if (r.eof) break;
      }
      assert.deepEqual(new Uint8Array(await new Blob(parts).arrayBuffer()), fromFuse);

      // Written over S3, read through the mount.
      const fromS3 = bytes(300_000, 9);
      await Deno.writeFile(`${work}/up`, fromS3);
      await aws("s3", "cp", `${work}/up`, "s3://shared/dir/from-s3.bin");
      assert.deepEqual(await Deno.readFile(`${m.mountpoint}/shared/dir/from-s3.bin`), fromS3);

      // Written over NFS, read through the mount.
      const made = await nfs.create(dir, "from-nfs.txt", { mode: 0, attr: { mode: 0o600 } });
      assert.equal(made.status, 0);
      assert.equal((await nfs.write(made.fh!, 0, new TextEncoder().encode("by nfs"), 2)).status, 0);
      assert.equal(await Deno.readTextFile(`${m.mountpoint}/shared/dir/from-nfs.txt`), "by nfs");
      assert.equal(
        (await Deno.stat(`${m.mountpoint}/shared/dir/from-nfs.txt`)).mode! & 0o777,
        0o600,
      );

      // An S3 overwrite of a file the mount read shows after the attribute lifetime (1 s).
      await Deno.writeTextFile(`${work}/new`, "replaced over S3, longer than before");
      await aws("s3", "cp", `${work}/new`, "s3://shared/dir/from-nfs.txt");
      await new Promise((r) => setTimeout(r, 1200));
      assert.equal(
        await Deno.readTextFile(`${m.mountpoint}/shared/dir/from-nfs.txt`),
        "replaced over S3, longer than before",
      );
    } finally {
      await rpc.close();
      code = await m.stop("SIGTERM");
      await m.cleanup();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
    assert.equal(code, 0, m.stderr());
  },
});
