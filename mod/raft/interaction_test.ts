// Runs every mod/raft/testdata/*.txt through the interaction environment and compares the
// trace with the expected output. `UPDATE_TESTDATA=1 deno test -A mod/raft/interaction_test.ts`
// rewrites the files with the actual traces: review every changed line before keeping it.

import assert from "node:assert/strict";
import { formatTestFile, parseTestFile } from "./testing/datadriven.ts";
import { InteractionEnv } from "./testing/interaction_env.ts";

const TESTDATA = new URL("./testdata/", import.meta.url);
const UPDATE = Deno.env.get("UPDATE_TESTDATA") === "1";

const files = [...Deno.readDirSync(TESTDATA)]
  .filter((e) => e.isFile && e.name.endsWith(".txt"))
  .map((e) => e.name)
  .sort();

for (const name of files) {
  Deno.test(`interaction: ${name}`, () => {
    const url = new URL(name, TESTDATA);
    const file = parseTestFile(Deno.readTextFileSync(url));
    const env = new InteractionEnv();
    const outputs: string[] = [];
    for (const block of file.blocks) {
      const actual = env.runBlock(block);
      outputs.push(actual);
      if (!UPDATE) {
        assert.equal(
          actual,
          block.expected.join("\n"),
          `${name}:${block.line}: ${block.commands.map((c) => c.raw).join("; ")}`,
        );
      }
    }
    if (UPDATE) Deno.writeTextFileSync(url, formatTestFile(file, outputs));
  });
}
