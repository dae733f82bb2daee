// What a producer sees at the HTTP door: authentication, content types, size limit, and JSON
// validation errors that name the event and the field.
import t, { type Test } from 'tap';
import { internalAuth, testApp } from '../support/app.ts';
import { postDispenses, readAcks, readSample } from '../support/ingest.ts';

const event = (overrides: Record<string, unknown> = {}) => ({
  messageId: 'json-9001',
  stationNumber: '521',
  patient: { icn: '1012345678V123456', mhvCorrelationId: '12345678' },
  prescription: { rxNumber: '7004999', fillNumber: 1, drugName: 'SIMVASTATIN 40MG TAB', ndc: '00093718098', quantity: 90 },
  dispensedAt: '2026-05-14T10:22:10Z',
  shippedAt: '2026-05-14T16:00:00Z',
  carrier: 'ups',
  trackingNumber: '1Z9999990398765432',
  ...overrides,
});

async function counts(sql: Awaited<ReturnType<typeof testApp>>['db']['sql']) {
  const [row] = await sql<{ inbound: number; dispenses: number }[]>`
    select (select count(*)::int from inbound_message) as inbound, (select count(*)::int from medication_dispense) as dispenses`;
  return row!;
}

/** Posts JSON events of which only the last is valid; answers the errors as [index, field, message]. */
async function acceptedOnlyTheLast(t: Test, app: Awaited<ReturnType<typeof testApp>>['app'], body: unknown[]) {
  const response = await postDispenses(app, JSON.stringify(body), 'application/json');
  t.equal(response.statusCode, 200, 'the last event was accepted');
  const summary = response.json();
  t.match(summary, { received: body.length, inserted: 1, duplicates: 0, rejected: body.length - 1 });
  return summary.errors.map((e: { index: number; field: string; message: string }) => [e.index, e.field, e.message]);
}

t.test('without a valid internal token: 401, nothing stored', async (t) => {
  const { app, db } = await testApp(t);
  const body = readSample('rds-o13-one-package-two-rx.hl7');
  const none = await app.inject({ method: 'POST', url: '/v1/dispenses', headers: { 'content-type': 'application/hl7-v2' }, payload: body });
  t.equal(none.statusCode, 401);
  t.equal(none.headers['www-authenticate'], 'Bearer');
  t.match(none.json(), { statusCode: 401, message: /bearer token/ });
  const wrong = await app.inject({
    method: 'POST',
    url: '/v1/dispenses',
    headers: { 'content-type': 'application/hl7-v2', authorization: 'Bearer not-the-token-at-all' },
    payload: body,
  });
  t.equal(wrong.statusCode, 401);
  t.same(await counts(db.sql), { inbound: 0, dispenses: 0 });
});

t.test('an unsupported content type: 415 naming it, not stored', async (t) => {
  const { app, db } = await testApp(t);
  const response = await postDispenses(app, '<dispense/>', 'application/xml');
  t.equal(response.statusCode, 415);
  t.match(response.json(), {
    statusCode: 415,
    error: 'Unsupported Media Type',
    message: /content type application\/xml is not accepted: send application\/hl7-v2/,
  });
  const untyped = await app.inject({ method: 'POST', url: '/v1/dispenses', headers: internalAuth, body: Buffer.from('MSH|^~\\&|') });
  t.equal(untyped.statusCode, 415);
  t.match(untyped.json(), { message: /no content type is not accepted/ });
  t.same(await counts(db.sql), { inbound: 0, dispenses: 0 });
});

t.test('a body over INGEST_BODY_LIMIT_BYTES: 413, not stored', async (t) => {
  const { app, db } = await testApp(t, { INGEST_BODY_LIMIT_BYTES: '1024' });
  const message = readSample('rds-o13-one-package-two-rx.hl7');
  t.ok(message.length < 1024, 'the sample itself fits');
  t.equal((await postDispenses(app, message, 'application/hl7-v2')).statusCode, 200);
  for (const type of ['application/hl7-v2', 'application/json']) {
    const response = await postDispenses(app, message.repeat(2), type);
    t.equal(response.statusCode, 413, type);
    t.match(response.json(), { statusCode: 413, error: 'Payload Too Large' });
  }
  t.same(await counts(db.sql), { inbound: 1, dispenses: 2 });
});

