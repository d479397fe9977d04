// Real S3 clients (Debian's aws-cli, boto3 and s3cmd; the AWS SDK for JavaScript) against a real
// `kiseki server` process.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { crc32 } from "node:zlib";
// The AWS SDK for JavaScript: the one client here that speaks CRC64NVME.
import {
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  S3Client,
  // deno-lint-ignore no-import-prefix
} from "npm:@aws-sdk/client-s3@3.1175.0";
import { ROLE_TABLE } from "../../mod/role/mod.ts";
import {
  flagsFor,
  readS3Credentials,
  ROOT,
  run,
  startRole,
  testAddrs,
  waitForHttp,
} from "./_role.ts";

const AWS = "/usr/bin/aws";
const PY = "/usr/bin/python3";
const S3CMD = "/usr/bin/s3cmd";
const MiB = 1 << 20;
/** The boto3 jobs of the steps past the first five (multipart, copy, checksums, ...). */
const BOTO3_DRIVER = `${ROOT}tests/e2e/testdata/s3_clients_boto3.py`;

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

/**
 * `size` bytes, quick to make at 100 MiB: one pseudo-random MiB (xorshift32 from `seed`),
 * rotated by a different amount for every MiB, so no two MiB of the result are alike and a
 * part stored in the wrong place shows.
 */
function patternBytes(size: number, seed: number): Uint8Array {
  const block = new Uint8Array(MiB);
  const words = new Uint32Array(block.buffer);
  let x = (Math.imul(seed + 1, 2654435761) >>> 0) || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  const out = new Uint8Array(size);
  for (let at = 0, n = 0; at < size; at += MiB, n++) {
    const length = Math.min(MiB, size - at);
    const shift = (n * 4099) % MiB; // 4099 is odd: a distinct rotation for every MiB
    const head = Math.min(length, MiB - shift);
    out.set(block.subarray(shift, shift + head), at);
    if (length > head) out.set(block.subarray(0, length - head), at + head);
  }
  return out;
}

/** Fails naming the first differing byte; compares natively (100 MiB in milliseconds). */
function assertSameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  if (Buffer.compare(actual, expected) !== 0) {
    let i = 0;
    while (actual[i] === expected[i]) i++;
    assert.fail(`${what}: first differing byte at offset ${i}`);
  }
}

function md5ETag(bytes: Uint8Array): string {
  return `"${createHash("md5").update(bytes).digest("hex")}"`;
}

/** S3's multipart ETag: MD5 of the parts' binary MD5s, then "-<parts>". */
function multipartETag(parts: Uint8Array[]): string {
  const outer = createHash("md5");
  for (const p of parts) outer.update(createHash("md5").update(p).digest());
  return `"${outer.digest("hex")}-${parts.length}"`;
}

/** `bytes` cut into `partBytes` pieces (the last one shorter). */
function slices(bytes: Uint8Array, partBytes: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; at += partBytes) out.push(bytes.subarray(at, at + partBytes));
  return out;
}

function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("base64");
}

function u32be(value: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value >>> 0);
  return out;
}

// CRC-32C (Castagnoli), bitwise table: the test's own, independent of the gateway's.
const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32cOf(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC32C_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// CRC-64/NVME (reflected 0x9A6C9329AC4BC9B5, all-ones init and xorout), table of BigInts.
const CRC64NVME_TABLE = (() => {
  const table: bigint[] = [];
  for (let n = 0n; n < 256n; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1n ? (c >> 1n) ^ 0x9a6c9329ac4bc9b5n : c >> 1n;
    table.push(c);
  }
  return table;
})();

function crc64nvmeOf(bytes: Uint8Array): Uint8Array {
  const ones = 0xffffffffffffffffn;
  let c = ones;
  for (const b of bytes) c = CRC64NVME_TABLE[Number((c ^ BigInt(b)) & 0xffn)]! ^ (c >> 8n);
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, c ^ ones);
  return out;
}

/** An S3 error as boto3 saw it ("OK" when the call succeeded). */
interface SeenError {
  code: string;
  status?: number;
  message?: string;
}

