// GET /v1/stats at a year's size: large tables are not counted whole. Their history states come from
// the planner's statistics; work in progress and failures are still counted exactly.
import t from 'tap';
import { stateCounts } from '../../src/metrics.ts';
import { internalAuth, testApp } from '../support/app.ts';

t.test('a large table: history states estimated, work in progress and failures counted exactly', async (t) => {
  const { app, db } = await testApp(t);
  const sql = db.sql;
  await sql`
    insert into tracking_email (patient_icn, personalisation, package_count, prescription_count, state)
    select '1000000001V000001', '{}', 1, 1, case when g <= 300 then 'delivered' when g <= 303 then 'failed' else 'queued' end
      from generate_series(1, 305) g`;
  await sql`analyze tracking_email`;
  // A failure after the last analyze: the statistics do not know it, the exact count does.
  await sql`update tracking_email set state = 'permanent_failure' where id = (select id from tracking_email where state = 'delivered' limit 1)`;

  const { counts, estimated } = await stateCounts(sql, { exactUpTo: 100 });
  t.same(estimated, ['emails'], 'only the table above the limit is estimated');
  t.equal(counts.tracking_email.delivered, 300, 'the estimate, as of the last analyze');
  t.equal(counts.tracking_email.failed, 3);
  t.equal(counts.tracking_email.permanent_failure, 1, 'counted through the index, not estimated');
  t.equal(counts.tracking_email.queued, 2);
  t.same(counts.aal_event, {}, 'a small table is counted whole');

  // The endpoint says so only when something is estimated.
  const small = await app.inject({ method: 'GET', url: '/v1/stats', headers: internalAuth });
  t.equal(small.statusCode, 200);
  t.notOk('estimated' in small.json(), 'a database below the limit is counted whole');
  t.equal(small.json().emails.delivered, 299);
});
