// Nothing tenant-readable at rest: a real `kiseki server` (role table flags, small file-device
// pool) takes random canaries through the AWS SDK for JavaScript as bucket names, keys,
// directory names, user metadata and stored headers, object bodies of 1 B, 2 KiB, 4 KiB and
// 256 KiB, and multipart parts (one completed upload, one left open); then, with the node
// stopped, every byte of every file under the data directory (environments, key files,
// config, the pool's device files) is scanned for every canary in clear, as UTF-16 and as
// hex. Scanned after the first start, a restart, overwrites, deletes, and a tenant shred.
//
// There is no NFS gateway yet: NFS-style directory names go in twice, as S3 keys with '/'
// (`d1/d2/file`) through the server, and through the engine's own POSIX operations (mkdir,
// create, write on a posix namespace: what the NFS and FUSE gateways will call) in-process.
//
// The scanner is shown able to fail: the views are copied, records decrypted through the
// node's own keys, into an environment opened without a page key, and the scan must find
// the names, metadata and inline bodies there.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  // deno-lint-ignore no-import-prefix
} from "npm:@aws-sdk/client-s3@3.1175.0";
import { openKvEnv } from "../../mod/disk/mod.ts";
import { selectAead } from "../../mod/crypto/mod.ts";
import { defaultShimOptions } from "../../ffi/loader.ts";
import { LocalKeyStore } from "../../mod/keys/mod.ts";
import { openViewEnv, VIEW_TABLE_NAMES } from "../../mod/view/mod.ts";
import {
  flagsFor,
  readS3Credentials,
  ROOT,
  run,
  type RunningRole,
  startRole,
  testAddrs,
  waitForHttp,
} from "./_role.ts";
import { ROLE_TABLE } from "../../mod/role/mod.ts";
import { ROOT_INODE, toHex } from "../../mod/composition/mod.ts";
import { startEngineStack } from "../../mod/role/engine_stack.ts";
import { createLogger } from "../../mod/obs/mod.ts";
import { bodyOf, canary, filesUnder, type Finding, needlesOf, report, scan } from "./_canaries.ts";

const HOST_OCTET = 57;
const KIB = 1024;
/** Small devices so that a scan reads little: 6 x 24 MiB, EC 4+2. */
const POOL = JSON.stringify({
  name: "default",
  devices: 6,
  deviceSize: "24MiB",
  segmentSize: "2MiB",
});
/** The engine's smallest multipart part (except the last). */
const PART_BYTES = 5 * 1024 * KIB;

// ---- the node ------------------------------------------------------------------------------

interface Node {
  role: RunningRole;
  endpoint: string;
  metrics: string;
}

async function startNode(dataDir: string): Promise<Node> {
  const addrs = testAddrs(HOST_OCTET);
  const role = startRole("server", {
    ...addrs,
    KISEKI_DATA_DIR: dataDir,
    KISEKI_POOLS: POOL,
    KISEKI_LOG_LEVEL: "warn",
  });
  await Promise.race([
    waitForHttp(`http://${addrs.KISEKI_METRICS_ADDR}/health`, "OK", 60_000),
    role.exited.then((code) => {
      throw new Error(`kiseki server exited ${code}: ${role.stderr()}`);
    }),
  ]);
  return {
    role,
    endpoint: `http://${addrs.KISEKI_S3_ADDR}`,
    metrics: `http://${addrs.KISEKI_METRICS_ADDR}`,
  };
}

async function stopNode(node: Node): Promise<void> {
  const code = await node.role.stop("SIGTERM");
  assert.equal(code, 0, `kiseki server exited ${code}: ${node.role.stderr().slice(-3000)}`);
}

async function adminCall(
  dataDir: string,
  node: Node,
  method: string,
  path: string,
): Promise<Record<string, unknown>> {
  const token = (await Deno.readTextFile(`${dataDir}/config/admin-token`)).trim();
  const r = await fetch(`${node.metrics}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}` },
  });
  const body = await r.json() as Record<string, unknown>;
  assert.ok(r.ok, `${method} ${path}: ${r.status} ${JSON.stringify(body)}`);
  return body;
}

function client(node: Node, credentials: { accessKeyId: string; secretAccessKey: string }) {
  return new S3Client({
    endpoint: node.endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials,
    maxAttempts: 1,
  });
}

/** What one tenant writes; every string in `canaries` must never be on disk in clear. */
class TenantLoad {
  readonly canaries = new Map<string, string>();
  readonly bucket: string;
  readonly objects = new Map<string, Uint8Array>();
  openUpload: { key: string; uploadId: string } | null = null;

