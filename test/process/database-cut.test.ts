// A database connection cut while a transaction's query is in flight (a terminated backend, a Postgres
// restart, a failover), against the real process: postgres.js can fail outside every promise then
// (src/db/connect.ts, isDriverWriteAfterClose). The process says why in one log line and exits 1 at
// once, for its restart; nothing of the cut transaction is kept, and the restarted instance does the work.
import t from 'tap';
import { internalAuth } from '../support/app.ts';
import { testDatabase } from '../support/database.ts';
import { icn, insertDispenses } from '../support/fixtures.ts';
import { startServiceProcess, type ServiceProcess } from '../support/service-process.ts';

t.setTimeout(120_000);

/** How the process ended, or 'still running' after `ms`. */
async function exitWithin<T>(exited: Promise<T>, ms: number): Promise<T | 'still running'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'still running'>((resolve) => (timer = setTimeout(() => resolve('still running'), ms)));
  try {
    return await Promise.race([exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

t.test('a grouping transaction cut mid-query: the process exits 1 at once, and the restarted one groups', async (t) => {
  const { sql, url: databaseUrl, name } = await testDatabase(t);
  await insertDispenses(sql, [{ patient_icn: icn(7), rx_number: '7000007', tracking_number: 'T7' }]);
  const env = { DATABASE_URL: databaseUrl, JOBS_ENABLED: 'false', SHUTDOWN_GRACE_SECONDS: '20' };
  const started: ServiceProcess[] = [];
  t.teardown(() => {
    for (const instance of started) instance.child.kill('SIGKILL');
  });
  const start = async () => {
    const instance = await startServiceProcess(env);
    started.push(instance);
    return instance;
  };

  // Grouping's insert of the email sleeps in a trigger, so its transaction is caught mid-query.
  await sql`create function hold_grouping() returns trigger language plpgsql as $$ begin perform pg_sleep(60); return new; end $$`;
  await sql`create trigger hold_grouping before insert on tracking_email for each row execute function hold_grouping()`;
  const release = () => sql`drop trigger if exists hold_grouping on tracking_email`;

  // Whether the driver fails depends on how the cut reaches it: every time so far when the query is
  // in a pg_sleep, only now and then when it waits on a lock. Should one ride it out, the transaction
  // is cut again, in a fresh process every few cuts. A cut the driver rides out answers 503 (the
  // database unavailable) and leaves a process that still answers.
  let service = await start();
  let exit: Awaited<typeof service.exited> | 'still running' = 'still running';
  let cuts = 0;
  let cutAt = 0;
  while (exit === 'still running' && cuts < 40) {
    if (cuts > 0 && cuts % 5 === 0) {
      t.equal((await fetch(`${service.url}/health/ready`)).status, 200, 'a process that rode out its cuts is still ready');
      service.child.kill('SIGKILL');
      await service.exited;
      service = await start();
    }
    const grouping = fetch(`${service.url}/v1/jobs/grouping`, { method: 'POST', headers: internalAuth }).then(
      (r) => r.status,
      () => 'no answer',
    );
    let waiting: number[] = [];
    for (let i = 0; i < 500 && waiting.length === 0; i++) {
      waiting = (await sql`select pid from pg_stat_activity where datname = ${name} and wait_event = 'PgSleep'`).map(
        (r) => r.pid as number,
      );
      if (waiting.length === 0) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    if (waiting.length === 0) break;
    cutAt = Date.now();
    await sql`select pg_terminate_backend(pid) from unnest(${waiting}::int[]) as pid`;
    cuts++;
    exit = await exitWithin(service.exited, 3_000);
    const answer = await grouping;
    if (exit === 'still running' && answer !== 503) t.equal(answer, 503, 'a grouping run whose transaction was cut answers 503');
  }
  t.comment(`cuts until the driver failed: ${cuts}`);
  t.same(exit, { code: 1, signal: null }, 'the process exits 1, at once rather than after the shutdown grace');
  t.ok(Date.now() - cutAt < 5_000, 'promptly');
  const lines = service
    .output()
    .split('\n')
    .filter((line) => line.includes('postgres-driver-write-after-close'));
  t.equal(lines.length, 1, 'one log line names the cause');
  t.match(JSON.parse(lines[0] ?? '{}'), {
    level: 60,
    cause: 'postgres-driver-write-after-close',
    err: { type: 'TypeError' },
    msg: /postgres\.js #1208.*retried after the restart/,
  });
  t.notMatch(service.output(), icn(7), 'no ICN in the output');

  await release();
  const [before] = await sql<{ n: number }[]>`select count(*)::int as n from tracking_email`;
  t.equal(before!.n, 0, 'nothing of the cut transaction kept');

  // The orchestrator's restart.
  const restarted = await start();
  const again = await fetch(`${restarted.url}/v1/jobs/grouping`, { method: 'POST', headers: internalAuth }).then((r) => r.json());
  t.match(again, { emailsCreated: 1 }, 'the restarted instance groups the dispense');
});
