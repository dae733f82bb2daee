// The comparison rules, on the pure function: no database, both sides built by hand.
import t from 'tap';
import { compareShadow, exportSpan, type OurPackage, type Window } from '../../src/shadow/compare.ts';
import type { ExportRow } from '../../src/shadow/export.ts';
import { mismatchCsv, summaryText } from '../../src/shadow/report.ts';

const A = '1012345678V123456';
const B = '1098765432V654321';
const window: Window = { from: new Date('2026-05-14T00:00:00Z'), to: new Date('2026-05-15T00:00:00Z') };

let line = 2;
const sent = (icn: string, trackingNumber: string, sentAt: string, carrier = 'UPS'): ExportRow => ({
  line: line++,
  icn,
  trackingNumber,
  carrier,
  sentAt: new Date(sentAt),
});
const emailed = (
  icn: string,
  trackingNumber: string,
  emailId: string,
  shippedAt = '2026-05-14T10:00:00Z',
  carrier = 'UPS',
): OurPackage => ({
  icn,
  trackingNumber,
  carrier,
  shippedAt: new Date(shippedAt),
  emailId,
  states: ['grouped'],
  unprocessableReason: null,
  inWindow: new Date(shippedAt) >= window.from && new Date(shippedAt) < window.to,
});

t.beforeEach(() => {
  line = 2;
});

t.test('the same packages in the same emails: nothing to report', async (t) => {
  const report = compareShadow({
    rows: [sent(A, 'P1', '2026-05-14T12:00:00Z'), sent(A, 'P2', '2026-05-14T12:00:00Z'), sent(B, 'P3', '2026-05-14T13:00:00Z')],
    badRows: [],
    ours: [emailed(A, 'P1', 'e1'), emailed(A, 'P2', 'e1'), emailed(B, 'P3', 'e2')],
    window,
  });
  t.same(report.mismatches, []);
  t.same(report.summary.matched, { packages: 3, veterans: 2 });
  t.same(report.summary.mhv, { packages: 3, emails: 2 });
  t.same(report.summary.service, { packages: 3, emails: 2 });
  t.equal(report.summary.packageMismatchRate, 0);
  t.equal(report.summary.veteranMismatchRate, 0);
  t.equal(mismatchCsv(report), 'kind,icn_last4,tracking_numbers,lines,carrier,mhv_sent_dates,shipped_at,email_ids,detail\n');
  t.match(summaryText(report), 'Package mismatch rate: 0.00%');
});

t.test('one export row per prescription: rows of one package on one day are one package', async (t) => {
  const report = compareShadow({
    rows: [sent(A, 'P1', '2026-05-14T12:00:00Z'), sent(A, 'P1', '2026-05-14T12:00:01Z')],
    badRows: [],
    ours: [emailed(A, 'P1', 'e1')],
    window,
  });
  t.same(report.mismatches, []);
  t.equal(report.summary.packagesCompared, 1);
});

t.test('the service split what MHV sent together', async (t) => {
  const report = compareShadow({
    rows: [sent(A, 'P1', '2026-05-14T12:00:00Z'), sent(A, 'P2', '2026-05-14T12:00:00Z')],
    badRows: [],
    ours: [emailed(A, 'P1', 'e1'), emailed(A, 'P2', 'e2')],
    window,
  });
  t.same(
    report.mismatches.map((m) => [m.kind, m.icnLast4, m.trackingNumbers, m.lines, m.emailIds, m.detail]),
    [
      [
        'grouped_differently',
        '3456',
        ['P1', 'P2'],
        [2, 3],
        ['e1', 'e2'],
        'MHV sent 1 email: 2026-05-14 [P1 P2]; the service 2 emails: [P1], [P2]',
      ],
    ],
  );
  t.same(report.summary.matched, { packages: 2, veterans: 0 });
  t.equal(report.summary.packageMismatchRate, 0, 'every package was emailed by both');
  t.equal(report.summary.veteranMismatchRate, 1);
});

t.test('a package on the edge of the window is looked up on the other side whatever its date', async (t) => {
  const report = compareShadow({
    rows: [
      sent(A, 'EARLY', '2026-05-14T01:00:00Z'), // shipped the day before, emailed in the window
      sent(A, 'LATE', '2026-05-15T03:00:00Z'), // shipped in the window, emailed the next day
      sent(B, 'OUTSIDE', '2026-05-16T03:00:00Z'), // neither side within the window
    ],
    badRows: [],
    ours: [emailed(A, 'EARLY', 'e0', '2026-05-13T22:00:00Z'), emailed(A, 'LATE', 'e1', '2026-05-14T23:00:00Z')],
    window,
  });
  t.same(report.mismatches, [], 'both matched, each in an email of its own on both sides');
  t.equal(report.summary.packagesCompared, 2);
  t.equal(report.summary.export.rowsNotCompared, 1);
  t.same(report.summary.matched.packages, 2);
});

