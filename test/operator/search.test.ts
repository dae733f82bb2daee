// An on-call engineer asked "did this veteran get their email?" finds the veteran's emails by ICN,
// with the ICN in the request body only, and never in the log.
import t from 'tap';
import { internalAuth, runJob, testApp } from '../support/app.ts';
import { findVeteranEmails } from '../../src/operator/repository.ts';
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

t.test("a veteran's emails from every day kept, found through the index keyed by UTC day", async (t) => {
  const { app, db } = await testApp(t);
  const alpha = icn(64);
  const search = async (patientIcn: string) =>
    (await app.inject({ method: 'POST', url: '/v1/tracking-emails/search', headers: internalAuth, payload: { patientIcn } })).json()
      .emails as { id: string }[];
  for (let i = 0; i < 4; i++) {
    await insertDispenses(db.sql, [{ patient_icn: alpha, rx_number: `64000${i}`, tracking_number: `1Z00000000000640${i}` }]);
    await runJob(app, 'grouping');
  }
  await insertDispenses(db.sql, [{ patient_icn: icn(65), rx_number: '6500001', tracking_number: '1Z0000000000006501' }]);
  await runJob(app, 'grouping');
  // The oldest kept email, the last instant of one UTC day, the first of the next, and today's.
  const created = ['2025-03-01 12:00:00+00', '2026-01-01 23:59:59.999999+00', '2026-01-02 00:00:00+00'];
  const emails = await db.sql<{ id: string }[]>`
    select id from tracking_email where patient_icn = ${alpha} order by created_at, id`;
  for (const [i, at] of created.entries())
    await db.sql`update tracking_email set created_at = ${at}::timestamptz where id = ${emails[i]!.id}`;

  t.same(
    (await search(alpha)).map((e) => e.id),
    [emails[3]!.id, emails[2]!.id, emails[1]!.id, emails[0]!.id],
    'every day from the oldest email to the newest, newest first',
  );
  t.equal((await search(icn(65))).length, 1, "another veteran's email on today's day only");

  // The planner reads tables this small whole; with that ruled out, the lookup must match the index.
  const plan = await db.sql.begin(async (tx) => {
    await tx`set local enable_seqscan = off`;
    const { string } = await findVeteranEmails(db.sql, alpha, 10).describe();
    return tx.unsafe(`explain ${string}`, [alpha, 10]);
  });
  t.match(
    plan.map((r) => r['QUERY PLAN']).join('\n'),
    /Index Scan using tracking_email_patient_by_day .*\n\s*Index Cond: .*date = ANY .* AND \(patient_icn = /,
    'the lookup probes the index by day and ICN',
  );
});
