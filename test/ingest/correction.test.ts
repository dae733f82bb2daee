// A message that could not be emailed (no ICN) is kept as unprocessable; when CMOP sends the same
// dispense again with the ICN, the corrected event replaces it and goes on to be emailed.
import t from 'tap';
import { testApp } from '../helpers/app.ts';
import { postDispenses, readSample } from './fixtures.ts';

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
