// The shadow comparison end to end: a shadow period in Postgres, MHV's export as a file or a body,
// and the report through the CLI and through POST /v1/shadow/compare. The period holds exactly one
// package missing on each side, one veteran grouped differently and one malformed row: the report
// must name those and nothing else.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'csv-parse/sync';
import t from 'tap';
import { internalAuth, testApp } from '../support/app.ts';
import { testDatabase, type TestDatabase } from '../support/database.ts';
import { insertShadowedEmail, shadowDispense, Veterans } from '../support/shadow.ts';
import { runScript, tempDir } from '../support/cli.ts';
import { insertDispenses } from '../support/fixtures.ts';

const allIcns = Object.values(Veterans);

/** What the service would have sent on 14 May 2026 (DELIVERY_MODE=shadow). */
async function shadowPeriod(db: TestDatabase) {
  const { sql } = db;
  const emails = {
    // Alpha: one package with two prescriptions; MHV emailed it the same day. Matches.
    alpha: await insertShadowedEmail(sql, Veterans.alpha, [
      { trackingNumber: '1Z9999990312345678', carrier: 'UPS', shippedAt: '2026-05-14T16:00:00Z', rxNumbers: ['2719043', '2719100'] },
    ]),
    // Bravo: two packages in one email; MHV emailed them on two days. Grouped differently.
    bravo: await insertShadowedEmail(sql, Veterans.bravo, [
      { trackingNumber: '9400100000000000000012', carrier: 'USPS', shippedAt: '2026-05-14T10:30:00Z', rxNumbers: ['7004512'] },
      { trackingNumber: '771234567890', carrier: 'FEDEX', shippedAt: '2026-05-14T10:44:00Z', rxNumbers: ['7004520'] },
    ]),
    // The JSON sample's veteran: two packages; MHV's export has only the first. Service only.
    json: await insertShadowedEmail(sql, Veterans.json, [
      { trackingNumber: '9400100000000000000123', carrier: 'USPS', shippedAt: '2026-05-14T15:40:00Z', rxNumbers: ['3100451'] },
      { trackingNumber: '1Z9999990300000456', carrier: 'UPS', shippedAt: '2026-05-14T15:41:00Z', rxNumbers: ['3100452'] },
    ]),
  };
  // Charlie's fill was cancelled: nobody emails it, and MHV did not either. Not a mismatch.
  await insertDispenses(sql, [
    shadowDispense({
      patient_icn: Veterans.charlie,
      tracking_number: '',
      carrier: 'UNK',
      shipped_at: null,
      state: 'cancelled',
      state_reason: 'DRUG DISCONTINUED BY PROVIDER',
      rx_number: '7004513',
    }),
  ]);
  return emails;
}

/**
 * MHV's export as an Oracle spool would write it: upper-case quoted header, a BOM, CRLF, mixed date
 * formats. Delta's package never reached the service (MHV only); line 7 has a broken ICN.
 */
const mhvExport = [
  '\uFEFF"PATIENT_ICN","TRACKING_NBR","CARRIER","EMAIL_SENT_DATE"',
  `"${Veterans.alpha}","1Z9999990312345678","UPS","2026-05-14 18:05:00"`,
  `${Veterans.bravo},9400100000000000000012,USPS,05/14/2026`,
  `${Veterans.bravo},771234567890,FedEx,2026-05-15`,
  `${Veterans.json},9400100000000000000123,USPS,14-MAY-26`,
  `${Veterans.delta},9400100000000000000099,USPS,2026-05-14T20:00:00Z`,
  '10555555V111,9400100000000000000555,USPS,2026-05-14',
  '',
].join('\r\n');

interface Row {
  kind: string;
  icn_last4: string;
  tracking_numbers: string;
  lines: string;
  detail: string;
}

/** The mismatches reduced to what identifies each one. */
function identify(rows: { kind: string; icnLast4: string | null; trackingNumbers: string[]; lines: number[] }[]) {
  return rows.map((r) => ({ kind: r.kind, icnLast4: r.icnLast4, trackingNumbers: r.trackingNumbers, lines: r.lines }));
}