t.test('content type parameters are accepted', async (t) => {
  const { app } = await testApp(t);
  const hl7 = await postDispenses(app, readSample('rds-o13-one-package-two-rx.hl7'), 'application/hl7-v2; charset=utf-8');
  t.equal(hl7.statusCode, 200);
  t.same(
    readAcks(hl7.body).map((a) => a.code),
    ['AA', 'AA'],
  );
  const json = await postDispenses(app, JSON.stringify(event()), 'application/json; charset=utf-8');
  t.equal(json.statusCode, 200);
  t.match(json.json(), { received: 1, inserted: 1 });
});

t.test('a single JSON event is stored with its carrier normalised', async (t) => {
  const { app, db } = await testApp(t);
  const response = await postDispenses(app, JSON.stringify(event({ carrier: ' FedEx ' })), 'application/json');
  t.equal(response.statusCode, 200);
  t.match(response.json(), { received: 1, inserted: 1, duplicates: 0, rejected: 0, errors: [] });
  const [row] = await db.sql`select carrier, state from medication_dispense`;
  t.same(row, { carrier: 'FEDEX', state: 'pending' });
});

t.test('JSON with invalid events: each named by index and field; the valid ones are stored', async (t) => {
  const { app, db } = await testApp(t);
  const body = [
    event({ trackingNumber: 'T-1' }),
    event({ trackingNumber: 'T-2', patient: { icn: '666001234' } }),
    event({ trackingNumber: 'T-3', prescription: { rxNumber: '7004999', fillNumber: 'two' } }),
    event({ trackingNumber: undefined }),
  ];
  const response = await postDispenses(app, JSON.stringify(body), 'application/json');
  t.equal(response.statusCode, 200, 'one event was accepted');
  const summary = response.json();
  t.match(summary, { received: 4, inserted: 1, duplicates: 0, rejected: 3 });
  t.same(
    summary.errors.map((e: { index: number; field: string }) => [e.index, e.field]),
    [
      [1, 'patient.icn'],
      [2, 'prescription.fillNumber'],
      [3, 'trackingNumber'],
    ],
  );
  t.ok(
    summary.errors.every((e: { message: string }) => e.message.length > 0),
    'each error says what is wrong',
  );
  t.notMatch(response.body, /666001234/, 'the bad value is not echoed');

  const rows = await db.sql`select tracking_number from medication_dispense`;
  t.same(rows, [{ tracking_number: 'T-1' }]);
  const [inbound] = await db.sql`select outcome, message_count, error from inbound_message`;
  t.equal(inbound?.outcome, 'partial');
  t.equal(inbound?.message_count, 4);
  t.match(inbound?.error, /event\[1\]\.patient\.icn/);
});

t.test('JSON where no event is valid: 400 naming each bad field and index, body kept', async (t) => {
  const { app, db } = await testApp(t);
  const response = await postDispenses(
    app,
    JSON.stringify([event({ stationNumber: '' }), event({ dispensedAt: '14 May 2026' })]),
    'application/json',
  );
  t.equal(response.statusCode, 400);
  t.match(response.json(), {
    received: 2,
    inserted: 0,
    rejected: 2,
    errors: [
      { index: 0, field: 'stationNumber' },
      { index: 1, field: 'dispensedAt' },
    ],
  });
  t.same(await counts(db.sql), { inbound: 1, dispenses: 0 });
  const [inbound] = await db.sql`select outcome from inbound_message`;
  t.equal(inbound?.outcome, 'rejected');
});

t.test('a JSON body that does not parse: 400 saying so, body kept', async (t) => {
  const { app, db } = await testApp(t);
  const response = await postDispenses(app, '{"stationNumber": "521",', 'application/json');
  t.equal(response.statusCode, 400);
  t.match(response.json(), { received: 0, inserted: 0, errors: [{ message: /not valid JSON/ }] });
  const [inbound] = await db.sql`select body, outcome, error from inbound_message`;
  t.match(inbound, { body: '{"stationNumber": "521",', outcome: 'rejected', error: /not valid JSON/ });

  const empty = await postDispenses(app, '[]', 'application/json');
  t.equal(empty.statusCode, 400);
  t.match(empty.json(), { errors: [{ message: /no dispense event/ }] });
});

t.test('an empty HL7 body: 400 with an AR ACK', async (t) => {
  const { app } = await testApp(t);
  const response = await postDispenses(app, '', 'application/hl7-v2');
  t.equal(response.statusCode, 400);
  t.same(
    readAcks(response.body).map((a) => a.code),
    ['AR'],
  );
});

