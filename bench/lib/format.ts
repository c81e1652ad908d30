/** Output helpers shared by the benchmark scripts. */

/** Go's time.Duration text (`11.152071ms`, `1.2s`, `950µs`), as hsload prints it, in milliseconds with one decimal. */
export function goDurationAsMs(text: string): string {
  const match = /^([\d.]+)(ns|µs|us|ms|s)$/.exec(text);
  if (!match) return text;
  const scale: Record<string, number> = { ns: 1e-6, µs: 1e-3, us: 1e-3, ms: 1, s: 1000 };
  return `${(Number(match[1]) * scale[match[2]!]!).toFixed(1)} ms`;
}

/** A markdown table: the first `textColumns` columns left-aligned, the others (numbers) right-aligned. */
export function markdownTable(header: readonly string[], rows: readonly string[][], textColumns = 1): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]) =>
    '| ' + cells.map((c, i) => (i < textColumns ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ') + ' |';
  const rule = '|' + widths.map((w, i) => (i < textColumns ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|') + '|';
  return [line(header), rule, ...rows.map(line)].join('\n');
}