function assertError(seen: SeenError, code: string, status: number, what: string): void {
  assert.deepEqual({ code: seen.code, status: seen.status }, { code, status }, what);
}

Deno.test("aws-cli, boto3, s3cmd and the JS SDK against a real kiseki server", async (t) => {
  const dataDir = await Deno.makeTempDir({ prefix: "kiseki-e2e-s3c-" });
  const work = await Deno.makeTempDir({ prefix: "kiseki-e2e-s3c-work-" });
  const env = { ...testAddrs(45), KISEKI_DATA_DIR: dataDir };
  // aws-cli's own defaults, written down: the 100 MiB step computes its ETag from them.
  const awsConfig = `${work}/aws-config`;
  await Deno.writeTextFile(
    awsConfig,
    "[default]\ns3 =\n    multipart_threshold = 8MB\n    multipart_chunksize = 8MB\n",
  );
  const server = startRole("server", env);
  const endpoint = `http://${env.KISEKI_S3_ADDR}`;
  const credentials = `${dataDir}.s3-credentials`;
  const clientEnv = {
    AWS_SHARED_CREDENTIALS_FILE: credentials,
    AWS_CONFIG_FILE: awsConfig,
    AWS_DEFAULT_REGION: "us-east-1",
  };
  const aws = (...args: string[]) =>
    run(AWS, ["--endpoint-url", endpoint, ...args], { env: clientEnv });
  // The boto3 multipart object: parts of 5 MiB, 5 MiB and 1,234 B (only the last may be
  // under 5 MiB); the partNumber step reads it back part by part.
  const mpuBytes = patternBytes(10 * MiB + 1234, 2);
  const mpuEnds = [5 * MiB, 10 * MiB, mpuBytes.length];
  const mpuParts = mpuEnds.map((end, i) => mpuBytes.subarray(i === 0 ? 0 : mpuEnds[i - 1], end));
  const boto3 = async <T>(job: Record<string, unknown>): Promise<T> => {
    const r = await run(PY, [BOTO3_DRIVER, JSON.stringify({ endpoint, ...job })], {
      env: clientEnv,
    });
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as T;
  };
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

    await t.step(
      "100 MiB round trips byte-exact with aws s3 cp; multipart ETag and length as S3 gives",
      async () => {
        const size = 100 * MiB;
        const bytes = patternBytes(size, 100);
        const src = `${work}/large.bin`;
        await Deno.writeFile(src, bytes);
        assert.equal((await aws("s3", "mb", "s3://large")).code, 0);
        const up = await aws("s3", "cp", "--only-show-errors", src, "s3://large/l.bin");
        assert.equal(up.code, 0, up.stderr);
        const head = await aws("s3api", "head-object", "--bucket", "large", "--key", "l.bin");
        assert.equal(head.code, 0, head.stderr);
        const info = JSON.parse(head.stdout) as { ContentLength: number; ETag: string };
        assert.equal(info.ContentLength, size);
        // aws-cli cut it into 8 MiB parts: 13 of them, the ETag says so.
        assert.equal(info.ETag, multipartETag(slices(bytes, 8 * MiB)));
        assert.match(info.ETag, /^"[0-9a-f]{32}-13"$/);
        const down = await aws("s3", "cp", "--only-show-errors", "s3://large/l.bin", `${src}.back`);
        assert.equal(down.code, 0, down.stderr);
        assertSameBytes(await Deno.readFile(`${src}.back`), bytes, "downloaded");
        await Deno.remove(src);
        await Deno.remove(`${src}.back`);
      },
    );

    await t.step(
      "boto3 multipart: parts uploaded 3, 1, 2; list_parts; InvalidPartOrder, EntityTooSmall, abort",
      async () => {
        const src = `${work}/mpu.bin`;
        await Deno.writeFile(src, mpuBytes);
        const bounds = [[1, 0, 5 * MiB], [2, 5 * MiB, 10 * MiB], [3, 10 * MiB, mpuBytes.length]];
        const r = await boto3<{
          uploaded: Record<string, string>;
          listed: Array<{ partNumber: number; etag: string; size: number }>;
          listedUpload: boolean;
          badOrder: SeenError;
          completeETag: string;
          head: { length: number; etag: string };
          getETag: string;
          listedAfterComplete: boolean;
          tooSmall: SeenError;
          tooSmallObject: SeenError;
          abort: {
            listedBefore: boolean;
            listedAfter: boolean;
            openListedAfter: boolean;
            uploadPart: SeenError;
            listParts: SeenError;
            object: SeenError;
          };
          uploadsLeft: string[];
        }>({
          op: "multipart",
          createBucket: true,
          bucket: "mpu",
          key: "obj",
          source: src,
          parts: bounds,
          uploadOrder: [3, 1, 2],
          badCompleteOrder: [2, 1, 3],
          out: `${src}.back`,
        });
        const partETags = mpuParts.map(md5ETag);
        assert.deepEqual(r.uploaded, { "1": partETags[0], "2": partETags[1], "3": partETags[2] });
        assert.deepEqual(
          r.listed,
          mpuParts.map((p, i) => ({ partNumber: i + 1, etag: partETags[i], size: p.length })),
          "list_parts answers in part order whatever the upload order",
        );
        assert.equal(r.listedUpload, true);
        assertError(r.badOrder, "InvalidPartOrder", 400, "parts listed 2, 1, 3");
        const expected = multipartETag(mpuParts);
        assert.equal(r.completeETag, expected);
        assert.deepEqual(r.head, { length: mpuBytes.length, etag: expected });
        assert.equal(r.getETag, expected);
        assertSameBytes(await Deno.readFile(`${src}.back`), mpuBytes, "completed object");
        assert.equal(r.listedAfterComplete, false, "a completed upload is no longer listed");
        assertError(r.tooSmall, "EntityTooSmall", 400, "a 1 MiB first part");
        assertError(r.tooSmallObject, "404", 404, "a refused completion stores nothing");
        assert.deepEqual(
          {
            listedBefore: r.abort.listedBefore,
            listedAfter: r.abort.listedAfter,
            openListedAfter: r.abort.openListedAfter,
          },
          { listedBefore: true, listedAfter: false, openListedAfter: true },
        );
        assertError(r.abort.uploadPart, "NoSuchUpload", 404, "upload_part after abort");
        assertError(r.abort.listParts, "NoSuchUpload", 404, "list_parts after abort");
        assertError(r.abort.object, "404", 404, "an aborted upload stores nothing");
        assert.deepEqual(r.uploadsLeft, []);
      },
    );

    await t.step(
      "s3cmd put, ls, get, del, with a 12 MiB put in 5 MiB multipart chunks",
      async () => {
        const { accessKeyId, secretAccessKey } = await readS3Credentials(credentials);
        const host = env.KISEKI_S3_ADDR;
        const config = `${work}/s3cfg`;
        await Deno.writeTextFile(
          config,
          `[default]\naccess_key = ${accessKeyId}\nsecret_key = ${secretAccessKey}\n` +
            `host_base = ${host}\nhost_bucket = ${host}\nuse_https = False\n` +
            `signature_v2 = False\nbucket_location = us-east-1\n`,
        );
        const s3cmd = async (...args: string[]) => {
          const r = await run(S3CMD, ["-c", config, ...args], { env: { HOME: work } });
          assert.equal(r.code, 0, `s3cmd ${args.join(" ")}: ${r.stderr}`);
          return r.stdout;
        };
        const small = new TextEncoder().encode("small file from s3cmd\n");
        const big = patternBytes(12 * MiB + 3, 3);
        await Deno.writeFile(`${work}/s3cmd-small.txt`, small);
        await Deno.writeFile(`${work}/s3cmd-big.bin`, big);
        await s3cmd("mb", "s3://s3cmd");
        await s3cmd("put", `${work}/s3cmd-small.txt`, "s3://s3cmd/docs/small file.txt");
        await s3cmd(
          "put",
          "--multipart-chunk-size-mb=5",
          `${work}/s3cmd-big.bin`,
          "s3://s3cmd/big.bin",
        );
        const listed = (await s3cmd("ls", "--recursive", "s3://s3cmd")).trim().split("\n")
          .map((line) => /^\S+\s+\S+\s+(\d+)\s+(s3:\/\/.*)$/.exec(line)?.slice(1));
        assert.deepEqual(listed, [
          [String(big.length), "s3://s3cmd/big.bin"],
          [String(small.length), "s3://s3cmd/docs/small file.txt"],
        ]);
        // It went up as three parts: 5 MiB, 5 MiB and 2 MiB + 3 B.
        const head = await aws("s3api", "head-object", "--bucket", "s3cmd", "--key", "big.bin");
        assert.equal(JSON.parse(head.stdout).ETag, multipartETag(slices(big, 5 * MiB)));
        await s3cmd("get", "s3://s3cmd/docs/small file.txt", `${work}/s3cmd-small.back`);
        await s3cmd("get", "s3://s3cmd/big.bin", `${work}/s3cmd-big.back`);
        assertSameBytes(await Deno.readFile(`${work}/s3cmd-small.back`), small, "small");
        assertSameBytes(await Deno.readFile(`${work}/s3cmd-big.back`), big, "big");
        await s3cmd("del", "s3://s3cmd/docs/small file.txt", "s3://s3cmd/big.bin");
        assert.equal((await s3cmd("ls", "--recursive", "s3://s3cmd")).trim(), "");
        const gone = await aws("s3api", "head-object", "--bucket", "s3cmd", "--key", "big.bin");
        assert.notEqual(gone.code, 0);
        assert.match(gone.stderr, /\(404\)/);
      },
    );

    await t.step(
      "boto3 upload_part_copy with ranges, copy_object COPY and REPLACE, copy-source conditions",
      async () => {
        const source = patternBytes(12 * MiB + 5, 4);
        const src = `${work}/copy-source.bin`;
        await Deno.writeFile(src, source);
        const ranges = [[5 * MiB, 10 * MiB - 1], [0, 99]];
        const r = await boto3<{
          sourceETag: string;
          partCopyETags: string[];
          partCopyIfMatchWrong: SeenError;
          partsListed: number[];
          assembledETag: string;
          copyResultETag: string;
          copied: Record<string, unknown>;
          replaced: Record<string, unknown>;
          copyIfMatchWrong: SeenError;
          copyIfNoneMatchSame: SeenError;
          copyIfMatchRight: SeenError;
          refusedCopies: string[];
        }>({
          op: "copy",
          createBucket: true,
          bucket: "copies",
          sourceKey: "dir/source.bin",
          source: src,
          ranges: ranges.map(([a, b]) => `bytes=${a}-${b}`),
          assembledOut: `${work}/assembled.back`,
          copiedOut: `${work}/copied.back`,
        });
        const pieces = ranges.map(([a, b]) => source.subarray(a!, b! + 1));
        assert.equal(r.sourceETag, md5ETag(source));
        assert.deepEqual(r.partCopyETags, pieces.map(md5ETag));
        assertError(r.partCopyIfMatchWrong, "PreconditionFailed", 412, "part copy If-Match");
        assert.deepEqual(r.partsListed, [1, 2], "the refused part copy stored no part");
        assert.equal(r.assembledETag, multipartETag(pieces));
        assertSameBytes(
          await Deno.readFile(`${work}/assembled.back`),
          Buffer.concat(pieces),
          "assembled from copied ranges",
        );
        assert.equal(r.copyResultETag, md5ETag(source));
        assert.deepEqual(r.copied, {
          etag: md5ETag(source),
          length: source.length,
          contentType: "application/x-e2e-source",
          metadata: { origin: "e2e", shade: "blue" },
        });
        assertSameBytes(await Deno.readFile(`${work}/copied.back`), source, "copied");
        assert.deepEqual(r.replaced, {
          etag: md5ETag(source),
          length: source.length,
          contentType: "text/x-replaced",
          metadata: { fresh: "yes" },
        });
        assertError(r.copyIfMatchWrong, "PreconditionFailed", 412, "CopySourceIfMatch");
        assertError(r.copyIfNoneMatchSame, "PreconditionFailed", 412, "CopySourceIfNoneMatch");
        assert.equal(r.copyIfMatchRight.code, "OK");
        assert.deepEqual(r.refusedCopies, ["404", "404"], "refused copies store nothing");
      },
    );

    await t.step(
      "boto3 Content-Type, -Disposition, -Encoding, Cache-Control, Expires, x-amz-meta-* come back",
      async () => {
        const sent = {
          contentType: "text/csv; charset=utf-8",
          contentDisposition: 'attachment; filename="report 2037.csv"',
          contentEncoding: "gzip",
          cacheControl: "private, max-age=3600",
          expires: "2037-10-21T07:28:00+00:00",
          metadata: { project: "kiseki", "owner-team": "storage" },
        };
        const r = await boto3<{
          head: typeof sent;
          get: typeof sent;
          body: string;
        }>({
          op: "headers",
          createBucket: true,
          bucket: "headers",
          key: "report.csv",
          body: "a,b\n1,2\n",
          headers: sent,
        });
        assert.deepEqual(r.head, sent, "head_object");
        assert.deepEqual(r.get, sent, "get_object");
        assert.equal(r.body, "a,b\n1,2\n", "the gzip bytes come back as they went");
      },
    );

    await t.step(
      "checksums CRC32, CRC32C, SHA1, SHA256 (boto3), CRC64NVME (JS SDK) kept; a wrong one is BadDigest",
      async () => {
        const body = patternBytes(100 * 1024 + 1, 5);
        const src = `${work}/checksummed.bin`;
        await Deno.writeFile(src, body);
        const wrongCrc32 = base64(u32be(crc32(new TextEncoder().encode("other bytes"))));
        type Seen = {
          put: string | null;
          head: string | null;
          get: string | null;
          getBodySha256: string;
          withoutMode: string | null;
        };
        const r = await boto3<
          Record<string, Seen> & {
            botocore: string;
            supported: string[];
            wrong: SeenError;
            wrongStored: SeenError;
          }
        >({ op: "checksums", createBucket: true, bucket: "checksums", source: src, wrongCrc32 });
        const expected: Record<string, string> = {
          CRC32: base64(u32be(crc32(body))),
          CRC32C: base64(u32be(crc32cOf(body))),
          SHA1: createHash("sha1").update(body).digest("base64"),
          SHA256: createHash("sha256").update(body).digest("base64"),
        };
        const sha256Hex = createHash("sha256").update(body).digest("hex");
        for (const [algorithm, value] of Object.entries(expected)) {
          assert.deepEqual(r[algorithm], {
            put: value,
            head: value,
            get: value,
            getBodySha256: sha256Hex,
            withoutMode: null,
          }, algorithm);
        }
        assertError(r.wrong, "BadDigest", 400, "a wrong x-amz-checksum-crc32");
        assertError(r.wrongStored, "404", 404, "a refused put stores nothing");

        // The reference CRC-64/NVME, checked against the catalogue's value.
        assert.equal(
          Buffer.from(crc64nvmeOf(new TextEncoder().encode("123456789"))).toString("hex"),
          "ae8b14860a799888",
        );
        const crc64 = base64(crc64nvmeOf(body));
        if (r.supported.includes("CRC64NVME")) {
          const c = r["CRC64NVME"]!;
          assert.deepEqual([c.put, c.head, c.get], [crc64, crc64, crc64], "boto3 CRC64NVME");
        } else {
          // botocore learnt CRC64NVME in 1.36: the AWS SDK for JavaScript does it instead.
          console.log(`boto3 CRC64NVME skipped: botocore ${r.botocore} has only ${r.supported}`);
        }
        const js = new S3Client({
          endpoint,
          region: "us-east-1",
          forcePathStyle: true,
          credentials: await readS3Credentials(credentials),
        });
        try {
          const target = { Bucket: "checksums", Key: "ck-crc64nvme-js" };
          const put = await js.send(
            new PutObjectCommand({ ...target, Body: body, ChecksumAlgorithm: "CRC64NVME" }),
          );
          const head = await js.send(new HeadObjectCommand({ ...target, ChecksumMode: "ENABLED" }));
          // The SDK checks the body it reads against the checksum header.
          const got = await js.send(new GetObjectCommand({ ...target, ChecksumMode: "ENABLED" }));
          assertSameBytes(await got.Body!.transformToByteArray(), body, "CRC64NVME object");
          assert.deepEqual(
            [put.ChecksumCRC64NVME, head.ChecksumCRC64NVME, got.ChecksumCRC64NVME],
            [crc64, crc64, crc64],
            "JS SDK CRC64NVME",
          );
        } finally {
          js.destroy();
        }
      },
    );

    await t.step(
      "boto3 ranges 0-9, -5, 10-, unsatisfiable; If-None-Match 304, If-Match 412",
      async () => {
        const body = patternBytes(1000, 6);
        const src = `${work}/ranged.bin`;
        await Deno.writeFile(src, body);
        type Ranged = { status: number; contentRange: string; length: number; body: string };
        const r = await boto3<
          Record<string, Ranged> & {
            etag: string;
            unsatisfiable: SeenError;
            ifNoneMatchSame: SeenError;
            headIfNoneMatchSame: SeenError;
            ifNoneMatchOther: number;
            ifMatchWrong: SeenError;
            headIfMatchWrong: SeenError;
            ifMatchSame: number;
          }
        >({
          op: "ranges",
          createBucket: true,
          bucket: "ranges",
          key: "r.bin",
          source: src,
          ranges: ["bytes=0-9", "bytes=-5", "bytes=10-"],
          unsatisfiable: "bytes=1000-",
        });
        assert.equal(r.etag, md5ETag(body));
        const hex = (a: number, b: number) => Buffer.from(body.subarray(a, b + 1)).toString("hex");
        const served: Array<[string, number, number]> = [
          ["bytes=0-9", 0, 9],
          ["bytes=-5", 995, 999],
          ["bytes=10-", 10, 999],
        ];
        for (const [spec, first, last] of served) {
          assert.deepEqual(r[spec], {
            status: 206,
            contentRange: `bytes ${first}-${last}/1000`,
            length: last - first + 1,
            body: hex(first, last),
          }, spec);
        }
        assertError(r.unsatisfiable, "InvalidRange", 416, "bytes=1000- of 1000 bytes");
        assertError(r.ifNoneMatchSame, "304", 304, "GET If-None-Match: its ETag");
        assertError(r.headIfNoneMatchSame, "304", 304, "HEAD If-None-Match: its ETag");
        assert.equal(r.ifNoneMatchOther, 200);
        assertError(r.ifMatchWrong, "PreconditionFailed", 412, "GET If-Match: another ETag");
        assertError(r.headIfMatchWrong, "412", 412, "HEAD If-Match: another ETag");
        assert.equal(r.ifMatchSame, 200);
      },
    );

    await t.step(
      "boto3 get_object and head_object by PartNumber: one part, its range and the part count",
      async () => {
        await Deno.writeFile(`${work}/single.bin`, patternBytes(300, 7));
        const single = await aws(
          "s3",
          "cp",
          "--only-show-errors",
          `${work}/single.bin`,
          "s3://mpu/single",
        );
        assert.equal(single.code, 0, single.stderr);
        type Got = {
          status: number;
          contentRange: string | null;
          length: number;
          partsCount: number | null;
          etag: string;
          bodyLength: number;
          bodySha256: string;
        };
        type Head = { status: number; length: number; partsCount: number | null; etag: string };
        const r = await boto3<{
          get: Record<string, Got>;
          head: Record<string, Head>;
          beyond: SeenError;
          headBeyond: SeenError;
          withRange: SeenError;
          singleBeyond: SeenError;
        }>({
          op: "partNumber",
          bucket: "mpu",
          multipart: "obj",
          copy: "obj-copy",
          single: "single",
        });
        const size = mpuBytes.length;
        const etag = multipartETag(mpuParts);
        const starts = [0, 5 * MiB, 10 * MiB];
        for (const [i, part] of mpuParts.entries()) {
          const expected = {
            status: 206,
            contentRange: `bytes ${starts[i]}-${starts[i]! + part.length - 1}/${size}`,
            length: part.length,
            partsCount: 3,
            etag,
            bodyLength: part.length,
            bodySha256: sha256Hex(part),
          };
          assert.deepEqual(r.get[`obj ${i + 1}`], expected, `get_object PartNumber=${i + 1}`);
          assert.deepEqual(r.get[`obj-copy ${i + 1}`], expected, `copy PartNumber=${i + 1}`);
          assert.deepEqual(
            r.head[`obj ${i + 1}`],
            { status: 206, length: part.length, partsCount: 3, etag },
            `head_object PartNumber=${i + 1}`,
          );
        }
        assertError(r.beyond, "InvalidPartNumber", 416, "get_object PartNumber=4 of 3 parts");
        assert.equal(r.beyond.message, "The requested partnumber is not satisfiable");
        assertError(r.headBeyond, "416", 416, "head_object PartNumber=4 of 3 parts");
        assertError(r.withRange, "InvalidRequest", 400, "PartNumber=1 with Range");
        // A single-part object: part 1 is the whole object, 200, without a part count.
        const whole = patternBytes(300, 7);
        assert.deepEqual(r.get["single 1"], {
          status: 200,
          contentRange: null,
          length: whole.length,
          partsCount: null,
          etag: md5ETag(whole),
          bodyLength: whole.length,
          bodySha256: sha256Hex(whole),
        });
        assert.deepEqual(r.head["single 1"], {
          status: 200,
          length: whole.length,
          partsCount: null,
          etag: md5ETag(whole),
        });
        assertError(r.singleBeyond, "InvalidPartNumber", 416, "single-part PartNumber=2");
      },
    );

    await t.step(
      "boto3 signing with a wrong secret, an unknown key or a clock 20 minutes slow is refused",
      async () => {
        const { accessKeyId, secretAccessKey } = await readS3Credentials(credentials);
        const r = await boto3<Record<string, SeenError>>({
          op: "auth",
          bucket: "cpb",
          objkey: "o-1",
          key: accessKeyId,
          secret: secretAccessKey,
          skewMinutes: 20,
        });
        assert.equal(r.right!.code, "OK", "the right key signs fine");
        assert.deepEqual(
          [r.wrongSecret, r.unknownKey, r.skewed].map((e) => [e!.code, e!.status]),
          [
            ["SignatureDoesNotMatch", 403],
            ["InvalidAccessKeyId", 403],
            ["RequestTimeTooSkewed", 403],
          ],
        );
      },
    );

    await t.step(
      "boto3 reuses a connection after Expect: 100-continue puts answered without 100 Continue",
      async () => {
        // botocore 1.29 misreads the next response on such a connection and waits out its
        // read timeout: `aws s3 sync` of a tree with an empty file stalled 60 s so.
        const puts: Array<[string, string, number]> = [
          ["expect", "empty", 0],
          ["expect", "full", 70_000],
          ["no-such-bucket", "refused", 70_000],
          ["expect", "after-refused", 1000],
          ["expect", "empty-again", 0],
          ["expect", "last", 5],
        ];
        const r = await boto3<Record<string, { result: string; seconds: number }>>({
          op: "expect100",
          createBucket: true,
          bucket: "expect",
          readTimeoutS: 5,
          puts,
        });
        const results = Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v.result]));
        assert.deepEqual(results, {
          empty: "OK",
          full: "OK",
          refused: "NoSuchBucket",
          "after-refused": "OK",
          "empty-again": "OK",
          last: "OK",
        });
        for (const [key, { seconds }] of Object.entries(r)) {
          assert.ok(seconds < 4, `${key}: ${seconds} s`);
        }
      },
    );
  } finally {
    const code = await server.stop("SIGTERM");
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    await Deno.remove(work, { recursive: true }).catch(() => {});
    assert.equal(code, 0, server.stderr());
  }
});
