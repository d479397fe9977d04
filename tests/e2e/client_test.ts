// The native client library (mod/client/) against a real `kiseki server`: what the client
// writes, S3 reads byte for byte and the other way round; every byte between client and node
// passes a TCP proxy in this test, and neither that capture nor the node's data directory
// holds a plaintext canary; a client of one tenant cannot reach another tenant's chunks.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { connectClusterClient } from "../../mod/client/mod.ts";
import { Prng, toHex } from "../../mod/base/mod.ts";
import {
  CLIENT_SERVICE,
  ClientTransportConnection,
  ClientTransportError,
  createGrpcClient,
  GrpcStatusError,
} from "../../mod/transport/mod.ts";
import { genCerts } from "../../mod/transport/_testing.ts";
import { CompositionError } from "../../mod/composition/mod.ts";
import { log } from "../../mod/obs/mod.ts";
import { canary, needlesOf, scan } from "./_canaries.ts";
import { run, type RunningRole, startRole, testAddrs, waitForHttp } from "./_role.ts";
import { type CapturingProxy, startCapturingProxy } from "./_proxy.ts";

const AWS = "/usr/bin/aws";
const MiB = 1 << 20;
const POOL = JSON.stringify({
  name: "default",
  devices: 6,
  deviceSize: "48MiB",
  segmentSize: "2MiB",
});

