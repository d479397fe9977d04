// The benches' human tables: the first column left-aligned, the others right-aligned.

export function table(
  print: (line: string) => void,
  headers: string[],
  rows: (string | number)[][],
): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells: (string | number)[]) =>
    cells.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]!) : String(c).padStart(widths[i]!)))
      .join("  ");
  print(line(headers));
  for (const r of rows) print(line(r));
}