t.test('carrier spelling is not a difference; another carrier is', async (t) => {
  const report = compareShadow({
    rows: [
      sent(A, 'P1', '2026-05-14T12:00:00Z', 'Fed-Ex'),
      sent(A, 'P2', '2026-05-14T12:00:00Z', 'UPS'),
      sent(A, 'P3', '2026-05-14T12:00:00Z', 'UNK'),
      sent(A, 'P4', '2026-05-14T12:00:00Z', 'UNITED STATES POSTAL SERVICE'),
    ],
    badRows: [],
    ours: [
      emailed(A, 'P1', 'e1', undefined, 'FEDEX'),
      emailed(A, 'P2', 'e1', undefined, 'USPS'),
      emailed(A, 'P3', 'e1', undefined, 'DHL'),
      emailed(A, 'P4', 'e1', undefined, 'USPS'),
    ],
    window,
  });
  t.same(
    report.mismatches.map((m) => [m.kind, m.trackingNumbers[0], m.detail]),
    [['carrier_differs', 'P2', 'MHV UPS, service USPS']],
  );
  t.equal(report.summary.carrierDiffers.packages, 1);
  t.same(report.summary.matched, { packages: 4, veterans: 0 });
});

t.test('MHV emailing one package on two days is reported once, and grouped by its first day', async (t) => {
  const report = compareShadow({
    rows: [sent(A, 'P1', '2026-05-14T12:00:00Z'), sent(A, 'P2', '2026-05-14T12:00:00Z'), sent(A, 'P1', '2026-05-15T12:00:00Z')],
    badRows: [],
    ours: [emailed(A, 'P1', 'e1'), emailed(A, 'P2', 'e1')],
    window,
  });
  t.same(
    report.mismatches.map((m) => [m.kind, m.trackingNumbers, m.lines, m.mhvSentDates]),
    [['emailed_twice_by_mhv', ['P1'], [2, 4], ['2026-05-14', '2026-05-15']]],
  );
});

t.test('bad rows come first, in line order, and are not packages', async (t) => {
  const report = compareShadow({
    rows: [sent(A, 'P1', '2026-05-14T12:00:00Z')],
    badRows: [
      { line: 9, problem: 'missing icn' },
      { line: 4, problem: 'sent_date: not a date' },
    ],
    ours: [emailed(A, 'P1', 'e1')],
    window,
  });
  t.same(
    report.mismatches.map((m) => [m.kind, m.lines, m.detail]),
    [
      ['bad_row', [4], 'sent_date: not a date'],
      ['bad_row', [9], 'missing icn'],
    ],
  );
  t.equal(report.summary.export.rows, 3);
  t.equal(report.summary.export.badRows, 2);
  t.equal(report.summary.packagesCompared, 1);
  t.equal(report.summary.veteranMismatchRate, 0);
});

t.test('what the service did not email on its own side is not a mismatch unless MHV emailed it', async (t) => {
  const pending: OurPackage = { ...emailed(A, 'P9', 'x'), emailId: null, states: ['pending'] };
  const report = compareShadow({ rows: [], badRows: [], ours: [pending], window });
  t.same(report.mismatches, []);
  t.equal(report.summary.packagesCompared, 0);
});

t.test('the default window is the whole UTC days of the export', async (t) => {
  t.equal(exportSpan([]), undefined);
  t.same(exportSpan([sent(A, 'P1', '2026-05-15T23:59:59Z'), sent(A, 'P2', '2026-05-14T00:00:01Z')]), {
    from: new Date('2026-05-14T00:00:00Z'),
    to: new Date('2026-05-16T00:00:00Z'),
  });
});

t.test('a package held at the cut-over that MHV emailed says so', async (t) => {
  const report = compareShadow({
    rows: [sent(A, 'P1', '2026-05-14T12:00:00Z')],
    badRows: [],
    ours: [{ ...emailed(A, 'P1', 'e1'), emailId: null, states: ['held_for_cutover'] }],
    window,
  });
  t.same(
    report.mismatches.map((m) => [m.kind, m.trackingNumbers, m.detail]),
    [['emailed_by_mhv_only', ['P1'], "held at the cut-over until MHV's export is compared"]],
  );
  t.same(report.summary.emailedByMhvOnly.byReason, { "held at the cut-over until MHV's export is compared": 1 });
});
