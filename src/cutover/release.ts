// One cut-over decision from MHV's export: what the route and the CLI both run.
import type { Sql } from '../db/connect.ts';
import { isRealInstant } from '../config.ts';
import { ExportFormatError, parseMhvExport, type ParsedExport } from '../shadow/export.ts';
import { releaseHeldPackages, type ReleaseResult } from './repository.ts';

/** The export or the instant given cannot be decided on; nothing was changed. */
export class ReleaseInputError extends Error {
  override name = 'ReleaseInputError';
}

/** mhvJobRunAt as a person writes it: an ISO 8601 date-time with its offset, a real one, not in the future. */
export function parseMhvJobRunAt(text: string | undefined, now = new Date()): Date {
  const value = (text ?? '').trim();
  if (value === '')
    throw new ReleaseInputError(
      "mhvJobRunAt: required (when the last run of MHV's email job before the export started, ISO 8601 with offset)",
    );
  if (!isRealInstant(value))
    throw new ReleaseInputError('mhvJobRunAt: expected a real ISO 8601 date-time with offset (2026-06-03T02:00:00Z)');
  const date = new Date(value);
  if (date.getTime() > now.getTime())
    throw new ReleaseInputError("mhvJobRunAt: is in the future; give when MHV's last email job run before the export started");
  return date;
}

/**
 * Reads MHV's export (the shadow comparison's format, docs/cutover.md) and decides the held
 * packages by it. An export with a row it cannot read, or with no row at all, is refused whole:
 * a package MHV emailed on an unreadable row would otherwise be released and emailed twice.
 */
export async function releaseFromExport(
  sql: Sql,
  input: string | Buffer | NodeJS.ReadableStream,
  mhvJobRunAt: Date,
): Promise<ReleaseResult & { exportRows: number }> {
  let parsed: ParsedExport;
  try {
    parsed = await parseMhvExport(input);
  } catch (error) {
    if (error instanceof ExportFormatError)
      throw new ReleaseInputError(error.message.replace('nothing was compared', 'nothing was decided'));
    throw error;
  }
  if (parsed.badRows.length > 0) {
    const shown = parsed.badRows
      .slice(0, 20)
      .map((b) => `line ${b.line}: ${b.problem}`)
      .join('; ');
    throw new ReleaseInputError(
      `the export has ${parsed.badRows.length} row(s) that cannot be read, so nothing was decided: ${shown}${parsed.badRows.length > 20 ? '; ...' : ''}`,
    );
  }
  if (parsed.rows.length === 0) {
    throw new ReleaseInputError(
      'the export has no rows, so nothing was decided: an export of the hold window always lists the packages MHV emailed before the cut-over',
    );
  }
  const result = await releaseHeldPackages(sql, new Set(parsed.rows.map((row) => row.trackingNumber)), mhvJobRunAt);
  return { ...result, exportRows: parsed.rows.length };
}
