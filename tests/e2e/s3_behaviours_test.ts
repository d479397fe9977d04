// S3 behaviours that clients, SDKs and test suites rely on, each shown with a real client
// (boto3, or the AWS SDK for JavaScript where boto3 cannot send the request) against one real
// `kiseki server` process. Every expected value is computed here, never read from the server.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { crc32 } from "node:zlib";
// The AWS SDK for JavaScript: where Debian's boto3 (botocore 1.29) has no parameter for what
// a step sends (conditional writes, ListBuckets pages) or sends no trailer.
import {
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListBucketsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type UploadPartCommandOutput,
  UploadPartCopyCommand,
  // deno-lint-ignore no-import-prefix
} from "npm:@aws-sdk/client-s3@3.1175.0";
import { readS3Credentials, ROOT, run, startRole, testAddrs, waitForHttp } from "./_role.ts";

const PY = "/usr/bin/python3";
const BOTO3_DRIVER = `${ROOT}tests/e2e/testdata/s3_behaviours_boto3.py`;

/** An S3 error as boto3 saw it ("OK" when the call succeeded). */
interface SeenError {
  code: string;
  status?: number;
}

function assertError(seen: SeenError, code: string, status: number, what: string): void {
  assert.deepEqual({ code: seen.code, status: seen.status }, { code, status }, what);
}

/** What a JS SDK call answered: "OK", or the S3 error code and HTTP status. */
async function jsError(call: Promise<unknown>): Promise<SeenError> {
  try {
    await call;
    return { code: "OK" };
  } catch (e) {
    const err = e as { name: string; $metadata?: { httpStatusCode?: number } };
    return { code: err.name, status: err.$metadata?.httpStatusCode };
  }
}

function md5ETag(text: string): string {
  return `"${createHash("md5").update(text, "latin1").digest("hex")}"`;
}

/** S3's multipart ETag: MD5 of the parts' binary MD5s, then "-<parts>". */
function multipartETag(parts: string[]): string {
  const outer = createHash("md5");
  for (const p of parts) outer.update(createHash("md5").update(p, "latin1").digest());
  return `"${outer.digest("hex")}-${parts.length}"`;
}

function u32be(value: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value >>> 0);
  return out;
}

/**
 * `encoding-type=url` as AWS applies it, derived independently of the gateway: percent-encoding
 * of everything but RFC 3986's unreserved characters, `/` kept (ceph s3-tests'
 * test_bucket_list_encoding_basic: `quux ab/` is `quux%20ab/`, `foo+1/` is `foo%2B1/`; AWS's
 * documentation: `test_file(3).png` is `test_file%283%29.png`).
 */
function awsUrlEncode(text: string): string {
  return encodeURIComponent(text)
    .replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replaceAll("%2F", "/");
}

