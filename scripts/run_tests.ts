// `scripts/kiseki test [deno test args]`: runs the whole suite and ends with the one line
// CI reads, `N passed, N failed, N skipped`, after the name of every skipped test (each
// says why in its name). Exits non-zero when any test failed or the runner itself failed.
// Under CI=true a test that needs a missing shim or tool fails rather than skips (see
// missingPart() in mod/base/testing.ts); what remains skipped is skipped by design.

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

// Pass output through as it comes, keeping the tail for the summary and the names of the
// skipped tests (deno test reports each as "<name> ... ignored (0ms)").
const TAIL_BYTES_MAX = 64 * 1024;
/** Skipped tests named at the end; past this many, only counted. */
const SKIPPED_NAMED_MAX = 500;
const decoder = new TextDecoder();
let tail = "";
let pending = "";
const skippedNames: string[] = [];
for await (const chunk of child.stdout) {
  await Deno.stdout.write(chunk);
  const text = decoder.decode(chunk, { stream: true });
  tail = (tail + text).slice(-TAIL_BYTES_MAX);
  const lines = (pending + text).split("\n");
  pending = lines.pop()!.slice(-TAIL_BYTES_MAX);
  for (const line of lines) {
    const m = /^(.*) \.\.\. ignored \(\d+m?s\)$/.exec(line.trim());
    if (m !== null && skippedNames.length < SKIPPED_NAMED_MAX) skippedNames.push(m[1]!);
  }
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
if (skippedNames.length > 0) {
  console.log(`\nskipped (${skipped}):`);
  for (const name of skippedNames) console.log(`  ${name}`);
}
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
Deno.exit(code !== 0 || failed > 0 || !summary ? 1 : 0);
