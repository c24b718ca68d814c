// A table that fits the terminal (cli-table3 draws it): columns are dropped, least useful first, until
// the rest fits; the last column (the free text: HEALTH and its causes) wraps in what is left.
import Table from 'cli-table3';

export interface Column {
  head: string;
  /** Lower is dropped first; the first and the last column are never dropped. */
  keep: number;
}

const PLAIN = {
  top: '', 'top-mid': '', 'top-left': '', 'top-right': '', bottom: '', 'bottom-mid': '', 'bottom-left': '', 'bottom-right': '',
  left: '', 'left-mid': '', mid: '', 'mid-mid': '', right: '', 'right-mid': '', middle: '  ',
};
const GAP = 2;
/** The wrapped column is not squeezed below this; the table is then wider than asked. */
const MIN_LAST = 40;

/** The width to fit: COLUMNS, else the terminal's, else none (a pipe or a file gets whole lines). */
export function terminalWidth(env: NodeJS.ProcessEnv = process.env, out: { isTTY?: boolean; columns?: number } = process.stdout): number {
  const c = Number(env.COLUMNS);
  if (Number.isInteger(c) && c > 0) return c;
  return out.isTTY && out.columns ? out.columns : Infinity;
}

/** `text` in lines of at most `width` characters, at spaces where it can, cut inside a long word where it must. */
export function wrap(text: string, width: number): string {
  const lines: string[] = [];
  let line = '';
  for (let word of text.split(/ +/)) {
    while (word.length > width) {
      if (line) lines.push(line);
      lines.push(word.slice(0, width));
      word = word.slice(width);
      line = '';
    }
    if (!line) line = word;
    else if (line.length + 1 + word.length <= width) line += ` ${word}`;
    else {
      lines.push(line);
      line = word;
    }
  }
  if (line) lines.push(line);
  return lines.join('\n');
}

/** The rows as a table at most `width` wide (when it can be), and the heads of the columns left out. */
export function fitTable(columns: Column[], rows: string[][], width: number): { text: string; hidden: string[] } {
  const natural = columns.map((c, i) => Math.max(c.head.length, ...rows.map((r) => (r[i] ?? '').length)));
  const shown = columns.map((_, i) => i);
  const total = (): number => shown.reduce((n, i) => n + natural[i]!, 0) + GAP * (shown.length - 1);
  const last = columns.length - 1;
  const droppable = columns.map((c, i) => ({ i, keep: c.keep })).filter(({ i }) => i !== 0 && i !== last).sort((x, y) => x.keep - y.keep);
  // Drop while the fixed columns leave the last one less than it needs (or its minimum).
  const fixed = (): number => total() - natural[last]!;
  while (fixed() + Math.min(natural[last]!, MIN_LAST) > width && droppable.length > 0) shown.splice(shown.indexOf(droppable.shift()!.i), 1);
  const lastWidth = Math.max(Math.min(natural[last]!, width - fixed()), Math.min(natural[last]!, MIN_LAST));
  const table = new Table({ head: shown.map((i) => columns[i]!.head), chars: PLAIN, style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0 } });
  for (const r of rows) table.push(shown.map((i) => (i === last ? wrap(r[i] ?? '', lastWidth) : r[i] ?? '')));
  const text = rows.length === 0 ? shown.map((i) => columns[i]!.head).join('  ') : table.toString();
  return { text: text.split('\n').map((l) => l.trimEnd()).join('\n'), hidden: columns.filter((_, i) => !shown.includes(i)).map((c) => c.head) };
}
