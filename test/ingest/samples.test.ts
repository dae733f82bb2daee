// Every shared CMOP sample goes through POST /v1/dispenses and ends up as the rows, ACKs and
// summaries a sender and an operator would see.
import t from 'tap';
import { testApp, type TestApp } from '../support/app.ts';
import { postSample, readAcks, readSample, samples, type Sample } from '../support/ingest.ts';

const byFile = (file: string): Sample => samples.find((s) => s.file === file)!;

interface DispenseRow {
  station_number: string;
  rx_number: string;
  fill_number: number;
  drug_name: string | null;
  ndc: string | null;
  quantity: string | null;
  dispensed_at: string | null;
  shipped_at: string | null;
  carrier: string;
  tracking_number: string;
  patient_icn: string | null;
  mhv_correlation_id: string | null;
  message_control_id: string | null;
  state: string;
  state_reason: string | null;
}

// What the samples must become, field by field, in the order they are posted below.
const expectedDispenses: Partial<DispenseRow>[] = [
  // rds-r06-batch.hl7: FHS/BHS batch, LF separators, station from ORC-2 (STATION-RX-FILL), carrier from ZR2-1.
  {
    station_number: '0124',
    rx_number: '7004512',
    fill_number: 1,
    drug_name: 'SIMVASTATIN 40MG TAB',
    ndc: null,
    quantity: '90',
    dispensed_at: '2026-05-14T10:22:10.000Z',
    shipped_at: '2026-05-15T10:30:00.000Z',
    carrier: 'USPS',
    tracking_number: '9400100000000000000012',
    patient_icn: '1098765432V654321',
    mhv_correlation_id: '20987654',
    message_control_id: '0124-7004512-1',
    state: 'pending',
    state_reason: null,
  },
  {
    station_number: '0124',
    rx_number: '7004520',
    fill_number: 1,
    drug_name: 'ALBUTEROL 90MCG INHALER',
    ndc: null,
    quantity: '1',
    dispensed_at: '2026-05-14T10:44:10.000Z',
    shipped_at: '2026-05-15T10:30:00.000Z',
    carrier: 'FEDEX',
    tracking_number: '771234567890',
    patient_icn: '1098765432V654321',
    mhv_correlation_id: '20987654',
    message_control_id: '0124-7004520-1',
    state: 'pending',
    state_reason: null,
  },
  {
    station_number: '0124',
    rx_number: '7004513',
    fill_number: 2,
    drug_name: 'METFORMIN HCL 500MG TAB',
    ndc: null,
    quantity: '0',
    dispensed_at: '2026-05-14T11:05:00.000Z',
    shipped_at: null,
    carrier: 'UNK',
    tracking_number: '',
    patient_icn: '1055555555V111222',
    mhv_correlation_id: null,
    message_control_id: '0124-7004513-2',
    state: 'cancelled',
    state_reason: 'cancelled by CMOP (ORC-1 CA): DRUG DISCONTINUED BY PROVIDER',
  },
  // rds-o13-one-package-two-rx.hl7: two messages, one package (same tracking number), NDC coded.
  {
    station_number: '521',
    rx_number: '2719043',
    fill_number: 1,
    drug_name: 'SIMVASTATIN 40MG TAB',
    ndc: '00093718098',
    quantity: '90',
    dispensed_at: '2026-05-14T10:22:10.000Z',
    shipped_at: '2026-05-14T16:05:12.000Z',
    carrier: 'UPS',
    tracking_number: '1Z9999990312345678',
    patient_icn: '1012345678V123456',
    mhv_correlation_id: '10123456',
    message_control_id: 'CMOP-260514-000101',
    state: 'pending',
    state_reason: null,
  },
  {
    station_number: '521',
    rx_number: '2719100',
    fill_number: 0,
    drug_name: 'LISINOPRIL 10MG TAB',
    ndc: '00378180110',
    quantity: '30',
    dispensed_at: '2026-05-14T10:24:55.000Z',
    shipped_at: '2026-05-14T16:05:12.000Z',
    carrier: 'UPS',
    tracking_number: '1Z9999990312345678',
    patient_icn: '1012345678V123456',
    mhv_correlation_id: '10123456',
    message_control_id: 'CMOP-260514-000102',
    state: 'pending',
    state_reason: null,
  },
  // rrd-o14-vista-encoding-cr.hl7: VistA encoding (~^\&), CR separators, tracking in RXD-13, no ZR2,
  // MSH-7 at -0600, so the date-only RXD-3 is read in that zone.
  {
    station_number: '521',
    rx_number: '2719043',
    fill_number: 1,
    drug_name: 'DIGOXIN 0.25MG TAB',
    ndc: null,
    quantity: null,
    dispensed_at: '2026-05-14T06:00:00.000Z',
    shipped_at: '2026-05-14T21:30:12.000Z',
    carrier: 'UNK',
    tracking_number: '9400100000000000000099',
    patient_icn: '1000000123V456789',
    mhv_correlation_id: null,
    message_control_id: 'SP260514-0042',
    state: 'pending',
    state_reason: null,
  },
  // dispense-events.json
  {
    station_number: '521',
    rx_number: '3100451',
    fill_number: 2,
    drug_name: 'METOPROLOL TARTRATE 25MG TAB',
    ndc: '00378001801',
    quantity: '60',
    dispensed_at: '2026-05-14T09:12:00.000Z',
    shipped_at: '2026-05-14T15:40:00.000Z',
    carrier: 'USPS',
    tracking_number: '9400100000000000000123',
    patient_icn: '1011111111V222333',
    mhv_correlation_id: '30111111',
    message_control_id: 'json-0001',
    state: 'pending',
    state_reason: null,
  },
  {
    station_number: '521',
    rx_number: '3100452',
    fill_number: 0,
    drug_name: 'ATORVASTATIN 20MG TAB',
    ndc: '00071015523',
    quantity: '30',
    dispensed_at: '2026-05-14T09:13:00.000Z',
    shipped_at: '2026-05-14T15:41:00.000Z',
    carrier: 'UPS',
    tracking_number: '1Z9999990300000456',
    patient_icn: '1011111111V222333',
    mhv_correlation_id: '30111111',
    message_control_id: 'json-0002',
    state: 'pending',
    state_reason: null,
  },
  // bad/no-icn.hl7: kept, but nobody can be emailed (and its ORC-2 names no station).
  {
    station_number: '',
    rx_number: '555',
    fill_number: 1,
    drug_name: 'Y',
    ndc: null,
    quantity: '10',
    dispensed_at: '2026-05-14T00:00:00.000Z',
    shipped_at: '2026-05-14T16:05:12.000Z',
    carrier: 'UPS',
    tracking_number: '1Z999',
    patient_icn: null,
    mhv_correlation_id: null,
    message_control_id: 'NOICN-1',
    state: 'unprocessable',
  },
];