  constructor(readonly name: string) {
    this.bucket = this.mark("bucket name");
  }

  mark(role: string): string {
    const c = canary();
    this.canaries.set(c, `${this.name}: ${role}`);
    return c;
  }

  async write(s3: S3Client): Promise<void> {
    await s3.send(new CreateBucketCommand({ Bucket: this.bucket }));
    for (
      const [label, size] of [["1 B", 1], ["2 KiB", 2 * KIB], ["4 KiB", 4 * KIB], [
        "256 KiB",
        256 * KIB,
      ]] as const
    ) {
      // Directory names, NFS style: d1/d2/file, each component a canary.
      const key = `${this.mark(`directory of ${label}`)}/${this.mark(`subdirectory of ${label}`)}/${
        this.mark(`key of ${label}`)
      }`;
      await this.put(
        s3,
        key,
        size === 1 ? Uint8Array.of(0x6b) : bodyOf(this.mark(`${label} body`), size),
        label,
      );
    }
    // Multipart: one completed, one left open with a part uploaded.
    const key = `${this.mark("multipart directory")}/${this.mark("multipart key")}`;
    const parts = [
      bodyOf(this.mark("part 1 body"), PART_BYTES),
      bodyOf(this.mark("part 2 body"), 3 * KIB),
    ];
    const created = await s3.send(
      new CreateMultipartUploadCommand({
        Bucket: this.bucket,
        Key: key,
        Metadata: { note: this.mark("multipart metadata value") },
      }),
    );
    const etags: string[] = [];
    for (const [i, part] of parts.entries()) {
      const r = await s3.send(
        new UploadPartCommand({
          Bucket: this.bucket,
          Key: key,
          UploadId: created.UploadId!,
          PartNumber: i + 1,
          Body: part,
        }),
      );
      etags.push(r.ETag!);
    }
    await s3.send(
      new CompleteMultipartUploadCommand({
        Bucket: this.bucket,
        Key: key,
        UploadId: created.UploadId!,
        MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
      }),
    );
    const whole = new Uint8Array(parts[0]!.length + parts[1]!.length);
    whole.set(parts[0]!);
    whole.set(parts[1]!, parts[0]!.length);
    this.objects.set(key, whole);
    const openKey = `${this.mark("open upload directory")}/${this.mark("open upload key")}`;
    const open = await s3.send(
      new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: openKey }),
    );
    await s3.send(
      new UploadPartCommand({
        Bucket: this.bucket,
        Key: openKey,
        UploadId: open.UploadId!,
        PartNumber: 1,
        Body: bodyOf(this.mark("open upload part body"), 4 * KIB),
      }),
    );
    this.openUpload = { key: openKey, uploadId: open.UploadId! };
  }

  async put(s3: S3Client, key: string, body: Uint8Array, label: string): Promise<void> {
    await s3.send(
      new PutObjectCommand({
        Bucket: this.bucket,
        Key: key,
        Body: body,
        Metadata: {
          note: this.mark(`metadata value of ${label}`),
          [`k${this.mark(`metadata key of ${label}`)}`]: "v",
        },
        ContentDisposition: `attachment; filename="${this.mark(`stored header of ${label}`)}"`,
        ContentType: `application/x-${this.mark(`content type of ${label}`)}`,
      }),
    );
    this.objects.set(key, body);
  }

  /** Every object reads back as written (the node really holds what the scan looks for). */
  async verify(s3: S3Client): Promise<void> {
    for (const [key, body] of this.objects) {
      const got = await s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      const bytes = await got.Body!.transformToByteArray();
      assert.equal(bytes.length, body.length, `${this.name} ${key} length`);
      assert.ok(Buffer.from(bytes).equals(Buffer.from(body)), `${this.name} ${key} bytes`);
    }
  }

  async overwrite(s3: S3Client): Promise<void> {
    for (const [key, body] of [...this.objects]) {
      const size = Math.min(body.length, 256 * KIB);
      await this.put(
        s3,
        key,
        size === 1 ? Uint8Array.of(0x6c) : bodyOf(this.mark(`overwrite body ${size}`), size),
        `overwrite ${size}`,
      );
    }
  }

  async deleteAll(s3: S3Client): Promise<void> {
    for (const key of this.objects.keys()) {
      await s3.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
    }
    this.objects.clear();
    if (this.openUpload !== null) {
      await s3.send(
        new AbortMultipartUploadCommand({
          Bucket: this.bucket,
          Key: this.openUpload.key,
          UploadId: this.openUpload.uploadId,
        }),
      );
      this.openUpload = null;
    }
    await s3.send(new DeleteBucketCommand({ Bucket: this.bucket }));
  }
}

