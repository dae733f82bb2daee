// History: a normal day through every stage on a database holding N days of national volume, with
// retention removing the oldest histories at the same time, beside the same day on an empty database
// in the same run. The history is written by set-based SQL (generate_series), not through the
// service: what is measured is the day, not the history's making.
//
// Sizes: BENCH_HISTORY_DAYS days (60) of BENCH_HISTORY_PER_DAY dispenses (300,000) each, and a day of
// BENCH_HISTORY_DAY dispenses (100,000) through the stages; --small runs tiny ones. The history is
// written first, so that the two days run back to back under the same conditions.
// BENCH_HISTORY_DATABASE=<name> keeps the history in that database on the DATABASE_URL server and
// reuses it if it holds history of the same size not yet touched by a day's retention;
// BENCH_HISTORY_WRITE_ONLY=1 stops after writing it, so that the measuring run can be started later. Every stage of
// the day is run on its own, in order, so that each has its own time: ingest (HL7 bodies of 1,000),
// grouping, send (VA Notify latency 50 ms), callbacks (delivered, paced at 1,000/s; one in 5 never
// comes), the sweep (polling the notifications whose callback was lost), AAL.
// On the history database, RECORD_RETENTION_DAYS is half the history, so the older half is due for
// removal when the day starts, and a driver runs retention back to back for the whole day.
import { setTimeout as sleep } from 'node:timers/promises';
import type { StageOptions } from '../run.ts';
import type { Sql } from '../../src/db/connect.ts';
import type { RetentionResult } from '../../src/retention/retention-job.ts';
import { cpuAvailable, cpuPer, cpuSnapshot, cpuText, type CpuSnapshot } from '../lib/cpu.ts';
import { benchDatabase, settle, type BenchDatabase } from '../lib/database.ts';
import { bodiesOf, hl7Message } from '../lib/feeds.ts';
import { startLoadGenerator, untilDone, type PacedLoadResult } from '../lib/load.ts';
import {
  callbackHeaders,
  internalHeaders,
  postHl7Bodies,
  serviceSettings,
  startSandboxes,
  startService,
  type Sandboxes,
  type Service,
} from '../lib/processes.ts';
import {
  count,
  machineNote,
  megabytes,
  millis,
  percent,
  progress,
  rate,
  seconds,
  verdict,
  type ResultRow,
  type ResultTable,
  peakRssRow,
} from '../lib/report.ts';

const perVeteran = 4;
const perBody = 1_000;

function sizes(options: StageOptions) {
  if (options.small) return { days: 10, perDay: 1_000, day: 400, callbackRate: 200 };
  const number = (name: string, fallback: number) => {
    const value = Number(process.env[name] ?? fallback);
    if (!Number.isInteger(value) || value <= 0) throw new Error(`${name}: a positive integer, got ${process.env[name]}`);
    return value;
  };
  return {
    days: number('BENCH_HISTORY_DAYS', 60),
    perDay: number('BENCH_HISTORY_PER_DAY', 300_000),
    day: number('BENCH_HISTORY_DAY', 100_000),
    callbackRate: 1_000,
  };
}

/**
 * Writes `days` days of history ending yesterday, each of `perDay` dispenses as the pipeline leaves
 * them once everything is final: a stored HL7 body per 1,000 dispenses (incompressible text of a
 * real body's stored size), four dispenses per veteran in one delivered email, its notification
 * with one status event, its posted AAL event. One transaction per day; triggers off while writing
 * (the rows are consistent by construction), as a restore would.
 */
