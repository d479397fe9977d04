// Real tools on a real FUSE mount (a kiseki-client-fuse role against a kiseki server role): cp -a, rsync -a, tar in
// and out, git init/add/commit/clone, fio (sequential and random, with verify) and sqlite3.

import assert from "node:assert/strict";
import { missingPart } from "../../mod/base/testing.ts";
import { fuseMissing, mountLogTail, type RunningMount, startMount } from "../fuse/_mount.ts";

const DECODER = new TextDecoder();

function toolsMissing(): string | null {
  const fuse = fuseMissing();
  if (fuse !== null) return fuse;
  for (const tool of ["rsync", "tar", "git", "fio", "sqlite3", "cp", "diff"]) {
    const found = new Deno.Command("sh", { args: ["-c", `command -v ${tool}`] }).outputSync();
    if (!found.success) return `${tool} is not installed`;
  }
  return null;
}

async function sh(cmd: string, cwd: string): Promise<string> {
  const out = await new Deno.Command("bash", {
    args: ["-euo", "pipefail", "-c", cmd],
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: {
      GIT_AUTHOR_NAME: "t",
      GIT_AUTHOR_EMAIL: "t@example.invalid",
      GIT_COMMITTER_NAME: "t",
      GIT_COMMITTER_EMAIL: "t@example.invalid",
      HOME: cwd,
    },
  }).output();
  const stdout = DECODER.decode(out.stdout);
  if (!out.success) {
    throw new Error(`${cmd} failed (${out.code}):\n${DECODER.decode(out.stderr)}\n${stdout}`);
  }
  return stdout;
}

/** A small tree with nested dirs, a symlink, modes and mtimes (on local disk). */
async function makeTree(root: string): Promise<void> {
  await sh(
    `mkdir -p src/a/b src/c && head -c 300000 /dev/urandom > src/a/b/blob && ` +
      `echo hello > src/a/hello.txt && seq 1 20000 > src/c/numbers && ` +
      `chmod 600 src/a/hello.txt && chmod 755 src/c/numbers && ln -s ../a/hello.txt src/c/link && ` +
      `touch -d '2020-01-02 03:04:05' src/a/hello.txt src/c/numbers`,
    root,
  );
}

Deno.test({
  name: "FUSE mount works with cp -a, rsync -a, tar, git, fio and sqlite3",
  ignore: missingPart("FUSE tools (rsync, git, fio, sqlite3 and a FUSE mount)", toolsMissing()),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const m: RunningMount = await startMount({ hostOctet: 82 });
    let code = -1;
    const local = await Deno.makeTempDir({ prefix: "kiseki-fuse-local-" });
    const b = `${m.mountpoint}/tools`;
    const step = async (name: string, fn: () => Promise<void>) => {
      await t.step(name, async () => {
        try {
          await fn();
        } catch (e) {
          throw new Error(`${(e as Error).message}\nmount log:\n${mountLogTail(m)}`);
        }
      });
    };
    try {
      await Deno.mkdir(b);
      await makeTree(local);
      await step("cp -a in and out keeps bytes, modes, mtimes and symlinks", async () => {
        await sh(`cp -a src ${b}/cp && cp -a ${b}/cp back-cp && diff -r src back-cp`, local);
        const listing = (dir: string) =>
          sh(`cd ${dir} && find . -printf '%p %y %m %s %TY-%Tm-%Td %l\\n' | sort`, local);
        assert.equal(await listing(`${b}/cp`), await listing(`${local}/src`));
      });
      await step("rsync -a copies in, a second run moves nothing, and back out", async () => {
        await sh(`rsync -a src/ ${b}/rs/`, local);
        const again = await sh(`rsync -a --stats src/ ${b}/rs/`, local);
        assert.match(again, /Number of regular files transferred: 0/);
        await sh(`rsync -a ${b}/rs/ back-rs/ && diff -r src back-rs`, local);
      });
      await step("tar writes an archive onto the mount and extracts from and to it", async () => {
        await sh(
          `tar -cf ${b}/tree.tar src && mkdir ${b}/untar && tar -xf ${b}/tree.tar -C ${b}/untar`,
          local,
        );
        await sh(
          `diff -r src ${b}/untar/src && mkdir back-tar && tar -C ${b}/untar -cf - src | tar -C back-tar -xf - && diff -r src back-tar/src`,
          local,
        );
      });
      await step("git init, add, commit, log and clone on the mount", async () => {
        await sh(
          `git init -q -b main repo && cp -a ${local}/src/. repo/ && cd repo && git add -A && ` +
            `git commit -q -m first && echo more >> a/hello.txt && git commit -qam second && ` +
            `git fsck --strict`,
          b,
        );
        const log = await sh(`git -C repo log --oneline | wc -l`, b);
        assert.equal(log.trim(), "2");
        await sh(
          `git clone -q repo clone && cd clone && git log --oneline | wc -l && diff -r --exclude=.git ../repo .`,
          b,
        );
        await sh(
          `git clone -q ${b}/repo local-clone && git -C local-clone status --short | wc -l`,
          local,
        );
      });
      await step("fio sequential and random writes verify", async () => {
        // Small random sizes: an object has no in-place update, so a write out of sequence
        // stores the file's new version whole (the bucket namespace's write sessions).
        const common =
          "--ioengine=psync --direct=0 --size=16m --verify=crc32c --verify_fatal=1 --do_verify=1";
        await sh(
          `fio --name=seq --directory=${b} --rw=write --bs=1m ${common} --output-format=terse`,
          local,
        );
        await sh(
          `fio --name=rand --directory=${b} --rw=randwrite --bs=4k --size=1m --ioengine=psync --verify=crc32c --verify_fatal=1 --do_verify=1 --output-format=terse`,
          local,
        );
        await sh(
          `fio --name=randread --directory=${b} --filename=seq.0.0 --rw=randread --bs=4k --size=16m --io_size=2m --ioengine=psync --output-format=terse`,
          local,
        );
      });
      await step("sqlite3 creates, fills and queries a database on the mount", async () => {
        await sh(
          `sqlite3 db.sqlite "create table t(id integer primary key, v text); ` +
            `begin; ${
              Array.from({ length: 500 }, (_, i) => `insert into t(v) values('row${i}');`).join(" ")
            } commit; create index tv on t(v);"`,
          b,
        );
        const n = await sh(
          `sqlite3 db.sqlite "select count(*), max(id) from t; pragma integrity_check;"`,
          b,
        );
        assert.equal(n.trim(), "500|500\nok");
        await sh(
          `sqlite3 db.sqlite "pragma journal_mode=wal; insert into t(v) values('wal'); select count(*) from t;"`,
          b,
        );
        const after = await sh(`sqlite3 db.sqlite "select count(*) from t;"`, b);
        assert.equal(after.trim(), "501");
      });
    } finally {
      code = await m.stop("SIGTERM");
      await m.cleanup();
      await Deno.remove(local, { recursive: true }).catch(() => {});
    }
    if (code !== 0) throw new Error(`the mount exited ${code}:\n${mountLogTail(m)}`);
  },
});
