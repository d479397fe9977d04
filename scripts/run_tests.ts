// `scripts/kiseki test [deno test args]`: runs the whole suite and ends with the one line
// CI reads, `N passed, N failed` (`, N skipped` when tests were ignored). Exits non-zero
// when any test failed or the runner itself failed.

const root = new URL("..", import.meta.url).pathname;

// A suite that starts the runner again (through `scripts/kiseki test`) must not recurse
// without bound: one nested run is allowed (the runner's own test), no more.
const depth = Number(Deno.env.get("KISEKI_TEST_RUNNER_DEPTH") ?? "0");
if (depth >= 2) {
  console.error("kiseki test: refusing to start the suite from inside a nested suite run");
  Deno.exit(2);
}
const extra = Deno.args;
const args = [
  "test",
  "--allow-all",
  "--parallel",
  ...(extra.length > 0 ? extra : []),
];

const child = new Deno.Command(Deno.execPath(), {
  args,
  cwd: root,
  env: {
    NO_COLOR: "1",
    DENO_JOBS: Deno.env.get("DENO_JOBS") ?? "2",
    KISEKI_TEST_RUNNER_DEPTH: String(depth + 1),
  },
  stdout: "piped",
  stderr: "inherit",
}).spawn();

// Pass output through as it comes, keeping the tail for the summary.
const TAIL_BYTES_MAX = 64 * 1024;
const decoder = new TextDecoder();
let tail = "";
for await (const chunk of child.stdout) {
  await Deno.stdout.write(chunk);
  tail = (tail + decoder.decode(chunk, { stream: true })).slice(-TAIL_BYTES_MAX);
}
const { code } = await child.status;

// deno test closes with e.g. "ok | 12 passed (3 steps) | 0 failed | 2 ignored (4s)".
const summary = tail.split("\n").reverse().find((l) => /^(ok|FAILED) \| \d+ passed/.test(l.trim()));
let passed = 0;
let failed = 0;
let skipped = 0;
if (summary) {
  passed = Number(/(\d+) passed/.exec(summary)?.[1] ?? 0);
  failed = Number(/(\d+) failed/.exec(summary)?.[1] ?? 0);
  skipped = Number(/(\d+) ignored/.exec(summary)?.[1] ?? 0);
} else {
  console.error("kiseki test: the test runner ended without a summary");
}
if (code !== 0 && failed === 0) failed = 1;
console.log(`${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ""}`);
Deno.exit(code !== 0 || failed > 0 || !summary ? 1 : 0);
