// The whole pipeline against the sandboxes, driven the way an operator would: the CMOP samples in,
// grouping, sending, VA Notify's callbacks, AAL events out.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { internalAuth, testApp, type TestApp, runJob } from '../support/app.ts';

const sample = (name: string) => readFileSync(new URL(`../../samples/${name}`, import.meta.url));

const alpha = { icn: '1012345678V123456', mhv: 10123456 };
const bravo = { icn: '1098765432V654321', mhv: 20987654 };
const delta = { icn: '1000000123V456789' };
const echo = { icn: '1011111111V222333', mhv: 30111111 };
// The sandbox declines every ICN ending in 000001 (preferences declined in VA Profile).
const declined = { icn: '1012340000V000001', mhv: 40000001 };

async function ingestSamples(app: TestApp['app']) {
  const hl7 = { ...internalAuth, 'content-type': 'application/hl7-v2' };
  const json = { ...internalAuth, 'content-type': 'application/json' };
  const answers = await Promise.all([
    app.inject({ method: 'POST', url: '/v1/dispenses', headers: hl7, payload: sample('rds-r06-batch.hl7') }),
    app.inject({ method: 'POST', url: '/v1/dispenses', headers: hl7, payload: sample('rds-o13-one-package-two-rx.hl7') }),
    app.inject({ method: 'POST', url: '/v1/dispenses', headers: hl7, payload: sample('rrd-o14-vista-encoding-cr.hl7') }),
    app.inject({ method: 'POST', url: '/v1/dispenses', headers: json, payload: sample('dispense-events.json') }),
    app.inject({ method: 'POST', url: '/v1/dispenses', headers: hl7, payload: sample('bad/no-icn.hl7') }),
    app.inject({
      method: 'POST',
      url: '/v1/dispenses',
      headers: json,
      payload: {
        messageId: 'declined-1',
        stationNumber: '521',
        patient: { icn: declined.icn, mhvCorrelationId: String(declined.mhv) },
        prescription: { rxNumber: '8800123', fillNumber: 0, drugName: 'ASPIRIN 81MG TAB', ndc: '00000000000', quantity: 30 },
        dispensedAt: '2026-05-14T09:00:00Z',
        shippedAt: '2026-05-14T15:00:00Z',
        carrier: 'UPS',
        trackingNumber: '1Z9999990399999999',
      },
    }),
  ]);
  for (const answer of answers) if (answer.statusCode !== 200) throw new Error(`ingest answered ${answer.statusCode}: ${answer.body}`);
}

