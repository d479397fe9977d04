// `kiseki admin nfs-export add|list|remove` against a real `kiseki server`: the exports go to
// the cluster state and the node's NFS gateway serves them at its next call (MNT answers by
// the export's client networks, the built-in loopback export goes once one exists).

import assert from "node:assert/strict";
import { Nfs3Client } from "../../mod/nfs/nfs3_client.ts";
import { RpcClient } from "../../mod/nfs/rpc_client.ts";
import { MNT3ERR_ACCES, MNT3ERR_NOENT } from "../../mod/nfs/mount.ts";
import { flagsFor, ROOT, run, startRole, testAddrs, waitForHttp } from "./_role.ts";

Deno.test("kiseki admin nfs-export adds, lists and removes exports a server applies", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "kiseki-e2e-exports-" });
  const env = { ...testAddrs(151), KISEKI_DATA_DIR: dataDir, KISEKI_LOG_LEVEL: "warn" };
  const [host, port] = env.KISEKI_NFS_ADDR.split(":") as [string, string];
  const server = startRole("server", env);
  const admin = (...args: string[]) =>
    run(Deno.execPath(), [
      "run",
      "--quiet",
      ...flagsFor("admin", { KISEKI_DATA_DIR: dataDir }),
      `${ROOT}mod/role/admin.ts`,
      "nfs-export",
      ...args,
      "--node",
      env.KISEKI_METRICS_ADDR,
    ], { env: { KISEKI_DATA_DIR: dataDir } });
  let rpc: RpcClient | null = null;
  try {
    await waitForHttp(`http://${env.KISEKI_METRICS_ADDR}/health`, "OK", 60_000);
    rpc = await RpcClient.connect(host, Number(port));
    const nfs = new Nfs3Client(rpc);
    assert.equal((await nfs.mount("/")).status, 0, "the loopback default before any export");

    const none = await admin("list");
    assert.equal(none.code, 0, none.stderr);
    assert.match(none.stdout, /no NFS exports/);

    const added = await admin("add", "--path", "/lab", "--clients", "127.0.0.0/8,::1");
    assert.equal(added.code, 0, added.stderr);
    assert.match(added.stdout, /\/lab\s+[0-9a-f]{32}\s+\(all\)\s+127\.0\.0\.0\/8,::1\s+rw\s+yes/);
    const far = await admin("add", "--path", "/far", "--clients", "10.9.0.0/16", "--ro");
    assert.equal(far.code, 0, far.stderr);
    const twice = await admin("add", "--path", "/far", "--clients", "10.9.0.0/16");
    assert.notEqual(twice.code, 0, "an export path is taken once");
    const bad = await admin("add", "--path", "/bad", "--clients", "not-a-net");
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /not-a-net/);

    const listed = await admin("list", "--json");
    assert.equal(listed.code, 0, listed.stderr);
    const exports = (JSON.parse(listed.stdout) as { exports: { path: string; access: string }[] })
      .exports;
    assert.deepEqual(exports.map((e) => [e.path, e.access]), [["/far", "ro"], ["/lab", "rw"]]);

    // The gateway serves them at once: "/" is gone, /lab mounts, /far is not for this client.
    assert.equal((await nfs.mount("/")).status, MNT3ERR_NOENT);
    const lab = await nfs.mount("/lab");
    assert.equal(lab.status, 0);
    // Root squash is the default: root is nobody, and "/" of the tenant is root's.
    assert.equal((await nfs.mkdir(lab.fh!, "from-nfs")).status, 13, "squashed root");
    assert.deepEqual(await nfs.list(lab.fh!), [".", ".."]);
    const admin2 = await admin("add", "--path", "/lab-admin", "--no-root-squash");
    assert.equal(admin2.code, 0, admin2.stderr);
    const labAdmin = await nfs.mount("/lab-admin");
    assert.equal((await nfs.mkdir(labAdmin.fh!, "from-nfs")).status, 0, "root, unsquashed");
    assert.deepEqual(await nfs.list(lab.fh!), [".", "..", "from-nfs"]);
    assert.equal((await nfs.mount("/far")).status, MNT3ERR_ACCES);

    const removed = await admin("remove", "--path", "/lab");
    assert.equal(removed.code, 0, removed.stderr);
    assert.equal((await nfs.mount("/lab")).status, MNT3ERR_NOENT);
    assert.notEqual((await nfs.getattr(lab.fh!)).status, 0, "a removed export's handles fail");
    const again = await admin("remove", "--path", "/lab");
    assert.notEqual(again.code, 0);
  } finally {
    await rpc?.close();
    const code = await server.stop();
    if (code !== 0) console.error(server.stderr());
    await Deno.remove(dataDir, { recursive: true });
    await Deno.remove(`${dataDir}.s3-credentials`).catch(() => {});
  }
});