const expected = [
  { kind: 'bad_row', icnLast4: null, trackingNumbers: [], lines: [7] },
  { kind: 'emailed_by_mhv_only', icnLast4: '6789', trackingNumbers: ['9400100000000000000099'], lines: [6] },
  { kind: 'emailed_by_service_only', icnLast4: '2333', trackingNumbers: ['1Z9999990300000456'], lines: [] },
  { kind: 'grouped_differently', icnLast4: '4321', trackingNumbers: ['771234567890', '9400100000000000000012'], lines: [3, 4] },
];

function fromCsv(text: string) {
  const rows = parse(text, { columns: true }) as Row[];
  return rows.map((r) => ({
    kind: r.kind,
    icnLast4: r.icn_last4 === '' ? null : r.icn_last4,
    trackingNumbers: r.tracking_numbers === '' ? [] : r.tracking_numbers.split(' '),
    lines: r.lines === '' ? [] : r.lines.split(' ').map(Number),
  }));
}

const runCli = (args: string[], env: Record<string, string>) => runScript('src/shadow/cli.ts', args, env);

t.test('the CLI names each known difference and nothing else', async (t) => {
  const db = await testDatabase(t);
  const emails = await shadowPeriod(db);
  const dir = tempDir(t, 'shadow-compare-');
  const exportFile = join(dir, 'mhv-export.csv');
  const outFile = join(dir, 'mismatches.csv');
  writeFileSync(exportFile, mhvExport);

  const result = await runCli([exportFile, '--out', outFile], { DATABASE_URL: db.url });
  t.equal(result.code, 0, result.stderr);
  const csv = readFileSync(outFile, 'utf8');
  t.match(csv.split('\n')[0], /^kind,icn_last4,tracking_numbers,lines,carrier,mhv_sent_dates,shipped_at,email_ids,detail$/);
  const rows = parse(csv, { columns: true }) as Row[];
  t.same(fromCsv(csv), expected);
  t.equal(rows[0]!.detail, 'icn: not an ICN (10 digits, V, 6 digits)');
  t.equal(rows[1]!.detail, 'no dispense received');
  t.match(rows[3]!.detail, /MHV sent 2 emails: 2026-05-14 \[9400100000000000000012\], 2026-05-15 \[771234567890\]; the service 1 email/);
  t.match(csv, emails.bravo, "the grouping row names the service's email");
  t.match(csv, emails.json);

  const summary = result.stdout;
  t.match(summary, 'Export: 6 rows, 1 bad, 0 outside the period');
  t.match(summary, 'Compared: 6 packages of 4 veterans');
  t.match(summary, 'Matched: 4 packages; 1 veterans got the same emails from both');
  t.match(summary, 'Emailed by MHV only: 1\n  1  no dispense received');
  t.match(summary, 'Emailed by the service only: 1');
  t.match(summary, 'Grouped differently: 1 veterans');
  t.match(summary, 'Package mismatch rate: 33.33%');
  t.match(summary, 'Veteran mismatch rate: 75.00%');
  t.match(summary, '4 mismatches written to');

  for (const icn of allIcns) {
    t.notOk(csv.includes(icn), 'the CSV carries no full ICN');
    t.notOk(summary.includes(icn), 'the summary carries no full ICN');
  }
});

