// One shadow comparison from an export to a report: what the CLI and the route both run.
import type { SqlHandle } from '../db/connect.ts';
import { compareShadow, exportSpan, type ShadowReport, type Window } from './compare.ts';
import { parseMhvExport, type ParsedExport } from './export.ts';
import { loadOurPackages } from './repository.ts';

/** The caller's window cannot be used (bad bound, empty, or nothing to infer it from). */
export class WindowError extends Error {
  override name = 'WindowError';
}

const DateOnly = /^\d{4}-\d{2}-\d{2}$/;
const DateTime = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/;

/**
 * A window bound given by a person: an ISO date-time with an offset, or a date (UTC). A date as
 * `to` includes that whole day, which is what `--from 2026-05-14 --to 2026-05-15` means to a reader.
 */
export function parseWindowBound(text: string, bound: 'from' | 'to'): Date {
  const date = parseBound(text, bound);
  // A comparison period lies in the service's life; far dates (9999-12-31, whose end is in year
  // 10000) are beyond what Postgres and ISO dates share.
  if (date.getUTCFullYear() < 2000 || date.getUTCFullYear() > 2999)
    throw new WindowError(`${bound}: must lie between the years 2000 and 2999`);
  return date;
}

function parseBound(text: string, bound: 'from' | 'to'): Date {
  const value = text.trim();
  if (DateOnly.test(value)) {
    const date = new Date(`${value}T00:00:00Z`);
    if (Number.isNaN(date.getTime()) || date.toISOString().slice(0, 10) !== value) throw new WindowError(`${bound}: not a date`);
    return bound === 'to' ? new Date(date.getTime() + 86_400_000) : date;
  }
  const date = new Date(value);
  if (!DateTime.test(value) || Number.isNaN(date.getTime())) {
    throw new WindowError(`${bound}: expected an ISO 8601 date (2026-05-14) or date-time with offset (2026-05-14T00:00:00Z)`);
  }
  return date;
}

/** The window asked for, each missing bound taken from the span of the export's sent dates. */
export function resolveWindow(parsed: ParsedExport, from?: Date, to?: Date): Window {
  const span = exportSpan(parsed.rows);
  const window = { from: from ?? span?.from, to: to ?? span?.to };
  if (window.from === undefined || window.to === undefined) {
    throw new WindowError('the export has no valid rows to take the period from: give from and to');
  }
  if (window.from.getTime() >= window.to.getTime()) throw new WindowError('from must be before to');
  return { from: window.from, to: window.to };
}

export interface ShadowRunOptions {
  from?: Date;
  to?: Date;
}

export async function runShadowComparison(
  sql: SqlHandle,
  input: string | Buffer | NodeJS.ReadableStream,
  options: ShadowRunOptions = {},
): Promise<ShadowReport> {
  const parsed = await parseMhvExport(input);
  const window = resolveWindow(parsed, options.from, options.to);
  const ours = await loadOurPackages(
    sql,
    window,
    parsed.rows.map((row) => row.trackingNumber),
  );
  return compareShadow({ rows: parsed.rows, badRows: parsed.badRows, ours, window });
}
