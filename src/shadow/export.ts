// Reads MHV's export of the Rx tracking emails it sent: one row per package, with the veteran's
// ICN, the tracking number, the carrier and the date the email went out. The expected header is
// `icn,tracking_number,carrier,sent_date`; the spellings an Oracle export or a spreadsheet produce
// are accepted too (case, spaces, underscores, `PATIENT_ICN`, `TRACKING_NBR`, `trackingNumber`,
// `sent_at`, `EMAIL_SENT_DATE`, ...). A row that cannot be read is kept as a bad row with its line
// number: it is reported, never dropped.
import { Readable } from 'node:stream';
import { parse, CsvError } from 'csv-parse';
import { calendarMillis, fractionMillis, zoneOffsetMinutes } from '../instant.ts';

export interface ExportRow {
  /** 1-based line of the file the row ends on (the header is line 1). */
  line: number;
  icn: string;
  /** Upper-cased and trimmed, as the comparison matches it. */
  trackingNumber: string;
  /** Upper-cased; blank is `UNK`, as this service records a blank carrier. */
  carrier: string;
  sentAt: Date;
}

export interface BadRow {
  line: number;
  /** What is wrong, naming the column; never the value (it may be an ICN). */
  problem: string;
}

export interface ParsedExport {
  rows: ExportRow[];
  badRows: BadRow[];
}

/** The file as a whole cannot be read: no usable header, or broken CSV quoting. */
export class ExportFormatError extends Error {
  override name = 'ExportFormatError';
}

export const ExportColumns = ['icn', 'tracking_number', 'carrier', 'sent_date'] as const;
type ExportColumn = (typeof ExportColumns)[number];

/** Header spellings, compared after lower-casing and removing spaces, underscores and hyphens. */
const HeaderAliases: Record<string, ExportColumn> = {
  icn: 'icn',
  patienticn: 'icn',
  veteranicn: 'icn',
  trackingnumber: 'tracking_number',
  trackingnbr: 'tracking_number',
  trackingno: 'tracking_number',
  carrier: 'carrier',
  carriername: 'carrier',
  shipper: 'carrier',
  sentdate: 'sent_date',
  sentat: 'sent_date',
  emailsentdate: 'sent_date',
  emailsentat: 'sent_date',
  emaildate: 'sent_date',
};

const IcnPattern = /^\d{10}V\d{6}$/;
const MaxTrackingNumberLength = 60; // ZR2-2 carries up to 60 characters
const MaxCarrierLength = 40;

function normaliseHeader(name: string): string {
  return name
    .trim()
    .toLowerCase()
    .replace(/[\s_-]+/g, '');
}

/** Maps each header cell to the column it names; unknown columns are ignored, duplicates are an error. */
function readHeader(cells: string[]): Map<ExportColumn, number> {
  const positions = new Map<ExportColumn, number>();
  cells.forEach((cell, index) => {
    const column = HeaderAliases[normaliseHeader(cell)];
    if (column === undefined) return;
    if (positions.has(column))
      throw new ExportFormatError(`header: two columns name ${column} ("${cells[positions.get(column)!]}" and "${cell}")`);
    positions.set(column, index);
  });
  const missing = ExportColumns.filter((column) => !positions.has(column));
  if (missing.length > 0) {
    throw new ExportFormatError(
      // The cells found are not quoted: with no header line, they are the first row's data (an ICN).
      `header: missing column${missing.length > 1 ? 's' : ''} ${missing.join(', ')}; expected ${ExportColumns.join(',')} as the first line (found ${cells.length} column${cells.length === 1 ? '' : 's'}${positions.size > 0 ? `, of them ${[...positions.keys()].join(', ')}` : ', none of them a known name'})`,
    );
  }
  return positions;
}

const MonthNames = ['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC'];

function utc(year: number, month: number, day: number, hour = 0, minute = 0, second = 0, millisecond = 0): Date | undefined {
  const at = calendarMillis({ year, month, day, hour, minute, second, millisecond });
  return at === undefined ? undefined : new Date(at);
}

/**
 * A sent date as MHV's export writes it: ISO 8601 (`2026-05-14`, `2026-05-14 15:40:00`,
 * `2026-05-14T15:40:00Z`, with an offset), US `05/14/2026 [15:40[:00]]`, or Oracle's default
 * `14-MAY-26` / `14-MAY-2026 [15:40:00]`. A date or time without an offset is read as UTC: the
 * runbook's export query converts to UTC (SYS_EXTRACT_UTC) for that reason.
 */
export function parseSentDate(text: string): Date | undefined {
  const value = text.trim();
  let m = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)?)?$/i.exec(value);
  if (m) {
    const offsetMinutes = zoneOffsetMinutes(m[8]);
    if (offsetMinutes === undefined) return undefined;
    const at = calendarMillis({
      year: Number(m[1]),
      month: Number(m[2]),
      day: Number(m[3]),
      hour: Number(m[4] ?? 0),
      minute: Number(m[5] ?? 0),
      second: Number(m[6] ?? 0),
      millisecond: fractionMillis(m[7]),
      offsetMinutes,
    });
    return at === undefined ? undefined : new Date(at);
  }
  m = /^(\d{1,2})\/(\d{1,2})\/(\d{4})(?:\s+(\d{1,2}):(\d{2})(?::(\d{2}))?)?$/.exec(value);
  if (m) return utc(Number(m[3]), Number(m[1]), Number(m[2]), Number(m[4] ?? 0), Number(m[5] ?? 0), Number(m[6] ?? 0));
  m = /^(\d{1,2})-([A-Za-z]{3})-(\d{2}|\d{4})(?:\s+(\d{1,2}):(\d{2})(?::(\d{2}))?)?$/.exec(value);
  if (m) {
    const month = MonthNames.indexOf(m[2]!.toUpperCase()) + 1;
    if (month === 0) return undefined;
    // Oracle's RR years: 00-49 are 20xx, 50-99 are 19xx.
    const year = m[3]!.length === 4 ? Number(m[3]) : Number(m[3]) < 50 ? 2000 + Number(m[3]) : 1900 + Number(m[3]);
    return utc(year, month, Number(m[1]), Number(m[4] ?? 0), Number(m[5] ?? 0), Number(m[6] ?? 0));
  }
  return undefined;
}