async function dispenseRows(sql: TestApp['db']['sql']): Promise<DispenseRow[]> {
  return sql<DispenseRow[]>`
    select station_number, rx_number, fill_number, drug_name, ndc, quantity::text as quantity,
           to_char(dispensed_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as dispensed_at,
           to_char(shipped_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as shipped_at,
           carrier, tracking_number, patient_icn, mhv_correlation_id, message_control_id, state, state_reason
    from medication_dispense order by id`;
}

t.test('every sample is ingested with the fields its tracking email depends on', async (t) => {
  const { app, db } = await testApp(t);

  const r06 = await postSample(app, byFile('rds-r06-batch.hl7'));
  t.equal(r06.statusCode, 200);
  t.match(r06.headers['content-type'], /^application\/hl7-v2/);
  t.same(
    readAcks(r06.body).map((a) => [a.code, a.controlId, a.messageType]),
    [
      ['AA', '0124-7004512-1', 'ACK^R06^ACK'],
      ['AA', '0124-7004520-1', 'ACK^R06^ACK'],
      ['AA', '0124-7004513-2', 'ACK^R06^ACK'],
    ],
    'one AA per message of the FHS/BHS batch, MSA-2 = its MSH-10',
  );

  const o13 = await postSample(app, byFile('rds-o13-one-package-two-rx.hl7'));
  t.equal(o13.statusCode, 200);
  t.same(
    readAcks(o13.body).map((a) => [a.code, a.controlId]),
    [
      ['AA', 'CMOP-260514-000101'],
      ['AA', 'CMOP-260514-000102'],
    ],
  );

  const vista = await postSample(app, byFile('rrd-o14-vista-encoding-cr.hl7'));
  t.equal(vista.statusCode, 200);
  t.match(vista.body, /^MSH\|~\^\\&\|/, 'the ACK is written in the encoding characters the sender used');
  t.same(
    readAcks(vista.body).map((a) => [a.code, a.controlId, a.messageType]),
    [['AA', 'SP260514-0042', 'ACK~O14~ACK']],
  );

  const json = await postSample(app, byFile('dispense-events.json'));
  t.equal(json.statusCode, 200);
  t.match(json.json(), { received: 2, inserted: 2, duplicates: 0, rejected: 0, errors: [] });

  const noIcn = await postSample(app, byFile('bad/no-icn.hl7'));
  t.equal(noIcn.statusCode, 200, 'the message was read and kept: its problem is told in the ACK');
  const [noIcnAck] = readAcks(noIcn.body);
  t.equal(noIcnAck?.code, 'AE');
  t.equal(noIcnAck?.controlId, 'NOICN-1');
  t.match(noIcnAck?.text, /no ICN/);

  const notHl7 = await postSample(app, byFile('bad/not-hl7.txt'));
  t.equal(notHl7.statusCode, 400);
  t.match(notHl7.headers['content-type'], /^application\/hl7-v2/);
  t.same(
    readAcks(notHl7.body).map((a) => [a.code, a.controlId]),
    [['AR', '']],
  );
  t.match(readAcks(notHl7.body)[0]?.text, /no MSH segment/);

  const truncated = await postSample(app, byFile('bad/truncated.hl7'));
  t.equal(truncated.statusCode, 400);
  t.same(
    readAcks(truncated.body).map((a) => a.code),
    ['AR'],
  );
  t.match(readAcks(truncated.body)[0]?.text, /MSH-9 \(message type\) and MSH-10 \(message control id\) missing/);

  const rows = await dispenseRows(db.sql);
  t.equal(rows.length, expectedDispenses.length, 'one row per dispense in the samples, no more');
  expectedDispenses.forEach((expected, i) => {
    t.same(
      Object.fromEntries(Object.keys(expected).map((k) => [k, rows[i]?.[k as keyof DispenseRow]])),
      expected,
      `dispense of Rx ${expected.rx_number}`,
    );
  });
  t.match(rows.at(-1)?.state_reason, /no ICN/, 'the unprocessable dispense says why');

  const inbound = await db.sql<
    { content_type: string; body: string; outcome: string; message_count: number; error: string | null; processed: boolean }[]
  >`
    select content_type, body, outcome, message_count, error, processed_at is not null as processed from inbound_message order by id`;
  t.same(
    inbound.map((m) => [m.content_type, m.outcome, m.message_count, m.processed]),
    [
      ['text/plain', 'accepted', 3, true],
      ['application/hl7-v2', 'accepted', 2, true],
      ['x-application/hl7-v2+er7', 'accepted', 1, true],
      ['application/json', 'accepted', 2, true],
      ['application/hl7-v2', 'partial', 1, true],
      ['application/hl7-v2', 'rejected', 0, true],
      ['application/hl7-v2', 'rejected', 1, true],
    ],
    'every body is kept with its outcome',
  );
  t.equal(inbound[5]?.body, readSample('bad/not-hl7.txt'), 'a body that is not HL7 is kept as received');
  t.match(inbound[5]?.error, /no MSH segment/);
  t.equal(inbound[6]?.body, readSample('bad/truncated.hl7'), 'the truncated body is kept as received');
  t.match(inbound[6]?.error, /message 1 AR: MSH-9/);
  t.match(inbound[4]?.error, /message 1 \(NOICN-1\) AE: no ICN/);
  t.equal(inbound[0]?.error, null);

  const metrics = await app.inject({ method: 'GET', url: '/metrics' });
  for (const [outcome, count] of [
    ['inserted', 7],
    ['cancelled', 1],
    ['unprocessable', 1],
    ['rejected', 2],
  ] as const) {
    t.match(
      metrics.body,
      new RegExp(`^rx_dispenses_ingested_total\\{outcome="${outcome}"\\} ${count}$`, 'm'),
      `ingest counter: ${count} ${outcome}`,
    );
  }
  t.notMatch(metrics.body, /rx_dispenses_ingested_total\{outcome="duplicate"\}/, 'no duplicates yet');
});

