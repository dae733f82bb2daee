// SIGTERM in the middle of a send batch: in-flight sends finish, unstarted claims are handed back,
// the process exits by itself, cleanly even when a send outlasts the grace period, and nothing
// claimed is lost.
import t, { type Test } from 'tap';
import { startSandboxVaNotify } from '../../src/sandbox/va-notify.ts';
import { testDatabase } from '../support/database.ts';
import { icn, insertDispenses } from '../support/fixtures.ts';
import { internalAuth } from '../support/app.ts';
import { sandboxVaNotifyEnv, startServiceProcess } from '../support/service-process.ts';

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

/**
 * A service process with `emails` tracking emails, each sent in one batch to a sandbox VA Notify that
 * answers after `latencyMs`: SIGTERM once the whole batch is claimed and its first requests are in
 * flight. Resolves with how the process ended (or 'still running' after 30 s).
 */
async function sigtermDuringSend(t: Test, p: { emails: number; latencyMs: number; env: Record<string, string> }) {
  const { sql, url: databaseUrl } = await testDatabase(t);
  const vaNotify = await startSandboxVaNotify({ callbackDelayMs: 0, faults: { latencyMs: p.latencyMs } });
  t.teardown(() => vaNotify.close());
  await insertDispenses(
    sql,
    Array.from({ length: p.emails }, (_, i) => ({ patient_icn: icn(i), rx_number: `${1000000 + i}`, tracking_number: `T${i}` })),
  );

  const service = await startServiceProcess({
    DATABASE_URL: databaseUrl,
    ...sandboxVaNotifyEnv(vaNotify.url),
    JOBS_ENABLED: 'false',
    SEND_BATCH_SIZE: String(p.emails),
    ...p.env,
  });
  t.teardown(() => service.child.kill('SIGKILL'));
  const grouping = await fetch(`${service.url}/v1/jobs/grouping`, { method: 'POST', headers: internalAuth }).then((r) => r.json());
  t.match(grouping, { emailsCreated: p.emails });

  const send = fetch(`${service.url}/v1/jobs/send`, { method: 'POST', headers: internalAuth }).then(
    (r) => r.json(),
    (e: Error) => e,
  );
  for (let i = 0; i < 100; i++) {
    const [row] = await sql`select count(*)::int as n from tracking_email where state = 'sending'`;
    if (row!.n === p.emails) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  service.child.kill('SIGTERM');
  const exit = await exitWithin(service.exited, 30_000);
  await send;
  return { sql, vaNotify, service, exit };
}

t.test('SIGTERM during a send batch', async (t) => {
  const { sql, vaNotify, service, exit } = await sigtermDuringSend(t, {
    emails: 12,
    latencyMs: 1500,
    env: { SEND_CONCURRENCY: '3', SHUTDOWN_GRACE_SECONDS: '5' },
  });
  t.same(exit, { code: 0, signal: null }, 'the process exited by itself');
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
  const { sql, service, exit } = await sigtermDuringSend(t, {
    emails: 3,
    latencyMs: 4000,
    env: { SEND_CONCURRENCY: '3', VA_NOTIFY_TIMEOUT_MS: '8000', SHUTDOWN_GRACE_SECONDS: '1' },
  });
  t.same(exit, { code: 0, signal: null }, 'not killed by the shutdown timer at the end of the grace period');
  t.match(service.output(), /job runs still in flight after the grace period/);
  const [left] = await sql`select count(*)::int as n from tracking_email where state = 'sending'`;
  t.equal(left!.n, 0, 'the sends in flight were answered and recorded before the exit');
});