function readRow(cells: string[], line: number, header: Map<ExportColumn, number>, width: number): ExportRow | BadRow {
  if (cells.length > width) return { line, problem: `${cells.length} fields where the header has ${width}` };
  const value = (column: ExportColumn) => (cells[header.get(column)!] ?? '').trim();
  const missing = ExportColumns.filter((column) => column !== 'carrier' && value(column) === '');
  if (missing.length > 0) return { line, problem: `missing ${missing.join(', ')}` };

  const problems: string[] = [];
  const icn = value('icn').toUpperCase();
  if (!IcnPattern.test(icn)) problems.push('icn: not an ICN (10 digits, V, 6 digits)');
  const trackingNumber = value('tracking_number').toUpperCase();
  if (trackingNumber.length > MaxTrackingNumberLength || !/^[A-Z0-9-]+$/.test(trackingNumber)) {
    problems.push(`tracking_number: not a tracking number (letters, digits and hyphens, at most ${MaxTrackingNumberLength})`);
  }
  const carrier = value('carrier').toUpperCase() || 'UNK';
  if (carrier.length > MaxCarrierLength || /[\r\n]/.test(carrier))
    problems.push(`carrier: not a carrier name (one line, at most ${MaxCarrierLength} characters)`);
  const sentAt = parseSentDate(value('sent_date'));
  if (sentAt === undefined) problems.push('sent_date: not a date (YYYY-MM-DD, an ISO 8601 date-time, MM/DD/YYYY or DD-MON-YY)');
  if (problems.length > 0 || sentAt === undefined) return { line, problem: problems.join('; ') };
  return { line, icn, trackingNumber, carrier, sentAt };
}

const CsvProblems: Record<string, string> = {
  CSV_INVALID_CLOSING_QUOTE: 'text follows a closing quote',
  CSV_NON_TRIMABLE_CHAR_AFTER_CLOSING_QUOTE: 'text follows a closing quote',
  INVALID_OPENING_QUOTE: 'a quote opens inside a field',
};

/**
 * Parses the export. The input is the file's text or a byte stream (the CLI streams the file).
 * Throws ExportFormatError when the file cannot be read as a whole; everything row-level is a
 * bad row in the result.
 */
export async function parseMhvExport(input: string | Buffer | NodeJS.ReadableStream): Promise<ParsedExport> {
  const source = typeof input === 'string' || Buffer.isBuffer(input) ? Readable.from([input]) : input;
  let lastLine = 0;
  const parser = parse({
    bom: true,
    info: true,
    // A row with too few or too many fields is reported by readRow, with its line number.
    relax_column_count: true,
    // A stray quote inside an unquoted field stays part of the value and fails that field's check,
    // instead of failing the whole file.
    relax_quotes: true,
    skip_empty_lines: true,
    // Tracked as records are parsed, not as they are read: a parse error can overtake records
    // still buffered in the stream.
    on_record: (record, context) => {
      lastLine = context.lines;
      return record;
    },
  });
  // pipe() does not pass a read error on (a missing file): without this the loop would wait forever.
  source.once('error', (error) => parser.destroy(error));
  source.pipe(parser);
  const rows: ExportRow[] = [];
  const badRows: BadRow[] = [];
  let header: Map<ExportColumn, number> | undefined;
  let width = 0;
  try {
    for await (const { record, info } of parser as AsyncIterable<{ record: string[]; info: { lines: number } }>) {
      if (header === undefined) {
        header = readHeader(record);
        width = record.length;
        continue;
      }
      // Empty lines are not rows; a row of empty fields (",,,") is a bad row like any other.
      const row = readRow(record, info.lines, header, width);
      if ('problem' in row) badRows.push(row);
      else rows.push(row);
    }
  } catch (error) {
    if (error instanceof CsvError) {
      // csv-parse's own message can quote the field's text (an ICN): it is replaced by ours.
      // An open quote runs to the end of the file, so the line where it opened is the useful one.
      if (error.code === 'CSV_QUOTE_NOT_CLOSED') {
        throw new ExportFormatError(`not valid CSV: a quoted field opened after line ${lastLine} is never closed; nothing was compared`);
      }
      const line = (error as CsvError & { lines?: number }).lines;
      const what = CsvProblems[error.code] ?? error.code;
      throw new ExportFormatError(`${line === undefined ? '' : `line ${line}: `}not valid CSV: ${what}; nothing was compared`);
    }
    throw error;
  } finally {
    // Stopping early (a bad header) must not leave the file open.
    (source as Partial<Readable>).destroy?.();
  }
  if (header === undefined) throw new ExportFormatError(`the export is empty; expected the header ${ExportColumns.join(',')}`);
  return { rows, badRows };
}