t.test('a 1,000-message body is stored in one request, and its replay stores nothing', async (t) => {
  const { app, db } = await testApp(t);
  const message = (n: number) =>
    [
      `MSH|^~\\&|CMOP|CMOP-LEAVENWORTH|MHV|MHV|20260514160512||RDS^O13^RDS_O13|BULK-${n}|P|2.5`,
      `PID|||10${String(n).padStart(8, '0')}V123456^^^USVHA^NI~${String(n).padStart(8, '0')}^^^200MHS^PI`,
      `ORC|RE|521-${8000000 + n}-1`,
      `RXD|1|00093718098^SIMVASTATIN 40MG TAB^NDC|20260514102210|90|TAB||${8000000 + n}||||||1Z99999903${String(n).padStart(8, '0')}`,
      `ZR2|UPS|1Z99999903${String(n).padStart(8, '0')}|${8000000 + n}`,
    ].join('\r');
  const body = Array.from({ length: 1000 }, (_, n) => message(n)).join('\r');

  const first = await postDispenses(app, body, 'application/hl7-v2');
  t.equal(first.statusCode, 200);
  const acks = readAcks(first.body);
  t.equal(acks.length, 1000);
  t.ok(
    acks.every((a, n) => a.code === 'AA' && a.controlId === `BULK-${n}`),
    'one AA per message, in order',
  );
  const [stored] = await db.sql<{ count: number }[]>`select count(*)::int as count from medication_dispense where state = 'pending'`;
  t.equal(stored?.count, 1000);

  const replay = await postDispenses(app, body, 'application/hl7-v2');
  t.ok(readAcks(replay.body).every((a) => a.text === 'accepted: already received'));
  const [after] = await db.sql<{ count: number }[]>`select count(*)::int as count from medication_dispense`;
  t.equal(after?.count, 1000);
});

t.test('an event sent twice in one body is stored once, and the second copy is acknowledged as already received', async (t) => {
  const { app, db } = await testApp(t);
  const message = (controlId: string) =>
    [
      `MSH|^~\\&|CMOP|CMOP-LEAVENWORTH|MHV|MHV|20260514160512||RDS^O13^RDS_O13|${controlId}|P|2.5`,
      'PID|||1012345678V123456^^^USVHA^NI',
      'ORC|RE|521-8100001-1',
      'RXD|1|00093718098^SIMVASTATIN 40MG TAB^NDC|20260514102210|90|TAB||8100001||||||1Z9999990381000001',
      'ZR2|UPS|1Z9999990381000001|8100001',
    ].join('\r');
  const response = await postDispenses(app, `${message('FIRST')}\r${message('RESENT')}`, 'application/hl7-v2');
  t.equal(response.statusCode, 200);
  t.same(
    readAcks(response.body).map((a) => [a.controlId, a.code, a.text]),
    [
      ['FIRST', 'AA', 'accepted'],
      ['RESENT', 'AA', 'accepted: already received'],
    ],
  );
  const [stored] = await db.sql<{ count: number; control_id: string }[]>`
    select count(*)::int as count, min(message_control_id) as control_id from medication_dispense`;
  t.same(stored, { count: 1, control_id: 'FIRST' }, 'the first copy is the one stored');
});

t.test('a body of new and already stored events says which were already received', async (t) => {
  const { app, db } = await testApp(t);
  const group = (rx: number) => [
    `ORC|RE|521-${rx}-1`,
    `RXD|1|00093718098^SIMVASTATIN 40MG TAB^NDC|20260514102210|90|TAB||${rx}||||||1Z99999903${rx}`,
    `ZR2|UPS|1Z99999903${rx}|${rx}`,
  ];
  const message = (controlId: string, rxNumbers: number[]) =>
    [
      `MSH|^~\\&|CMOP|CMOP-LEAVENWORTH|MHV|MHV|20260514160512||RDS^O13^RDS_O13|${controlId}|P|2.5`,
      'PID|||1012345678V123456^^^USVHA^NI',
      ...rxNumbers.flatMap(group),
    ].join('\r');
  const first = await postDispenses(app, [message('A', [8200001]), message('B', [8200002])].join('\r'), 'application/hl7-v2');
  t.equal(first.statusCode, 200);

  const mixed = [message('A2', [8200001]), message('C', [8200003]), message('D', [8200002, 8200004])].join('\r');
  const response = await postDispenses(app, mixed, 'application/hl7-v2');
  t.equal(response.statusCode, 200);
  t.same(
    readAcks(response.body).map((a) => [a.controlId, a.text]),
    [
      ['A2', 'accepted: already received'],
      ['C', 'accepted'],
      ['D', 'accepted: 1 already received'],
    ],
  );
  const rows = await db.sql<{ rx_number: string; message_control_id: string }[]>`
    select rx_number, message_control_id from medication_dispense order by rx_number`;
  t.same(
    rows.map((r) => [r.rx_number, r.message_control_id]),
    [
      ['8200001', 'A'],
      ['8200002', 'B'],
      ['8200003', 'C'],
      ['8200004', 'D'],
    ],
    'a duplicate keeps the event first stored',
  );
});

