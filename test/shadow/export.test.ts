// Reading MHV's export: the header spellings an Oracle spool or a spreadsheet produce, the CSV
// quirks of real files, and bad rows kept with their line numbers.
import { Readable } from 'node:stream';
import t from 'tap';
import { ExportFormatError, parseMhvExport, parseSentDate } from '../../src/shadow/export.ts';

const icn = '1012345678V123456';

t.test('header spellings all name the four columns', async (t) => {
  const headers = [
    'icn,tracking_number,carrier,sent_date',
    'ICN,TRACKING_NBR,CARRIER,EMAIL_SENT_DATE',
    'patient_icn,trackingNumber,Carrier,sent_at',
    'Patient ICN , Tracking Number , Carrier , Sent Date',
    '"PATIENT_ICN","TRACKING_NO","CARRIER_NAME","EMAIL_SENT_AT"',
  ];
  for (const header of headers) {
    const parsed = await parseMhvExport(`${header}\n${icn},1Z9999990312345678,UPS,2026-05-14\n`);
    t.same(parsed.badRows, [], header);
    t.same(
      parsed.rows,
      [{ line: 2, icn, trackingNumber: '1Z9999990312345678', carrier: 'UPS', sentAt: new Date('2026-05-14T00:00:00Z') }],
      header,
    );
  }
});

t.test('columns in any order, extra columns ignored, a BOM, CRLF, quoted fields', async (t) => {
  const text =
    '\uFEFF"SENT_DATE","EXTRA","ICN","CARRIER","TRACKING_NBR"\r\n"2026-05-14T15:00:00-04:00","x, with a comma","1012345678v123456","fedex"," 771234567890 "\r\n';
  const parsed = await parseMhvExport(Buffer.from(text, 'utf8'));
  t.same(parsed.badRows, []);
  t.same(parsed.rows, [{ line: 2, icn, trackingNumber: '771234567890', carrier: 'FEDEX', sentAt: new Date('2026-05-14T19:00:00Z') }]);
});

t.test('a stream is read like a string, and a read error surfaces', async (t) => {
  const parsed = await parseMhvExport(Readable.from(['icn,tracking_number,carr', `ier,sent_date\n${icn},1Z1,,2026-05-14\n`]));
  t.same(
    parsed.rows.map((r) => r.carrier),
    ['UNK'],
    'a blank carrier is UNK, as the service records it',
  );
  const failing = new Readable({
    read() {
      this.destroy(Object.assign(new Error('boom'), { code: 'EIO' }));
    },
  });
  await t.rejects(parseMhvExport(failing), { code: 'EIO' });
});

t.test('bad rows are kept with their line numbers and what is wrong, never their values', async (t) => {
  const text = [
    'icn,tracking_number,carrier,sent_date', // 1
    `${icn},1Z1,UPS,2026-05-14`, // 2 good
    '', // 3 empty: not a row
    `${icn},,UPS,2026-05-14`, // 4 missing tracking number
    `12345V1,1Z2,UPS,2026-05-14`, // 5 bad ICN
    `${icn},1Z3,UPS,2026-02-30`, // 6 no such day
    `${icn},1Z4,UPS,yesterday`, // 7 not a date
    `${icn},1Z5,UPS`, // 8 a field short
    `${icn},1Z6,UPS,2026-05-14,extra`, // 9 a field too many
    ',,,', // 10 nothing at all
    `${icn},1Z 7!,UPS,2026-05-14`, // 11 not a tracking number
    `${icn},1Z8,UPS,2026-05-14 25:00`, // 12 no such hour
  ].join('\n');
  const parsed = await parseMhvExport(text);
  t.same(
    parsed.rows.map((r) => r.line),
    [2],
  );
  t.same(parsed.badRows, [
    { line: 4, problem: 'missing tracking_number' },
    { line: 5, problem: 'icn: not an ICN (10 digits, V, 6 digits)' },
    { line: 6, problem: 'sent_date: not a date (YYYY-MM-DD, an ISO 8601 date-time, MM/DD/YYYY or DD-MON-YY)' },
    { line: 7, problem: 'sent_date: not a date (YYYY-MM-DD, an ISO 8601 date-time, MM/DD/YYYY or DD-MON-YY)' },
    { line: 8, problem: 'missing sent_date' },
    { line: 9, problem: '5 fields where the header has 4' },
    { line: 10, problem: 'missing icn, tracking_number, sent_date' },
    { line: 11, problem: 'tracking_number: not a tracking number (letters, digits and hyphens, at most 60)' },
    { line: 12, problem: 'sent_date: not a date (YYYY-MM-DD, an ISO 8601 date-time, MM/DD/YYYY or DD-MON-YY)' },
  ]);
  t.notOk(JSON.stringify(parsed.badRows).includes('12345V1'), 'the bad value is not repeated');
});

