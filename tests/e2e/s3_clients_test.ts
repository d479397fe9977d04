// Real S3 clients (Debian's aws-cli and boto3) against a real `kiseki server` process.

import assert from "node:assert/strict";
import { ROLE_TABLE } from "../../mod/role/mod.ts";
import { flagsFor, ROOT, run, startRole, testAddrs, waitForHttp } from "./_role.ts";

const AWS = "/usr/bin/aws";
const PY = "/usr/bin/python3";

// boto3 driver: reads a JSON job from argv[1], prints a JSON answer.
const PY_DRIVER = `
import json, sys, time, urllib.request, urllib.error
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
job = json.loads(sys.argv[1])
kw = dict(endpoint_url=job["endpoint"], region_name="us-east-1",
          config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
if "key" in job:
    kw.update(aws_access_key_id=job["key"], aws_secret_access_key=job["secret"])
s3 = boto3.client("s3", **kw)
op = job["op"]
out = {}
if op == "fill":
    s3.create_bucket(Bucket=job["bucket"])
    for i in range(job["n"]):
        s3.put_object(Bucket=job["bucket"], Key="d%02d/k%05d" % (i % job["dirs"], i), Body=b"x")
    out["ok"] = True
elif op == "list":
    keys = []
    pages = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=job["bucket"], PaginationConfig={"PageSize": 1000}):
        pages += 1
        keys += [o["Key"] for o in page.get("Contents", [])]
    prefixes = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=job["bucket"], Delimiter="/"):
        prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        assert not page.get("Contents"), "no key sits at the top level"
    out.update(keys=keys, pages=pages, prefixes=prefixes)
elif op == "presign":
    body = job["body"].encode()
    put = s3.generate_presigned_url("put_object", Params={"Bucket": job["bucket"], "Key": "p.bin"}, ExpiresIn=60)
    r = urllib.request.urlopen(urllib.request.Request(put, data=body, method="PUT"), timeout=10)
    out["putStatus"] = r.status
    get = s3.generate_presigned_url("get_object", Params={"Bucket": job["bucket"], "Key": "p.bin"}, ExpiresIn=60)
    out["got"] = urllib.request.urlopen(get, timeout=10).read().decode()
    short = s3.generate_presigned_url("get_object", Params={"Bucket": job["bucket"], "Key": "p.bin"}, ExpiresIn=1)
    time.sleep(2)
    try:
        urllib.request.urlopen(short, timeout=10)
        out["expired"] = {"status": 200}
    except urllib.error.HTTPError as e:
        out["expired"] = {"status": e.code, "body": e.read().decode()}
elif op == "foreign":
    out["buckets"] = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    try:
        s3.get_object(Bucket=job["bucket"], Key=job["objkey"])
        out["get"] = {"code": "OK"}
    except ClientError as e:
        out["get"] = {"code": e.response["Error"]["Code"], "status": e.response["ResponseMetadata"]["HTTPStatusCode"]}
print(json.dumps(out))
`;

async function py(job: Record<string, unknown>): Promise<Record<string, unknown>> {
  const r = await run(PY, ["-c", PY_DRIVER, JSON.stringify(job)], {
    env: {
      AWS_SHARED_CREDENTIALS_FILE: String(job.credentials ?? "/dev/null"),
      AWS_CONFIG_FILE: "/dev/null",
    },
  });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

async function listTree(root: string, rel = ""): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for await (const e of Deno.readDir(`${root}/${rel}`)) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory) { for (const [k, v] of await listTree(root, p)) out.set(k, v); }
    else out.set(p, await Deno.readFile(`${root}/${p}`));
  }
  return out;
}

function pattern(n: number, seed: number): Uint8Array {
  return new Uint8Array(n).map((_, i) => (i * 131 + seed + (i >> 8)) & 0xff);
}

