// End to end: 100,000 dispenses posted as HL7 batch bodies, then grouped, sent to the sandbox VA
// Notify (which calls back at once), delivered, and logged to the sandbox AAL. The driver plays the
// job timers with no pause between runs (grouping, send and AAL triggers in loops, side by side),
// so the figure is what the pipeline can do, not what timer intervals allow.
// Limit beside it: the sum of the stage limits, each measured in this run on the same data sizes:
// postgres.js inserting the dispense rows, INSERT ... SELECT of those rows, the sandbox alone taking
// the sends, and the callback transaction from a postgres.js loop.
import { setTimeout as sleep } from 'node:timers/promises';
import type { StageOptions } from '../run.ts';
import type { Sql } from '../../src/db/connect.ts';
import { benchDatabase } from '../lib/database.ts';
import { bodiesOf, hl7Message } from '../lib/feeds.ts';
import { deliveredCallback, insertSentNotifications } from '../lib/fixtures.ts';
import { postHl7Bodies, serviceSettings, startSandboxes, startService, type Service } from '../lib/processes.ts';
import { count, machineNote, percent, progress, rate, seconds, type ResultTable, peakRssRow } from '../lib/report.ts';
import { directInsert } from './ingest.ts';
import { sandboxAloneSends, sendConcurrency } from './send.ts';
import { sqlOnlyCallbacks } from './callbacks.ts';

const perVeteran = 4;
const perBody = 1_000;

interface Progress {
  pending: number;
  emails: number;
  delivered: number;
  aalPosted: number;
  unfinished: number;
}

async function pipelineState(sql: Sql): Promise<Progress> {
  const [row] = await sql<Progress[]>`
    select (select count(*)::int from medication_dispense where state = 'pending') as pending,
           (select count(*)::int from tracking_email) as emails,
           (select count(*)::int from tracking_email where state = 'delivered') as delivered,
           (select count(*)::int from aal_event where state = 'posted') as "aalPosted",
           (select count(*)::int from tracking_email where state not in ('queued', 'sending', 'sent', 'delivered')) as unfinished`;
  return row!;
}

/**
 * Triggers a job again and again (a timer with no interval, resting 100 ms after a run that found
 * nothing) until `stop` says so, or, with `untilIdle`, until a run finds nothing.
 */
async function jobLoop(
  service: Service,
  job: 'grouping' | 'send' | 'aal',
  didWork: (result: Record<string, number>) => boolean,
  stop: () => boolean,
  untilIdle = false,
): Promise<number> {
  let runs = 0;
  while (!stop()) {
    const result = await service.trigger<Record<string, number>>(job);
    runs += 1;
    if (didWork(result)) continue;
    if (untilIdle) break;
    await sleep(100);
  }
  return runs;
}