t.test('the CLI with a window, --out -, and its errors', async (t) => {
  const db = await testDatabase(t);
  await shadowPeriod(db);
  const dir = tempDir(t, 'shadow-compare-');
  const exportFile = join(dir, 'mhv-export.csv');
  writeFileSync(exportFile, mhvExport);

  // 14 May only: Bravo's second package was sent on the 15th but shipped on the 14th, so it is
  // still compared (and matched); the comparison is the same.
  const window = await runCli([exportFile, '--from', '2026-05-14', '--to', '2026-05-14', '--out', '-'], { DATABASE_URL: db.url });
  t.equal(window.code, 0, window.stderr);
  t.same(fromCsv(window.stdout), expected, 'the CSV goes to stdout');
  t.match(window.stderr, 'from 2026-05-14T00:00:00.000Z to 2026-05-15T00:00:00.000Z', 'the summary goes to stderr');

  // A period with no shipment and no sent email: nothing is compared, every valid row is outside it.
  const empty = await runCli([exportFile, '--from', '2026-06-01T00:00:00Z', '--to', '2026-06-02T00:00:00Z'], { DATABASE_URL: db.url });
  t.equal(empty.code, 0, empty.stderr);
  t.match(empty.stdout, 'Export: 6 rows, 1 bad, 5 outside the period');
  t.match(empty.stdout, 'Compared: 0 packages of 0 veterans');

  const missing = await runCli([join(dir, 'nope.csv')], { DATABASE_URL: db.url });
  t.equal(missing.code, 2);
  t.match(missing.stderr, /cannot read .*nope\.csv \(ENOENT\)/);

  const badHeader = join(dir, 'bad-header.csv');
  writeFileSync(badHeader, 'icn,tracking,carrier,sent_date\n1012345678V123456,1Z1,UPS,2026-05-14\n');
  const header = await runCli([badHeader], { DATABASE_URL: db.url });
  t.equal(header.code, 2);
  t.match(header.stderr, 'header: missing column tracking_number; expected icn,tracking_number,carrier,sent_date');

  const badBound = await runCli([exportFile, '--from', 'yesterday'], { DATABASE_URL: db.url });
  t.equal(badBound.code, 2);
  t.match(badBound.stderr, '--from: expected an ISO 8601 date');

  const noDatabase = await runCli([exportFile], {});
  t.equal(noDatabase.code, 2);
  t.match(noDatabase.stderr, 'DATABASE_URL (or DATABASE_URL_FILE) must name the service database');
});

t.test('POST /v1/shadow/compare answers the same report as JSON or CSV', async (t) => {
  const { app, db, logs } = await testApp(t);
  const emails = await shadowPeriod(db);
  const post = (headers: Record<string, string>, url = '/v1/shadow/compare', payload = mhvExport) =>
    app.inject({ method: 'POST', url, headers: { ...internalAuth, 'content-type': 'text/csv', ...headers }, payload });

  const json = await post({});
  t.equal(json.statusCode, 200, json.body);
  t.match(json.headers['content-type'], /^application\/json/);
  const report = json.json();
  t.same(identify(report.mismatches), expected);
  t.same(report.mismatches[2].emailIds, [emails.json]);
  t.equal(report.mismatches[2].shippedAt, '2026-05-14T15:41:00.000Z');
  t.same(report.summary.window, { from: '2026-05-14T00:00:00.000Z', to: '2026-05-16T00:00:00.000Z' });
  t.equal(report.summary.packagesCompared, 6);
  t.same(report.summary.matched, { packages: 4, veterans: 1 });
  t.same(report.summary.emailedByMhvOnly, { packages: 1, byReason: { 'no dispense received': 1 } });
  t.equal(report.summary.emailedByServiceOnly.packages, 1);
  t.equal(report.summary.groupedDifferently.veterans, 1);
  t.equal(report.summary.packageMismatchRate, 0.3333);
  t.equal(report.summary.veteranMismatchRate, 0.75);

  const csv = await post({ accept: 'text/csv' }, '/v1/shadow/compare?from=2026-05-14&to=2026-05-15');
  t.equal(csv.statusCode, 200, csv.body);
  t.match(csv.headers['content-type'], /^text\/csv/);
  t.same(fromCsv(csv.body), expected);

  for (const icn of allIcns) {
    t.notOk(logs.text.includes(icn), 'no ICN in the logs');
    t.notOk(csv.body.includes(icn), 'no full ICN in the CSV answer');
    // The caller sent the export's ICNs; the answer never echoes them whole, nor the service-only veteran's.
    t.notOk(json.body.includes(icn), 'no full ICN in the JSON answer');
  }
  t.match(logs.text, /"packagesCompared":6,"mismatches":4/);
});