t.test('JSON with an Rx number or tracking number of white space only: rejected naming the field, body kept', async (t) => {
  const { app, db } = await testApp(t);
  const body = [
    event({ trackingNumber: '   ' }),
    event({ trackingNumber: 'T-2', prescription: { rxNumber: ' ', fillNumber: 1 } }),
    event({ trackingNumber: '\t', prescription: { rxNumber: '\n', fillNumber: 1 } }),
    event({ trackingNumber: ' T-4 ', prescription: { rxNumber: ' 7004999 ', fillNumber: 1 } }),
  ];
  t.same(await acceptedOnlyTheLast(t, app, body), [
    [0, 'trackingNumber', 'blank: white space only'],
    [1, 'prescription.rxNumber', 'blank: white space only'],
    [2, 'prescription.rxNumber', 'blank: white space only'],
    [2, 'trackingNumber', 'blank: white space only'],
  ]);
  const rows = await db.sql`select rx_number, tracking_number from medication_dispense`;
  t.same([...rows], [{ rx_number: '7004999', tracking_number: 'T-4' }], 'values around white space are trimmed, as before');
  const [inbound] = await db.sql`select body, outcome, message_count, error from inbound_message`;
  t.match(inbound, { body: JSON.stringify(body), outcome: 'partial', message_count: 4 });
  t.match(inbound?.error, /event\[0\]\.trackingNumber: blank[\s\S]*event\[1\]\.prescription\.rxNumber: blank/);

  const alone = await postDispenses(app, JSON.stringify(event({ trackingNumber: '   ' })), 'application/json');
  t.equal(alone.statusCode, 400, 'a body with no other event is refused');
  t.match(alone.json(), { received: 1, inserted: 0, rejected: 1, errors: [{ index: 0, field: 'trackingNumber' }] });
  t.same(await counts(db.sql), { inbound: 2, dispenses: 1 });
});

t.test('JSON optional text of white space only: rejected naming the field; values around spaces trimmed', async (t) => {
  const { app, db } = await testApp(t);
  const body = [
    event({ messageId: '  ', trackingNumber: 'T-1' }),
    event({ trackingNumber: 'T-2', patient: { icn: '1012345678V123456', mhvCorrelationId: ' \t' } }),
    event({ trackingNumber: 'T-3', prescription: { rxNumber: '7004003', fillNumber: 1, drugName: '   ' } }),
    event({
      messageId: ' json-9004 ',
      trackingNumber: 'T-4',
      patient: { icn: '1012345678V123456', mhvCorrelationId: ' 12345678 ' },
      prescription: { rxNumber: '7004004', fillNumber: 1, drugName: ' LISINOPRIL 10MG TAB ' },
    }),
  ];
  t.same(await acceptedOnlyTheLast(t, app, body), [
    [0, 'messageId', 'blank: white space only'],
    [1, 'patient.mhvCorrelationId', 'blank: white space only'],
    [2, 'prescription.drugName', 'blank: white space only'],
  ]);
  const rows = await db.sql`select message_control_id, mhv_correlation_id, drug_name from medication_dispense`;
  t.same([...rows], [{ message_control_id: 'json-9004', mhv_correlation_id: '12345678', drug_name: 'LISINOPRIL 10MG TAB' }]);
  const [inbound] = await db.sql`select body, outcome from inbound_message`;
  t.match(inbound, { body: JSON.stringify(body), outcome: 'partial' }, 'the body is kept as sent');
});

