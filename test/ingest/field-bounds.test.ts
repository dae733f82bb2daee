// Every value a dispense stores is bounded, as the JSON schema bounds it: an HL7 field too long for
// the dispense key's index (or for reading in an email) costs its own message an AE, never the body.
import t from 'tap';
import { testApp } from '../support/app.ts';
import { postDispenses, readAcks } from '../support/ingest.ts';

const msh = (controlId: string) => `MSH|^~\\&|CMOP|521|MHV|MHV|20260514160512||RDS^O13|${controlId}|P|2.5`;
const pid = 'PID|||1012345678V123456^^^USVHA^NI~10123456^^^200MHS^PI';
const message = (
  controlId: string,
  { rx = '2719043', tracking = '1Z9999990312345678', drug = 'SIMVASTATIN 40MG TAB', carrier = 'UPS', order = '' } = {},
) =>
  [
    msh(controlId),
    pid,
    order || `ORC|RE|521-${rx}-1`,
    `RXD|1|00093718098^${drug}^NDC|20260514102210|90|TAB||${rx}||||||${tracking}`,
    `ZR2|${carrier}|${tracking}|${rx}`,
  ].join('\r');

t.test('an over-long field answers its own message AE with the reason, and the other messages are stored', async (t) => {
  const { app, db } = await testApp(t);
  const long = '9'.repeat(3000);
  const cases = [
    ['TRACK', { tracking: `1Z${long}` }, /tracking number.*longer than 60/],
    ['RX', { rx: long }, /Rx number.*longer than 40/],
    ['DRUG', { drug: 'A'.repeat(201) }, /drug name.*longer than 200/],
    ['CARRIER', { carrier: 'C'.repeat(41) }, /carrier.*longer than 40/],
    ['STATION', { order: `ORC|RE|${'5'.repeat(3000)}-2719043-1` }, /station/],
  ] as const;
  const body = [
    message('GOOD-1', { rx: '100', tracking: '1Z100' }),
    ...cases.map(([id, fields]) => message(id, fields)),
    message('GOOD-2', { rx: '101', tracking: '1Z101' }),
  ].join('\r');
  // The station comes from ORC-2 only when MSH-4 is not one.
  const response = await postDispenses(app, body.replaceAll('|CMOP|521|', '|CMOP|CMOP-LEAVENWORTH|'), 'application/hl7-v2');
  t.equal(response.statusCode, 200, 'answered, not a 500');
  const acks = readAcks(response.body);
  t.same(
    acks.map((a) => [a.controlId, a.code]),
    [['GOOD-1', 'AA'], ...cases.map(([id]) => [id, 'AE']), ['GOOD-2', 'AA']],
  );
  for (const [i, [id, , reason]] of cases.entries()) t.match(acks[i + 1]!.text, reason, id);
  for (const ack of acks) t.ok(ack.text.length < 300, 'the reason does not quote the value');
  const rows = await db.sql<{ rx_number: string; state: string }[]>`select rx_number, state from medication_dispense order by rx_number`;
  t.same(
    rows.map((r) => [r.rx_number, r.state]),
    [
      ['100', 'pending'],
      ['101', 'pending'],
      ['2719043', 'unprocessable'],
    ],
    'the good messages are stored, and the one whose station cannot be read is kept as unprocessable',
  );
  const [inbound] = await db.sql<{ outcome: string; error: string }[]>`select outcome, error from inbound_message`;
  t.equal(inbound!.outcome, 'partial');
  t.match(inbound!.error, /message 2 \(TRACK\) AE: .*tracking number/);
  t.notOk(inbound!.error.includes(long), 'the error names the field, not its text');
});