async function waitForCallbacks(sql: TestApp['db']['sql']) {
  for (let i = 0; i < 200; i++) {
    const [open] = await sql`select count(*)::int as n from tracking_email where state in ('queued', 'sending', 'sent')`;
    if (open!.n === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error('callbacks did not settle the emails');
}

t.test('samples in, one email per veteran out, delivered, one AAL event each', async (t) => {
  // The six sample bodies arrive at once, as producers post them: the default budget takes them all.
  const { app, db, vaNotify, aal, logs } = await testApp(t, { GROUPING_QUIET_MINUTES: '0' }, { listen: true });
  await ingestSamples(app);

  t.match(await runJob(app, 'grouping'), { emailsCreated: 5, dispensesGrouped: 8 });
  t.match(await runJob(app, 'send'), { sent: 5, failed: 0 });

  // What VA Notify received: one email per veteran, by ICN, with that veteran's packages.
  const sent = new Map([...vaNotify.state.notifications.values()].map((n) => [n.recipientIdentifier?.id_value, n.request]));
  t.same([...sent.keys()].sort(), [alpha.icn, bravo.icn, delta.icn, echo.icn, declined.icn].sort());
  const info = (icn: string) => String((sent.get(icn)!.personalisation as Record<string, string>).tracking_info);
  t.equal(
    info(alpha.icn),
    '**UPS** tracking number: [1Z9999990312345678](https://www.ups.com/track?tracknum=1Z9999990312345678)\n' +
      '- Prescription ending in 9043\n- Prescription ending in 9100',
  );
  t.match(info(bravo.icn), /\*\*USPS\*\* tracking number: \[9400100000000000000012\][^\n]*\n- Prescription ending in 4512/);
  t.match(info(bravo.icn), /\*\*FedEx\*\* tracking number: \[771234567890\][^\n]*\n- Prescription ending in 4520/);
  t.notMatch(info(bravo.icn), /4513/, 'the cancelled fill is in no email');
  t.match(info(delta.icn), /\*\*Carrier not provided\*\* tracking number: 9400100000000000000099\n- Prescription ending in 9043/);
  t.match(info(echo.icn), /ending in 0451[\s\S]*ending in 0452|ending in 0452[\s\S]*ending in 0451/);
  for (const request of sent.values()) t.notMatch(JSON.stringify(request), /SIMVASTATIN|LISINOPRIL|ALBUTEROL/, 'no drug names by default');
  const [unprocessable] = await db.sql`select state, tracking_email_id from medication_dispense where rx_number = '555'`;
  t.same(unprocessable, { state: 'unprocessable', tracking_email_id: null }, 'the message with no ICN is in no email');

  // VA Notify's callbacks settle every email.
  await waitForCallbacks(db.sql);
  const emails = await db.sql`select patient_icn, state, state_reason from tracking_email order by patient_icn`;
  const byIcn = new Map(emails.map((e) => [e.patient_icn, e]));
  for (const veteran of [alpha, bravo, delta, echo]) t.equal(byIcn.get(veteran.icn)?.state, 'delivered', veteran.icn);
  t.same(byIcn.get(declined.icn), {
    patient_icn: declined.icn,
    state: 'permanent_failure',
    state_reason: 'Undeliverable - Preferences declined in VA Profile',
  });

  // One AAL event per delivered email with a correlation id; none for the declined one.
  t.match(await runJob(app, 'aal'), { posted: 3, failed: 0 });
  t.match(await runJob(app, 'aal'), { posted: 0 }, 'nothing posted twice');
  const events = aal.state.events.map((e) => e.body).sort((a, b) => a.userProfileId - b.userProfileId);
  t.same(
    events.map((e) => e.userProfileId),
    [alpha.mhv, bravo.mhv, echo.mhv],
  );
  for (const event of events) {
    t.match(event, { activityType: 'Rx Tracking Email', action: 'Rx Tracking Email Delivered', performerType: 'System', status: 1 });
    t.match(event.completionTime, /^\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/);
    t.notMatch(event.detailValue, /SIMVASTATIN|LISINOPRIL|ALBUTEROL|METOPROLOL|ATORVASTATIN|7004512|2719043/);
  }
  t.match(events[0]!.detailValue, /1Z9999990312345678.*9043.*9100/);
  const aalRows = await db.sql`select e.patient_icn, a.state from aal_event a join tracking_email e on e.id = a.tracking_email_id`;
  t.same(
    new Map(aalRows.map((r) => [r.patient_icn, r.state])),
    new Map([
      [alpha.icn, 'posted'],
      [bravo.icn, 'posted'],
      [delta.icn, 'unpostable'],
      [echo.icn, 'posted'],
    ]),
  );

  // The metrics an operator watches agree.
  const metrics = await app.inject({ method: 'GET', url: '/metrics' }).then((r) => r.body);
  t.match(metrics, /rx_sends_total\{outcome="sent"\} 5/);
  t.match(metrics, /rx_aal_posts_total\{outcome="posted"\} 3/);
  t.match(metrics, /rx_rows\{table="tracking_email",state="queued"\} 0/);
  t.match(metrics, /rx_rows\{table="aal_event",state="pending"\} 0/);
  t.match(metrics, /rx_oldest_pending_dispense_age_seconds 0/);
  // A callback may beat the sender's commit (then it is applied when the id is stored): count both.
  const deliveredCallbacks = [
    ...metrics.matchAll(/^rx_callbacks_total\{outcome="(applied|pending_notification)",status="delivered"\} (\d+)$/gm),
  ].reduce((sum, m) => sum + Number(m[2]), 0);
  t.equal(deliveredCallbacks, 4);
  t.match(metrics, /rx_dispenses_ingested_total\{outcome="inserted"\} 8/);

  // Nothing that identifies a veteran reached the log.
  for (const icn of [alpha.icn, bravo.icn, delta.icn, echo.icn, declined.icn]) t.notMatch(logs.text, icn);
  t.notMatch(logs.text, /@/, 'no email address');
  t.notMatch(logs.text, /CMOPTEST|(?<![\d.])666-?\d{2}-?\d{4}(?!\d)/, 'no name or SSN');
});
