// The S3 gateway under hostile or unlucky clients, against a real `kiseki server`: features
// it does not implement are refused rather than ignored (boto3, aws-cli, the JS SDK), bodies
// that end early get IncompleteBody, a client with a wrong secret gets its 403 without the
// upload being read, and connections past the cap get SlowDown.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
// deno-lint-ignore no-import-prefix
import { PutObjectCommand, S3Client } from "npm:@aws-sdk/client-s3@3.1175.0";
import { readS3Credentials, ROOT, run, startRole, testAddrs, waitForHttp } from "./_role.ts";
import { sha256Hex, Signer } from "../fuzz/s3_fuzz.ts";

const PY = "/usr/bin/python3";
const AWS = "/usr/bin/aws";
const S3CMD = "/usr/bin/s3cmd";
const DRIVER = `${ROOT}tests/e2e/testdata/s3_robustness_boto3.py`;
const CONNECTIONS_MAX = 8;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

interface Seen {
  code: string;
  status?: number;
  message?: string;
}

/** Sends `wire` (pieces in order), optionally half-closes, reads until close or `ms`. */
async function raw(
  host: string,
  port: number,
  pieces: Uint8Array[],
  options: { halfClose?: boolean; ms?: number; keep?: boolean } = {},
): Promise<{ text: string; closed: boolean; conn: Deno.TcpConn }> {
  const conn = await Deno.connect({ hostname: host, port });
  for (const p of pieces) await conn.write(p);
  if (options.halfClose) await conn.closeWrite();
  let text = "";
  let closed = false;
  const buf = new Uint8Array(65536);
  const deadline = Date.now() + (options.ms ?? 5000);
  while (Date.now() < deadline) {
    const n = await Promise.race([
      conn.read(buf).catch(() => null),
      new Promise<"wait">((r) => setTimeout(r, Math.max(1, deadline - Date.now()), "wait")),
    ]);
    if (n === "wait") break;
    if (n === null) {
      closed = true;
      break;
    }
    text += decoder.decode(buf.subarray(0, n));
    if (/<\/Error>$/.test(text)) break;
  }
  if (!options.keep) {
    try {
      conn.close();
    } catch { /* closed */ }
  }
  return { text, closed, conn };
}

function requestBytes(head: string, body?: Uint8Array): Uint8Array {
  const h = encoder.encode(head);
  if (body === undefined) return h;
  const out = new Uint8Array(h.length + body.length);
  out.set(h);
  out.set(body, h.length);
  return out;
}

