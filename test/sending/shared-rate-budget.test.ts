// The VA Notify budget is one for the whole service: three instances sharing a database never send
// more in any 60 seconds than VA_NOTIFY_RATE_LIMIT_PER_MINUTE, and a backlog uses the budget up.
// Sends are counted by the times the sandbox VA Notify recorded them at.
import t from 'tap';
import { startSandboxVaNotify } from '../../src/sandbox/va-notify.ts';
import { testDatabase } from '../support/database.ts';
import { sandboxVaNotifyEnv, startServiceProcess, type ServiceProcess } from '../support/service-process.ts';
import { icn, insertTrackingEmail } from '../support/fixtures.ts';

// The budget's window is VA Notify's minute, so the test watches sends for a little over a minute.
t.setTimeout(300_000);

// A bucket of two: the first 60 seconds of a backlog would see its two tokens and a full minute's refill.
const perMinute = 120;

const personalisation = (n: number) => ({
  tracking_info: `UPS 1Z99999903${String(n).padStart(8, '0')}`,
  package_count: '1',
  prescription_count: '1',
  shipped_date: 'May 14, 2026',
});
const observeMs = 75_000;

t.test('three instances: no 60 s window over the budget, and at least 95% of it used', async (t) => {
  const db = await testDatabase(t);
  // The sandbox's own limit is far above the budget: an excess would be received, and counted.
  const vaNotify = await startSandboxVaNotify({ rateLimitPerMinute: 100_000, callbackDelayMs: 0 });
  t.teardown(() => vaNotify.close());
  // A backlog larger than the minute and a quarter can drain.
  const backlog = 180;
  for (let n = 0; n < backlog; n++) {
    await insertTrackingEmail(db.sql, { patient_icn: icn(n), mhv_correlation_id: '15176497', personalisation: personalisation(n) });
  }
  const env = {
    ...sandboxVaNotifyEnv(vaNotify.url),
    DATABASE_URL: db.url,
    AAL_BASE_URL: 'http://127.0.0.1:9',
    AAL_APP_TOKEN: 'unused',
    AAL_API_KEY: 'unused',
    AAL_INTERVAL_SECONDS: '3600',
    VA_NOTIFY_RATE_LIMIT_PER_MINUTE: String(perMinute),
    JOBS_ENABLED: 'true',
    SEND_INTERVAL_SECONDS: '1',
    SEND_BATCH_SIZE: '2',
    DATABASE_POOL_MAX: '3',
    GROUPING_INTERVAL_SECONDS: '3600',
    SWEEP_INTERVAL_SECONDS: '3600',
  };
  const instances: ServiceProcess[] = [];
  for (let i = 0; i < 3; i++) {
    const instance = await startServiceProcess(env);
    t.teardown(() => instance.child.kill('SIGKILL'));
    instances.push(instance);
  }
  const sendTimes = () => [...vaNotify.state.notifications.values()].map((n) => Date.parse(n.createdAt)).sort((a, b) => a - b);
  for (let waited = 0; sendTimes().length === 0; waited += 200) {
    if (waited > 60_000) throw new Error(`no send within a minute:\n${instances.map((i) => i.output()).join('\n')}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  const first = sendTimes()[0]!;
  while (Date.now() < first + observeMs) await new Promise((resolve) => setTimeout(resolve, 500));
  for (const instance of instances) instance.child.kill('SIGTERM');
  await Promise.all(instances.map((instance) => instance.exited));

  const times = sendTimes();
  const windowMs = 60_000;
  let busiest = 0;
  for (let i = 0; i < times.length; i++) {
    let j = i;
    while (j < times.length && times[j]! < times[i]! + windowMs) j++;
    busiest = Math.max(busiest, j - i);
  }
  t.ok(busiest <= perMinute, `the busiest 60 s window had ${busiest} sends; the budget is ${perMinute}`);
  const firstMinute = times.filter((at) => at < first + windowMs).length;
  t.ok(
    firstMinute >= Math.ceil(0.95 * perMinute),
    `the first minute of the backlog had ${firstMinute} sends, at least 95% of ${perMinute}`,
  );
  t.ok(times.length < backlog, 'the backlog outlasted the observation');
  const senders = instances.filter((instance) => /"msg":"[^"]*sent/i.test(instance.output())).length;
  t.comment(`sends: ${times.length}, busiest window ${busiest}, first minute ${firstMinute}, instances that logged sends: ${senders}`);
});
