// An existing data directory, written by a node from before page encryption, is encrypted in
// place by the first start of this node: what the old node wrote (bucket, keys, metadata,
// inline and chunked bodies) reads back, and afterwards no canary is on disk in clear.
//
// The old node is the real thing: the tree of the commit before page encryption came in
// (`git archive` of the parent of the commit that added mod/keys/page_keys.ts), started the
// way it shipped, with this tree's npm packages and FFI shims (their ABI is unchanged since).
// Without the git history (a shallow clone) there is no old node to start: the test is named
// not applicable and skipped (the in-place encryption itself is unit-tested in mod/disk).

import assert from "node:assert/strict";
import { missingPart } from "../../mod/base/mod.ts";
import { SOURCE_FFI_DIR } from "../../ffi/loader.ts";
import { SOURCE_NODE_MODULES_DIR } from "../../mod/role/mod.ts";
import { ROOT, run, type RunningRole, startRole, testAddrs, waitForHttp } from "./_role.ts";
import { bodyOf, canary, scan } from "./_canaries.ts";

const AWS = "/usr/bin/aws";
const HOST_OCTET = 58;
const KIB = 1024;
const POOL = JSON.stringify({
  name: "default",
  devices: 6,
  deviceSize: "24MiB",
  segmentSize: "2MiB",
});
/** The file whose first commit brought page encryption in. */
const PAGE_KEYS_SOURCE = "mod/keys/page_keys.ts";

/** The commit before page encryption, or why it cannot be had. */
async function preEncryptionCommit(): Promise<{ commit: string } | { missing: string }> {
  const added = await run("git", [
    "-C",
    ROOT,
    "log",
    "--diff-filter=A",
    "--format=%H",
    "--",
    PAGE_KEYS_SOURCE,
  ]).catch((e) => ({ code: -1, stdout: "", stderr: (e as Error).message }));
  const first = added.stdout.trim().split("\n").at(-1) ?? "";
  if (added.code !== 0 || first === "") {
    return { missing: `no commit adding ${PAGE_KEYS_SOURCE} in ${ROOT} (${added.stderr.trim()})` };
  }
  const parent = await run("git", ["-C", ROOT, "rev-parse", "--verify", `${first}^{commit}^`]);
  if (parent.code !== 0) {
    return { missing: `the parent of ${first} is not in the history (shallow clone?)` };
  }
  return { commit: parent.stdout.trim() };
}

const awsMissing = await Deno.stat(AWS).then(() => false, () => true);
const before = await preEncryptionCommit();

type RoleModule = {
  startRole: typeof startRole;
  testAddrs: typeof testAddrs;
};

/** Unpacks `commit` into `dir`, with this tree's npm packages and shims beside it. */
async function unpack(commit: string, dir: string): Promise<void> {
  const archive = await run("sh", [
    "-c",
    `git -C "$1" archive --format=tar "$2" | tar -x -C "$3"`,
    "unpack",
    ROOT,
    commit,
    dir,
  ]);
  assert.equal(archive.code, 0, `git archive ${commit}: ${archive.stderr}`);
  const copy = await run("cp", [
    "-a",
    SOURCE_NODE_MODULES_DIR,
    `${dir}/node_modules`,
  ]);
  assert.equal(copy.code, 0, copy.stderr);
  const shims = await run("cp", ["-a", SOURCE_FFI_DIR, `${dir}/ffi/build`]);
  assert.equal(shims.code, 0, shims.stderr);
}

/** `role (form) in file` for every canary found under `dir`. */
async function found(dir: string, canaries: Map<string, string>): Promise<string[]> {
  const findings = await scan([dir], canaries);
  return [...new Set(findings.map((f) => `${f.role} (${f.form}) in ${f.file.slice(dir.length)}`))]
    .sort();
}

