// Chaos run: three service instances (real processes, `node src/server.ts`) on one database, one
// sandbox VA Notify and one sandbox AAL that misbehave the way the real ones may: 30 % of callbacks
// lost, 20 % posted twice, stale ones after final ones, 10 % of sends answered 503, 5 % of AAL posts
// answered 500. Dispenses arrive in three waves; one instance is killed with SIGKILL mid-run and
// started again. At the end every promise the service makes is checked:
//   - every email was sent exactly once per attempt (VA Notify's sends per reference equal our
//     notification rows per email), and never more than SEND_MAX_ATTEMPTS times;
//   - every email and every notification reached a final state;
//   - every delivered email has exactly one AAL event at the AAL, and no other email has one;
//   - every dispense is in exactly one email of its own veteran, none lost, none counted twice;
//   - no instance logged an ICN.
//
// As a test: test/sweep/chaos.test.ts runs it small. As a tool:
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres node bench/chaos.ts [veterans]
// (a fresh database is created on that server and dropped afterwards; without DATABASE_URL an
// embedded PostgreSQL is started in a temporary folder). CHAOS_DEBUG=<text> echoes the instances'
// log lines that contain <text> to stderr.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { connect, type Sql } from '../src/db/connect.ts';
import { freePortBelowEphemeralRange, startEmbeddedPostgres } from '../src/db/embedded.ts';
import { migrate } from '../src/db/migrate.ts';
import { SandboxAalCredentials, startSandboxAal, type SandboxAal } from '../src/sandbox/aal.ts';
import { SandboxDefaults, startSandboxVaNotify, type SandboxVaNotify } from '../src/sandbox/va-notify.ts';
import { withDrafts } from '../test/support/drafts.ts';
import { startCommand } from '../scripts/start-command.ts';

const repositoryRoot = fileURLToPath(new URL('..', import.meta.url));
const internalToken = 'chaos-internal-token-0001';
const callbackToken = 'chaos-callback-token-0001';
const sendMaxAttempts = 3;
const icnPattern = /\d{10}V\d{6}/;

export interface ChaosOptions {
  /** Veterans in all; each gets one to three dispenses, split over three waves. */
  veterans: number;
  /** A database (empty or migrated) that the run may fill; the instances migrate it on start. */
  databaseUrl: string;
  /** Gives up waiting for the service to settle after this long. */
  deadlineMs?: number;
  /** Progress lines; silent unless given. */
  progress?: (message: string) => void;
}

export interface ChaosReport {
  veterans: number;
  dispenses: number;
  emails: Record<string, number>;
  notifications: number;
  seconds: number;
  /** Sandbox VA Notify: accepted sends, GETs by id and by reference, callbacks lost and posted. */
  vaNotify: {
    sendsAccepted: number;
    sendsRejected: number;
    getsById: number;
    getsByReference: number;
    callbacksDropped: number;
    callbacksPosted: number;
  };
  aal: { eventsAccepted: number; postsRejected: number };
  /** How orphaned sends were settled: by the sweep (adopted, released) or by a sender (recovered). */
  orphans: { sweepAdopted: number; sweepReleased: number; senderRecovered: number };
  /** Summed over the instances alive at the end (the killed instance's first life is not counted). */
  counters: { sends: Record<string, number>; polls: Record<string, number>; callbacks: number };
  /** Broken promises; empty when the run passed. */
  violations: string[];
}

/**
 * The ICN of veteran n: ten digits, V, six digits. The last six pick the sandbox outcome: one in ten
 * declines email (000001), one in ten meets a temporary failure every time (000002), the rest are
 * delivered. None ends 000003, which the sandbox never completes.
 */
function veteranIcn(n: number): string {
  const suffix = n % 10 === 1 ? '000001' : n % 10 === 2 ? '000002' : String(100_000 + (n % 900_000));
  return `20${String(n).padStart(8, '0')}V${suffix}`;
}

interface Instance {
  name: string;
  port: number;
  url: string;
  child?: ChildProcess;
  exited?: Promise<void>;
}