export async function writeHistory(sql: Sql, days: number, perDay: number): Promise<number> {
  const started = performance.now();
  const emailsPerDay = Math.ceil(perDay / perVeteran);
  const bodiesPerDay = Math.ceil(perDay / perBody);
  for (let d = days; d >= 1; d--) {
    await sql.begin(async (tx) => {
      await tx`set local session_replication_role = replica`;
      await tx`
        insert into inbound_message (id, received_at, source, content_type, body, outcome, message_count, processed_at)
        overriding system value
        select ${d} * 1000000 + b, now() - make_interval(days => ${d}) + make_interval(secs => b * 86000.0 / ${bodiesPerDay}),
               'http', 'application/hl7-v2',
               (select string_agg(md5(b::text || ':' || k::text || ${d}::text), '') from generate_series(1, 1100) k),
               'accepted', ${perBody}, now() - make_interval(days => ${d}) + make_interval(secs => b * 86000.0 / ${bodiesPerDay})
          from generate_series(0, ${bodiesPerDay - 1}) b`;
      await tx`
        insert into tracking_email (id, patient_icn, mhv_correlation_id, personalisation, package_count, prescription_count, state,
                                    attempts, created_at, updated_at)
        select md5('e:' || ${d} || ':' || e)::uuid, '10' || lpad((e % 9000000)::text, 8, '0') || 'V' || lpad((e % 1000000)::text, 6, '0'),
               (10000000 + e)::text,
               jsonb_build_object('tracking_info', '**UPS** tracking number: [1Z999](https://www.ups.com/track?tracknum=1Z999)\n- Prescription ending in 1234\n- Prescription ending in 1235',
                                  'package_count', 2, 'prescription_count', 4),
               2, 4, 'delivered', 1,
               now() - make_interval(days => ${d}) + make_interval(secs => e * 86000.0 / ${emailsPerDay}),
               now() - make_interval(days => ${d}) + make_interval(secs => e * 86000.0 / ${emailsPerDay} + 120)
          from generate_series(0, ${emailsPerDay - 1}) e`;
      await tx`
        insert into medication_dispense (station_number, rx_number, fill_number, tracking_number, carrier, drug_name, ndc, quantity,
                                         dispensed_at, shipped_at, patient_icn, mhv_correlation_id, message_control_id, state,
                                         inbound_message_id, tracking_email_id, created_at, updated_at)
        select '521', 'H' || ${d} || '-' || i, 0, '1Z999H' || ${d} || '-' || (i / 2), 'UPS', 'SIMVASTATIN 40MG TAB', '00093718098', 90,
               now() - make_interval(days => ${d} + 1), now() - make_interval(days => ${d} + 1),
               '10' || lpad(((i / 4) % 9000000)::text, 8, '0') || 'V' || lpad(((i / 4) % 1000000)::text, 6, '0'), (10000000 + i / 4)::text,
               'CMOP-H' || ${d} || '-' || i, 'grouped',
               ${d} * 1000000 + i / ${perBody}, md5('e:' || ${d} || ':' || (i / 4))::uuid,
               now() - make_interval(days => ${d}) + make_interval(secs => i * 86000.0 / ${perDay}),
               now() - make_interval(days => ${d}) + make_interval(secs => i * 86000.0 / ${perDay} + 60)
          from generate_series(0, ${perDay - 1}) i`;
      await tx`
        insert into notification (id, tracking_email_id, attempt, status, status_completed_at, status_received_at, sent_at, completed_at,
                                  last_event_at, created_at, updated_at)
        select md5('n:' || e.id)::uuid, e.id, 1, 'delivered', e.updated_at, e.updated_at, e.created_at, e.updated_at,
               e.updated_at, e.created_at, e.updated_at
          from tracking_email e
         where e.created_at >= now() - make_interval(days => ${d}) and e.created_at < now() - make_interval(days => ${d} - 1)`;
      await tx`
        insert into notification_status_event (notification_id, status, reference, completed_at, sent_at, provider, source, received_at, applied_at)
        select n.id, 'delivered', n.tracking_email_id::text, n.completed_at, n.sent_at, 'ses', 'callback', n.completed_at, n.completed_at
          from notification n
         where n.created_at >= now() - make_interval(days => ${d}) and n.created_at < now() - make_interval(days => ${d} - 1)`;
      await tx`
        insert into aal_event (tracking_email_id, notification_id, mhv_correlation_id, completion_time, detail_value, state, attempts,
                               posted_at, created_at, updated_at)
        select n.tracking_email_id, n.id, '10000000', n.completed_at, 'Packages: UPS 1Z999 (Rx ending 1234, 1235)', 'posted', 1,
               n.completed_at + interval '1 minute', n.completed_at, n.completed_at + interval '1 minute'
          from notification n
         where n.created_at >= now() - make_interval(days => ${d}) and n.created_at < now() - make_interval(days => ${d} - 1)`;
    });
    if (d % 10 === 0 || d === days) progress(`history: day -${d} written (${seconds(performance.now() - started)} so far)`);
  }
  await sql`select setval(pg_get_serial_sequence('inbound_message', 'id'), (select max(id) from inbound_message))`;
  await sql`analyze`;
  await settle(sql);
  return performance.now() - started;
}

