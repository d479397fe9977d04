// The benches' human tables: the first `leftColumns` columns left-aligned, the others
// right-aligned; plain (two spaces between columns) or as a markdown table.

export function table(
  print: (line: string) => void,
  headers: string[],
  rows: (string | number)[][],
  options: { leftColumns?: number; markdown?: boolean } = {},
): void {
  const left = options.leftColumns ?? 1;
  const cells = rows.map((r) => r.map(String));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i]!.length)));
  const padded = (row: string[]) =>
    row.map((c, i) => (i < left ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)));
  const line = options.markdown
    ? (row: string[]) => `| ${padded(row).join(" | ")} |`
    : (row: string[]) => padded(row).join("  ");
  print(line(headers));
  if (options.markdown) print("|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|");
  for (const row of cells) print(line(row));
}