function instanceEnv(databaseUrl: string, port: number, vaNotify: SandboxVaNotify, aal: SandboxAal): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    NODE_ENV: 'test',
    LOG_LEVEL: 'info',
    HOST: '127.0.0.1',
    PORT: String(port),
    DATABASE_URL: databaseUrl,
    DATABASE_POOL_MAX: '5',
    INTERNAL_API_TOKENS: internalToken,
    VA_NOTIFY_BASE_URL: vaNotify.url,
    VA_NOTIFY_SERVICE_ID: SandboxDefaults.serviceId,
    VA_NOTIFY_API_KEY: SandboxDefaults.secret,
    VA_NOTIFY_TEMPLATE_ID: SandboxDefaults.templateId,
    VA_NOTIFY_CALLBACK_TOKENS: callbackToken,
    VA_NOTIFY_TIMEOUT_MS: '2000',
    VA_NOTIFY_RATE_LIMIT_PER_MINUTE: '60000',
    AAL_BASE_URL: aal.url,
    AAL_APP_TOKEN: SandboxAalCredentials.appToken,
    AAL_API_KEY: SandboxAalCredentials.apiKey,
    AAL_TIMEOUT_MS: '1000',
    AAL_BATCH_SIZE: '10',
    JOBS_ENABLED: 'true',
    GROUPING_QUIET_MINUTES: '0',
    GROUPING_INTERVAL_SECONDS: '1',
    SEND_INTERVAL_SECONDS: '1',
    SEND_BATCH_SIZE: '20',
    SEND_LEASE_SECONDS: '10',
    SEND_RETRY_BASE_SECONDS: '1',
    SEND_MAX_ATTEMPTS: String(sendMaxAttempts),
    AAL_INTERVAL_SECONDS: '1',
    SWEEP_INTERVAL_SECONDS: '2',
    STATUS_POLL_AFTER_MINUTES: '0',
    REPLAY_DELAY_MINUTES: '0',
    SHUTDOWN_GRACE_SECONDS: '3',
  };
}