Deno.test("S3 behaviours AWS clients rely on, against a real kiseki server", async (t) => {
  const dataDir = await Deno.makeTempDir({ prefix: "kiseki-e2e-s3b-" });
  const env = { ...testAddrs(57), KISEKI_DATA_DIR: dataDir };
  const server = startRole("server", env);
  const endpoint = `http://${env.KISEKI_S3_ADDR}`;
  const credentials = `${dataDir}.s3-credentials`;
  const clientEnv = {
    AWS_SHARED_CREDENTIALS_FILE: credentials,
    AWS_CONFIG_FILE: "/dev/null",
    AWS_DEFAULT_REGION: "us-east-1",
  };
  // deno-lint-ignore no-explicit-any
  const boto3 = async <T = any>(job: Record<string, unknown>): Promise<T> => {
    const r = await run(PY, [BOTO3_DRIVER, JSON.stringify({ endpoint, ...job })], {
      env: clientEnv,
    });
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as T;
  };
  const js = new S3Client({
    endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: () => readS3Credentials(credentials),
    // An error must reach the test as it was answered, not retried away.
    maxAttempts: 1,
  });
  const jsBody = async (Bucket: string, Key: string) =>
    await (await js.send(new GetObjectCommand({ Bucket, Key }))).Body!.transformToString("latin1");
  try {
    await waitForHttp(`http://${env.KISEKI_METRICS_ADDR}/health`, "OK", 60_000);
    // The server writes its first S3 key shortly after it answers health: wait for it
    // (bounded), so no client starts without credentials.
    for (let attempt = 0;; attempt++) {
      try {
        await readS3Credentials(credentials);
        break;
      } catch (e) {
        if (attempt >= 100) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }

    await t.step(
      "DeleteBucket aborts the open uploads of a bucket holding only uploads",
      async () => {
        const r = await boto3({
          op: "delete-bucket-uploads",
          createBucket: true,
          bucket: "only-uploads",
          other: "object-and-upload",
        });
        assert.equal(r.uploadsBefore, 3);
        assert.equal(r.delete.code, "OK", JSON.stringify(r.delete));
        assertError(r.headAfter, "404", 404, "the bucket is gone");
        assertError(r.deleteOther, "BucketNotEmpty", 409, "a bucket with an object stays");
        assert.equal(r.uploadsOther, 1, "and keeps its upload");
      },
    );

    await t.step(
      "CompleteMultipartUpload: repeats, unknown ids, empty and repeated parts",
      async () => {
        const part = "the only part";
        const dupFirst = "part one, first upload";
        const dupSecond = "part one, uploaded again";
        const r = await boto3({
          op: "complete-shapes",
          createBucket: true,
          bucket: "complete",
          part,
          dupFirst,
          dupSecond,
        });
        const etag = multipartETag([part]);
        assert.equal(r.etag, etag);
        assert.deepEqual([r.againStatus, r.againETag], [200, etag], "a repeat answers the same");
        assertError(r.unknown, "NoSuchUpload", 404, "an unknown upload id");
        assertError(r.unknownGarbage, "NoSuchUpload", 404, "an upload id of another shape");
        assertError(r.emptyBody, "MalformedXML", 400, "a completion without a body");
        // AWS takes a part number listed twice (ceph's s3-tests
        // test_multipart_resend_first_finishes_last, run against AWS, completes so): the
        // part is used once, as last uploaded, and the object's ETag counts one part.
        assert.equal(r.dupETag, multipartETag([dupSecond]));
        assert.equal(r.dupBody, dupSecond);
        assertError(r.descending, "InvalidPartOrder", 400, "part 2 listed before part 1");
      },
    );

    await t.step("CompleteMultipartUpload honours If-None-Match: * and If-Match", async () => {
      const Bucket = "complete-conditions";
      await js.send(new CreateBucketCommand({ Bucket }));
      const original = "the object before any completion";
      const part = "the only part";
      await js.send(new PutObjectCommand({ Bucket, Key: "k", Body: original }));
      const upload = async (Key: string) => {
        const { UploadId } = await js.send(new CreateMultipartUploadCommand({ Bucket, Key }));
        const { ETag } = await js.send(
          new UploadPartCommand({ Bucket, Key, UploadId, PartNumber: 1, Body: part }),
        );
        const complete = (conditions: { IfNoneMatch?: string; IfMatch?: string } = {}) =>
          js.send(
            new CompleteMultipartUploadCommand({
              Bucket,
              Key,
              UploadId,
              MultipartUpload: { Parts: [{ PartNumber: 1, ETag }] },
              ...conditions,
            }),
          );
        return complete;
      };
      const etag = multipartETag([part]);
      const complete = await upload("k");
      assertError(
        await jsError(complete({ IfNoneMatch: "*" })),
        "PreconditionFailed",
        412,
        "If-None-Match: * on an existing key",
      );
      assert.equal(await jsBody(Bucket, "k"), original, "nothing overwritten");
      assertError(
        await jsError(complete({ IfMatch: md5ETag("something else") })),
        "PreconditionFailed",
        412,
        "If-Match: another ETag",
      );
      const done = await complete({ IfMatch: md5ETag(original) });
      assert.equal(done.ETag, etag, "If-Match: the current ETag completes");
      assert.equal(await jsBody(Bucket, "k"), part);
      // Repeated, with or without the first conditions: 200 and the same ETag.
      assert.equal((await complete()).ETag, etag);
      assert.equal((await complete({ IfMatch: md5ETag(original) })).ETag, etag);
      const fresh = await upload("fresh");
      assert.equal((await fresh({ IfNoneMatch: "*" })).ETag, etag, "a free key completes");
    });

    await t.step("UploadPartCopy with a range past the source's end is InvalidRange", async () => {
      const source = "0123456789".repeat(10);
      const r = await boto3({
        op: "upload-part-copy-range",
        createBucket: true,
        bucket: "part-copy",
        source,
        ranges: { lastPastEnd: "bytes=50-100", firstPastEnd: "bytes=100-150" },
        inside: `bytes=0-${source.length - 1}`,
      });
      assertError(r.lastPastEnd, "InvalidRange", 416, "bytes=50-100 of 100 bytes");
      assertError(r.firstPastEnd, "InvalidRange", 416, "bytes=100-150 of 100 bytes");
      assert.equal(r.inside, md5ETag(source));
    });

    await t.step("PutObject honours If-None-Match with ETags and If-Match", async () => {
      const Bucket = "put-conditions";
      await js.send(new CreateBucketCommand({ Bucket }));
      const [first, second, third] = ["first body", "second body", "third body"];
      const put = (Key: string, Body: string, c: { IfNoneMatch?: string; IfMatch?: string }) =>
        js.send(new PutObjectCommand({ Bucket, Key, Body, ...c }));
      await put("c", first, {});
      assertError(
        await jsError(put("c", "no", { IfNoneMatch: md5ETag(first) })),
        "PreconditionFailed",
        412,
        "If-None-Match: its ETag",
      );
      assert.equal(await jsBody(Bucket, "c"), first);
      assert.equal(
        (await put("c", second, { IfNoneMatch: md5ETag("other") })).ETag,
        md5ETag(second),
      );
      assertError(
        await jsError(put("c", "no", { IfMatch: md5ETag(first) })),
        "PreconditionFailed",
        412,
        "If-Match: a former ETag",
      );
      assert.equal((await put("c", third, { IfMatch: md5ETag(second) })).ETag, md5ETag(third));
      assert.equal(await jsBody(Bucket, "c"), third);
      assertError(
        await jsError(put("none", "x", { IfMatch: md5ETag(first) })),
        "NoSuchKey",
        404,
        "If-Match on a missing key",
      );
      await put("new", "n", { IfNoneMatch: md5ETag(first) });
      assert.equal(await jsBody(Bucket, "new"), "n", "If-None-Match: an ETag, on a missing key");
    });

    await t.step(
      "encoding-type=url encodes as AWS, the fields AWS encodes, in every listing",
      async () => {
        const keys = [
          "foo+1/bar",
          "foo/bar/xyzzy",
          "quux ab/thud",
          "asdf+b",
          "sp ace(1).txt",
          "\u00fc/x",
        ];
        const uploadKeys = ["up load", "up+load2"];
        const query = {
          delimiter: "/",
          marker: "asdf+b",
          startAfter: "asdf+b",
          prefix: "quux ab/",
          prefixAll: "",
        };
        const r = await boto3({
          op: "listing-encoding",
          createBucket: true,
          bucket: "encoding",
          keys,
          uploadKeys,
          query,
        });
        const sorted = [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
        const enc = awsUrlEncode;
        // ListObjects (v1): Delimiter, Marker, Prefix, NextMarker and Key are encoded.
        assert.deepEqual(r.v1, {
          Prefix: "",
          Marker: enc(query.marker),
          NextMarker: enc("foo+1/"),
          Delimiter: enc("/"),
          Keys: [],
          CommonPrefixes: [enc("foo+1/")],
          EncodingType: "url",
        });
        assert.equal(r.v1.Marker, "asdf%2Bb");
        assert.deepEqual(r.v1Prefix, { Prefix: enc(query.prefix), Keys: [enc("quux ab/thud")] });
        assert.equal(r.v1Prefix.Prefix, "quux%20ab/", "a space is %20, not +");
        // ListObjectsV2: Delimiter, Prefix, Key and StartAfter; not the bucket, not tokens.
        assert.deepEqual(r.v2, {
          StartAfter: enc(query.startAfter),
          Delimiter: "/",
          Name: "encoding",
          Keys: [enc("sp ace(1).txt")],
          CommonPrefixes: ["foo+1/", "foo/", "quux ab/", "\u00fc/"].map(enc),
        });
        assert.equal(r.v2.Keys[0], "sp%20ace%281%29.txt");
        assert.equal(r.v2Token.echoed, r.v2Token.sent, "the continuation token is not encoded");
        assert.deepEqual(r.v2Decoded, sorted, "botocore decodes what it asked for");
        // An empty continuation token is no token: the first page, and none echoed.
        assert.deepEqual(r.v2EmptyToken, { keys: sorted, echoed: null });
        // ListObjectVersions: KeyMarker, NextKeyMarker, Prefix, Key (and Delimiter).
        assert.deepEqual(r.versions, {
          KeyMarker: enc(query.marker),
          NextKeyMarker: enc("foo+1/bar"),
          Prefix: "",
          Keys: [enc("foo+1/bar")],
        });
        // ListMultipartUploads: KeyMarker, NextKeyMarker, Prefix, Key (and Delimiter).
        assert.deepEqual(r.uploads.Keys, [enc("up load")]);
        assert.equal(r.uploads.Keys[0], "up%20load");
        assert.equal(r.uploads.KeyMarker, enc(query.marker));
        assert.equal(r.uploads.NextKeyMarker, enc("up load"));
        assert.equal(r.uploads.Prefix, "");
      },
    );

    await t.step(
      "ListBuckets pages with max-buckets and continuation-token under a prefix",
      async () => {
        const names = ["lb-a1", "lb-a2", "lb-a3", "lb-b1"];
        for (const Bucket of names) await js.send(new CreateBucketCommand({ Bucket }));
        const first = await js.send(new ListBucketsCommand({ MaxBuckets: 2, Prefix: "lb-a" }));
        assert.deepEqual(first.Buckets!.map((b) => b.Name), ["lb-a1", "lb-a2"]);
        assert.equal(first.Prefix, "lb-a");
        assert.equal(typeof first.ContinuationToken, "string");
        const second = await js.send(
          new ListBucketsCommand({
            MaxBuckets: 2,
            Prefix: "lb-a",
            ContinuationToken: first.ContinuationToken,
          }),
        );
        assert.deepEqual(second.Buckets!.map((b) => b.Name), ["lb-a3"]);
        assert.equal(second.ContinuationToken, undefined, "the last page names no next one");
        const all = (await js.send(new ListBucketsCommand({}))).Buckets!.map((b) => b.Name!);
        for (const name of names) assert.ok(all.includes(name), `${name} in the full listing`);
        assertError(
          await jsError(js.send(new ListBucketsCommand({ ContinuationToken: "!!" }))),
          "InvalidArgument",
          400,
          "a token that is not ours",
        );
      },
    );

    await t.step(
      "Content-Encoding and the other stored headers come back byte for byte",
      async () => {
        const headers = {
          "content-encoding": "gzip,  identity",
          "cache-control": "no-cache,  max-age=0,private",
          "content-disposition": 'attachment; filename="a  b.txt"',
          "content-language": "en-US, de",
          "content-type": "text/plain;charset=UTF-8",
        };
        const r = await boto3({
          op: "stored-headers",
          createBucket: true,
          bucket: "headers",
          headers,
        });
        assert.deepEqual(r.head, headers, "HEAD");
        assert.deepEqual(r.get, headers, "GET");
      },
    );

    await t.step("user metadata has AWS's 2 KiB limit, apart from the stored headers", async () => {
      // AWS measures user metadata as the UTF-8 bytes of each name (without x-amz-meta-) and
      // value: exactly 2,048 here, beside 3,000 bytes of Content-Disposition.
      const metadata = { k1: "v".repeat(998), k2: "w".repeat(1046) };
      const size = Object.entries(metadata).reduce((n, [k, v]) => n + k.length + v.length, 0);
      assert.equal(size, 2048);
      const disposition = `attachment; filename="${"d".repeat(3000 - 23)}"`;
      assert.equal(disposition.length, 3000);
      const over = { k1: "v".repeat(2047) };
      const r = await boto3({
        op: "metadata-limits",
        createBucket: true,
        bucket: "metadata",
        metadata,
        disposition,
        over,
      });
      assert.equal(r.put, 200);
      assert.deepEqual(r.metadata, metadata);
      assert.equal(r.disposition, disposition);
      assertError(r.over, "MetadataTooLarge", 400, "2,049 bytes of user metadata");
      assertError(r.overMultipart, "MetadataTooLarge", 400, "on CreateMultipartUpload too");
    });

    await t.step(
      "checksums: the algorithm of an upload, BadDigest, kept by CopyObject REPLACE",
      async () => {
        const body = "checksummed body ".repeat(20);
        const crc = crc32(Buffer.from(body, "latin1"));
        const r = await boto3({
          op: "checksums",
          createBucket: true,
          bucket: "checksums",
          body,
          wrongCrc32: Buffer.from(u32be(crc ^ 1)).toString("base64"),
        });
        assert.equal(r.createAlgorithm, "CRC32");
        assertError(r.wrong, "BadDigest", 400, "a wrong x-amz-checksum-crc32");
        assertError(r.wrongStored, "404", 404, "a refused put stores nothing");
        assert.deepEqual(r.copy, {
          sha256: createHash("sha256").update(body, "latin1").digest("base64"),
          metadata: { replaced: "yes" },
          type: "text/x",
        });
      },
    );

    await t.step("a checksum sent in an aws-chunked trailer is stored and returned", async () => {
      const body = new TextEncoder().encode("trailing checksum body ".repeat(100));
      const expected = Buffer.from(u32be(crc32(body))).toString("base64");
      const js = new S3Client({
        endpoint,
        region: "us-east-1",
        forcePathStyle: true,
        credentials: await readS3Credentials(credentials),
      });
      let sent: Record<string, string> = {};
      // Records what the SDK sent, to be sure the checksum travelled in a trailer.
      js.middlewareStack.add(
        (next) => (args) => {
          sent = { ...(args.request as { headers: Record<string, string> }).headers };
          return next(args);
        },
        { step: "finalizeRequest", name: "recordHeaders", priority: "low" },
      );
      try {
        const target = { Bucket: "checksums", Key: "trailer" };
        await js.send(
          new PutObjectCommand({
            ...target,
            Body: Readable.from([body]),
            ContentLength: body.length,
            ChecksumAlgorithm: "CRC32",
          }),
        );
        assert.equal(sent["x-amz-trailer"], "x-amz-checksum-crc32", JSON.stringify(sent));
        const head = await js.send(new HeadObjectCommand({ ...target, ChecksumMode: "ENABLED" }));
        assert.equal(head.ChecksumCRC32, expected);
        assert.equal(head.ContentLength, body.length);
        assert.equal(head.ContentEncoding, undefined, "aws-chunked framed the upload only");
      } finally {
        js.destroy();
      }
    });

    await t.step("multipart completion stores a COMPOSITE or FULL_OBJECT checksum", async () => {
      const Bucket = "mpu-checksums";
      await js.send(new CreateBucketCommand({ Bucket }));
      const MiB = 1 << 20;
      let seed = 11;
      const bytes = (n: number) =>
        Uint8Array.from({ length: n }, () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24);
      const parts = [bytes(5 * MiB), bytes(4321)];
      const whole = Buffer.concat(parts);
      const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest();
      const upload = async (
        Key: string,
        algorithm: "SHA256" | "CRC32",
        type: "COMPOSITE" | "FULL_OBJECT",
      ) => {
        const created = await js.send(
          new CreateMultipartUploadCommand({
            Bucket,
            Key,
            ChecksumAlgorithm: algorithm,
            ChecksumType: type,
          }),
        );
        assert.deepEqual([created.ChecksumAlgorithm, created.ChecksumType], [algorithm, type]);
        const UploadId = created.UploadId!;
        const answers: UploadPartCommandOutput[] = [];
        for (const [i, Body] of parts.entries()) {
          answers.push(
            await js.send(
              new UploadPartCommand({
                Bucket,
                Key,
                UploadId,
                PartNumber: i + 1,
                Body,
                ChecksumAlgorithm: algorithm,
              }),
            ),
          );
        }
        return { UploadId, answers };
      };

      // COMPOSITE SHA-256: the SHA-256 of the parts' SHA-256s, then "-<parts>".
      const composite = await upload("composite", "SHA256", "COMPOSITE");
      const partSums = parts.map((p) => sha256(p).toString("base64"));
      assert.deepEqual(composite.answers.map((a) => a.ChecksumSHA256), partSums);
      const listed = (wrongFirst: boolean) =>
        partSums.map((sum, i) => ({
          PartNumber: i + 1,
          ETag: composite.answers[i]!.ETag,
          ChecksumSHA256: wrongFirst && i === 0 ? partSums[1] : sum,
        }));
      const completeComposite = (wrongFirst: boolean) =>
        js.send(
          new CompleteMultipartUploadCommand({
            Bucket,
            Key: "composite",
            UploadId: composite.UploadId,
            MultipartUpload: { Parts: listed(wrongFirst) },
          }),
        );
      assertError(
        await jsError(completeComposite(true)),
        "InvalidPart",
        400,
        "a part listed with another part's checksum",
      );
      const expectedComposite = `${
        sha256(Buffer.concat(parts.map((p) => sha256(p)))).toString("base64")
      }-${parts.length}`;
      assert.equal((await completeComposite(false)).ChecksumSHA256, expectedComposite);
      // A repeated completion answers the same checksum.
      assert.equal((await completeComposite(false)).ChecksumSHA256, expectedComposite);
      const headComposite = await js.send(
        new HeadObjectCommand({ Bucket, Key: "composite", ChecksumMode: "ENABLED" }),
      );
      assert.deepEqual(
        [headComposite.ChecksumSHA256, headComposite.ChecksumType],
        [expectedComposite, "COMPOSITE"],
      );

      // FULL_OBJECT CRC32: the CRC32 of the whole object, which the client sends and the
      // server checks against the one it makes from the parts'.
      const full = await upload("full", "CRC32", "FULL_OBJECT");
      const expectedFull = Buffer.from(u32be(crc32(whole))).toString("base64");
      const completeFull = (ChecksumCRC32: string) =>
        js.send(
          new CompleteMultipartUploadCommand({
            Bucket,
            Key: "full",
            UploadId: full.UploadId,
            ChecksumCRC32,
            ChecksumType: "FULL_OBJECT",
            MultipartUpload: {
              Parts: full.answers.map((a, i) => ({
                PartNumber: i + 1,
                ETag: a.ETag,
                ChecksumCRC32: a.ChecksumCRC32,
              })),
            },
          }),
        );
      const wrongFull = Buffer.from(u32be(crc32(whole) ^ 1)).toString("base64");
      assertError(await jsError(completeFull(wrongFull)), "BadDigest", 400, "a wrong whole CRC");
      assert.equal((await completeFull(expectedFull)).ChecksumCRC32, expectedFull);
      const got = await js.send(
        new GetObjectCommand({ Bucket, Key: "full", ChecksumMode: "ENABLED" }),
      );
      // The SDK checks the body it reads against the whole-object checksum.
      assert.equal(Buffer.compare(await got.Body!.transformToByteArray(), whole), 0);
      assert.deepEqual([got.ChecksumCRC32, got.ChecksumType], [expectedFull, "FULL_OBJECT"]);

      // Parts copied with UploadPartCopy get the upload's checksum of the bytes copied.
      const { UploadId } = await js.send(
        new CreateMultipartUploadCommand({ Bucket, Key: "copied", ChecksumAlgorithm: "SHA256" }),
      );
      const ranges = [[0, 5 * MiB - 1], [5 * MiB, whole.length - 1]];
      const copied = [];
      for (const [i, [first, last]] of ranges.entries()) {
        const r = await js.send(
          new UploadPartCopyCommand({
            Bucket,
            Key: "copied",
            UploadId,
            PartNumber: i + 1,
            CopySource: `${Bucket}/full`,
            CopySourceRange: `bytes=${first}-${last}`,
          }),
        );
        copied.push({
          PartNumber: i + 1,
          ETag: r.CopyPartResult!.ETag,
          ChecksumSHA256: r.CopyPartResult!.ChecksumSHA256,
        });
      }
      assert.deepEqual(copied.map((c) => c.ChecksumSHA256), partSums);
      const done = await js.send(
        new CompleteMultipartUploadCommand({
          Bucket,
          Key: "copied",
          UploadId,
          MultipartUpload: { Parts: copied },
        }),
      );
      assert.equal(done.ChecksumSHA256, expectedComposite);
    });

    await t.step(
      "presigned URLs with X-Amz-Expires below 1 or above 604800 are refused",
      async () => {
        const r = await boto3({
          op: "presign-expires",
          createBucket: true,
          bucket: "presign",
          expires: { zero: 0, week: 604800, overWeek: 604801 },
        });
        assert.deepEqual(r.week, { status: 200, body: "presigned" });
        for (const name of ["zero", "overWeek"]) {
          assert.equal(r[name].status, 403, name);
          assert.match(r[name].body, /<Code>AuthorizationQueryParametersError<\/Code>/, name);
        }
      },
    );
  } finally {
    js.destroy();
    const code = await server.stop("SIGTERM");
    assert.equal(code, 0, server.stderr().slice(-4000));
    await Deno.remove(dataDir, { recursive: true });
  }
});