// A kept history database carries a note of the history it holds; the note is removed before a day
// runs on it, because that day's retention removes part of the history. The time it took to write
// when the kept history is of this size, else undefined.
async function keptHistoryMs(sql: Sql, days: number, perDay: number): Promise<number | undefined> {
  await sql`create table if not exists bench_history_written (days int not null, per_day int not null, written_ms float8 not null)`;
  const [row] = await sql<
    { days: number; per_day: number; written_ms: number }[]
  >`select days, per_day, written_ms from bench_history_written`;
  return row?.days === days && row.per_day === perDay ? row.written_ms : undefined;
}

async function noteHistory(sql: Sql, days: number, perDay: number, writtenMs: number): Promise<void> {
  await sql`delete from bench_history_written`;
  await sql`insert into bench_history_written (days, per_day, written_ms) values (${days}, ${perDay}, ${writtenMs})`;
}

async function emptyTables(sql: Sql): Promise<void> {
  await sql`
    truncate inbound_message, medication_dispense, medication_dispense_conflict, tracking_email, tracking_email_draft,
             notification, notification_status_event, aal_event, removed_dispense_key, cutover_dispense cascade`;
}

async function databaseBytes(sql: Sql): Promise<number> {
  const [row] = await sql<{ bytes: number }[]>`select pg_database_size(current_database())::float8 as bytes`;
  return row!.bytes;
}

async function tableBytes(sql: Sql): Promise<Record<string, number>> {
  const rows = await sql<{ name: string; bytes: number }[]>`
    select c.relname as name, pg_total_relation_size(c.oid)::float8 as bytes
      from pg_class c join pg_namespace s on s.oid = c.relnamespace
     where s.nspname = 'public' and c.relkind = 'r'`;
  return Object.fromEntries(rows.map((r) => [r.name, r.bytes]));
}

const WalStages = ['ingest', 'grouping', 'send', 'callbacks', 'sweep', 'aal'] as const;

interface DayResult {
  /** WAL bytes written during each timed stage: the server's whole WAL, retention's own included beside the history. */
  walBytes: Record<(typeof WalStages)[number], number>;
  ingestMs: number;
  groupingMs: number;
  sendMs: number;
  /** `cpu`: per 1,000 timed callbacks; Postgres's includes retention's beside the history. */
  callbacks: PacedLoadResult & { ms: number; cpu: CpuSnapshot };
  aalMs: number;
  sweepMs: number;
  emails: number;
  scrapeMs: number;
  statsMs: number;
  peakRssBytes: number;
  errorLines: number;
}

/** Where the server's WAL ends, in bytes: a stage's WAL is the difference across it. */
async function walPosition(sql: Sql): Promise<number> {
  const [row] = await sql<{ bytes: number }[]>`select (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8 as bytes`;
  return row!.bytes;
}

async function timed(work: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await work();
  return performance.now() - started;
}

async function timedGet(url: string, headers: Record<string, string> = {}): Promise<number> {
  // The second of two reads: the first warms the connection and the plan.
  await fetch(url, { headers }).then((r) => r.text());
  const started = performance.now();
  const response = await fetch(url, { headers });
  await response.text();
  if (!response.ok) throw new Error(`GET ${url} answered ${response.status}`);
  return performance.now() - started;
}

const CallbackWarmUpSeconds = 3;
const LostCallbackEvery = 5;