Deno.test("aws-cli and boto3 against a real kiseki server: copies, listings, sync, presigned URLs, tenants", async (t) => {
  const dataDir = await Deno.makeTempDir({ prefix: "kiseki-e2e-s3c-" });
  const work = await Deno.makeTempDir({ prefix: "kiseki-e2e-s3c-work-" });
  const env = { ...testAddrs(45), KISEKI_DATA_DIR: dataDir };
  const server = startRole("server", env);
  const endpoint = `http://${env.KISEKI_S3_ADDR}`;
  const credentials = `${dataDir}/config/s3-credentials`;
  const aws = (...args: string[]) =>
    run(AWS, ["--endpoint-url", endpoint, ...args], {
      env: {
        AWS_SHARED_CREDENTIALS_FILE: credentials,
        AWS_CONFIG_FILE: "/dev/null",
        AWS_DEFAULT_REGION: "us-east-1",
      },
    });
  try {
    await waitForHttp(`http://${env.KISEKI_METRICS_ADDR}/health`, "OK", 60_000);

    await t.step("0 B, 1 B and 5 MiB + 1 objects round trip byte-exact with s3 cp", async () => {
      const mb = await aws("s3", "mb", "s3://cpb");
      assert.equal(mb.code, 0, mb.stderr);
      for (const size of [0, 1, 5 * 1024 * 1024 + 1]) {
        const bytes = pattern(size, size & 0xff);
        const src = `${work}/up-${size}.bin`;
        await Deno.writeFile(src, bytes);
        const up = await aws("s3", "cp", src, `s3://cpb/o-${size}`);
        assert.equal(up.code, 0, up.stderr);
        const down = await aws("s3", "cp", `s3://cpb/o-${size}`, `${src}.back`);
        assert.equal(down.code, 0, down.stderr);
        const back = await Deno.readFile(`${src}.back`);
        assert.equal(back.length, size);
        assert.deepEqual(back, bytes);
      }
    });

    await t.step("2,500+ keys list completely with pagination and delimiter prefixes", async () => {
      const n = 2_503;
      const dirs = 7;
      await py({ op: "fill", endpoint, credentials, bucket: "many", n, dirs });
      const listed = await py({ op: "list", endpoint, credentials, bucket: "many" }) as {
        keys: string[];
        pages: number;
        prefixes: string[];
      };
      assert.equal(listed.keys.length, n);
      assert.equal(new Set(listed.keys).size, n, "no key listed twice");
      assert.deepEqual(listed.keys, [...listed.keys].sort(), "keys come back in order");
      assert.equal(listed.pages, 3);
      assert.deepEqual(listed.prefixes, Array.from({ length: dirs }, (_, i) => `d0${i}/`));
      const page = await aws("s3api", "list-objects-v2", "--bucket", "many", "--max-items", "100");
      assert.equal(page.code, 0, page.stderr);
      const body = JSON.parse(page.stdout);
      assert.equal(body.Contents.length, 100);
      assert.equal(typeof body.NextToken, "string");
      const rest = await aws(
        "s3api",
        "list-objects-v2",
        "--bucket",
        "many",
        "--starting-token",
        body.NextToken,
      );
      assert.equal(rest.code, 0, rest.stderr);
      assert.equal(JSON.parse(rest.stdout).Contents.length, n - 100);
    });

    await t.step("aws s3 sync up and down reproduces a directory tree", async () => {
      const src = `${work}/tree`;
      const files: Record<string, Uint8Array> = {
        "a.txt": new TextEncoder().encode("alpha\n"),
        "empty": new Uint8Array(0),
        "sub/b.bin": pattern(70_000, 3),
        "sub/deeper/c.bin": pattern(1, 9),
      };
      for (const [p, b] of Object.entries(files)) {
        await Deno.mkdir(`${src}/${p}`.replace(/\/[^/]+$/, ""), { recursive: true });
        await Deno.writeFile(`${src}/${p}`, b);
      }
      assert.equal((await aws("s3", "mb", "s3://sync")).code, 0);
      const up = await aws("s3", "sync", src, "s3://sync/t");
      assert.equal(up.code, 0, up.stderr);
      const dst = `${work}/tree-back`;
      await Deno.mkdir(dst);
      const down = await aws("s3", "sync", "s3://sync/t", dst);
      assert.equal(down.code, 0, down.stderr);
      const got = await listTree(dst);
      assert.deepEqual([...got.keys()].sort(), Object.keys(files).sort());
      for (const [p, b] of Object.entries(files)) assert.deepEqual(got.get(p), b, p);
    });

    await t.step(
      "boto3 presigned PUT and GET work; an expired presigned GET is AccessDenied",
      async () => {
        assert.equal((await aws("s3", "mb", "s3://signed")).code, 0);
        const r = await py({
          op: "presign",
          endpoint,
          credentials,
          bucket: "signed",
          body: "presigned body",
        }) as { putStatus: number; got: string; expired: { status: number; body?: string } };
        assert.equal(r.putStatus, 200);
        assert.equal(r.got, "presigned body");
        assert.equal(r.expired.status, 403);
        assert.match(r.expired.body ?? "", /<Code>AccessDenied<\/Code>/);
      },
    );

    await t.step(
      "a second tenant's key sees neither the first tenant's buckets nor objects",
      async () => {
        const created = await run(Deno.execPath(), [
          "run",
          "--quiet",
          ...flagsFor("admin", { KISEKI_DATA_DIR: dataDir }),
          `${ROOT}${ROLE_TABLE.admin.entry}`,
          "s3-credentials",
          "create",
          "--tenant",
          "0123456789abcdef0123456789abcdef",
          "--json",
          "--node",
          env.KISEKI_METRICS_ADDR,
        ], { env: { KISEKI_DATA_DIR: dataDir } });
        assert.equal(created.code, 0, created.stderr);
        const key = JSON.parse(created.stdout);
        const mine = await py({
          op: "foreign",
          endpoint,
          credentials,
          bucket: "cpb",
          objkey: "o-1",
        }) as {
          buckets: string[];
          get: { code: string };
        };
        assert.ok(mine.buckets.includes("cpb"), "the owner lists its bucket");
        assert.equal(mine.get.code, "OK");
        const other = await py({
          op: "foreign",
          endpoint,
          key: key.accessKeyId,
          secret: key.secretAccessKey,
          bucket: "cpb",
          objkey: "o-1",
        }) as { buckets: string[]; get: { code: string; status: number } };
        assert.deepEqual(other.buckets, []);
        assert.deepEqual(other.get, { code: "NoSuchBucket", status: 404 });
      },
    );
  } finally {
    const code = await server.stop("SIGTERM");
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    await Deno.remove(work, { recursive: true }).catch(() => {});
    assert.equal(code, 0, server.stderr());
  }
});
