import assert from "node:assert/strict";
import { parseConfig } from "../base/mod.ts";
import { MemoryDataset } from "../client/cache/_testing.ts";
import { main } from "./client.ts";

function chunk(tag: string, size = 4096): Uint8Array {
  const out = new Uint8Array(size).fill(0x41);
  out.set(new TextEncoder().encode(tag.padEnd(32, "_")));
  return out;
}

async function run(args: string[], env: Record<string, string>, data?: MemoryDataset) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, {
    config: parseConfig(env, { role: "client" }),
    connect: data === undefined ? undefined : () =>
      Promise.resolve({
        listFiles: (path: string) => data.listFiles(path),
        chunksOf: (file) => data.chunksOf(file),
        close: () => Promise.resolve(),
      }),
    out: (line) => out.push(line),
    err: (text) => err.push(text),
    isTerminal: false,
  });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

Deno.test("kiseki-client stage pins a dataset, resumes, reports --status and --release", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-client-cli-" });
  try {
    const env = { KISEKI_CACHE_DIR: dir, KISEKI_CACHE_MODE: "pinned" };
    const data = new MemoryDataset();
    for (let i = 0; i < 4; i++) data.add(`/ds/f${i}`, "v1", [chunk(`c${i}`)]);

    const staged = await run(["stage", "--dataset", "/ds"], env, data);
    assert.equal(staged.code, 0, staged.err);
    assert.match(staged.err, /\[#{24}\] 100%.*16\.0 KiB\/16\.0 KiB {2}4\/4 files .*ETA 00:00/);
    assert.match(staged.out, /\/ds {2}staged {2}4\/4 files/);

    const again = await run(["stage", "--dataset", "/ds"], env, data);
    assert.equal(again.code, 0);
    assert.equal(data.fetchCount(), 4, "a second run fetches nothing");

    const status = await run(["stage", "--dataset", "/ds", "--status"], env);
    assert.equal(status.code, 0);
    assert.match(status.out, /staged {2}4\/4 files .* 4 chunks pinned/);
    const all = await run(["stage", "--status"], env);
    assert.match(all.out, /^[0-9a-f]{16} {2}staged/);

    const released = await run(["stage", "--dataset", "/ds", "--release"], env);
    assert.equal(released.code, 0);
    assert.match(released.out, /4 chunks unpinned/);
    const gone = await run(["stage", "--dataset", "/ds", "--status"], env);
    assert.equal(gone.code, 1);
    assert.match(gone.out, /not staged/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("kiseki-client stage refuses bad arguments and a node without L2", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-client-cli-" });
  try {
    const env = { KISEKI_CACHE_DIR: dir };
    assert.equal((await run(["stage"], env)).code, 2);
    assert.match((await run(["stage", "--dataset", "rel/path"], env)).err, /starting with \//);
    assert.match((await run(["stage", "--frob"], env)).err, /unknown argument '--frob'/);
    assert.match(
      (await run(["stage", "--status", "--release", "--dataset", "/x"], env)).err,
      /do not go together/,
    );
    const bypass = await run(["stage", "--dataset", "/x"], { ...env, KISEKI_CACHE_MODE: "bypass" });
    assert.equal(bypass.code, 2);
    assert.match(bypass.err, /keeps none/);
    const help = await run(["--help"], env);
    assert.equal(help.code, 0);
    assert.match(help.out, /--dataset PATH --release/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