export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const progress = options.progress ?? (() => {});
  const deadline = Date.now() + (options.deadlineMs ?? 180_000);
  const started = performance.now();
  const violations: string[] = [];
  const sql = connect(options.databaseUrl, { max: 3, applicationName: 'chaos-check' });
  await migrate(sql);

  const vaNotify = await startSandboxVaNotify({
    callbackToken,
    callbackDelayMs: 50,
    rateLimitPerMinute: 1_000_000,
    faults: { dropCallbackRate: 0.3, duplicateCallbackRate: 0.2, reorderCallbacks: true, sendFailureRate: 0.1 },
  });
  const aal = await startSandboxAal();
  aal.state.failRate = 0.05;

  const instances: Instance[] = [];
  for (let i = 0; i < 3; i++) {
    const port = await freePortBelowEphemeralRange();
    instances.push({ name: `instance-${i}`, port, url: `http://127.0.0.1:${port}` });
  }
  // VA Notify posts callbacks to one instance; it is pointed at the instance about to be killed, so
  // that callbacks posted while it is down are lost after the sandbox's retries.
  const callbacksTo = (instance: Instance) => vaNotify.setCallbackUrl(`${instance.url}/v1/va-notify/callbacks`);
  callbacksTo(instances[0]!);

  const loggedIcns = new Set<string>();
  // How the orphans of the killed instance were settled, read from the instances' logs.
  const watched: Record<keyof ChaosReport['orphans'], string> = {
    sweepAdopted: 'orphaned send: VA Notify already had it',
    sweepReleased: 'orphaned send: VA Notify does not have it; queued',
    senderRecovered: 'VA Notify already had this email',
  };
  const orphans: ChaosReport['orphans'] = { sweepAdopted: 0, sweepReleased: 0, senderRecovered: 0 };
  async function start(instance: Instance): Promise<void> {
    const { nodeFlags, entry } = startCommand();
    const child = spawn(process.execPath, ['--no-warnings', ...nodeFlags, entry], {
      cwd: repositoryRoot,
      env: instanceEnv(options.databaseUrl, instance.port, vaNotify, aal),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    instance.child = child;
    instance.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream }).on('line', (line) => {
        if (process.env.CHAOS_DEBUG && line.includes(process.env.CHAOS_DEBUG)) process.stderr.write(`${instance.name}: ${line}\n`);
        for (const name of Object.keys(watched) as (keyof typeof watched)[]) if (line.includes(watched[name])) orphans[name] += 1;
        const icn = icnPattern.exec(line);
        if (icn) loggedIcns.add(`${instance.name}: ${line.slice(0, 300)}`);
      });
    }
    for (;;) {
      if (child.exitCode !== null) throw new Error(`${instance.name} exited with ${child.exitCode} while starting`);
      if (Date.now() > deadline) throw new Error(`${instance.name} did not become ready`);
      const ready = await fetch(`${instance.url}/health/ready`).then(
        (r) => r.ok,
        () => false,
      );
      if (ready) return;
      await sleep(100);
    }
  }
  async function stop(instance: Instance, signal: NodeJS.Signals): Promise<void> {
    const child = instance.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    await instance.exited;
  }

  const planned: { icn: string; correlationId: string; rx: string[]; wave: number }[] = [];
  for (let n = 1; n <= options.veterans; n++) {
    const dispenses = 1 + (n % 3);
    planned.push({
      icn: veteranIcn(n),
      correlationId: String(30_000_000 + n),
      rx: Array.from({ length: dispenses }, (_, k) => `${String(n).padStart(6, '0')}${k}`),
      wave: n % 3,
    });
  }
  async function insertWave(wave: number): Promise<number> {
    const rows = planned
      .filter((v) => v.wave === wave)
      .flatMap((v) =>
        v.rx.map((rx, k) => ({
          station_number: '521',
          rx_number: rx,
          fill_number: 0,
          tracking_number: `1ZCHAOS${rx}${k % 2}`,
          carrier: 'UPS',
          drug_name: 'SIMVASTATIN 40MG TAB',
          patient_icn: v.icn,
          mhv_correlation_id: v.correlationId,
          shipped_at: new Date(),
          state: 'pending',
        })),
      );
    // Drafts and their dispenses in one transaction, as ingest writes them: grouping passes over a
    // draft locked here (SKIP LOCKED) instead of taking it before its dispenses exist.
    for (let i = 0; i < rows.length; i += 500) {
      await sql.begin(async (tx) => tx`insert into medication_dispense ${tx(await withDrafts(tx, rows.slice(i, i + 500)))}`);
    }
    return rows.length;
  }

  let dispenses = 0;
  try {
    await Promise.all(instances.map(start));
    progress(`three instances ready on ports ${instances.map((i) => i.port).join(', ')}`);

    dispenses += await insertWave(0);
    // Kill an instance in the middle of a send batch: it holds claims (a sender names its leases
    // after its pid) and VA Notify already accepted some of them, so there are sends whose outcome
    // it never records and claims it never used. Failing that, whichever instance holds claims after
    // a while, or instance 0 once a third of the wave is sent.
    const firstWave = planned.filter((v) => v.wave === 0).length;
    let victim = instances[0]!;
    const watchFrom = Date.now();
    const killBy = Math.min(deadline, watchFrom + 20_000);
    while (Date.now() < killBy) {
      const claims = await sql<{ id: string; leased_by: string }[]>`
        select id, leased_by from tracking_email where state = 'sending' and lease_until > now()`;
      const holder = instances.find((i) => claims.some((c) => c.leased_by.startsWith(`${i.child?.pid}-`)));
      if (holder) {
        const held = new Set(claims.filter((c) => c.leased_by.startsWith(`${holder.child?.pid}-`)).map((c) => c.id));
        const midBatch = [...vaNotify.state.notifications.values()].some((n) => n.reference !== null && held.has(n.reference));
        if (midBatch || Date.now() - watchFrom > 2_000) {
          victim = holder;
          break;
        }
      }
      const [row] = await sql<{ sent: number }[]>`select count(*)::int as sent from notification`;
      if (row!.sent >= Math.max(1, Math.floor(firstWave / 3)) && Date.now() - watchFrom > 2_000) break;
      await sleep(1);
    }
    callbacksTo(victim);
    await stop(victim, 'SIGKILL');
    progress(`${victim.name} killed with SIGKILL`);
    dispenses += await insertWave(1);
    await sleep(1500);
    await start(victim);
    progress(`${victim.name} started again`);
    dispenses += await insertWave(2);

    // Settled: nothing pending, every email final, every AAL event posted or given up, sandbox quiet.
    let settled = false;
    while (!settled && Date.now() < deadline) {
      await sleep(250);
      const [row] = await sql<{ busy: number }[]>`
        select (select count(*) from medication_dispense where state = 'pending')
             + (select count(*) from tracking_email where state not in ('delivered', 'permanent_failure', 'failed', 'expired'))
             + (select count(*) from notification where status in ('created', 'sending', 'pending', 'sent'))
             + (select count(*) from aal_event where state in ('pending', 'posting')) as busy`;
      settled = row!.busy === 0;
    }
    if (!settled) violations.push('the service did not settle before the deadline');
    await vaNotify.whenIdle();
    progress(settled ? 'settled' : 'deadline passed');

    const counters = { sends: {} as Record<string, number>, polls: {} as Record<string, number>, callbacks: 0 };
    for (const instance of instances) {
      const text = await fetch(`${instance.url}/metrics`).then(
        (r) => r.text(),
        () => '',
      );
      for (const line of text.split('\n')) {
        const sample = /^rx_(sends|status_polls|callbacks)_total\{([^}]*)\} (\d+(?:\.\d+)?)$/.exec(line);
        if (!sample) continue;
        const value = Number(sample[3]);
        if (sample[1] === 'callbacks') counters.callbacks += value;
        else {
          const outcome = /outcome="([^"]+)"/.exec(sample[2]!)?.[1] ?? 'unknown';
          const target = sample[1] === 'sends' ? counters.sends : counters.polls;
          target[outcome] = (target[outcome] ?? 0) + value;
        }
      }
    }
    await Promise.all(instances.map((i) => stop(i, 'SIGTERM')));

    violations.push(...(await checkPromises(sql, vaNotify, aal, planned, dispenses)));
    for (const line of [...loggedIcns].slice(0, 5)) violations.push(`an ICN was logged: ${line}`);

    const emails = Object.fromEntries(
      (await sql<{ state: string; n: number }[]>`select state, count(*)::int as n from tracking_email group by state order by state`).map(
        (r) => [r.state, r.n],
      ),
    );
    const [notifications] = await sql<{ n: number }[]>`select count(*)::int as n from notification`;
    const c = vaNotify.state.counters;
    return {
      veterans: options.veterans,
      dispenses,
      emails,
      notifications: notifications!.n,
      seconds: Math.round((performance.now() - started) / 100) / 10,
      vaNotify: {
        sendsAccepted: c.sendsAccepted,
        sendsRejected: Object.values(c.sendsRejected).reduce((a, b) => a + b, 0),
        getsById: c.getsById,
        getsByReference: c.getsByReference,
        callbacksDropped: c.callbacksDropped,
        callbacksPosted: c.callbacksPosted,
      },
      aal: { eventsAccepted: aal.state.events.length, postsRejected: aal.state.postsRejected },
      orphans,
      counters,
      violations,
    };
  } finally {
    await Promise.all(instances.map((i) => stop(i, 'SIGKILL')));
    await vaNotify.close();
    await aal.close();
    await sql.end({ timeout: 5 });
  }
}

