// SIGTERM in the middle of a send batch: in-flight sends finish, unstarted claims are handed back,
// the process exits by itself within the grace period, and nothing claimed is lost.
import t from 'tap';
import { startSandboxVaNotify } from '../../src/sandbox/va-notify.ts';
import { testDatabase } from '../helpers/database.ts';
import { icn, insertDispenses } from '../helpers/fixtures.ts';
import { internalAuth } from '../helpers/app.ts';
import { sandboxVaNotifyEnv, startServiceProcess } from '../helpers/service-process.ts';

/** How the process ended, or 'still running' after `ms`. */
async function exitWithin<T>(exited: Promise<T>, ms: number): Promise<T | 'still running'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'still running'>((resolve) => {
    timer = setTimeout(() => resolve('still running'), ms);
  });
  try {
    return await Promise.race([exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

t.test('SIGTERM during a send batch', async (t) => {
  const { sql, url: databaseUrl } = await testDatabase(t);
  const vaNotify = await startSandboxVaNotify({ callbackDelayMs: 0, faults: { latencyMs: 1500 } });
  t.teardown(() => vaNotify.close());
  await insertDispenses(sql, Array.from({ length: 12 }, (_, i) => ({ patient_icn: icn(i), rx_number: `${1000000 + i}`, tracking_number: `T${i}` })));

  const service = await startServiceProcess({
    DATABASE_URL: databaseUrl,
    ...sandboxVaNotifyEnv(vaNotify.url),
    JOBS_ENABLED: 'false',
    SEND_CONCURRENCY: '3',
    SEND_BATCH_SIZE: '12',
    SHUTDOWN_GRACE_SECONDS: '5',
  });
  t.teardown(() => service.child.kill('SIGKILL'));
  const grouping = await fetch(`${service.url}/v1/jobs/grouping`, { method: 'POST', headers: internalAuth }).then((r) => r.json());
  t.match(grouping, { emailsCreated: 12 });

  const send = fetch(`${service.url}/v1/jobs/send`, { method: 'POST', headers: internalAuth }).then((r) => r.json(), (e: Error) => e);
  // Wait until the batch is claimed and the first requests are in flight at VA Notify.
  for (let i = 0; i < 100; i++) {
    const [row] = await sql`select count(*)::int as n from tracking_email where state = 'sending'`;
    if (row!.n === 12) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  service.child.kill('SIGTERM');
  const exit = await exitWithin(service.exited, 30_000);
  t.same(exit, { code: 0, signal: null }, 'the process exited by itself');
  await send;
  t.match(service.output(), /shutting down/);

  const states = await sql`select state, count(*)::int as n from tracking_email group by state order by state`;
  const byState = Object.fromEntries(states.map((r) => [r.state, r.n]));
  t.notOk(byState.sending, 'nothing is left claimed');
  t.ok((byState.sent ?? 0) >= 1, 'the sends in flight finished and were recorded');
  t.ok((byState.queued ?? 0) >= 1, 'the claims not started were handed back');
  t.equal((byState.sent ?? 0) + (byState.queued ?? 0), 12, 'no email lost');
  const [stored] = await sql`select count(*)::int as n from notification`;
  t.equal(vaNotify.state.counters.sendsAccepted, stored!.n, 'every email VA Notify accepted is recorded');
  const [released] = await sql`select count(*)::int as n from tracking_email where state = 'queued' and attempts = 0`;
  t.equal(released!.n, byState.queued ?? 0, 'handed-back emails keep their attempts');
});

t.test('SIGTERM while a send outlasts the grace period: the close that follows still runs, and the exit is clean', async (t) => {
  const { sql, url: databaseUrl } = await testDatabase(t);
  const vaNotify = await startSandboxVaNotify({ callbackDelayMs: 0, faults: { latencyMs: 4000 } });
  t.teardown(() => vaNotify.close());
  await insertDispenses(sql, Array.from({ length: 3 }, (_, i) => ({ patient_icn: icn(40 + i), rx_number: `${4000000 + i}`, tracking_number: `T${i}` })));

  const service = await startServiceProcess({
    DATABASE_URL: databaseUrl,
    ...sandboxVaNotifyEnv(vaNotify.url),
    JOBS_ENABLED: 'false',
    SEND_CONCURRENCY: '3',
    VA_NOTIFY_TIMEOUT_MS: '8000',
    SHUTDOWN_GRACE_SECONDS: '1',
  });
  t.teardown(() => service.child.kill('SIGKILL'));
  await fetch(`${service.url}/v1/jobs/grouping`, { method: 'POST', headers: internalAuth });
  const send = fetch(`${service.url}/v1/jobs/send`, { method: 'POST', headers: internalAuth }).then((r) => r.json(), (e: Error) => e);
  for (let i = 0; i < 100; i++) {
    const [row] = await sql`select count(*)::int as n from tracking_email where state = 'sending'`;
    if (row!.n === 3) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  service.child.kill('SIGTERM');
  const exit = await exitWithin(service.exited, 30_000);
  t.same(exit, { code: 0, signal: null }, 'not killed by the shutdown timer at the end of the grace period');
  await send;
  t.match(service.output(), /job runs still in flight after the grace period/);
  const [left] = await sql`select count(*)::int as n from tracking_email where state = 'sending'`;
  t.equal(left!.n, 0, 'the sends in flight were answered and recorded before the exit');
});