/** One normal day through every stage, each on its own, on `db`. */
async function runDay(
  db: BenchDatabase,
  sandbox: Sandboxes,
  service: Service,
  day: number,
  callbackRate: number,
  rxBase: number,
): Promise<DayResult> {
  const { sql } = db;
  const bodies = Math.ceil(day / perBody);
  const body = Math.min(perBody, day);
  const hl7Bodies = bodiesOf(0, bodies, body, perVeteran, (ds) => ds.map(hl7Message).join(''), rxBase);
  const [{ dayStart } = { dayStart: new Date() }] = await sql<{ dayStart: Date }[]>`select now() as "dayStart"`;
  const walBytes = Object.fromEntries(WalStages.map((stage) => [stage, 0])) as DayResult['walBytes'];
  /** Runs a timed stage's work and records the WAL written meanwhile. */
  const measured = async <T>(stage: (typeof WalStages)[number], work: () => Promise<T>): Promise<T> => {
    const from = await walPosition(sql);
    const result = await work();
    walBytes[stage] = (await walPosition(sql)) - from;
    return result;
  };

  // Each stage starts from a checkpoint, as the stages' own benchmarks do (settle says why), so that
  // neither database pays within a stage for the WAL the stage before it left.
  await settle(sql);
  progress(`day: ingesting ${count(day)} dispenses`);
  const ingestMs = await measured('ingest', () => timed(() => postHl7Bodies(service.url, hl7Bodies)));

  await settle(sql);
  progress('day: grouping');
  const groupingMs = await measured('grouping', () =>
    untilDone(async () => (await service.trigger<{ emailsCreated: number }>('grouping')).emailsCreated > 0),
  );
  const [{ emails } = { emails: 0 }] = await sql<
    { emails: number }[]
  >`select count(*)::int as emails from tracking_email where state = 'queued'`;

  await settle(sql);
  progress(`day: sending ${count(emails)} emails at 50 ms VA Notify latency`);
  await sandbox.setLatency(50);
  const sendMs = await measured('send', () => untilDone(async () => (await service.trigger<{ sent: number }>('send')).sent > 0));
  await sandbox.setLatency(0);

  // Delivered callbacks for the day's notifications, as VA Notify would post them, paced.
  const notifications = await sql<{ id: string; tracking_email_id: string }[]>`
    select id, tracking_email_id from notification where status <> 'delivered'`;
  const at = new Date();
  // Every LostCallbackEvery-th callback never comes, as VA Notify's sometimes do not: the sweep
  // finds those notifications by polling.
  const delivered = notifications.filter((_, i) => i % LostCallbackEvery !== 0);
  const callbackBodies = delivered.map((n, i) => {
    const stamp = (offsetMs: number) =>
      `${new Date(at.getTime() + offsetMs).toISOString().slice(0, 23)}${String(i % 1000).padStart(3, '0')}Z`;
    return JSON.stringify({
      id: n.id,
      reference: n.tracking_email_id,
      to: 'veteran.sandbox@example.com',
      status: 'delivered',
      created_at: stamp(-2000),
      completed_at: stamp(0),
      sent_at: stamp(-1000),
      notification_type: 'email',
      status_reason: null,
      provider: 'ses',
    });
  });
  // The first seconds of callbacks warm the route up untimed, as in the callbacks stage: the
  // service has not answered one since it started, and its first ones pay for compiling the code.
  const warmUp = callbackBodies.splice(0, Math.min(callbackRate * CallbackWarmUpSeconds, Math.floor(callbackBodies.length / 4)));
  const generator = await startLoadGenerator();
  const callbackLoad = (bodies: string[]) =>
    generator.pacedLoad({
      url: `${service.url}/v1/va-notify/callbacks`,
      bodies,
      headers: callbackHeaders,
      connections: 64,
      ratePerSecond: callbackRate,
      durationSeconds: bodies.length / callbackRate,
    });
  let load: PacedLoadResult;
  let cpu: CpuSnapshot;
  try {
    progress(`day: ${count(warmUp.length)} delivered callbacks at ${callbackRate}/s to warm up`);
    const warmed = await callbackLoad(warmUp);
    if (warmed.failures > 0) throw new Error(`${warmed.failures} warm-up callbacks were not 2xx`);
    await settle(sql);
    progress(`day: ${count(callbackBodies.length)} delivered callbacks at ${callbackRate}/s`);
    const from = cpuSnapshot(service.pid);
    load = await measured('callbacks', () => callbackLoad(callbackBodies));
    cpu = cpuPer(from, cpuSnapshot(service.pid), load.answered / 1000);
  } finally {
    await generator.stop();
  }
  const callbacks = { ...load, ms: load.seconds * 1000, cpu };

  await settle(sql);
  progress(`day: sweep, polling the notifications whose callback was lost`);
  // A callback that failed leaves its notification open too (the table counts the failures).
  const lost = notifications.length - delivered.length + callbacks.failures;
  let applied = 0;
  const sweepMs = await measured('sweep', () =>
    untilDone(async () => {
      const swept = await service.trigger<{ statusesApplied: number }>('sweep').catch((error: unknown) => {
        throw new Error('sweep failed', { cause: error });
      });
      applied += swept.statusesApplied;
      return swept.statusesApplied > 0;
    }),
  );
  if (applied !== lost) throw new Error(`sweep: ${applied} statuses applied of ${lost} lost callbacks`);
  progress(`day: sweep took ${seconds(sweepMs)}`);

  await settle(sql);
  progress('day: posting AAL events');
  const aalMs = await measured('aal', () => untilDone(async () => (await service.trigger<{ posted: number }>('aal')).posted > 0));

  progress('day: GET /metrics and /v1/stats');
  const scrapeMs = await timedGet(`${service.url}/metrics`);
  const statsMs = await timedGet(`${service.url}/v1/stats`, internalHeaders);
  progress(`day: /metrics ${millis(scrapeMs)}, /v1/stats ${millis(statsMs)}`);
  const [check] = await sql<{ delivered: number; posted: number }[]>`
    select (select count(*)::int from tracking_email where state = 'delivered' and created_at >= ${dayStart}) as delivered,
           (select count(*)::int from aal_event where state = 'posted' and created_at >= ${dayStart}) as posted`;
  if (check!.delivered !== emails || check!.posted !== emails)
    throw new Error(`day: ${emails} emails, ${check!.delivered} delivered, ${check!.posted} AAL events posted`);
  return { walBytes, ingestMs, groupingMs, sendMs, callbacks, aalMs, sweepMs, emails, scrapeMs, statsMs, peakRssBytes: 0, errorLines: 0 };
}