async function checkPromises(
  sql: Sql,
  vaNotify: SandboxVaNotify,
  aal: SandboxAal,
  planned: { icn: string; correlationId: string; rx: string[] }[],
  dispenses: number,
): Promise<string[]> {
  const problems: string[] = [];
  const emails = await sql<
    {
      id: string;
      patient_icn: string;
      mhv_correlation_id: string;
      state: string;
      attempts: number;
      notifications: number;
      prescription_count: number;
    }[]
  >`
    select e.id, e.patient_icn, e.mhv_correlation_id, e.state, e.attempts, e.prescription_count,
           (select count(*)::int from notification n where n.tracking_email_id = e.id) as notifications
      from tracking_email e`;

  // Sent exactly once per attempt.
  const sendsByReference = new Map<string, number>();
  for (const n of vaNotify.state.notifications.values()) {
    sendsByReference.set(String(n.reference), (sendsByReference.get(String(n.reference)) ?? 0) + 1);
  }
  const known = new Set(emails.map((e) => e.id));
  for (const reference of sendsByReference.keys()) {
    if (!known.has(reference)) problems.push(`VA Notify has a notification for an unknown reference ${reference}`);
  }
  for (const email of emails) {
    const sends = sendsByReference.get(email.id) ?? 0;
    if (sends !== email.notifications)
      problems.push(`email ${email.id}: VA Notify received ${sends} sends, we recorded ${email.notifications} notifications`);
    if (sends > sendMaxAttempts) problems.push(`email ${email.id}: sent ${sends} times, more than ${sendMaxAttempts}`);
    if (!['delivered', 'permanent_failure', 'failed', 'expired'].includes(email.state))
      problems.push(`email ${email.id} ended in ${email.state}`);
  }
  const [open] = await sql<{ n: number }[]>`select count(*)::int as n from notification where notification_is_open(status)`;
  if (open!.n > 0) problems.push(`${open!.n} notifications without a final status`);
  // The open notifications' list (sql/031), kept by triggers through every kill and retry, names
  // exactly those, as they are.
  const [misListed] = await sql<{ n: number }[]>`
    select count(*)::int as n
      from (select id, status, created_at, last_event_at from notification where notification_is_open(status)) n
      full join notification_open o on o.notification_id = n.id
     where (n.id, n.status, n.created_at, n.last_event_at) is distinct from (o.notification_id, o.status, o.created_at, o.last_event_at)`;
  if (misListed!.n > 0) problems.push(`${misListed!.n} notifications listed as open that are not, or open and not listed as they are`);

  // One AAL event per delivered email (one email per veteran here: the waves never share a veteran).
  const aalByCorrelation = new Map<string, number>();
  for (const event of aal.state.events) {
    aalByCorrelation.set(event.sessionCorrelationId, (aalByCorrelation.get(event.sessionCorrelationId) ?? 0) + 1);
  }
  const emailsByVeteran = new Map<string, number>();
  for (const email of emails) emailsByVeteran.set(email.patient_icn, (emailsByVeteran.get(email.patient_icn) ?? 0) + 1);
  for (const count of emailsByVeteran.values()) {
    if (count !== 1) problems.push(`a veteran got ${count} tracking emails instead of one`);
  }
  for (const email of emails) {
    const events = aalByCorrelation.get(email.mhv_correlation_id) ?? 0;
    const expected = email.state === 'delivered' ? 1 : 0;
    if (events !== expected) problems.push(`email ${email.id} (${email.state}) has ${events} AAL events, expected ${expected}`);
  }

  // No dispense lost or doubled.
  const [d] = await sql<{ total: number; grouped: number; wrong_veteran: number }[]>`
    select count(*)::int as total,
           count(*) filter (where d.state = 'grouped' and d.tracking_email_id is not null)::int as grouped,
           count(*) filter (where e.patient_icn is distinct from d.patient_icn and d.tracking_email_id is not null)::int as wrong_veteran
      from medication_dispense d left join tracking_email e on e.id = d.tracking_email_id`;
  if (d!.total !== dispenses) problems.push(`${d!.total} dispenses stored, ${dispenses} inserted`);
  if (d!.grouped !== dispenses) problems.push(`${dispenses - d!.grouped} dispenses not in any email`);
  if (d!.wrong_veteran > 0) problems.push(`${d!.wrong_veteran} dispenses in another veteran's email`);
  const listed = emails.reduce((sum, e) => sum + e.prescription_count, 0);
  if (listed !== dispenses) problems.push(`the emails list ${listed} prescriptions for ${dispenses} dispenses`);
  const veterans = new Set(planned.map((v) => v.icn));
  if (emailsByVeteran.size !== veterans.size) problems.push(`${emailsByVeteran.size} veterans got an email, ${veterans.size} expected`);
  return problems;
}

