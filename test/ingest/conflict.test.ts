// A re-sent event (same station, Rx number, fill and tracking number) with another ICN or carrier is
// never dropped as a duplicate: it is kept for review and its sender is told; the stored dispense,
// which may be in an email already, is left as it is.
import t from 'tap';
import { testApp } from '../support/app.ts';
import { postDispenses, readAcks } from '../support/ingest.ts';

const message = (controlId: string, icn: string, carrier: string) =>
  [
    `MSH|^~\\&|CMOP|521|MHV|MHV|20260514160512||RDS^O13|${controlId}|P|2.5`,
    `PID|||${icn}^^^USVHA^NI`,
    'ORC|RE|521-2719043-1',
    'RXD|1|00093718098^SIMVASTATIN 40MG TAB^NDC|20260514102210|90|TAB||2719043||||||1Z9999990312345678',
    `ZR2|${carrier}|1Z9999990312345678|2719043`,
  ].join('\r');

const event = (icn: string, carrier: string) => ({
  messageId: 'json-1',
  stationNumber: '521',
  patient: { icn },
  prescription: { rxNumber: '3100451', fillNumber: 2 },
  carrier,
  trackingNumber: '9400100000000000000123',
});

t.test('HL7: a resend with another ICN or carrier is answered AE and kept; an identical one is a duplicate', async (t) => {
  const { app, db } = await testApp(t);
  t.same(
    readAcks((await postDispenses(app, message('A-1', '1012345678V123456', 'UPS'), 'application/hl7-v2')).body).map((a) => a.code),
    ['AA'],
  );
  const same = readAcks((await postDispenses(app, message('A-2', '1012345678V123456', 'UPS'), 'application/hl7-v2')).body);
  t.match(same, [{ code: 'AA', text: 'accepted: already received' }]);
  const otherIcn = readAcks((await postDispenses(app, message('A-3', '1098765432V654321', 'UPS'), 'application/hl7-v2')).body);
  t.match(otherIcn, [{ code: 'AE', text: /another ICN or carrier: this copy is kept for review, not applied/ }]);
  const otherCarrier = readAcks((await postDispenses(app, message('A-4', '1012345678V123456', 'FEDEX'), 'application/hl7-v2')).body);
  t.match(otherCarrier, [{ code: 'AE', text: /another ICN or carrier/ }]);

  const kept = await db.sql<{ sent_patient_icn: string; sent_carrier: string; sent_message_control_id: string }[]>`
    select sent_patient_icn, sent_carrier, sent_message_control_id from medication_dispense_conflict order by id`;
  t.same(
    kept.map((k) => [k.sent_message_control_id, k.sent_patient_icn, k.sent_carrier]),
    [
      ['A-3', '1098765432V654321', 'UPS'],
      ['A-4', '1012345678V123456', 'FEDEX'],
    ],
    'both corrections kept',
  );
  const [dispense] = await db.sql`select patient_icn, carrier from medication_dispense`;
  t.match(dispense, { patient_icn: '1012345678V123456', carrier: 'UPS' }, 'the stored dispense is left as it was');
  const errors = await db.sql<{ error: string | null }[]>`select error from inbound_message order by id`;
  t.same(
    errors.map((e) => e.error?.includes('kept for review') ?? false),
    [false, false, true, true],
    'inbound_message.error says so',
  );
});

t.test('JSON: a resend with another ICN is counted in conflicts and listed by index', async (t) => {
  const { app, db } = await testApp(t);
  await postDispenses(app, JSON.stringify(event('1011111111V222333', 'USPS')), 'application/json');
  const another = { ...event('1011111111V222333', 'USPS'), prescription: { rxNumber: '3100452', fillNumber: 0 } };
  const response = await postDispenses(app, JSON.stringify([another, event('1012345678V123456', 'USPS')]), 'application/json');
  t.equal(response.statusCode, 200);
  t.match(response.json(), {
    received: 2,
    inserted: 1,
    duplicates: 0,
    conflicts: 1,
    errors: [{ index: 1, message: /another ICN or carrier/ }],
  });
  const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from medication_dispense_conflict`;
  t.equal(row!.n, 1);
});