interface RetentionTotals {
  runs: number;
  /** The time of the runs that removed something, less what they waited for the pipeline (yieldedMs). */
  busyMs: number;
  /** What every run waited for the pipeline: its first look at the rate, then while the pipeline wrote fast. */
  yieldedMs: number;
  trackingEmails: number;
  dispenses: number;
  inboundBodies: number;
  lockTimeouts: number;
  batches: number;
}

/** Runs retention back to back (a run that found nothing rests 200 ms) until `stop`. */
async function retentionLoop(service: Service, stop: () => boolean): Promise<RetentionTotals> {
  const totals: RetentionTotals = {
    runs: 0,
    busyMs: 0,
    yieldedMs: 0,
    trackingEmails: 0,
    dispenses: 0,
    inboundBodies: 0,
    lockTimeouts: 0,
    batches: 0,
  };
  while (!stop()) {
    const started = performance.now();
    const r = await service.trigger<RetentionResult>('retention').catch((error: unknown) => {
      throw new Error(`retention run ${totals.runs + 1} failed`, { cause: error });
    });
    const ms = performance.now() - started;
    totals.runs += 1;
    if (r.status !== 'done') continue;
    const worked = r.trackingEmails + r.dispenses + r.inboundBodies > 0;
    totals.yieldedMs += r.yieldedMs;
    if (worked) totals.busyMs += ms - r.yieldedMs;
    totals.trackingEmails += r.trackingEmails;
    totals.dispenses += r.dispenses;
    totals.inboundBodies += r.inboundBodies;
    totals.lockTimeouts += r.lockTimeouts;
    if (worked) totals.batches += r.batches;
    if (!worked) await sleep(200);
  }
  return totals;
}