const started = performance.now();
function phase(what: string): void {
  console.log(`at rest: ${what} (${((performance.now() - started) / 1000).toFixed(1)} s)`);
}

async function assertNothingInClear(
  dataDir: string,
  canaries: Map<string, string>,
  when: string,
  secrets: string[] = [],
) {
  phase(`${when}: scanning`);
  const findings = await scan([dataDir], canaries);
  phase(`${when}: scanned`);
  assert.equal(findings.length, 0, `${when}: canaries on disk in clear:\n${report(findings)}`);
  for (const secret of secrets) {
    const found = await filesHolding(dataDir, new TextEncoder().encode(secret));
    assert.deepEqual(found, [], `${when}: an S3 secret on disk in clear`);
  }
}

/**
 * Files under `dir` that hold `needle` verbatim. Read in windows that overlap by the needle's
 * length; the holes of sparse device files are skipped (SEEK_DATA is not reachable from Deno,
 * so a window of zeros is simply cheap to search).
 */
async function filesHolding(dir: string, needle: Uint8Array): Promise<string[]> {
  const out: string[] = [];
  const window = Buffer.alloc((4 << 20) + needle.length);
  for (const file of await filesUnder(dir)) {
    const handle = await Deno.open(file, { read: true });
    try {
      let carried = 0;
      for (;;) {
        let filled = carried;
        while (filled < window.length) {
          const n = await handle.read(window.subarray(filled));
          if (n === null) break;
          filled += n;
        }
        if (window.subarray(0, filled).indexOf(needle) >= 0) {
          out.push(file);
          break;
        }
        if (filled < window.length) break;
        carried = needle.length - 1;
        window.copyWithin(0, filled - carried, filled);
      }
    } finally {
      handle.close();
    }
  }
  return out;
}

/**
 * The scanner can fail: copies every view record, decrypted with the node's own keys, into
 * an environment without a page key, and returns what a scan of that copy finds.
 */
async function scanUnsealedCopy(
  dataDir: string,
  canaries: Map<string, string>,
): Promise<Finding[]> {
  const keyStore = await LocalKeyStore.open({
    dir: `${dataDir}/keys`,
    aead: selectAead(defaultShimOptions()),
  });
  const copyDir = await Deno.makeTempDir({ prefix: "kiseki-at-rest-unsealed-" });
  try {
    const views = await openViewEnv({ dataDir, pageKeys: keyStore.pageKeys });
    const copy = await openKvEnv({
      path: `${copyDir}/views`,
      pageKeys: null,
      mapSizeBytes: 64 << 20,
    });
    try {
      for (const name of Object.values(VIEW_TABLE_NAMES)) {
        const from = views.table(name);
        const to = copy.table(name);
        const entries = [...from.range()];
        await copy.transaction((txn) => {
          for (const e of entries) txn.put(to, e.key, e.value);
        });
      }
    } finally {
      await copy.close();
      await views.close();
    }
    return await scan([copyDir], canaries);
  } finally {
    await keyStore.close();
    await Deno.remove(copyDir, { recursive: true });
  }
}

/**
 * The sealed page key file of each page-encrypted environment, by directory. raft/ and
 * chunks/index/ are not page-encrypted (their tenant data is sealed record by record, or
 * they hold none): the canary scan covers them like every other byte.
 */