/** A fresh database on the server named by DATABASE_URL, or on an embedded PostgreSQL. */
async function scratchDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  let serverUrl = process.env.DATABASE_URL;
  let stopEmbedded: (() => Promise<void>) | undefined;
  if (!serverUrl) {
    const dir = mkdtempSync(join(tmpdir(), 'rx-chaos-pg-'));
    const embedded = await startEmbeddedPostgres({ dir, persistent: false });
    serverUrl = embedded.url;
    stopEmbedded = async () => {
      await embedded.stop();
      rmSync(dir, { recursive: true, force: true });
    };
  }
  const admin = connect(serverUrl, { max: 1 });
  const name = `rx_chaos_${randomBytes(6).toString('hex')}`;
  await admin.unsafe(`create database ${name}`);
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      await admin.unsafe(`drop database if exists ${name} with (force)`).catch(() => {});
      await admin.end({ timeout: 5 });
      await stopEmbedded?.();
    },
  };
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const veterans = Number(process.argv[2] ?? 300);
  if (!Number.isInteger(veterans) || veterans < 1) {
    process.stderr.write('usage: node bench/chaos.ts [veterans]\n');
    process.exit(64);
  }
  const database = await scratchDatabase();
  try {
    const report = await runChaos({
      veterans,
      databaseUrl: database.url,
      deadlineMs: 600_000,
      progress: (message) => process.stderr.write(`chaos: ${message}\n`),
    });
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    process.exitCode = report.violations.length === 0 ? 0 : 1;
  } finally {
    await database.drop();
  }
}