export async function run(options: StageOptions): Promise<ResultTable> {
  const { days, perDay, day, callbackRate } = sizes(options);
  const recordDays = Math.max(7, Math.floor(days / 2));
  const restBudgetMs = options.small ? 2_000 : 180_000;
  const bodyDays = Math.min(30, recordDays);
  const keep = process.env.BENCH_HISTORY_DATABASE || undefined;
  const dbs: BenchDatabase[] = [];

  // The database with history, written first (or found kept).
  const full = await benchDatabase({ keep });
  dbs.push(full);
  let historyMs: number;
  try {
    const keptMs = keep ? await keptHistoryMs(full.sql, days, perDay) : undefined;
    if (keptMs !== undefined) {
      historyMs = keptMs;
      progress(`history: reusing ${days} days of ${count(perDay)} dispenses kept in ${keep}`);
    } else {
      await emptyTables(full.sql);
      progress(`history: writing ${days} days of ${count(perDay)} dispenses`);
      historyMs = await writeHistory(full.sql, days, perDay);
      if (keep) await noteHistory(full.sql, days, perDay, historyMs);
    }
  } catch (error) {
    await full.close();
    throw error;
  }
  const historyBytes = await databaseBytes(full.sql);
  const tables = await tableBytes(full.sql);
  const [bodyShare] = await full.sql<
    { bytes: number }[]
  >`select coalesce(sum(pg_column_size(body)), 0)::float8 as bytes from inbound_message`;
  progress(`history: ${seconds(historyMs)}, database ${megabytes(historyBytes)}`);
  if (process.env.BENCH_HISTORY_WRITE_ONLY === '1') {
    await full.close();
    return {
      title: `History written: ${days} days of ${count(perDay)} dispenses a day`,
      rows: [{ measure: 'history written by set-based SQL', result: seconds(historyMs), limit: `database ${megabytes(historyBytes)}` }],
      notes: [
        keep
          ? `kept in ${keep}: run again without BENCH_HISTORY_WRITE_ONLY to measure the day beside it`
          : 'not kept: set BENCH_HISTORY_DATABASE to keep it',
      ],
    };
  }

  const sandbox = await startSandboxes({ rateLimitPerMinute: 1_000_000_000, callbackUrl: null });
  let service: Service | undefined;
  try {
    // The empty database.
    const empty = await benchDatabase();
    dbs.push(empty);
    service = await startService(serviceSettings(empty.url, { GROUPING_QUIET_MINUTES: '0', STATUS_POLL_AFTER_MINUTES: '0' }), {
      vaNotify: sandbox.vaNotify,
      aal: sandbox.aal,
    });
    const emptyBefore = await databaseBytes(empty.sql);
    const onEmpty = await runDay(empty, sandbox, service, day, callbackRate, 50_000_000);
    const emptyDayBytes = (await databaseBytes(empty.sql)) - emptyBefore;
    ({ peakRssBytes: onEmpty.peakRssBytes, errorLines: onEmpty.errorLines } = await service.stop());
    service = undefined;
    await empty.close();
    dbs.pop();

    // The day beside the history; the kept history is spent from here on.
    if (keep) await full.sql`delete from bench_history_written`;
    service = await startService(
      serviceSettings(full.url, {
        GROUPING_QUIET_MINUTES: '0',
        STATUS_POLL_AFTER_MINUTES: '0',
        RECORD_RETENTION_DAYS: String(recordDays),
        INBOUND_BODY_RETENTION_DAYS: String(bodyDays),
      }),
      { vaNotify: sandbox.vaNotify, aal: sandbox.aal },
    );
    let dayOver = false;
    const s = service;
    const retention = retentionLoop(s, () => dayOver);
    // Its failure is reported when the day is over (awaited below), not as an unhandled rejection.
    retention.catch(() => {});
    let onHistory: DayResult;
    try {
      // A kept database may hold an earlier run's day: the day's Rx numbers differ per run, so that
      // its dispenses are new (a resend of the earlier day's would group into no email).
      const rxBase = keep ? 60_000_000 + (Math.floor(Date.now() / 60_000) % 39) * 1_000_000 : 60_000_000;
      onHistory = await runDay(full, sandbox, s, day, callbackRate, rxBase);
    } finally {
      dayOver = true;
    }
    const removed = await retention;
    // Retention alone for a while after the day (to the end if it gets there), for its rate unhindered.
    progress('history: retention alone');
    let rest = 0;
    let restLeft = false;
    const restStarted = performance.now();
    const restMs = await untilDone(async () => {
      const r = await s.trigger<{ trackingEmails: number; inboundBodies: number }>('retention');
      rest += r.trackingEmails;
      restLeft = r.trackingEmails + r.inboundBodies > 0;
      return restLeft && performance.now() - restStarted < restBudgetMs;
    });
    await full.sql`vacuum`;
    const afterBytes = await databaseBytes(full.sql);
    const [keyRow] = await full.sql<{ keys: number; bytes: number }[]>`
      select (select count(*)::int from removed_dispense_key) as keys, pg_total_relation_size('removed_dispense_key')::float8 as bytes`;
    ({ peakRssBytes: onHistory.peakRssBytes, errorLines: onHistory.errorLines } = await service.stop());
    service = undefined;

    const emailsPerSecondCreated = perDay / perVeteran / 86_400;
    const removedPerSecond = removed.busyMs > 0 ? removed.trackingEmails / (removed.busyMs / 1000) : 0;
    const restPerSecond = restMs > 0 ? rest / (restMs / 1000) : 0;
    const rows: ResultRow[] = [];
    const stageRow = (name: string, a: number, b: number) => {
      rows.push({
        measure: `${name}: day beside ${days} days of history, retention running`,
        result: seconds(b),
        limit: `empty database: ${seconds(a)}`,
        ratio: percent(b / a),
        target: verdict('≤ 120%', b <= a * 1.2),
      });
    };
    stageRow('ingest', onEmpty.ingestMs, onHistory.ingestMs);
    stageRow('grouping', onEmpty.groupingMs, onHistory.groupingMs);
    stageRow('send (50 ms latency)', onEmpty.sendMs, onHistory.sendMs);
    stageRow(`callbacks (${callbackRate}/s)`, onEmpty.callbacks.ms, onHistory.callbacks.ms);
    stageRow('AAL', onEmpty.aalMs, onHistory.aalMs);
    stageRow('sweep', onEmpty.sweepMs, onHistory.sweepMs);
    rows.push({
      measure: `callback p99 at ${callbackRate}/s while retention deletes`,
      result: millis(onHistory.callbacks.p99Ms),
      limit: `empty database: ${millis(onEmpty.callbacks.p99Ms)} (p50 ${millis(onEmpty.callbacks.p50Ms)} / ${millis(onHistory.callbacks.p50Ms)})`,
      target: verdict('< 25 ms', onHistory.callbacks.p99Ms < 25),
    });
    rows.push({
      measure: 'retention: histories removed per second of its runs, less their waits for the pipeline, during the day',
      result: `${rate(removedPerSecond, 'emails')} (${count(removed.trackingEmails)} emails, ${count(removed.dispenses)} dispenses, ${count(removed.inboundBodies)} bodies emptied in ${seconds(removed.busyMs)}; ${seconds(removed.yieldedMs)} waiting for the pipeline)`,
      limit: `created: ${rate(emailsPerSecondCreated, 'emails')} at ${count(perDay)} dispenses/day`,
      ratio: `${(removedPerSecond / emailsPerSecondCreated).toFixed(0)}×`,
      target: verdict('≥ 10×', removedPerSecond >= 10 * emailsPerSecondCreated),
    });
    rows.push({
      measure: `retention alone after the day, ${restLeft ? `for ${seconds(restBudgetMs)} (work left)` : 'to the end'}`,
      result: `${rate(restPerSecond, 'emails')} (${count(rest)} emails in ${seconds(restMs)})`,
      limit: `created: ${rate(emailsPerSecondCreated, 'emails')}`,
      ratio: `${(restPerSecond / emailsPerSecondCreated).toFixed(0)}×`,
    });
    rows.push({
      measure: '`GET /metrics` at size',
      result: millis(onHistory.scrapeMs),
      limit: `empty database: ${millis(onEmpty.scrapeMs)}`,
    });
    rows.push({
      measure: '`GET /v1/stats` at size',
      result: millis(onHistory.statsMs),
      limit: `empty database: ${millis(onEmpty.statsMs)}`,
    });
    const perDayBytes = historyBytes / days;
    rows.push({
      measure: 'disk per day of volume, no retention',
      result: megabytes(perDayBytes),
      limit: `the day through the service on the empty database: ${megabytes(emptyDayBytes)}`,
    });
    rows.push({
      measure: `database after retention removed ${count(removed.trackingEmails + rest)} emails and vacuum (${recordDays} days kept, bodies emptied after ${bodyDays})`,
      result: megabytes(afterBytes),
      limit: `before: ${megabytes(historyBytes)} for ${days} days`,
    });
    rows.push(peakRssRow(Math.max(onEmpty.peakRssBytes, onHistory.peakRssBytes)));
    const tableList = Object.entries(tables)
      .sort((a, b) => b[1] - a[1])
      .filter(([, b]) => b > 1024 * 1024)
      .map(([n, b]) => `${n} ${megabytes(b)}`)
      .join(', ');
    return {
      title: `History: a day of ${count(day)} dispenses beside ${days} days of ${count(perDay)} dispenses a day, retention running`,
      rows,
      notes: [
        `history written in ${seconds(historyMs)} by set-based SQL: ${count(days * perDay)} dispenses, ${count(days * Math.ceil(perDay / perVeteran))} delivered emails with notification, status event and posted AAL event, ${count(days * Math.ceil(perDay / perBody))} stored HL7 bodies (${megabytes(bodyShare!.bytes)} of body text as stored)`,
        `tables with history: ${tableList}`,
        `day: ${count(onEmpty.emails)} emails on the empty database, ${count(onHistory.emails)} beside the history; retention runs during the day: ${removed.runs}, ${count(removed.batches)} batches in the runs that removed something (${removed.batches > 0 ? millis(removed.busyMs / removed.batches) : '-'} a batch on average: the runs' time less their waits, over their batches), ${removed.lockTimeouts} batches gave up on a row lock; callback failures: ${onEmpty.callbacks.failures} / ${onHistory.callbacks.failures}`,
        `callbacks: one in ${LostCallbackEvery} is never posted, and the sweep polls VA Notify (the sandbox, answering at once) for those; of the rest, the day's first ${CallbackWarmUpSeconds} s (at most a quarter) warm the route up untimed, then a checkpoint, then the rest are timed; the load generator's own event-loop delay while they were timed (it counts in their latency): p99 ${millis(onEmpty.callbacks.generatorDelayP99Ms)} / ${millis(onHistory.callbacks.generatorDelayP99Ms)}, at most ${millis(onEmpty.callbacks.generatorDelayMaxMs)} / ${millis(onHistory.callbacks.generatorDelayMaxMs)} (empty / history)`,
        ...(cpuAvailable()
          ? [
              `CPU per 1,000 timed callbacks (Postgres's takes in retention's beside the history): empty database ${cpuText(onEmpty.callbacks.cpu, ['service', 'postgres'])}, beside the history ${cpuText(onHistory.callbacks.cpu, ['service', 'postgres'])}`,
            ]
          : []),
        `WAL written by each timed stage, empty / history (the server's, retention's own included beside the history; a page's first write after a checkpoint puts the whole page in it): ${WalStages.map((stage) => `${stage} ${megabytes(onEmpty.walBytes[stage])} / ${megabytes(onHistory.walBytes[stage])}`).join(', ')}`,
        `removed_dispense_key after retention: ${count(keyRow!.keys)} keys, ${megabytes(keyRow!.bytes)} (${keyRow!.keys > 0 ? Math.round(keyRow!.bytes / keyRow!.keys) : 0} bytes a key with its indexes)`,
        `RECORD_RETENTION_DAYS=${recordDays}, INBOUND_BODY_RETENTION_DAYS=${bodyDays}, RETENTION_BATCH_SIZE default; service error log lines: ${onEmpty.errorLines} / ${onHistory.errorLines}`,
        machineNote(full.description),
      ],
    };
  } finally {
    await service?.stop().catch(() => {});
    await sandbox.stop();
    for (const db of dbs) await db.close();
  }
}
