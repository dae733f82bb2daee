// The comparison's two outputs: a summary a person reads, and a CSV of every mismatch for the MHV
// database team. Neither carries a full ICN, a name, an email address or an Rx number (see Mismatch).
import { stringify } from 'csv-stringify/sync';
import type { Mismatch, ShadowReport } from './compare.ts';

export const MismatchCsvColumns = [
  'kind',
  'icn_last4',
  'tracking_numbers',
  'lines',
  'carrier',
  'mhv_sent_dates',
  'shipped_at',
  'email_ids',
  'detail',
] as const;

/** Lists are joined with spaces: one CSV cell each, still readable in a spreadsheet. */
function csvRecord(m: Mismatch): string[] {
  return [
    m.kind,
    m.icnLast4 ?? '',
    m.trackingNumbers.join(' '),
    m.lines.join(' '),
    m.carrier ?? '',
    m.mhvSentDates.join(' '),
    m.shippedAt ?? '',
    m.emailIds.join(' '),
    m.detail,
  ];
}

export function mismatchCsv(report: ShadowReport): string {
  return stringify(report.mismatches.map(csvRecord), { header: true, columns: [...MismatchCsvColumns] });
}

const percent = (rate: number) => `${(rate * 100).toFixed(2)}%`;

/** A summary for a terminal or a ticket: counts, rates, and the first mismatches. */
export function summaryText(report: ShadowReport, options: { listFirst?: number } = {}): string {
  const s = report.summary;
  const listFirst = options.listFirst ?? 20;
  const lines = [
    `Shadow comparison, shipped/sent from ${s.window.from} to ${s.window.to} (end excluded)`,
    `Export: ${s.export.rows} rows, ${s.export.badRows} bad, ${s.export.rowsNotCompared} outside the period`,
    `Compared: ${s.packagesCompared} packages of ${s.veteransCompared} veterans`,
    `  MHV emailed ${s.mhv.packages} packages in ${s.mhv.emails} emails; the service would have emailed ${s.service.packages} in ${s.service.emails}`,
    `Matched: ${s.matched.packages} packages; ${s.matched.veterans} veterans got the same emails from both`,
    `Emailed by MHV only: ${s.emailedByMhvOnly.packages}`,
    ...Object.entries(s.emailedByMhvOnly.byReason)
      .sort(([, a], [, b]) => b - a)
      .map(([reason, count]) => `  ${count}  ${reason}`),
    `Emailed by the service only: ${s.emailedByServiceOnly.packages}`,
    `Grouped differently: ${s.groupedDifferently.veterans} veterans`,
    `Carrier differs: ${s.carrierDiffers.packages}; emailed twice by MHV: ${s.emailedTwiceByMhv.packages}`,
    `Package mismatch rate: ${percent(s.packageMismatchRate)} (packages one side emailed and the other would not)`,
    `Veteran mismatch rate: ${percent(s.veteranMismatchRate)} (veterans whose emails differ in any way)`,
  ];
  if (report.mismatches.length > 0) {
    lines.push('', `Mismatches${report.mismatches.length > listFirst ? ` (first ${listFirst} of ${report.mismatches.length})` : ''}:`);
    for (const m of report.mismatches.slice(0, listFirst)) {
      const where = [
        m.lines.length > 0 ? `line ${m.lines.join(',')}` : '',
        m.icnLast4 ? `ICN ...${m.icnLast4}` : '',
        m.trackingNumbers.join(' '),
      ]
        .filter(Boolean)
        .join(' ');
      lines.push(`  ${m.kind}  ${where}: ${m.detail}`);
    }
  }
  return `${lines.join('\n')}\n`;
}