async function pageKeyFiles(dataDir: string): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for (const env of ["views", "keys"]) {
    out.set(env, await Deno.readFile(`${dataDir}/${env}/page.key`));
  }
  for (const env of ["raft", "chunks/index"]) {
    assert.equal(await exists(`${dataDir}/${env}/page.key`), false, `${env} has no page key`);
  }
  return out;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name:
    "at rest: no canary in clear under the data dir or in any device file, through restart, overwrite, delete and shred",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dataDir = await Deno.makeTempDir({ prefix: "kiseki-at-rest-" });
    let node: Node | null = null;
    try {
      node = await startNode(dataDir);
      const owner = await readS3Credentials(`${dataDir}.s3-credentials`);
      const victimTenant = Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("hex");
      const victimKey = await adminCall(
        dataDir,
        node,
        "POST",
        `/api/v1/s3-credentials?tenant=${victimTenant}`,
      );
      const victimCredentials = {
        accessKeyId: victimKey.accessKeyId as string,
        secretAccessKey: victimKey.secretAccessKey as string,
      };
      const keep = new TenantLoad("default tenant");
      const victim = new TenantLoad("shredded tenant");
      await keep.write(client(node, owner));
      await victim.write(client(node, victimCredentials));
      await keep.verify(client(node, owner));
      // The S3 secrets must not be on disk in clear either: the key store seals them, and the
      // operator's copy of the first key lives beside the data dir (KISEKI_S3_CREDENTIALS_FILE).
      const secrets = [owner.secretAccessKey, victimCredentials.secretAccessKey];
      const all = () => new Map([...keep.canaries, ...victim.canaries]);
      await stopNode(node);
      node = null;
      await assertNothingInClear(dataDir, all(), "fresh node", secrets);

      // The scan can fail: the same records without page encryption show the canaries.
      const unsealed = await scanUnsealedCopy(dataDir, all());
      const found = new Set(unsealed.map((f) => f.role));
      for (
        const role of [
          "bucket name",
          "key of 2 KiB",
          "directory of 4 KiB",
          "metadata value of 1 B",
          "stored header of 4 KiB",
          "metadata key of 2 KiB",
          "content type of 1 B",
          "2 KiB body",
          "4 KiB body",
        ]
      ) {
        assert.ok(
          found.has(`default tenant: ${role}`),
          `unsealed copy shows the ${role}: ${[...found].join(", ")}`,
        );
      }
      for (const form of ["clear", "utf-16le", "utf-16be", "hex"]) {
        const probe = await Deno.makeTempDir({ prefix: "kiseki-at-rest-probe-" });
        const [text] = [...keep.canaries.keys()];
        const bytes = needlesOf(text!).find((n) => n.form === form)!.bytes;
        await Deno.writeFile(`${probe}/f`, new Uint8Array([1, 2, ...bytes, 3]));
        const hit = await scan([probe], keep.canaries);
        await Deno.remove(probe, { recursive: true });
        assert.ok(hit.some((f) => f.form === form), `the scanner finds a ${form} canary`);
      }

      node = await startNode(dataDir);
      await keep.verify(client(node, owner));
      await victim.verify(client(node, victimCredentials));
      await stopNode(node);
      node = null;
      await assertNothingInClear(dataDir, all(), "after a restart", secrets);

      node = await startNode(dataDir);
      await keep.overwrite(client(node, owner));
      await victim.overwrite(client(node, victimCredentials));
      await keep.verify(client(node, owner));
      await stopNode(node);
      node = null;
      await assertNothingInClear(dataDir, all(), "after overwrites", secrets);

      node = await startNode(dataDir);
      const gone = new TenantLoad("deleted");
      await gone.write(client(node, owner));
      await gone.deleteAll(client(node, owner));
      await stopNode(node);
      node = null;
      const withDeleted = new Map([...all(), ...gone.canaries]);
      await assertNothingInClear(dataDir, withDeleted, "after deletes", secrets);

      // Crypto-shred of one tenant, through the operator CLI.
      node = await startNode(dataDir);
      const pageKeysBefore = await pageKeyFiles(dataDir);
      // Irreversible, so never by accident: no confirmation, no shred.
      const token = (await Deno.readTextFile(`${dataDir}/config/admin-token`)).trim();
      const unconfirmed = await fetch(`${node.metrics}/api/v1/tenants/${victimTenant}/shred`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(unconfirmed.status, 400);
      assert.equal((await unconfirmed.json()).error, "confirmation_required");
      const noToken = await fetch(`${node.metrics}/api/v1/tenants/${victimTenant}/shred`, {
        method: "POST",
        body: JSON.stringify({ confirm: victimTenant }),
      });
      assert.equal(noToken.status, 401);
      await noToken.body?.cancel();
      await victim.verify(client(node, victimCredentials));
      const cli = await run(Deno.execPath(), [
        "run",
        "--quiet",
        ...flagsFor("admin", { KISEKI_DATA_DIR: dataDir }),
        `${ROOT}${ROLE_TABLE.admin.entry}`,
        "tenants",
        "shred",
        "--tenant",
        victimTenant,
        "--yes",
        "--json",
        "--node",
        new URL(node.metrics).host,
      ], { env: { KISEKI_DATA_DIR: dataDir } });
      assert.equal(cli.code, 0, cli.stderr);
      const shred = JSON.parse(cli.stdout) as Record<string, unknown>;
      assert.equal(shred.tenant, victimTenant);
      assert.equal(shred.keyDestroyed, true);
      assert.equal(shred.accessKeysRevoked, 1);
      assert.ok((shred.viewRecords as number) > 0, cli.stdout);
      assert.ok((shred.chunkRefsReleased as number) > 0, "the 256 KiB and multipart chunks");
      // The other tenant is unaffected; the shredded one is locked out.
      await keep.verify(client(node, owner));
      await assert.rejects(
        client(node, victimCredentials).send(
          new GetObjectCommand({
            Bucket: victim.bucket,
            Key: [...victim.objects.keys()][0]!,
          }),
        ),
        (e: Error) => /InvalidAccessKeyId|Forbidden|403/.test(`${e.name} ${e.message}`),
      );
      await stopNode(node);
      node = null;
      // The views and the key store were copied under fresh page keys, the old ones destroyed.
      const pageKeysAfter = await pageKeyFiles(dataDir);
      for (const env of ["views", "keys"]) {
        assert.ok(pageKeysBefore.has(env) && pageKeysAfter.has(env), env);
        assert.notDeepEqual(pageKeysAfter.get(env), pageKeysBefore.get(env), `${env} rekeyed`);
      }
      await assertNothingInClear(dataDir, withDeleted, "after a shred", secrets);
      // Even through the node's own keys, nothing of the shredded tenant is left in the
      // views, and the other tenant's records still are.
      const afterShred = await scanUnsealedCopy(dataDir, all());
      const victimLeft = afterShred.filter((f) => f.role.startsWith("shredded tenant"));
      assert.equal(victimLeft.length, 0, `shredded tenant in the views:\n${report(victimLeft)}`);
      assert.ok(afterShred.some((f) => f.role.startsWith("default tenant")), "other tenant kept");
    } finally {
      if (node !== null) {
        console.log(`server log:\n${node.role.stderr().slice(-4000)}`);
        await node.role.stop("SIGKILL").catch(() => {});
      }
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "at rest: POSIX directory and file names and inline file bytes (the engine's POSIX operations) never reach disk in clear, and a shred removes them",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dataDir = await Deno.makeTempDir({ prefix: "kiseki-at-rest-posix-" });
    const canaries = new Map<string, string>();
    const mark = (role: string) => {
      const c = canary();
      canaries.set(c, role);
      return c;
    };
    const tenantId = crypto.getRandomValues(new Uint8Array(16));
    const open = () =>
      startEngineStack({
        dataDir,
        pool: { devices: 6, deviceSizeBytes: 24 << 20, segmentSizeBytes: 2 << 20 },
        logger: createLogger({ level: "error", format: "text", sink: { write: () => {} } }),
      });
    try {
      let stack = await open();
      const owner = { mode: 0o755, uid: 1000, gid: 1000 };
      const ns = await stack.service.createNamespace(tenantId, mark("export name"), "posix");
      const dir = await stack.service.mkdir(ns, ROOT_INODE, mark("directory name"), owner);
      const sub = await stack.service.mkdir(ns, dir.inode, mark("subdirectory name"), owner);
      const file = await stack.service.createFile(ns, sub.inode, mark("file name"), {
        ...owner,
        mode: 0o644,
      });
      const body = bodyOf(mark("inline file bytes"), 2 * KIB);
      await stack.service.writeContent(ns, file.inode, { inline: body, size: body.length });
      await stack.caughtUp();
      await stack.close();
      await assertNothingInClear(dataDir, canaries, "posix namespace");
      const found = new Set((await scanUnsealedCopy(dataDir, canaries)).map((f) => f.role));
      for (
        const role of ["directory name", "subdirectory name", "file name", "inline file bytes"]
      ) {
        assert.ok(found.has(role), `the unsealed copy shows the ${role}: ${[...found].join(", ")}`);
      }

      // A shred interrupted right after the KEK was destroyed (nothing else done) is finished
      // when the engine next starts.
      stack = await open();
      await stack.kms.destroyKey(toHex(tenantId));
      await stack.close();
      const viewsKey = await Deno.readFile(`${dataDir}/views/page.key`);
      stack = await open();
      assert.deepEqual(stack.service.listNamespaces(tenantId), []);
      const again = await stack.shredTenant(tenantId);
      assert.equal(again.keyDestroyed, true);
      assert.equal(again.namespaces, 0, "nothing left to drop: the restart finished the shred");
      await stack.close();
      assert.notDeepEqual(await Deno.readFile(`${dataDir}/views/page.key`), viewsKey);
      await assertNothingInClear(dataDir, canaries, "posix namespace shredded");
      const left = await scanUnsealedCopy(dataDir, canaries);
      assert.equal(left.length, 0, `after the shred, in the views:\n${report(left)}`);
    } finally {
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    }
  },
});
