// Bodies stream through the S3 gateway: a 1 GiB object goes in as one PUT and comes back
// as one GET while the server's peak resident memory stays far below the object's size.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import http from "node:http";
// Test only: the AWS SDK's SigV4 signer, so requests are signed as an SDK signs them.
// deno-lint-ignore no-import-prefix
import { SignatureV4 } from "npm:@smithy/signature-v4@5.7.5";
import { NodeSha256 } from "../bench/s3_load.ts";
import { readS3Credentials, startRole, testAddrs, waitForHttp } from "./_role.ts";

const MIB = 1024 * 1024;
const OBJECT_BYTES = 1024 * MIB;
const PIECE_BYTES = MIB;
/** The server's chunk cache bound in this test (it holds chunks read, up to its bound). */
const CHUNK_CACHE_BYTES = 32 * MIB;
/**
 * The server's peak RSS may grow by at most this much while the object passes through:
 * the engine's buffer pools (assembly and envelope buffers, bounded) and the chunk cache.
 */
const RSS_GROWTH_MAX_BYTES = 352 * MIB + CHUNK_CACHE_BYTES;
const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/** Peak and current resident set of `pid` in bytes (VmHWM, VmRSS). */
async function memoryOf(pid: number): Promise<{ peak: number; now: number }> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kib = (name: string) => Number(status.match(new RegExp(`^${name}:\\s+(\\d+) kB`, "m"))![1]);
  return { peak: kib("VmHWM") * 1024, now: kib("VmRSS") * 1024 };
}

/** The piece at `index` of the object: a reused buffer stamped so that no chunk repeats. */
function stamp(piece: Uint8Array, index: number): Uint8Array {
  const view = new DataView(piece.buffer, piece.byteOffset, piece.byteLength);
  for (let at = 0; at < piece.length; at += 64 * 1024) view.setUint32(at, index * 131 + at);
  return piece;
}

Deno.test("a 1 GiB object streams through one PUT and one GET with bounded server memory", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "kiseki-e2e-memory-" });
  const addrs = testAddrs(48);
  const server = startRole("server", {
    ...addrs,
    KISEKI_DATA_DIR: dataDir,
    KISEKI_CHUNK_CACHE_MAX: String(CHUNK_CACHE_BYTES),
  });
  try {
    await waitForHttp(`http://${addrs.KISEKI_METRICS_ADDR}/health`, "OK", 60_000);
    const credentials = await readS3Credentials(`${dataDir}.s3-credentials`);
    const [hostname, port] = addrs.KISEKI_S3_ADDR.split(":");
    const signer = new SignatureV4({
      service: "s3",
      region: "us-east-1",
      credentials,
      sha256: NodeSha256,
      uriEscapePath: false,
    });
    const request = async (
      method: string,
      path: string,
      headers: Record<string, string>,
      body?: (write: (b: Uint8Array) => Promise<void>) => Promise<void>,
      onData?: (b: Uint8Array) => void,
    ): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> => {
      const signed = await signer.sign({
        method,
        protocol: "http:",
        hostname: hostname!,
        port: Number(port),
        path,
        query: {},
        headers: { host: addrs.KISEKI_S3_ADDR, ...headers },
      });
      return await new Promise((resolve, reject) => {
        const req = http.request({
          hostname,
          port: Number(port),
          method,
          path,
          headers: signed.headers as Record<string, string>,
        }, (res) => {
          const texts: string[] = [];
          res.on("data", (b: Uint8Array) => {
            if (onData && res.statusCode === 200) onData(b);
            else texts.push(new TextDecoder().decode(b));
          });
          res.on(
            "end",
            () => resolve({ status: res.statusCode!, headers: res.headers, text: texts.join("") }),
          );
          res.on("error", reject);
        });
        req.on("error", reject);
        const write = (b: Uint8Array) =>
          new Promise<void>((ok) => req.write(b) ? ok() : req.once("drain", () => ok()));
        (body ? body(write) : Promise.resolve()).then(() => req.end(), reject);
      });
    };

    const made = await request("PUT", "/big", {
      "x-amz-content-sha256": EMPTY_SHA256,
      "content-length": "0",
    });
    assert.equal(made.status, 200, made.text);
    const before = await memoryOf(server.pid);

    // One PUT of 1 GiB (not multipart), streamed from one reused 1 MiB buffer.
    const sent = createHash("md5");
    const piece = new Uint8Array(PIECE_BYTES).fill(0x5a);
    const put = await request("PUT", "/big/one-gib.bin", {
      "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
      "content-length": String(OBJECT_BYTES),
    }, async (write) => {
      for (let i = 0; i < OBJECT_BYTES / PIECE_BYTES; i++) {
        const b = stamp(piece, i);
        sent.update(b);
        await write(b);
      }
    });
    const md5 = sent.digest("hex");
    assert.equal(put.status, 200, put.text);
    assert.equal(put.headers.etag, `"${md5}"`, "the ETag is the MD5 of the bytes sent");
    const afterPut = await memoryOf(server.pid);

    // One GET of the whole object, hashed as it arrives.
    const got = createHash("md5");
    let gotBytes = 0;
    const get = await request(
      "GET",
      "/big/one-gib.bin",
      {
        "x-amz-content-sha256": EMPTY_SHA256,
      },
      undefined,
      (b) => {
        got.update(b);
        gotBytes += b.length;
      },
    );
    assert.equal(get.status, 200, get.text);
    assert.equal(gotBytes, OBJECT_BYTES);
    assert.equal(got.digest("hex"), md5, "the GET returns the bytes the PUT sent");
    const afterGet = await memoryOf(server.pid);

    const growth = afterGet.peak - before.peak;
    console.log(
      `server RSS peak: ${(before.peak / MIB).toFixed(0)} MiB before, ` +
        `${(afterPut.peak / MIB).toFixed(0)} MiB after the PUT, ` +
        `${(afterGet.peak / MIB).toFixed(0)} MiB after the GET (object ${OBJECT_BYTES / MIB} MiB)`,
    );
    assert.ok(
      growth < RSS_GROWTH_MAX_BYTES,
      `server peak RSS grew by ${(growth / MIB).toFixed(0)} MiB for a ${
        OBJECT_BYTES / MIB
      } MiB object (bound ${RSS_GROWTH_MAX_BYTES / MIB} MiB)`,
    );
  } finally {
    assert.equal(await server.stop("SIGTERM"), 0, server.stderr().slice(-2000));
    await Deno.remove(dataDir, { recursive: true });
  }
});