t.test('a message whose MSH-2 cannot be read is answered AR with its MSH-10 in MSA-2', async (t) => {
  const { app, db } = await testApp(t);
  const body = [
    'MSH|~^&|PSO|521|MHV|MHV|20260514||RRD~O14|BAD-1|P|2.4',
    'PID|||1000000123V456789~~~USVHA~NI',
    'MSH|^~\\&|CMOP|521|MHV|MHV|20260514160512||RDS^O13|GOOD-1|P|2.5',
    'PID|||1012345678V123456^^^USVHA^NI',
    'ORC|RE|521-8400001-1',
    'RXD|1|00093718098^SIMVASTATIN 40MG TAB^NDC|20260514102210|90|TAB||8400001||||||1Z9999990384000001',
  ].join('\r');
  const response = await postDispenses(app, body, 'application/hl7-v2');
  t.equal(response.statusCode, 200);
  t.same(
    readAcks(response.body).map((a) => [a.controlId, a.code]),
    [
      ['BAD-1', 'AR'],
      ['GOOD-1', 'AA'],
    ],
  );
  t.match(
    response.body,
    /^MSH\|\^~\\&\|RX-TRACKING-EMAIL\|VA\|PSO\|521\|\d{14}\+0000\|\|ACK\^ACK\|\d+-1\|P\|2\.4\r/,
    'answered in the standard encoding characters',
  );
  const [inbound] = await db.sql`select outcome, error from inbound_message`;
  t.match(inbound, { outcome: 'partial', error: /^message 1 \(BAD-1\) AR: MSH-2 must hold/ });
});

t.test(
  'a NUL in an HL7 message, escaped (\\X00\\) or raw: that message is answered AR naming it, the others are stored, the body kept',
  async (t) => {
    const { app, db } = await testApp(t);
    const message = (controlId: string, rx: number, drug = 'SIMVASTATIN 40MG TAB', note = 'note') =>
      [
        `MSH|^~\\&|CMOP|521|MHV|MHV|20260514160512||RDS^O13|${controlId}|P|2.5`,
        'PID|||1012345678V123456^^^USVHA^NI',
        `NTE|1||${note}`,
        `ORC|RE|521-${rx}-1`,
        `RXD|1|00093718098^${drug}^NDC|20260514102210|90|TAB||${rx}||||||1Z99999903${rx}`,
      ].join('\r');
    const body = [
      message('OK-1', 8500001),
      message('ESCAPED-2', 8500002, 'DRUG\\X00\\NAME'),
      message('RAW-3', 8500003, undefined, 'a raw \u0000 here'),
      message('OK-4', 8500004),
    ].join('\r');
    const response = await postDispenses(app, body, 'application/hl7-v2');
    t.equal(response.statusCode, 200, 'answered with ACKs, not a 500');
    t.same(
      readAcks(response.body).map((a) => [a.controlId, a.code, a.text]),
      [
        ['OK-1', 'AA', 'accepted'],
        [
          'ESCAPED-2',
          'AR',
          'the message could not be parsed: RXD-2: a hex escape sequence (\\E\\X…\\E\\) stands for a NUL character (U+0000), which cannot be stored',
        ],
        ['RAW-3', 'AR', 'segment 3 (NTE) holds a NUL character (U+0000), which cannot be stored'],
        ['OK-4', 'AA', 'accepted'],
      ],
    );
    const rows = await db.sql<{ rx_number: string }[]>`select rx_number from medication_dispense order by rx_number`;
    t.same(
      rows.map((r) => r.rx_number),
      ['8500001', '8500004'],
      'the messages beside them are stored',
    );
    const [inbound] = await db.sql<{ body: string; outcome: string; error: string }[]>`select body, outcome, error from inbound_message`;
    t.equal(inbound?.body, body.replace('\u0000', '\uFFFD'), 'the body is kept, its NUL as U+FFFD');
    t.equal(inbound?.outcome, 'partial');
    t.match(inbound?.error, /message 2 \(ESCAPED-2\) AR: .*NUL[\s\S]*message 3 \(RAW-3\) AR: .*NUL/);

    // A NUL in the MSH-10 that the stored error quotes.
    const alone = await postDispenses(app, message('RAW\u00005', 8500005), 'application/hl7-v2');
    t.equal(alone.statusCode, 400, 'its only message refused');
    t.match(readAcks(alone.body), [{ code: 'AR', text: 'segment 1 (MSH) holds a NUL character (U+0000), which cannot be stored' }]);
    const [kept] = await db.sql<{ body: string; error: string }[]>`select body, error from inbound_message order by id desc limit 1`;
    t.match(kept, { body: /\|RAW\uFFFD5\|/, error: /^message 1 \(RAW\uFFFD5\) AR/ }, 'the body and the error are kept, the NUL as U+FFFD');
  },
);

