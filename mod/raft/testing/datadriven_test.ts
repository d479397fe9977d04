import assert from "node:assert/strict";
import { formatTestFile, parseCommand, parseTestFile } from "./datadriven.ts";

const FILE = `# leading comment

add-nodes 3 voters=(1,2,3) index=10
campaign 1
----
old output
more

# between
stabilize
----
ok
`;

Deno.test("parseCommand() splits positional and key=value arguments", () => {
  const c = parseCommand("add-nodes 3 voters=(1,2,3) prevote=true extra", 7);
  assert.equal(c.name, "add-nodes");
  assert.deepEqual(c.positional, ["3", "extra"]);
  assert.equal(c.keyed.get("voters"), "(1,2,3)");
  assert.equal(c.keyed.get("prevote"), "true");
  assert.equal(c.line, 7);
});

Deno.test("parseTestFile() reads blocks of commands and expected output", () => {
  const file = parseTestFile(FILE);
  assert.equal(file.blocks.length, 2);
  assert.deepEqual(file.blocks[0].commands.map((c) => c.name), ["add-nodes", "campaign"]);
  assert.deepEqual(file.blocks[0].expected, ["old output", "more"]);
  assert.equal(file.blocks[0].line, 3);
  assert.deepEqual(file.blocks[1].preamble, ["", "# between"]);
});

Deno.test("formatTestFile() replaces outputs and keeps everything else verbatim", () => {
  const file = parseTestFile(FILE);
  assert.equal(formatTestFile(file, ["old output\nmore", "ok"]), FILE);
  const rewritten = formatTestFile(file, ["new", "ok"]);
  assert.equal(rewritten, FILE.replace("old output\nmore", "new"));
});

Deno.test("parseTestFile() rejects a command without a separator", () => {
  assert.throws(() => parseTestFile("campaign 1\n"), /without ----/);
  assert.throws(() => parseTestFile("campaign 1\n\n----\n"), /expected ----/);
});
