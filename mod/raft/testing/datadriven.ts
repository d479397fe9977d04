// The data-driven test file format (after cockroachdb/datadriven, as used by etcd's raft):
//
//   # comments and blank lines
//   command arg key=value key=(1,2,3)
//   another-command
//   ----
//   expected output (no blank lines)
//
// Pure text in, text out: reading and rewriting files is the test runner's business.

export interface Command {
  name: string;
  /** Arguments without '=': ids, data. */
  positional: string[];
  /** key=value arguments; a parenthesized list stays as written, e.g. "(1,2,3)". */
  keyed: Map<string, string>;
  line: number;
  raw: string;
}

export interface TestBlock {
  /** Comment and blank lines before the commands, kept verbatim on rewrite. */
  preamble: string[];
  commands: Command[];
  expected: string[];
  line: number;
}

export interface TestFile {
  blocks: TestBlock[];
  /** Trailing comment and blank lines. */
  epilogue: string[];
}

const SEPARATOR = "----";

export function parseCommand(raw: string, line: number): Command {
  const tokens = raw.trim().split(/\s+/);
  const command: Command = { name: tokens[0], positional: [], keyed: new Map(), line, raw };
  for (const token of tokens.slice(1)) {
    const eq = token.indexOf("=");
    if (eq > 0) command.keyed.set(token.slice(0, eq), token.slice(eq + 1));
    else command.positional.push(token);
  }
  return command;
}

export function parseTestFile(text: string): TestFile {
  const lines = text.split("\n");
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  const blocks: TestBlock[] = [];
  let preamble: string[] = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (line.trim() === "" || line.startsWith("#")) {
      preamble.push(line);
      i++;
      continue;
    }
    const start = i + 1;
    const commands: Command[] = [];
    while (i < lines.length && lines[i] !== SEPARATOR) {
      if (lines[i].trim() === "") throw new Error(`line ${i + 1}: expected ${SEPARATOR}`);
      commands.push(parseCommand(lines[i], i + 1));
      i++;
    }
    if (i >= lines.length) throw new Error(`line ${start}: command without ${SEPARATOR}`);
    i++; // separator
    const expected: string[] = [];
    while (i < lines.length && lines[i] !== "") {
      expected.push(lines[i]);
      i++;
    }
    blocks.push({ preamble, commands, expected, line: start });
    preamble = [];
  }
  return { blocks, epilogue: preamble };
}

/** The file with each block's expected output replaced by `outputs[i]`. */
export function formatTestFile(file: TestFile, outputs: string[]): string {
  const lines: string[] = [];
  file.blocks.forEach((block, i) => {
    lines.push(...block.preamble);
    lines.push(...block.commands.map((c) => c.raw));
    lines.push(SEPARATOR);
    lines.push(...outputs[i].split("\n"));
  });
  lines.push(...file.epilogue);
  return lines.join("\n") + "\n";
}