t.test(
  'JSON: an event with a NUL in a text field is refused naming the field; the others are stored; a raw NUL byte: body kept',
  async (t) => {
    const { app, db } = await testApp(t);
    const body = [
      event({ trackingNumber: 'T-1', prescription: { rxNumber: '7004001', fillNumber: 1, drugName: 'A\u0000B' } }),
      event({ trackingNumber: 'T-2\u0000', carrier: 'U\u0000PS', messageId: 'm\u0000' }),
      event({ trackingNumber: 'T-3', patient: { icn: '1012345678V123456', mhvCorrelationId: '\u0000' } }),
      event({ trackingNumber: 'T-4' }),
    ];
    const nul = 'holds a NUL character (U+0000), which cannot be stored';
    t.same(await acceptedOnlyTheLast(t, app, body), [
      [0, 'prescription.drugName', nul],
      [1, 'messageId', nul],
      [1, 'trackingNumber', nul],
      [1, 'carrier', nul],
      [2, 'patient.mhvCorrelationId', nul],
    ]);
    const rows = await db.sql`select tracking_number from medication_dispense`;
    t.same([...rows], [{ tracking_number: 'T-4' }]);
    const [inbound] = await db.sql<{ body: string }[]>`select body from inbound_message`;
    t.equal(inbound?.body, JSON.stringify(body), 'the body is kept (JSON writes the NUL as \\u0000)');

    // A raw NUL byte is not JSON; the body and the parse error, which may quote it, are kept.
    const raw = await postDispenses(app, `{"stationNumber": "52\u00001"}`, 'application/json');
    t.equal(raw.statusCode, 400);
    t.match(raw.json(), { errors: [{ message: /not valid JSON/ }] });
    const [kept] = await db.sql<{ body: string; outcome: string }[]>`select body, outcome from inbound_message order by id desc limit 1`;
    t.same(kept, { body: '{"stationNumber": "52\uFFFD1"}', outcome: 'rejected' }, 'the body is kept, its NUL as U+FFFD');
  },
);

t.test('JSON dates that do not exist (Feb 30, T24:00, +15:00) are refused naming the field, not stored as another day', async (t) => {
  const { app, db } = await testApp(t);
  const body = [
    event({ trackingNumber: 'T-1', dispensedAt: '2026-02-30T10:00:00Z', shippedAt: '2026-02-28T24:00:00Z' }),
    event({ trackingNumber: 'T-2', dispensedAt: '2023-02-29T10:00Z', shippedAt: '2026-04-31T10:00:00+01:00' }),
    event({ trackingNumber: 'T-3', dispensedAt: '2026-13-01T10:00:00Z', shippedAt: '2026-05-14T10:60:00Z' }),
    // No zone is 15 hours ahead of UTC: real offsets lie within ±14:00.
    event({ trackingNumber: 'T-4', dispensedAt: '2026-05-00T10:00:00Z', shippedAt: '2026-05-14T10:00:00+15:00' }),
    event({ trackingNumber: 'T-5', dispensedAt: '2024-02-29T23:59:59.999+0530', shippedAt: '2026-05-14T16:00Z' }),
  ];
  const notReal = 'not a real date and time';
  t.same(await acceptedOnlyTheLast(t, app, body), [
    [0, 'dispensedAt', notReal],
    [0, 'shippedAt', notReal],
    [1, 'dispensedAt', notReal],
    [1, 'shippedAt', notReal],
    [2, 'dispensedAt', notReal],
    [2, 'shippedAt', notReal],
    [3, 'dispensedAt', notReal],
    [3, 'shippedAt', notReal],
  ]);
  const rows = await db.sql<{ dispensed_at: Date; shipped_at: Date }[]>`select dispensed_at, shipped_at from medication_dispense`;
  t.same(
    rows.map((r) => [r.dispensed_at.toISOString(), r.shipped_at.toISOString()]),
    [['2024-02-29T18:29:59.999Z', '2026-05-14T16:00:00.000Z']],
    'a leap day, an offset without a colon and a time without seconds are real',
  );
});