Deno.test("the S3 gateway refuses what it does not implement, bodies cut short, forged uploads and connections past its cap", async (t) => {
  const dataDir = await Deno.makeTempDir({ prefix: "kiseki-e2e-s3rob-" });
  const work = await Deno.makeTempDir({ prefix: "kiseki-e2e-s3rob-work-" });
  const addrs = testAddrs(135);
  const server = startRole("server", {
    ...addrs,
    KISEKI_DATA_DIR: dataDir,
    KISEKI_S3_CONNECTIONS_MAX: String(CONNECTIONS_MAX),
  });
  try {
    await waitForHttp(`http://${addrs.KISEKI_METRICS_ADDR}/health`, "OK", 60_000);
    const key = await readS3Credentials(`${dataDir}.s3-credentials`);
    const endpoint = `http://${addrs.KISEKI_S3_ADDR}`;
    const [host, portText] = addrs.KISEKI_S3_ADDR.split(":");
    const port = Number(portText);
    const bucket = "robust";
    const signer = new Signer({
      host: host!,
      port,
      accessKeyId: key.accessKeyId,
      secretAccessKey: key.secretAccessKey,
      bucket,
    });
    const boto3 = async (job: Record<string, unknown>) => {
      const r = await run(PY, [
        DRIVER,
        JSON.stringify({
          endpoint,
          key: key.accessKeyId,
          secret: key.secretAccessKey,
          bucket,
          ...job,
        }),
      ], { env: { AWS_CONFIG_FILE: "/dev/null", AWS_SHARED_CREDENTIALS_FILE: "/dev/null" } });
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout) as Record<string, Seen>;
    };
    const signedHead = (
      method: string,
      path: string,
      headers: [string, string][],
      payload: string,
    ) => {
      const s = signer.sign(method, path, [], headers, payload, Date.now());
      return `${method} ${path} HTTP/1.1\r\n` + s.headers.map(([n, v]) =>
        `${n}: ${v}\r\n`
      ).join("") +
        "\r\n";
    };

    await t.step(
      "boto3: SSE-C, public ACLs, tags and Object Lock are NotImplemented; no-op values pass",
      async () => {
        const seen = await boto3({ op: "unsupported" });
        for (
          const name of [
            "sseC",
            "sseCMultipart",
            "sseCCopy",
            "sseCGet",
            "aclPublic",
            "tagging",
            "objectLock",
          ]
        ) {
          assert.deepEqual(
            { code: seen[name]!.code, status: seen[name]!.status },
            { code: "NotImplemented", status: 501 },
            name,
          );
        }
        assert.match(seen.sseC!.message!, /SSE-C/);
        assert.equal(seen.sseCStored!.status, 404, "nothing stored under the client's key");
        assert.equal(seen.aclPrivate!.code, "OK");
        assert.equal(seen.legalHoldOff!.code, "OK");
      },
    );

    await t.step(
      "aws-cli refuses --sse-c and stores nothing; aws-cli and s3cmd defaults pass",
      async () => {
        const file = `${work}/f.txt`;
        await Deno.writeTextFile(file, "hello");
        const credentials = `${work}/credentials`;
        await Deno.writeTextFile(
          credentials,
          `[default]\naws_access_key_id = ${key.accessKeyId}\naws_secret_access_key = ${key.secretAccessKey}\n`,
        );
        const env = {
          AWS_SHARED_CREDENTIALS_FILE: credentials,
          AWS_CONFIG_FILE: "/dev/null",
          AWS_DEFAULT_REGION: "us-east-1",
          AWS_MAX_ATTEMPTS: "1",
        };
        const sse = await run(AWS, [
          "--endpoint-url",
          endpoint,
          "s3",
          "cp",
          file,
          `s3://${bucket}/cli-ssec`,
          "--sse-c",
          "AES256",
          "--sse-c-key",
          "0123456789abcdef0123456789abcdef",
        ], { env });
        assert.notEqual(sse.code, 0);
        assert.match(sse.stderr, /NotImplemented/);
        const ls = await run(AWS, [
          "--endpoint-url",
          endpoint,
          "s3",
          "ls",
          `s3://${bucket}/cli-ssec`,
        ], { env });
        assert.equal(ls.stdout.trim(), "", "nothing stored");
        const plain = await run(AWS, [
          "--endpoint-url",
          endpoint,
          "s3",
          "cp",
          file,
          `s3://${bucket}/cli-plain`,
        ], { env });
        assert.equal(plain.code, 0, plain.stderr);
        const cfg = `${work}/s3cfg`;
        await Deno.writeTextFile(
          cfg,
          `[default]\naccess_key = ${key.accessKeyId}\nsecret_key = ${key.secretAccessKey}\n` +
            `host_base = ${addrs.KISEKI_S3_ADDR}\nhost_bucket = ${addrs.KISEKI_S3_ADDR}\nuse_https = False\n` +
            `signature_v2 = False\n`,
        );
        const put = await run(S3CMD, ["-c", cfg, "put", file, `s3://${bucket}/s3cmd-plain`]);
        assert.equal(put.code, 0, put.stderr);
      },
    );

    await t.step("the JS SDK: SSE-C is NotImplemented", async () => {
      const client = new S3Client({
        endpoint,
        region: "us-east-1",
        forcePathStyle: true,
        credentials: key,
        maxAttempts: 1,
      });
      try {
        const e = await client.send(
          new PutObjectCommand({
            Bucket: bucket,
            Key: "sdk-ssec",
            Body: "secret",
            SSECustomerAlgorithm: "AES256",
            SSECustomerKey: Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString(
              "base64",
            ),
          }),
        ).then(() => null, (e) => e);
        assert.equal(e?.name, "NotImplemented");
        assert.equal(e?.$metadata?.httpStatusCode, 501);
      } finally {
        client.destroy();
      }
    });

    await t.step(
      "boto3 with a wrong secret: 403 SignatureDoesNotMatch for a large body, nothing stored",
      async () => {
        const seen = await boto3({ op: "bad-secret", size: 8 << 20 });
        assert.deepEqual({ code: seen.put!.code, status: seen.put!.status }, {
          code: "SignatureDoesNotMatch",
          status: 403,
        });
        assert.equal(seen.stored!.status, 404);
      },
    );

    await t.step(
      "raw: unsigned and forged uploads with Expect: 100-continue get their 403 before any 100 Continue; a signed one gets 100, then 200",
      async () => {
        const path = `/${bucket}/expect`;
        const headOf = (headers: [string, string][]) =>
          `PUT ${path} HTTP/1.1\r\n` + headers.map(([n, v]) => `${n}: ${v}\r\n`).join("") +
          "\r\n";
        const signed = (length: number) =>
          signer.sign(
            "PUT",
            path,
            [],
            [["content-length", String(length)], ["expect", "100-continue"]],
            "UNSIGNED-PAYLOAD",
            Date.now(),
          ).headers;
        const forged = signed(1 << 20).map(([n, v]): [string, string] => [
          n,
          n === "authorization" ? v.replace(/Signature=[0-9a-f]{8}/, "Signature=00000000") : v,
        ]);
        const unsigned: [string, string][] = [
          ["host", `${host}:${port}`],
          ["content-length", String(1 << 20)],
          ["expect", "100-continue"],
        ];
        for (
          const [name, headers, code] of [
            ["forged", forged, "SignatureDoesNotMatch"],
            ["unsigned", unsigned, "AccessDenied"],
          ] as const
        ) {
          // No body byte is ever sent: the 403 must not depend on it.
          const r = await raw(host!, port, [encoder.encode(headOf([...headers]))], { ms: 5000 });
          assert.ok(r.text.startsWith("HTTP/1.1 403 "), `${name}: ${r.text.slice(0, 200)}`);
          assert.doesNotMatch(r.text, /HTTP\/1\.1 100/, name);
          assert.match(r.text, new RegExp(`<Error><Code>${code}</Code>`), name);
          assert.match(r.text, /connection: close/i, name);
        }
        // Signed: 100 Continue once the signature checked out, then the body, then 200.
        const body = encoder.encode("after continue");
        const conn = await Deno.connect({ hostname: host!, port });
        try {
          await conn.write(encoder.encode(headOf(signed(body.length))));
          const buf = new Uint8Array(65536);
          let text = "";
          const read = async (done: (t: string) => boolean) => {
            const deadline = Date.now() + 5000;
            while (!done(text) && Date.now() < deadline) {
              let timer: ReturnType<typeof setTimeout> | undefined;
              const n = await Promise.race([
                conn.read(buf),
                new Promise<null>((r) => timer = setTimeout(r, deadline - Date.now(), null)),
              ]);
              clearTimeout(timer);
              if (n === null) break;
              text += decoder.decode(buf.subarray(0, n));
            }
          };
          await read((t) => t.includes("\r\n\r\n"));
          assert.equal(text, "HTTP/1.1 100 Continue\r\n\r\n");
          await conn.write(body);
          await read((t) => /\r\n\r\nHTTP\/1\.1 \d{3} [\s\S]*\r\n\r\n/.test(t));
          assert.match(text, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
          assert.match(text, /etag: "/i);
        } finally {
          conn.close();
        }
      },
    );

    await t.step(
      "raw: a body shorter than its Content-Length gets 400 IncompleteBody when the client half-closes",
      async () => {
        const path = `/${bucket}/short`;
        const body = crypto.getRandomValues(new Uint8Array(64 * 1024));
        for (const size of [100 * 1024, 4 << 20]) {
          const head = signedHead(
            "PUT",
            path,
            [["content-length", String(size)]],
            "UNSIGNED-PAYLOAD",
          );
          const r = await raw(host!, port, [requestBytes(head, body)], { halfClose: true });
          assert.match(
            r.text,
            /^HTTP\/1\.1 400 [\s\S]*<Code>IncompleteBody<\/Code>/,
            `${size}: ${r.text.slice(0, 200)}`,
          );
        }
        // A signed streaming (aws-chunked) body cut short too.
        const chunked = signedHead("PUT", path, [
          ["content-length", "200"],
          ["content-encoding", "aws-chunked"],
          ["x-amz-decoded-content-length", "100"],
        ], "STREAMING-UNSIGNED-PAYLOAD-TRAILER");
        const r = await raw(host!, port, [requestBytes(chunked, encoder.encode("64\r\nabc"))], {
          halfClose: true,
        });
        assert.match(
          r.text,
          /^HTTP\/1\.1 400 [\s\S]*<Code>(IncompleteBody|MalformedTrailerError)<\/Code>/,
          r.text.slice(0, 300),
        );
        const get = signedHead("GET", path, [], sha256Hex(""));
        const missing = await raw(host!, port, [encoder.encode(get)]);
        assert.match(
          missing.text,
          /^HTTP\/1\.1 404 [\s\S]*<Code>NoSuchKey<\/Code>/,
          "nothing stored",
        );
      },
    );

    await t.step(
      "raw: clients that vanish mid-body leave no 500 and the server serving",
      async () => {
        const path = `/${bucket}/vanish`;
        for (let i = 0; i < 20; i++) {
          const head = signedHead(
            "PUT",
            path,
            [["content-length", String(2 << 20)]],
            "UNSIGNED-PAYLOAD",
          );
          const conn = await Deno.connect({ hostname: host!, port });
          await conn.write(requestBytes(head, new Uint8Array(1000 + i * 5000)));
          conn.close();
        }
        await new Promise((r) => setTimeout(r, 500));
        const seen = await boto3({ op: "ok" });
        assert.equal(seen.got as unknown as string, "after");
        assert.doesNotMatch(server.stderr(), /code=InternalError/);
      },
    );

    await t.step(
      `connections past KISEKI_S3_CONNECTIONS_MAX (${CONNECTIONS_MAX}) get 503 SlowDown with Retry-After`,
      async () => {
        const held: Deno.TcpConn[] = [];
        for (let i = 0; i < CONNECTIONS_MAX; i++) {
          held.push(await Deno.connect({ hostname: host!, port }));
        }
        await new Promise((r) => setTimeout(r, 200));
        const get = signedHead("GET", `/${bucket}/after`, [], sha256Hex(""));
        const refused = await raw(host!, port, [encoder.encode(get)]);
        assert.match(refused.text, /^HTTP\/1\.1 503 /);
        assert.match(refused.text, /retry-after: \d+/i);
        assert.match(refused.text, /<Code>SlowDown<\/Code>/);
        for (const c of held) c.close();
        await new Promise((r) => setTimeout(r, 200));
        const served = await raw(host!, port, [encoder.encode(get)], { ms: 3000 });
        assert.match(served.text, /^HTTP\/1\.1 200 /);
        const metrics = await (await fetch(`http://${addrs.KISEKI_METRICS_ADDR}/metrics`)).text();
        assert.match(metrics, /kiseki_s3_refused_total\{reason="connections"\} [1-9]/);
        assert.match(metrics, /kiseki_engine_read_ahead_limit_bytes 268435456/);
        assert.match(metrics, /kiseki_s3_connections_open \d+/);
      },
    );
  } finally {
    await server.stop();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
});
