// The timers pace idle polling, not throughput: a run that fills its batch is followed at once by
// another, and grouping wakes the sender.
import t from 'tap';
import pino from 'pino';
import { createJobRunner } from '../../src/jobs/runner.ts';
import { testApp } from '../support/app.ts';
import { icn, insertDispenses } from '../support/fixtures.ts';

t.test('a wake during a run starts the next run as soon as it ends', async (t) => {
  let runs = 0;
  const runner = createJobRunner(
    {
      send: async () => {
        runs++;
        if (runs < 3) runner.wake('send');
      },
    },
    pino({ level: 'silent' }),
  );
  runner.start({ send: 3600 });
  for (let i = 0; i < 200 && runs < 3; i++) await new Promise((resolve) => setTimeout(resolve, 25));
  await runner.stop(1000);
  t.equal(runs, 3, 'three runs, none waiting for the hour-long interval');
});

t.test('with timers on, every queued email is sent in back-to-back batches', async (t) => {
  const { db, vaNotify } = await testApp(t, {
    JOBS_ENABLED: 'true',
    GROUPING_QUIET_MINUTES: '0',
    GROUPING_INTERVAL_SECONDS: '1',
    SEND_INTERVAL_SECONDS: '3600',
    AAL_INTERVAL_SECONDS: '3600',
    SWEEP_INTERVAL_SECONDS: '3600',
    SEND_BATCH_SIZE: '5',
  });
  await insertDispenses(
    db.sql,
    Array.from({ length: 23 }, (_, i) => ({ patient_icn: icn(i), rx_number: `${2000000 + i}`, tracking_number: `T${i}` })),
  );
  for (let i = 0; i < 400; i++) {
    const [row] = await db.sql`select count(*)::int as n from tracking_email where state <> 'queued' and state <> 'sending'`;
    if (row!.n === 23) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const [sent] = await db.sql`select count(*)::int as n from notification`;
  t.equal(sent!.n, 23, 'all 23 sent, in batches of 5, without waiting for the send interval');
  t.equal(vaNotify.state.counters.sendsAccepted, 23);
});
