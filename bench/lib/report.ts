// How a benchmark speaks: progress on stderr, one result table on stdout.
import { cpus, loadavg, totalmem } from 'node:os';

const started = performance.now();

export function progress(message: string): void {
  const seconds = ((performance.now() - started) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`[bench ${seconds}s] ${message}\n`);
}

export interface ResultRow {
  /** What was measured. */
  measure: string;
  /** The service's figure. */
  result: string;
  /** The limit measured beside it in the same run. */
  limit: string;
  /** result / limit, when both are rates or times of the same work. */
  ratio?: string;
  /** The target and whether this run met it. */
  target?: string;
}

export interface ResultTable {
  title: string;
  rows: ResultRow[];
  /** Lines printed under the table: sizes, settings, the machine. */
  notes: string[];
}

const integer = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const oneDecimal = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1, minimumFractionDigits: 1 });

export function count(n: number): string {
  return integer.format(n);
}

export function rate(n: number, unit: string): string {
  return `${n >= 100 ? integer.format(n) : oneDecimal.format(n)} ${unit}/s`;
}

export function seconds(ms: number): string {
  return `${oneDecimal.format(ms / 1000)} s`;
}

export function millis(ms: number): string {
  return `${oneDecimal.format(ms)} ms`;
}

export function megabytes(bytes: number): string {
  return `${integer.format(bytes / (1024 * 1024))} MB`;
}

export function percent(ratio: number): string {
  return `${integer.format(ratio * 100)}%`;
}

/** `≥ 60%: met` or `≥ 60%: MISSED`, from a comparison the caller makes. */
export function verdict(target: string, met: boolean): string {
  return `${target}: ${met ? 'met' : 'MISSED'}`;
}

/** The row every stage ends with: the service's peak RSS against the 250 MB target. */
export function peakRssRow(peakRssBytes: number) {
  const limit = 250 * 2 ** 20;
  return {
    measure: 'peak RSS of the service process',
    result: megabytes(peakRssBytes),
    limit: '250 MB',
    ratio: percent(peakRssBytes / limit),
    target: verdict('< 250 MB', peakRssBytes < limit),
  };
}

export function machineNote(database: string): string {
  const cpu = cpus();
  const load = loadavg()
    .map((n) => n.toFixed(1))
    .join(' ');
  return `machine: ${cpu.length} cores (${cpu[0]?.model.trim() ?? 'unknown CPU'}), ${integer.format(totalmem() / 2 ** 30)} GiB RAM, Node ${process.versions.node}, load average ${load} at the end (the machine is shared); ${database}`;
}

function escapeCell(text: string): string {
  return text.replace(/\|/g, '\\|');
}

export function formatTable(table: ResultTable): string {
  const header = ['measure', 'result', 'limit measured beside it', 'ratio', 'target'];
  const lines = [
    `## ${table.title}`,
    '',
    `| ${header.join(' | ')} |`,
    `| ${header.map(() => '---').join(' | ')} |`,
    ...table.rows.map(
      (row) => `| ${[row.measure, row.result, row.limit, row.ratio ?? '', row.target ?? ''].map(escapeCell).join(' | ')} |`,
    ),
    '',
    ...table.notes.map((note) => `- ${note}`),
  ];
  return `${lines.join('\n')}\n`;
}
