/**
 * One row per figure, printed as it completes and again in the final
 * markdown table.
 */

export type Met = 'yes' | 'no' | 'n/a' | 'skipped' | 'error';

export interface Row {
  figure: string;
  ours: string;
  /** The reference run, or the goal's bound / a baseline, saying which. */
  reference: string;
  /** ours / reference, where both are numbers. */
  ratio: number | undefined;
  goal: string;
  met: Met;
}

export const metOrNot = (ok: boolean): Met => (ok ? 'yes' : 'no');

/** Thrown by a figure that this machine cannot measure (no root, no perl, no addon): its row says skipped, and why. */
export class Unavailable extends Error {
  override name = 'Unavailable';
}

const COLUMNS = ['figure', 'ours', 'reference', 'ratio', 'goal', 'met'] as const;

function cells(row: Row): string[] {
  return [row.figure, row.ours, row.reference, row.ratio === undefined ? '' : row.ratio.toFixed(2), row.goal, row.met];
}

/** One line of progress, while the bench runs. */
export function progressLine(row: Row, elapsedMs: number): string {
  const ratio = row.ratio === undefined ? '' : `, ratio ${row.ratio.toFixed(2)}`;
  const clock = `[${(elapsedMs / 1000).toFixed(1).padStart(5)} s]`;
  if (row.met === 'skipped' || row.met === 'error') return `${clock} ${row.figure}: ${row.met}: ${row.ours}`;
  return `${clock} ${row.figure}: ${row.ours} vs ${row.reference}${ratio}; goal ${row.goal}: ${row.met === 'n/a' ? 'reported' : row.met === 'yes' ? 'met' : 'NOT met'}`;
}

/** The rows as a markdown table, columns padded so it reads in a terminal too. */
export function markdownTable(rows: readonly Row[]): string {
  const body = rows.map(cells).map((line) => line.map((cell) => cell.replace(/\|/g, '\\|')));
  const widths = COLUMNS.map((name, i) => Math.max(name.length, ...body.map((line) => line[i]!.length)));
  const format = (line: readonly string[]) => `| ${line.map((cell, i) => cell.padEnd(widths[i]!)).join(' | ')} |`;
  return [format(COLUMNS), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...body.map(format)].join('\n');
}