Deno.test({
  name:
    "a data dir written before page encryption is encrypted in place at the first start, and reads back" +
    ("missing" in before ? ` [not applicable: ${before.missing}]` : ""),
  ignore: missingPart("aws-cli (Debian awscli)", awsMissing && `${AWS} not found`) ||
    "missing" in before,
  async fn() {
    assert.ok("commit" in before);
    const oldTree = await Deno.makeTempDir({ prefix: "kiseki-e2e-upgrade-tree-" });
    const dataDir = await Deno.makeTempDir({ prefix: "kiseki-e2e-upgrade-" });
    const work = await Deno.makeTempDir({ prefix: "kiseki-e2e-upgrade-work-" });
    let role: RunningRole | null = null;
    try {
      await unpack(before.commit, oldTree);
      const oldRoles = await import(`file://${oldTree}/tests/e2e/_role.ts`) as RoleModule;
      const addrs = testAddrs(HOST_OCTET);
      const env = { ...addrs, KISEKI_DATA_DIR: dataDir, KISEKI_POOLS: POOL };
      // The old node wrote its first S3 key into the data dir; this one moves it beside it.
      let credentials = `${dataDir}/config/s3-credentials`;
      const aws = (...args: string[]) =>
        run(AWS, ["--endpoint-url", `http://${addrs.KISEKI_S3_ADDR}`, ...args], {
          env: {
            AWS_SHARED_CREDENTIALS_FILE: credentials,
            AWS_CONFIG_FILE: "/dev/null",
            AWS_DEFAULT_REGION: "us-east-1",
          },
        });
      const ok = async (what: string, answer: Promise<{ code: number; stderr: string }>) => {
        const r = await answer;
        assert.equal(r.code, 0, `${what}: ${r.stderr}`);
        return r as { code: number; stdout: string; stderr: string };
      };
      const start = async (roles: RoleModule, label: string) => {
        const started = roles.startRole("server", env);
        await Promise.race([
          waitForHttp(`http://${addrs.KISEKI_METRICS_ADDR}/health`, "OK", 120_000),
          started.exited.then((code) => {
            throw new Error(`${label} exited ${code}: ${started.stderr().slice(-3000)}`);
          }),
        ]);
        return started;
      };
      const stop = async (label: string) => {
        const code = await role!.stop("SIGTERM");
        assert.equal(code, 0, `${label} exited ${code}: ${role!.stderr().slice(-3000)}`);
        role = null;
      };

      const canaries = new Map<string, string>();
      const mark = (what: string) => {
        const c = canary();
        canaries.set(c, what);
        return c;
      };
      const bucket = mark("bucket name");
      const key = `dir/${mark("object key")}`;
      const bigKey = mark("chunked object key");
      const meta = mark("user metadata value");
      const small = bodyOf(mark("2 KiB body"), 2 * KIB);
      const big = bodyOf(mark("256 KiB body"), 256 * KIB);
      await Deno.writeFile(`${work}/small`, small);
      await Deno.writeFile(`${work}/big`, big);

      // 1. The old node writes; its views hold the canaries in clear (so the scan can fail).
      role = await start(oldRoles, "the node before page encryption");
      await ok("mb", aws("s3", "mb", `s3://${bucket}`));
      await ok(
        "put small",
        aws("s3", "cp", `${work}/small`, `s3://${bucket}/${key}`, "--metadata", `m=${meta}`),
      );
      await ok("put big", aws("s3", "cp", `${work}/big`, `s3://${bucket}/${bigKey}`));
      await stop("the node before page encryption");
      const plain = await found(dataDir, canaries);
      assert.ok(
        plain.some((f) => f.startsWith("bucket name (clear)")),
        `the old node's data dir shows its names in clear: ${plain.join("; ")}`,
      );

      // 2. This node upgrades the directory in place and reads everything back.
      for (const label of ["first start after the upgrade", "second start"]) {
        role = await start({ startRole, testAddrs }, label);
        credentials = `${dataDir}.s3-credentials`;
        await assert.rejects(Deno.stat(`${dataDir}/config/s3-credentials`), Deno.errors.NotFound);
        await ok("get small", aws("s3", "cp", `s3://${bucket}/${key}`, `${work}/small.back`));
        await ok("get big", aws("s3", "cp", `s3://${bucket}/${bigKey}`, `${work}/big.back`));
        assert.deepEqual(await Deno.readFile(`${work}/small.back`), small, label);
        assert.deepEqual(await Deno.readFile(`${work}/big.back`), big, label);
        const head = await ok(
          "head",
          aws("s3api", "head-object", "--bucket", bucket, "--key", key),
        );
        assert.equal(JSON.parse(head.stdout).Metadata.m, meta, label);
        const list = await ok("ls", aws("s3", "ls", "--recursive", `s3://${bucket}/`));
        assert.ok(list.stdout.includes(key) && list.stdout.includes(bigKey), list.stdout);
        await stop(label);
        assert.deepEqual(await found(dataDir, canaries), [], `${label}: canaries on disk in clear`);
      }
    } finally {
      if (role !== null) await (role as RunningRole).stop("SIGKILL");
      for (const dir of [oldTree, dataDir, work]) {
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      }
    }
  },
});