t.test('re-posting every sample inserts nothing new', async (t) => {
  const { app, db } = await testApp(t);
  for (const sample of samples) await postSample(app, sample);
  const [before] = await db.sql<{ count: number }[]>`select count(*)::int as count from medication_dispense`;

  const r06 = await postSample(app, byFile('rds-r06-batch.hl7'));
  t.equal(r06.statusCode, 200);
  t.same(
    readAcks(r06.body).map((a) => [a.code, a.text]),
    [
      ['AA', 'accepted: already received'],
      ['AA', 'accepted: already received'],
      ['AA', 'accepted: already received'],
    ],
    'a replayed file is acknowledged, not stored twice',
  );
  for (const sample of samples.filter((s) => s.file !== 'rds-r06-batch.hl7')) await postSample(app, sample);
  const json = await postSample(app, byFile('dispense-events.json'));
  t.equal(json.statusCode, 200);
  t.match(json.json(), { received: 2, inserted: 0, duplicates: 2, rejected: 0 });

  const [after] = await db.sql<{ count: number }[]>`select count(*)::int as count from medication_dispense`;
  t.equal(after?.count, before?.count);
  t.equal(before?.count, 9);
  const metrics = await app.inject({ method: 'GET', url: '/metrics' });
  t.match(
    metrics.body,
    /^rx_dispenses_ingested_total\{outcome="duplicate"\} 11$/m,
    'the replays are counted as duplicates (the JSON sample twice)',
  );
  const [kept] = await db.sql<{ count: number }[]>`select count(*)::int as count from inbound_message`;
  t.equal(kept?.count, samples.length * 2 + 1, 'every request body is kept, replays included');
});

t.test('new pending dispenses wake the grouping job', async (t) => {
  const { app, db } = await testApp(t);
  const wakeUps: string[] = [];
  let markerArrived = () => {};
  const marker = new Promise<void>((resolve) => (markerArrived = resolve));
  const listener = await db.sql.listen('dispense_pending', (payload) => (payload === 'marker' ? markerArrived() : wakeUps.push(payload)));
  t.teardown(() => listener.unlisten());

  await postSample(app, byFile('rds-o13-one-package-two-rx.hl7'));
  await postSample(app, byFile('rds-o13-one-package-two-rx.hl7'));
  await postSample(app, byFile('bad/no-icn.hl7'));
  // Notifications reach a listener in commit order: once this marker arrives, every hint the
  // requests above sent has arrived too.
  await db.sql`select pg_notify('dispense_pending', 'marker')`;
  await marker;
  t.same(wakeUps, [''], 'one hint for the new pending dispenses; none for the replay or the unprocessable message');
});
