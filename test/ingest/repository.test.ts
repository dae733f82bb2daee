// Ingest's SQL. The dispense columns travel to Postgres as text[] literals built by the service: every
// value must come back exactly as it was sent, whatever characters it holds. A dispense must name a
// stored body, and a grouped one a stored tracking email: sql/010 checks both per statement instead
// of by foreign keys.
import t from 'tap';
import { dispenseRows, insertDispenses, insertInboundMessage, storeDispenseRows, textArrayLiteral } from '../../src/ingest/repository.ts';
import { dispenseKey } from '../../src/ingest/dispense.ts';
import { testDatabase } from '../support/database.ts';
import { dispenseRecord, insertTrackingEmail } from '../support/fixtures.ts';

const dispense = dispenseRecord;

t.test('a text[] literal reads back as the values it was built from', async (t) => {
  const { sql } = await testDatabase(t);
  const values = [
    'plain',
    '',
    'NULL',
    null,
    'with "quotes"',
    'back\\slash',
    '\\"both"\\',
    'comma, and {braces}',
    ' spaces ',
    'tab\tand\nnewline',
    'ünïcödé ✓',
    '"',
    '\\',
    '}',
    '{',
    "it's",
  ];
  // Read back as rows: postgres.js's own text[] parser returns a NULL element as the string 'NULL'.
  const rows = await sql<{ value: string | null }[]>`
    select value from unnest(${textArrayLiteral(values)}::text[]) with ordinality as x (value, position) order by position`;
  t.same(
    rows.map((r) => r.value),
    values,
  );
  const [empty] = await sql<{ length: number }[]>`select cardinality(${textArrayLiteral([])}::text[]) as length`;
  t.equal(empty!.length, 0);
});

t.test('a dispense must name a stored body, on insert and when a correction renames it', async (t) => {
  const { sql } = await testDatabase(t);
  const body = await insertInboundMessage(sql, { source: 'http', contentType: 'application/hl7-v2', maskedBody: 'MSH|...' });
  const stored = await insertDispenses(sql, body, [dispense('1'), dispense('2')]);
  t.equal(stored.stored.size, 2);

  await t.rejects(insertDispenses(sql, body + 1000, [dispense('3'), dispense('4')]), {
    code: '23503',
    message: `medication_dispense names inbound message ${body + 1000}, which is not stored`,
  });
  await t.rejects(
    sql`insert into medication_dispense (station_number, rx_number, fill_number, tracking_number, inbound_message_id, state)
        values ('521', '5', 0, '1Z5', ${body}, 'cancelled'), ('521', '6', 0, '1Z6', ${body + 1000}, 'cancelled')`,
    { code: '23503' },
    'a statement naming a stored and a missing body is refused whole',
  );
  const [after] = await sql<{ count: number }[]>`select count(*)::int as count from medication_dispense`;
  t.equal(after!.count, 2, 'nothing of a refused statement is stored');

  // A corrected resend (unprocessable, then with the ICN) renames the dispense's body: checked too.
  await insertDispenses(sql, body, [dispense('7', { veteranIcn: null, state: 'unprocessable', stateReason: 'no ICN' })]);
  await t.rejects(insertDispenses(sql, body + 1000, [dispense('7')]), { code: '23503' });
  const corrected = await insertDispenses(sql, body, [dispense('7')]);
  t.equal(corrected.insertedByState.pending, 1, 'the correction naming a stored body is taken');
  await t.rejects(sql`update medication_dispense set inbound_message_id = ${body + 1000} where rx_number = '7'`, { code: '23503' });
  const [excluded] = await sql<{ count: number }[]>`
    update medication_dispense set state = 'excluded', tracking_email_id = null where rx_number = '1' returning 1 as count`;
  t.ok(excluded, 'an update that names stored rows is taken');
});

t.test('a pending dispense must name a stored draft, a grouped one a stored tracking email', async (t) => {
  const { sql } = await testDatabase(t);
  const body = await insertInboundMessage(sql, { source: 'http', contentType: 'application/hl7-v2', maskedBody: 'MSH|...' });
  await insertDispenses(sql, body, [dispense('1'), dispense('2')]);
  const emailId = await insertTrackingEmail(sql, { patient_icn: '1012345678V123456' });
  const missing = '01890000-0000-7000-8000-000000000000';
  await t.rejects(sql`update medication_dispense set tracking_email_id = ${missing} where rx_number = '1'`, {
    code: '23503',
    message: `medication_dispense names tracking email draft ${missing}, which is not stored`,
  });
  await t.rejects(
    sql`update medication_dispense set tracking_email_id = null, patient_icn = null where rx_number = '1'`,
    { code: '23514', constraint_name: 'medication_dispense_pending_draft' },
    'a pending dispense names a draft',
  );
  await t.rejects(
    sql`update medication_dispense set tracking_email_id = ${emailId} where rx_number = '1'`,
    { code: '23503' },
    'a pending dispense names a draft, not an email',
  );
  await t.rejects(sql`update medication_dispense set state = 'grouped', tracking_email_id = ${missing}`, {
    code: '23503',
    message: `medication_dispense names tracking email ${missing}, which is not stored`,
  });
  await t.rejects(
    sql`update medication_dispense set state = 'grouped',
               tracking_email_id = case rx_number when '1' then ${emailId}::uuid else ${missing}::uuid end`,
    { code: '23503' },
    'a statement naming a stored and a missing email is refused whole',
  );
  const [before] = await sql<
    { grouped: number }[]
  >`select count(*) filter (where state = 'grouped')::int as grouped from medication_dispense`;
  t.equal(before!.grouped, 0, 'nothing of a refused statement is stored');
  await sql`update medication_dispense set state = 'grouped', tracking_email_id = ${emailId}`;
  const [after] = await sql<
    { grouped: number }[]
  >`select count(*) filter (where state = 'grouped')::int as grouped from medication_dispense`;
  t.equal(after!.grouped, 2);
});