export async function run(options: StageOptions): Promise<ResultTable> {
  const dispenses = options.small ? 400 : 100_000;
  const bodies = Math.ceil(dispenses / perBody);
  const body = Math.min(perBody, dispenses);
  const veterans = dispenses / perVeteran;
  const db = await benchDatabase();
  const sandbox = await startSandboxes({ rateLimitPerMinute: 1_000_000_000, callbackDelayMs: 0 });
  let service: Service | undefined;
  try {
    const { sql } = db;
    service = await startService(serviceSettings(db.url, { GROUPING_QUIET_MINUTES: '0' }), {
      vaNotify: sandbox.vaNotify,
      aal: sandbox.aal,
    });
    await sandbox.setCallbackUrl(`${service.url}/v1/va-notify/callbacks`);
    const hl7Bodies = bodiesOf(0, bodies, body, perVeteran, (ds) => ds.map(hl7Message).join(''), 40_000_000);

    progress(`pipeline: posting ${count(dispenses)} dispenses in ${bodies} HL7 bodies`);
    const started = performance.now();
    await postHl7Bodies(service.url, hl7Bodies);
    const ingestedMs = performance.now() - started;
    progress(`pipeline: ingested in ${seconds(ingestedMs)}; grouping, sending and posting AAL events`);

    let state = await pipelineState(sql);
    let done = false;
    const watcher = (async () => {
      let last = '';
      while (!done) {
        await sleep(250);
        state = await pipelineState(sql);
        const line = `pending ${state.pending}, emails ${state.emails}, delivered ${state.delivered}, AAL posted ${state.aalPosted}`;
        if (line !== last && Math.random() < 0.1) progress(line);
        last = line;
        if (state.unfinished > 0) throw new Error(`${state.unfinished} emails ended other than delivered`);
        done = state.pending === 0 && state.emails > 0 && state.delivered === state.emails && state.aalPosted === state.emails;
      }
    })();
    const stop = () => done;
    const s = service;
    const [groupingRuns, sendRuns, aalRuns] = await Promise.all([
      // Every dispense is stored before the loops start: grouping is done once a run finds nothing.
      jobLoop(s, 'grouping', (r) => (r.emailsCreated ?? 0) > 0, stop, true),
      jobLoop(s, 'send', (r) => (r.sent ?? 0) > 0, stop),
      jobLoop(s, 'aal', (r) => (r.posted ?? 0) > 0, stop),
      watcher,
    ]);
    const totalMs = performance.now() - started;
    const counts = await sandbox.counts();
    const { peakRssBytes, errorLines } = await service.stop();
    service = undefined;
    await sandbox.setCallbackUrl(null);
    await sandbox.forgetCallbacks();
    progress(`pipeline: done in ${seconds(totalMs)}; measuring the stage limits on the same sizes`);

    const emails = state.emails;
    const ingestLimit = await directInsert(sql, 0, bodies, body, 4, 41_000_000);
    await sql`create table e2e_scratch (like medication_dispense including all)`;
    const scratchStarted = performance.now();
    await sql`insert into e2e_scratch overriding system value select * from medication_dispense where rx_number::bigint between 40000000 and 40999999`;
    const groupingLimitMs = performance.now() - scratchStarted;
    await sql`drop table e2e_scratch`;
    const [sample] = await sql<{ personalisation: Record<string, unknown> }[]>`select personalisation from tracking_email limit 1`;
    const sendLimitMs = await sandboxAloneSends(sandbox, emails, sendConcurrency, sample!.personalisation);
    await insertSentNotifications(sql, { first: 5_000_000, count: emails });
    const callbackBodies = Array.from({ length: emails }, (_, i) => deliveredCallback(5_000_000 + i));
    // Bounded by count, not by time: every callback is recorded exactly once.
    const callbackStarted = performance.now();
    await sqlOnlyCallbacks(db.url, callbackBodies, 32, Number.POSITIVE_INFINITY, callbackBodies.length);
    const callbackLimitMs = performance.now() - callbackStarted;

    const limitMs = ingestLimit.ms + groupingLimitMs + sendLimitMs + callbackLimitMs;
    const ratio = limitMs / totalMs;
    return {
      title: `End to end: ${count(dispenses)} dispenses of ${count(veterans)} veterans to delivered emails and AAL events`,
      rows: [
        {
          measure: 'wall time, first dispense posted → last AAL event posted',
          result: `${seconds(totalMs)} (${rate(dispenses / (totalMs / 1000), 'dispenses')}, ${rate(emails / (totalMs / 1000), 'emails')})`,
          limit: `sum of the stage limits: ${seconds(limitMs)}`,
          ratio: percent(ratio),
        },
        {
          measure: '… ingest (HL7, 1,000-message bodies)',
          result: seconds(ingestedMs),
          limit: `postgres.js insert of the rows: ${seconds(ingestLimit.ms)}`,
        },
        {
          measure: '… grouping, sending, callbacks and AAL, side by side',
          result: seconds(totalMs - ingestedMs),
          limit: `INSERT ... SELECT ${seconds(groupingLimitMs)} + sandbox alone ${seconds(sendLimitMs)} + SQL-only callbacks ${seconds(callbackLimitMs)}`,
        },
        peakRssRow(peakRssBytes),
      ],
      notes: [
        `${count(emails)} emails, all delivered; ${count(state.aalPosted)} AAL events posted; job runs: ${groupingRuns} grouping, ${sendRuns} send, ${aalRuns} AAL (driver-triggered, back to back; 100 ms rest after a run that found nothing)`,
        `sandbox: ${count(counts.sendsAccepted)} sends accepted, ${count(counts.callbacksPosted)} callbacks posted (${counts.callbacksFailed} given up), ${count(counts.aalPostsAccepted)} AAL posts accepted, ${count(counts.aalSessionsIssued)} MHV sessions; service error log lines: ${errorLines}`,
        `limits: insert ${count(bodies)} statements of ${count(body)} rows 4 in flight; sandbox alone ${count(emails)} sends ${sendConcurrency} in flight; callback transaction ${count(emails)} times 32 in flight; AAL posting has no limit of its own here`,
        'GROUPING_QUIET_MINUTES=0 (the dispenses are ready as soon as they are stored); the sandbox posts each callback as soon as the email is accepted',
        machineNote(db.description),
      ],
    };
  } finally {
    await service?.stop().catch(() => {});
    await sandbox.stop();
    await db.close();
  }
}
