// A message that could not be emailed (no ICN) is kept as unprocessable; when CMOP sends the same
// dispense again with the ICN, the corrected event replaces it and goes on to be emailed.
import t from 'tap';
import { testApp } from '../support/app.ts';
import { postDispenses, readAcks, readSample } from '../support/ingest.ts';

t.test('a corrected resend replaces an unprocessable dispense', async (t) => {
  const { app, db } = await testApp(t);
  // The sample also lacks a station (MSH-4); give it one, as CMOP's real messages have.
  const noIcn = readSample('bad/no-icn.hl7').replace('MSH|^~\\&|CMOP||MHV|', 'MSH|^~\\&|CMOP|521|MHV|');
  t.match(noIcn, /^MSH\|\^~\\&\|CMOP\|521\|/);
  const first = await postDispenses(app, noIcn, 'application/hl7-v2');
  t.match(first.body, /MSA\|AE\|NOICN-1/);
  const [before] = await db.sql`select state, patient_icn from medication_dispense where rx_number = '555'`;
  t.same(before, { state: 'unprocessable', patient_icn: null });

  const corrected = noIcn.replace('PID|||666001234^^^USSSA^SS', 'PID|||1012345678V123456^^^USVHA^NI~666001234^^^USSSA^SS');
  t.not(corrected, noIcn, 'the test really adds an ICN');
  const second = await postDispenses(app, corrected, 'application/hl7-v2');
  t.match(second.body, /MSA\|AA\|NOICN-1/);
  const rows = await db.sql`select state, patient_icn, state_reason from medication_dispense where rx_number = '555'`;
  t.same([...rows], [{ state: 'pending', patient_icn: '1012345678V123456', state_reason: null }], 'one row, now pending');

  const again = await postDispenses(app, corrected, 'application/hl7-v2');
  t.match(again.body, /MSA\|AA\|NOICN-1/);
  const [count] = await db.sql`select count(*)::int as n from medication_dispense`;
  t.equal(count!.n, 1, 'a replay of the corrected message changes nothing');
  const stillPending = await postDispenses(app, noIcn, 'application/hl7-v2');
  t.equal(stillPending.statusCode, 200);
  const [after] = await db.sql`select state, patient_icn from medication_dispense where rx_number = '555'`;
  t.same(after, { state: 'pending', patient_icn: '1012345678V123456' }, 'a late copy without the ICN never undoes the correction');
});

t.test('a corrected copy later in the same body replaces the unprocessable copy before it', async (t) => {
  const { app, db } = await testApp(t);
  const noIcn = readSample('bad/no-icn.hl7').replace('MSH|^~\\&|CMOP||MHV|', 'MSH|^~\\&|CMOP|521|MHV|');
  const corrected = noIcn
    .replace('PID|||666001234^^^USSSA^SS', 'PID|||1012345678V123456^^^USVHA^NI~666001234^^^USSSA^SS')
    .replace('|NOICN-1|', '|NOICN-2|');
  t.match(corrected, /\|NOICN-2\|[\s\S]*1012345678V123456/, 'the test really sends a second, corrected message');

  const response = await postDispenses(app, noIcn + corrected, 'application/hl7-v2');
  t.equal(response.statusCode, 200);
  t.same(
    readAcks(response.body).map((a) => [a.controlId, a.code, a.text]),
    [
      ['NOICN-1', 'AE', 'no ICN (PID-3 with type NI and authority USVHA, or PID-17): VA Notify is addressed by ICN'],
      ['NOICN-2', 'AA', 'accepted'],
    ],
    'the corrected copy is credited with the row, not answered as already received',
  );
  const rows = await db.sql`select state, patient_icn, state_reason, message_control_id from medication_dispense where rx_number = '555'`;
  t.same(
    [...rows],
    [{ state: 'pending', patient_icn: '1012345678V123456', state_reason: null, message_control_id: 'NOICN-2' }],
    'one row, the corrected one',
  );
  const [inbound] = await db.sql`select outcome, message_count from inbound_message`;
  t.same(inbound, { outcome: 'partial', message_count: 2 });

  // In the other order the corrected copy comes first and stays: a later copy without the ICN is the
  // duplicate, as it would be in a later request.
  const reversed = await postDispenses(
    app,
    corrected.replace('|NOICN-2|', '|NOICN-3|') + noIcn.replace('|NOICN-1|', '|NOICN-4|'),
    'application/hl7-v2',
  );
  t.same(
    readAcks(reversed.body).map((a) => [a.controlId, a.code]),
    [
      ['NOICN-3', 'AA'],
      ['NOICN-4', 'AE'],
    ],
  );
  t.match(readAcks(reversed.body)[0]?.text, 'accepted: already received');
  const [after] = await db.sql`select state, message_control_id from medication_dispense where rx_number = '555'`;
  t.same(after, { state: 'pending', message_control_id: 'NOICN-2' }, 'the stored correction is left as it was');
});

t.test('within one body, a corrected copy replaces an unprocessable one that is already stored and one that is not', async (t) => {
  const { app, db } = await testApp(t);
  const message = (controlId: string, rx: string, icn: boolean) =>
    [
      `MSH|^~\\&|CMOP|521|MHV|MHV|20260514160512||RDS^O13|${controlId}|P|2.5`,
      icn ? 'PID|||1012345678V123456^^^USVHA^NI' : 'PID|||7172676^^^USVHA^PI',
      `ORC|RE|521-${rx}-1`,
      `RXD|1|00093718098^SIMVASTATIN 40MG TAB^NDC|20260514102210|90|TAB||${rx}||||||1Z${rx}`,
    ].join('\r');
  // 8300001 is stored as unprocessable first; the body then holds it twice more (without, then with
  // the ICN) beside a new event sent the same two ways and a new event without a correction.
  await postDispenses(app, message('S-1', '8300001', false), 'application/hl7-v2');
  const body = [
    message('B-1', '8300001', false),
    message('B-2', '8300002', false),
    message('B-3', '8300001', true),
    message('B-4', '8300002', true),
    message('B-5', '8300002', true),
    message('B-6', '8300003', false),
  ].join('\r');
  const response = await postDispenses(app, body, 'application/hl7-v2');
  t.equal(response.statusCode, 200);
  t.same(
    readAcks(response.body).map((a) => [a.controlId, a.code, a.code === 'AA' ? a.text : 'no ICN']),
    [
      ['B-1', 'AE', 'no ICN'],
      ['B-2', 'AE', 'no ICN'],
      ['B-3', 'AA', 'accepted'],
      ['B-4', 'AA', 'accepted'],
      ['B-5', 'AA', 'accepted: already received'],
      ['B-6', 'AE', 'no ICN'],
    ],
  );
  const rows = await db.sql<{ rx_number: string; state: string; message_control_id: string }[]>`
    select rx_number, state, message_control_id from medication_dispense order by rx_number`;
  t.same(
    rows.map((r) => [r.rx_number, r.state, r.message_control_id]),
    [
      ['8300001', 'pending', 'B-3'],
      ['8300002', 'pending', 'B-4'],
      ['8300003', 'unprocessable', 'B-6'],
    ],
  );
});
