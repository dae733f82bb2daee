// An on-call engineer asked "did this veteran get their email?" finds the veteran's emails by ICN,
// with the ICN in the request body only, and never in the log.
import t from 'tap';
import { internalAuth, runJob, testApp } from '../support/app.ts';
import { icn, insertDispenses } from '../support/fixtures.ts';

t.test("a veteran's emails by ICN, newest first, and nobody else's", async (t) => {
  const { app, db, logs } = await testApp(t);
  const [alpha, bravo] = [icn(61), icn(62)];
  const search = (body: Record<string, unknown>) =>
    app.inject({ method: 'POST', url: '/v1/tracking-emails/search', headers: internalAuth, payload: body });

  await insertDispenses(db.sql, [
    { patient_icn: alpha, rx_number: '6100001', tracking_number: '1Z0000000000000061' },
    { patient_icn: bravo, rx_number: '6200001', tracking_number: '1Z0000000000000062' },
  ]);
  await runJob(app, 'grouping');
  // A later shipment of the same veteran: a second email.
  await insertDispenses(db.sql, [{ patient_icn: alpha, rx_number: '6100002', tracking_number: '1Z0000000000000063' }]);
  await runJob(app, 'grouping');
  const emails = await db.sql<
    { id: string; patient_icn: string }[]
  >`select id, patient_icn from tracking_email order by created_at desc, id desc`;
  t.equal(emails.length, 3);

  const found = await search({ patientIcn: alpha });
  t.equal(found.statusCode, 200, found.body);
  t.same(
    found.json().emails.map((e: { id: string }) => e.id),
    emails.filter((e) => e.patient_icn === alpha).map((e) => e.id),
    'newest first',
  );
  t.match(found.json().emails[0], { state: 'queued', packageCount: 1, prescriptionCount: 1 });
  t.same((await search({ patientIcn: alpha, limit: 1 })).json().emails.length, 1);
  t.same((await search({ patientIcn: icn(63) })).json(), { emails: [] }, 'a veteran with no email');

  const bad = await search({ patientIcn: '123-45-6789' });
  t.equal(bad.statusCode, 400);
  t.match(bad.json(), { message: /patientIcn/ });
  t.equal((await search({})).statusCode, 400);
  t.equal((await app.inject({ method: 'POST', url: '/v1/tracking-emails/search', payload: { patientIcn: alpha } })).statusCode, 401);

  t.notMatch(logs.text, alpha, 'the ICN searched for is not logged');
  t.notMatch(logs.text, '123-45-6789', 'nor a malformed one');
});