t.test('POST /v1/shadow/compare refuses what it cannot compare', async (t) => {
  const { app } = await testApp(t);
  const post = (headers: Record<string, string>, payload: string, url = '/v1/shadow/compare') =>
    app.inject({ method: 'POST', url, headers: { 'content-type': 'text/csv', ...headers }, payload });

  const noToken = await post({}, mhvExport);
  t.equal(noToken.statusCode, 401);

  const json = await post({ ...internalAuth, 'content-type': 'application/json' }, '{}');
  t.equal(json.statusCode, 415);

  const header = await post(internalAuth, 'ssn,name\n666001234,CMOPTEST\n');
  t.equal(header.statusCode, 400);
  t.match(header.json().message, 'header: missing columns icn, tracking_number, carrier, sent_date');
  t.notOk(header.body.includes('666001234'), 'a rejected row is not echoed');

  const quote = await post(
    internalAuth,
    `icn,tracking_number,carrier,sent_date\n${Veterans.alpha},"1Z99,UPS,2026-05-14\n${Veterans.bravo},1Z98,UPS,2026-05-14\n`,
  );
  t.equal(quote.statusCode, 400, 'a quote left open swallows the rest of the file: nothing is compared');
  t.equal(quote.json().message, 'not valid CSV: a quoted field opened after line 1 is never closed; nothing was compared');

  const empty = await post(internalAuth, '');
  t.equal(empty.statusCode, 400);

  const onlyBad = await post(internalAuth, 'icn,tracking_number,carrier,sent_date\nx,y,z,w\n');
  t.equal(onlyBad.statusCode, 400);
  t.match(onlyBad.json().message, 'the export has no valid rows to take the period from: give from and to');

  const onlyBadWithWindow = await post(
    internalAuth,
    'icn,tracking_number,carrier,sent_date\nx,y,z,w\n',
    '/v1/shadow/compare?from=2026-05-14&to=2026-05-14',
  );
  t.equal(onlyBadWithWindow.statusCode, 200);
  t.same(
    onlyBadWithWindow.json().mismatches.map((m: { kind: string; lines: number[]; detail: string }) => [m.kind, m.lines, m.detail]),
    [
      [
        'bad_row',
        [2],
        'icn: not an ICN (10 digits, V, 6 digits); sent_date: not a date (YYYY-MM-DD, an ISO 8601 date-time, MM/DD/YYYY or DD-MON-YY)',
      ],
    ],
  );

  const badBound = await post(internalAuth, mhvExport, '/v1/shadow/compare?from=2026-02-30');
  t.equal(badBound.statusCode, 400);
  t.match(badBound.json().message, 'from: not a date');

  const reversed = await post(internalAuth, mhvExport, '/v1/shadow/compare?from=2026-05-15&to=2026-05-14T00:00:00Z');
  t.equal(reversed.statusCode, 400);
  t.match(reversed.json().message, 'from must be before to');

  // More than fits the service's capped heap: the CLI takes it.
  const row = `${Veterans.alpha},1Z9999990312345678,UPS,2026-05-14\n`;
  const tooLarge = await post(internalAuth, `icn,tracking_number,carrier,sent_date\n${row.repeat(Math.ceil((1024 * 1024) / row.length))}`);
  t.equal(tooLarge.statusCode, 413);
});