async function bodyOf(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Pseudo-random bytes with `marker` written in clear every 64 KiB. */
function bytesWithCanary(size: number, marker: string, seed: number): Uint8Array {
  const out = new Prng(seed).bytes(size);
  const m = new TextEncoder().encode(marker);
  for (let at = 1000; at + m.length <= size; at += 64 * 1024) out.set(m, at);
  return out;
}

function md5(bytes: Uint8Array): string {
  return createHash("md5").update(bytes).digest("hex");
}

Deno.test({
  name: "client library: writes S3 reads and reads S3 writes, no plaintext on the wire or disk",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dataDir = await Deno.makeTempDir({ prefix: "kiseki-e2e-client-" });
    const work = await Deno.makeTempDir({ prefix: "kiseki-e2e-client-work-" });
    const env = {
      ...testAddrs(161),
      KISEKI_DATA_DIR: dataDir,
      // Small devices, so the scan reads every byte of them.
      KISEKI_POOLS: POOL,
      KISEKI_LOG_LEVEL: "warn",
    };
    const [host, port] = env.KISEKI_DATA_ADDR.split(":") as [string, string];
    const proxyHost = host.replace(/\.1$/, ".2");
    let server: RunningRole | null = null;
    let proxy: CapturingProxy | null = null;
    const secret = canary();
    try {
      server = startRole("server", env);
      await waitForHttp(`http://${env.KISEKI_METRICS_ADDR}/health`, "OK", 90_000);
      // The client reaches the node only through the proxy: gRPC and the client transport.
      proxy = startCapturingProxy({
        listenHost: proxyHost,
        targetHost: host,
        ports: [Number(port), Number(port) + 2],
      });
      const client = await connectClusterClient({
        addrs: [{ host: proxyHost, port: Number(port) }],
        tls: null,
        logger: log,
      });
      try {
        const fs = client.backend;
        const bucket = "clientbkt";
        await fs.createNamespace(client.tenantId, bucket);
        const ns = fs.namespace(client.tenantId, bucket);

        // Client writes (several chunks, one of them repeated), S3 reads.
        const big = bytesWithCanary(9 * MiB + 12345, secret, 1);
        const put = await fs.putObject(ns, "from-client.bin", big, {
          contentType: "application/x-test",
          metadata: { origin: "client" },
        });
        assert.equal(put.etag, md5(big));
        assert.equal(put.size, big.length);
        const awsEnv = {
          AWS_SHARED_CREDENTIALS_FILE: `${dataDir}.s3-credentials`,
          AWS_CONFIG_FILE: "/dev/null",
          AWS_DEFAULT_REGION: "us-east-1",
        };
        const aws = (...args: string[]) =>
          run(AWS, ["--endpoint-url", `http://${env.KISEKI_S3_ADDR}`, ...args], { env: awsEnv });
        const down = await aws("s3", "cp", `s3://${bucket}/from-client.bin`, `${work}/down.bin`);
        assert.equal(down.code, 0, down.stderr);
        assert.deepEqual(await Deno.readFile(`${work}/down.bin`), big);
        const head = await aws(
          "s3api",
          "head-object",
          "--bucket",
          bucket,
          "--key",
          "from-client.bin",
        );
        assert.equal(head.code, 0, head.stderr);
        assert.equal(JSON.parse(head.stdout).ETag, `"${md5(big)}"`);
        assert.equal(JSON.parse(head.stdout).Metadata.origin, "client");

        // S3 writes (chunked and inline), the client reads, whole and ranged.
        const fromS3 = bytesWithCanary(5 * MiB + 7, secret, 2);
        await Deno.writeFile(`${work}/up.bin`, fromS3);
        const up = await aws("s3", "cp", `${work}/up.bin`, `s3://${bucket}/from-s3.bin`);
        assert.equal(up.code, 0, up.stderr);
        const got = await fs.getObject(ns, "from-s3.bin");
        assert.equal(got.size, fromS3.length);
        assert.deepEqual(await bodyOf(got.body), fromS3);
        const ranged = await fs.getObject(ns, "from-s3.bin", {
          range: { start: 3 * MiB - 5, end: 4 * MiB + 3 },
        });
        assert.deepEqual(await bodyOf(ranged.body), fromS3.subarray(3 * MiB - 5, 4 * MiB + 4));
        await Deno.writeTextFile(`${work}/small.txt`, "small and inline");
        assert.equal((await aws("s3", "cp", `${work}/small.txt`, `s3://${bucket}/small`)).code, 0);
        const small = await fs.getObject(ns, "small");
        assert.equal(new TextDecoder().decode(await bodyOf(small.body)), "small and inline");

        // A reader keeps the version it opened: reads at any offset, across chunk edges, at
        // and past the end; a replacement later is not seen through it (close-to-open).
        const reader = await client.openReader(ns, "from-s3.bin");
        assert.equal(reader.info.size, fromS3.length);
        for (const [at, n] of [[0, 4096], [3 * MiB - 5, MiB + 9], [5 * MiB, 4096], [1, 1]]) {
          assert.deepEqual(await reader.read(at!, n!), fromS3.subarray(at!, at! + n!));
        }
        assert.equal((await reader.read(fromS3.length + 1, 10)).length, 0);
        const inline = await client.openReader(ns, "small");
        assert.equal(new TextDecoder().decode(await inline.read(6, 3)), "and");
        await Deno.writeTextFile(`${work}/small.txt`, "replaced, and inline");
        assert.equal((await aws("s3", "cp", `${work}/small.txt`, `s3://${bucket}/small`)).code, 0);
        assert.equal(new TextDecoder().decode(await inline.read(6, 3)), "and");
        const reopened = await client.openReader(ns, "small");
        assert.equal(new TextDecoder().decode(await reopened.read(0, 8)), "replaced");
        await Deno.writeTextFile(`${work}/small.txt`, "small and inline");
        assert.equal((await aws("s3", "cp", `${work}/small.txt`, `s3://${bucket}/small`)).code, 0);

        // The client reads back its own write, an empty object, a copy; lists and deletes.
        assert.deepEqual(await bodyOf((await fs.getObject(ns, "from-client.bin")).body), big);
        await fs.putObject(ns, "empty", new Uint8Array(0));
        assert.equal((await fs.headObject(ns, "empty")).size, 0);
        assert.equal((await bodyOf((await fs.getObject(ns, "empty")).body)).length, 0);
        await fs.copyObject(ns, "from-client.bin", ns, "copy.bin");
        const listed = await fs.listObjects(ns, {});
        assert.deepEqual(
          listed.objects.map((o) => o.key),
          ["copy.bin", "empty", "from-client.bin", "from-s3.bin", "small"],
        );
        assert.deepEqual((await fs.deleteObject(ns, "copy.bin")).deleted, true);
        await assert.rejects(
          fs.headObject(ns, "copy.bin"),
          (e: unknown) => e instanceof CompositionError && e.code === "not_found",
        );
        // A stream body: the same bytes again dedup on the node (the upload proves possession).
        const again = await fs.putObject(
          ns,
          "again.bin",
          new Blob([big as Uint8Array<ArrayBuffer>]).stream(),
        );
        assert.equal(again.etag, md5(big));
        assert.deepEqual(await bodyOf((await fs.getObject(ns, "again.bin")).body), big);
      } finally {
        await client.close();
      }
      // A put past what a client keeps for failover still completes (keeping nothing).
      const lean = await connectClusterClient({
        addrs: [{ host: proxyHost, port: Number(port) }],
        tls: null,
        logger: log,
        putRetainedBytesMax: 2 * MiB,
      });
      try {
        const ns = lean.backend.namespace(lean.tenantId, "clientbkt");
        const large = bytesWithCanary(40 * MiB + 3, secret, 5);
        assert.equal((await lean.backend.putObject(ns, "lean.bin", large)).etag, md5(large));
        assert.deepEqual(await bodyOf((await lean.backend.getObject(ns, "lean.bin")).body), large);
      } finally {
        await lean.close();
      }

      // The capture saw the bytes (so an empty scan means something), and no canary.
      const captured = proxy.captured();
      assert.ok(captured.length > 2 * 9 * MiB, `captured ${captured.length} bytes`);
      for (const needle of needlesOf(secret)) {
        assert.equal(captured.indexOf(needle.bytes), -1, `canary (${needle.form}) on the wire`);
      }
      const findings = await scan([dataDir], new Map([[secret, "server"]]));
      assert.deepEqual(findings, [], "canary found in the node's data directory");
    } finally {
      await proxy?.close();
      await server?.stop();
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
      await Deno.remove(`${dataDir}.s3-credentials`).catch(() => {});
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});

const TENANT_A = "6b697365-6b69-4000-8000-00000000c1a1";
const TENANT_B = "6b697365-6b69-4000-8000-00000000c1b2";

Deno.test({
  name: "client library under mTLS: each tenant's client reaches only its own tenant's chunks",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "kiseki-e2e-client-tls-" });
    const env = {
      ...testAddrs(162),
      KISEKI_DATA_DIR: `${dir}/data`,
      KISEKI_POOLS: POOL,
      KISEKI_LOG_LEVEL: "warn",
    };
    const [host, portText] = env.KISEKI_DATA_ADDR.split(":") as [string, string];
    const target = { host, port: Number(portText) };
    const tls = `${dir}/tls`;
    let server: RunningRole | null = null;
    const closers: (() => unknown)[] = [];
    try {
      await genCerts(tls, ["--node", `node1:${host}`, "--tenant", TENANT_A, "--tenant", TENANT_B]);
      const tenantTls = async (t: string) => ({
        ca: await Deno.readTextFile(`${tls}/ca.crt`),
        cert: await Deno.readTextFile(`${tls}/tenant-${t}/client.crt`),
        key: await Deno.readTextFile(`${tls}/tenant-${t}/client.key`),
      });
      const tlsA = await tenantTls(TENANT_A);
      const tlsB = await tenantTls(TENANT_B);
      server = startRole("server", {
        ...env,
        KISEKI_CA_PATH: `${tls}/node1/ca.crt`,
        KISEKI_CERT_PATH: `${tls}/node1/server.crt`,
        KISEKI_KEY_PATH: `${tls}/node1/server.key`,
      });
      await waitForHttp(`http://${env.KISEKI_METRICS_ADDR}/health`, "OK", 90_000);

      const a = await connectClusterClient({ addrs: [target], tls: tlsA, logger: log });
      closers.push(() => a.close());
      const b = await connectClusterClient({ addrs: [target], tls: tlsB, logger: log });
      closers.push(() => b.close());
      assert.equal(toHex(a.tenantId), TENANT_A.replaceAll("-", ""));
      assert.equal(toHex(b.tenantId), TENANT_B.replaceAll("-", ""));

      // A writes; B sees neither A's namespace nor, by the same name, A's objects.
      const secretBytes = bytesWithCanary(3 * MiB + 99, canary(), 3);
      await a.backend.createNamespace(a.tenantId, "same-name");
      const nsA = a.backend.namespace(a.tenantId, "same-name");
      await a.backend.putObject(nsA, "secret.bin", secretBytes);
      assert.deepEqual(
        await bodyOf((await a.backend.getObject(nsA, "secret.bin")).body),
        secretBytes,
      );
      assert.deepEqual(await b.backend.listNamespaces(b.tenantId), []);
      const nsB = b.backend.namespace(b.tenantId, "same-name");
      await assert.rejects(b.backend.getObject(nsB, "secret.bin"), CompositionError);
      await b.backend.createNamespace(b.tenantId, "same-name");
      await assert.rejects(
        b.backend.getObject(nsB, "secret.bin"),
        (e: unknown) => e instanceof CompositionError && e.code === "not_found",
      );
      const own = new Prng(4).bytes(2 * MiB);
      await b.backend.putObject(nsB, "own.bin", own);

      // Even knowing A's chunk ids, B's session gets no key, no bytes and no reference.
      const rawA = createGrpcClient(CLIENT_SERVICE, target, { tls: tlsA });
      closers.push(() => rawA.close());
      const helloA = await rawA.Hello({});
      const manifestA = await rawA.ObjectManifest({
        namespace: "same-name",
        key: "secret.bin",
        session: helloA.session,
      });
      const idsA = manifestA.chunks.map((c) => new Uint8Array(c.chunkId));
      assert.ok(idsA.length >= 1);
      const rawB = createGrpcClient(CLIENT_SERVICE, target, { tls: tlsB });
      closers.push(() => rawB.close());
      const helloB = await rawB.Hello({});
      const keysRefused = await refusal(rawB.ChunkKeys({
        namespace: "same-name",
        key: "own.bin",
        session: helloB.session,
        epoch: manifestA.epoch,
        chunkIds: idsA,
      }));
      assert.equal(keysRefused.codeName, "PERMISSION_DENIED", keysRefused.message);
      const prep = await rawB.PrepareChunks({ session: helloB.session, chunkIds: idsA });
      assert.deepEqual(prep.present, idsA.map(() => true));
      for (const k of prep.keys) assert.equal(k.length, 0, "no key for a stored chunk");
      const proofRefused = await refusal(rawB.ProveChunks({
        session: helloB.session,
        chunkIds: [idsA[0]!],
        proofs: [new Uint8Array(32)],
      }));
      assert.equal(proofRefused.codeName, "PERMISSION_DENIED", proofRefused.message);
      const commitRefused = await refusal(rawB.CommitObject({
        namespace: "same-name",
        key: "stolen.bin",
        session: helloB.session,
        chunks: manifestA.chunks,
        size: secretBytes.length,
        etag: "x",
      }));
      assert.equal(commitRefused.codeName, "FAILED_PRECONDITION", commitRefused.message);
      const port = Number(helloB.transportAddr.split(":").pop());
      const connB = await ClientTransportConnection.connect({
        addr: { host, port },
        session: helloB.session,
        tls: tlsB,
      });
      closers.push(() => connB.close());
      await assert.rejects(
        connB.get(idsA[0]!),
        (e: unknown) => e instanceof ClientTransportError && e.kind === "forbidden",
      );
      // A's session presented under B's certificate is refused at HELLO.
      await assert.rejects(
        ClientTransportConnection.connect({
          addr: { host, port },
          session: helloA.session,
          tls: tlsB,
        }),
        (e: unknown) => e instanceof ClientTransportError && e.kind === "forbidden",
      );
      // And without a certificate there is no call at all.
      const anon = createGrpcClient(CLIENT_SERVICE, target, { tls: { ca: tlsA.ca } });
      closers.push(() => anon.close());
      assert.equal((await refusal(anon.Hello({}))).codeName, "UNAUTHENTICATED");
      // A still reads its object, and B its own.
      assert.deepEqual(
        await bodyOf((await a.backend.getObject(nsA, "secret.bin")).body),
        secretBytes,
      );
      assert.deepEqual(await bodyOf((await b.backend.getObject(nsB, "own.bin")).body), own);
    } finally {
      for (const c of closers.reverse()) await c();
      await server?.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

/** The status a call ends with; fails the test when it succeeds. */
async function refusal(call: Promise<unknown>): Promise<GrpcStatusError> {
  try {
    await call;
  } catch (e) {
    assert.ok(e instanceof GrpcStatusError, String(e));
    return e;
  }
  assert.fail("the call was expected to be refused");
}