t.test('dispense times are stored to the millisecond, before 1970 too', async (t) => {
  const { sql } = await testDatabase(t);
  const body = await insertInboundMessage(sql, { source: 'http', contentType: 'application/json', maskedBody: '[]' });
  const times = ['2026-05-14T10:22:10.123Z', '1969-12-31T23:59:59.999Z', '0001-01-01T00:00:00.001Z', '2026-05-14T10:22:10.000Z'];
  await insertDispenses(
    sql,
    body,
    times.map((time, i) => dispense(`90${i}`, { dispensedAt: new Date(time), shippedAt: new Date(Date.parse(time) + 1) })),
  );
  // Read as text: postgres.js's own parser takes year 0001 for 2001.
  const rows = await sql<{ dispensed_at: string; apart: string }[]>`
    select to_char(dispensed_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as dispensed_at,
           (shipped_at - dispensed_at)::text as apart
      from medication_dispense order by rx_number`;
  t.same(
    rows.map((r) => r.dispensed_at),
    times,
  );
  t.same(
    rows.map((r) => r.apart),
    ['00:00:00.001', '00:00:00.001', '00:00:00.001', '00:00:00.001'],
  );
});

t.test('new events are inserted as they are; an event stored before is a duplicate from the pool and inside a transaction', async (t) => {
  const { sql } = await testDatabase(t);
  const body = await insertInboundMessage(sql, { source: 'http', contentType: 'application/json', maskedBody: '[]' });
  const outcome = { outcome: 'accepted' as const, messageCount: 2, error: null };
  const first = await storeDispenseRows(sql, body, dispenseRows([dispense('1'), dispense('2', { state: 'cancelled' })]), outcome);
  t.same(first, { stored: 2, byState: { pending: 1, cancelled: 1, unprocessable: 0 }, storedKeys: null });
  const [recorded] = await sql<{ outcome: string; message_count: number; processed: boolean }[]>`
    select outcome, message_count, processed_at is not null as processed from inbound_message where id = ${body}`;
  t.same(recorded, { outcome: 'accepted', message_count: 2, processed: true }, 'the outcome is written by the same statement');

  // From the pool: the plain insert is refused whole, and the statement that resolves conflicts
  // stores the new event and leaves the stored one as it was.
  const replay = await storeDispenseRows(sql, body, dispenseRows([dispense('2', { state: 'cancelled' }), dispense('3')]), outcome);
  t.same(replay.stored, 1);
  t.same([...replay.storedKeys!], [dispenseKey(dispense('3'))]);
  // Inside a caller's transaction the conflict is resolved without aborting it.
  const inTransaction = await sql.begin(async (tx) => {
    const result = await storeDispenseRows(tx, body, dispenseRows([dispense('1'), dispense('4')]), null);
    const [count] = await tx<{ count: number }[]>`select count(*)::int as count from medication_dispense`;
    return { stored: result.stored, rows: count!.count };
  });
  t.same(inTransaction, { stored: 1, rows: 4 });
  const rows = await sql<{ rx_number: string; state: string }[]>`select rx_number, state from medication_dispense order by rx_number`;
  t.same(
    rows.map((r) => [r.rx_number, r.state]),
    [
      ['1', 'pending'],
      ['2', 'cancelled'],
      ['3', 'pending'],
      ['4', 'pending'],
    ],
  );
});

t.test('two copies of an event in one call: a later copy that corrects an unprocessable one is the copy stored', async (t) => {
  const { sql } = await testDatabase(t);
  const body = await insertInboundMessage(sql, { source: 'http', contentType: 'application/json', maskedBody: '[]' });
  const noIcn = dispense('1', { veteranIcn: null, state: 'unprocessable', stateReason: 'no ICN', messageControlId: 'first' });
  const corrected = dispense('1', { messageControlId: 'second' });
  const late = dispense('1', { veteranIcn: null, state: 'unprocessable', stateReason: 'no ICN', messageControlId: 'third' });
  const again = dispense('1', { messageControlId: 'fourth' });
  const rows = dispenseRows([noIcn, corrected, late, again]);
  t.same(
    { events: rows.events, distinct: rows.distinct, byState: rows.byState },
    { events: 4, distinct: 1, byState: { pending: 1, cancelled: 0, unprocessable: 0 } },
  );

  const result = await insertDispenses(sql, body, [noIcn, corrected, late, again]);
  t.same([...result.stored], [corrected], 'the stored copy is the one credited');
  t.same(result.insertedByState, { pending: 1, cancelled: 0, unprocessable: 0 });
  const stored = await sql<{ state: string; message_control_id: string }[]>`select state, message_control_id from medication_dispense`;
  t.same(
    stored.map((r) => [r.state, r.message_control_id]),
    [['pending', 'second']],
  );
});