t.test('why MHV emailed a package the service did not, from the dispenses it holds', async (t) => {
  const { app, db } = await testApp(t);
  const { sql } = db;
  const icn = Veterans.delta;
  await insertDispenses(sql, [
    shadowDispense({ patient_icn: icn, tracking_number: 'PEND0001', shipped_at: '2026-05-14T09:00:00Z', state: 'pending' }),
  ]);
  // Came without an ICN: found by its tracking number alone.
  await insertDispenses(sql, [
    shadowDispense({ patient_icn: null, tracking_number: 'NOICN0001', shipped_at: null, state: 'unprocessable', state_reason: 'no ICN' }),
  ]);
  await insertDispenses(sql, [
    shadowDispense({ patient_icn: icn, tracking_number: 'CANC0001', shipped_at: '2026-05-14T09:00:00Z', state: 'cancelled' }),
  ]);
  await insertDispenses(sql, [
    shadowDispense({ patient_icn: icn, tracking_number: 'EXCL0001', shipped_at: '2026-05-13T23:00:00Z', state: 'excluded' }),
  ]);
  await insertDispenses(sql, [
    shadowDispense({ patient_icn: Veterans.alpha, tracking_number: 'OTHER0001', shipped_at: '2026-05-14T09:00:00Z', state: 'pending' }),
  ]);
  // One package, one fill pending and one grouped: the veteran was told about it, so it matches.
  const email = await insertShadowedEmail(sql, icn, [
    { trackingNumber: 'MIXED0001', carrier: 'UPS', shippedAt: '2026-05-14T09:00:00Z', rxNumbers: ['5550001'] },
  ]);
  await insertDispenses(sql, [
    shadowDispense({ patient_icn: icn, tracking_number: 'MIXED0001', shipped_at: '2026-05-14T11:00:00Z', state: 'pending' }),
  ]);
  // Shipped before the period, emailed by MHV inside it: looked up by tracking number, so it matches.
  const earlyEmail = await insertShadowedEmail(
    sql,
    icn,
    [{ trackingNumber: 'EARLY0001', carrier: 'USPS', shippedAt: '2026-05-12T22:00:00Z', rxNumbers: ['5550002'] }],
    '2026-05-13T00:00:00Z',
  );

  const body = [
    'icn,tracking_number,carrier,sent_date',
    ...['PEND0001', 'NOICN0001', 'CANC0001', 'EXCL0001', 'OTHER0001', 'NEVER0001'].map((tn) => `${icn},${tn},UPS,2026-05-14`),
    `${icn},mixed0001,ups,2026-05-14`,
    `${icn},EARLY0001,USPS,2026-05-14`,
  ].join('\n');
  const response = await app.inject({
    method: 'POST',
    url: '/v1/shadow/compare',
    headers: { ...internalAuth, 'content-type': 'text/csv' },
    payload: body,
  });
  t.equal(response.statusCode, 200);
  const report = response.json();
  t.same(
    report.mismatches.map((m: { kind: string; trackingNumbers: string[]; detail: string }) => [m.kind, m.trackingNumbers[0], m.detail]),
    [
      ['emailed_by_mhv_only', 'PEND0001', 'still pending'],
      ['emailed_by_mhv_only', 'NOICN0001', 'unprocessable: no ICN'],
      ['emailed_by_mhv_only', 'CANC0001', 'cancelled'],
      ['emailed_by_mhv_only', 'EXCL0001', 'excluded before DELIVERY_START_AT'],
      ['emailed_by_mhv_only', 'OTHER0001', 'dispense received under another ICN'],
      ['emailed_by_mhv_only', 'NEVER0001', 'no dispense received'],
      // The two matched packages are in one MHV email and two of the service's.
      [
        'grouped_differently',
        'EARLY0001',
        'MHV sent 1 email: 2026-05-14 [EARLY0001 MIXED0001]; the service 2 emails: [EARLY0001], [MIXED0001]',
      ],
    ],
  );
  t.same(report.summary.emailedByMhvOnly.byReason, {
    'still pending': 1,
    unprocessable: 1,
    cancelled: 1,
    'excluded before DELIVERY_START_AT': 1,
    'dispense received under another ICN': 1,
    'no dispense received': 1,
  });
  t.same(report.summary.matched, { packages: 2, veterans: 0 }, 'the mixed and the early package matched');
  t.same(report.mismatches.at(-1).emailIds, [email, earlyEmail].sort());
});