t.test('a file that cannot be read as a whole is an error naming why', async (t) => {
  await t.rejects(
    parseMhvExport(''),
    new ExportFormatError('the export is empty; expected the header icn,tracking_number,carrier,sent_date'),
  );
  await t.rejects(parseMhvExport('icn,tracking_number,carrier\n'), {
    name: 'ExportFormatError',
    message:
      /header: missing column sent_date; expected icn,tracking_number,carrier,sent_date as the first line \(found 3 columns, of them icn, tracking_number, carrier\)/,
  });
  await t.rejects(parseMhvExport('icn,patient_icn,tracking_number,carrier,sent_date\n'), {
    message: 'header: two columns name icn ("icn" and "patient_icn")',
  });
  await t.rejects(
    parseMhvExport(
      `icn,tracking_number,carrier,sent_date\n${icn},1Z0,UPS,2026-05-14\n${icn},"1Z1,UPS,2026-05-14\n${icn},1Z2,UPS,2026-05-14\n`,
    ),
    {
      message: 'not valid CSV: a quoted field opened after line 2 is never closed; nothing was compared',
    },
  );
  // A stray quote elsewhere only spoils its own field, which the row check then reports.
  const stray = await parseMhvExport(`icn,tracking_number,carrier,sent_date\n${icn},"1Z1"x,UPS,2026-05-14\n${icn},1Z2,UPS,2026-05-14\n`);
  t.same(stray.badRows, [{ line: 2, problem: 'tracking_number: not a tracking number (letters, digits and hyphens, at most 60)' }]);
  t.same(
    stray.rows.map((r) => r.line),
    [3],
  );
});

t.test('sent dates in the formats MHV exports write', async (t) => {
  const cases: [string, string | undefined][] = [
    ['2026-05-14', '2026-05-14T00:00:00.000Z'],
    ['2026-05-14 15:40', '2026-05-14T15:40:00.000Z'],
    ['2026-05-14 15:40:12.123456', '2026-05-14T15:40:12.123Z'],
    ['2026-05-14T15:40:12Z', '2026-05-14T15:40:12.000Z'],
    ['2026-05-14T11:40:12-04:00', '2026-05-14T15:40:12.000Z'],
    ['2026-05-14T21:10:12+0530', '2026-05-14T15:40:12.000Z'],
    ['05/14/2026', '2026-05-14T00:00:00.000Z'],
    ['5/4/2026 9:05', '2026-05-04T09:05:00.000Z'],
    ['14-MAY-26', '2026-05-14T00:00:00.000Z'],
    ['14-may-2026 15:40:00', '2026-05-14T15:40:00.000Z'],
    ['01-JAN-99', '1999-01-01T00:00:00.000Z'],
    ['2026-13-01', undefined],
    ['2026-02-29', undefined],
    ['14/05/2026', undefined],
    ['14-MAI-26', undefined],
    ['2026-05-14T15:40:12+15:00', undefined],
    ['', undefined],
  ];
  for (const [text, iso] of cases) t.equal(parseSentDate(text)?.toISOString(), iso, text);
});
