// The fallback sweep against the sandbox VA Notify and AAL: lost callbacks are made up for by polls,
// orphaned sends are settled without a second send, temporary failures are replayed a bounded
// number of times, and with callbacks flowing the sweep asks VA Notify nothing.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { AdvisoryLock } from '../../src/db/locks.ts';
import type { Sql } from '../../src/db/connect.ts';
import { createLogger } from '../../src/logger.ts';
import { createRateBudget } from '../../src/sending/rate-budget.ts';
import { pauseSending, resumeSending, type SendingPauseKind } from '../../src/sending/va-notify-pause.ts';
import { claimDueEmails, releaseClaimedOrphans } from '../../src/sending/repository.ts';
import { runSweep } from '../../src/sweep/sweep-job.ts';
import { vaNotifyClientFromConfig } from '../../src/sending/va-notify-client.ts';
import { PreferencesDeclinedReason, RetryableReason, SandboxDefaults, type SandboxVaNotify } from '../../src/sandbox/va-notify.ts';
import { internalAuth, testApp, type TestApp, runJob } from '../support/app.ts';
import { icn, insertDispenses, insertNotification, insertTrackingEmail } from '../support/fixtures.ts';

type App = TestApp['app'];
/** A subtest, as tap hands it to a test function. */
type Test = Parameters<Parameters<typeof t.test>[0]>[0];

const get = (app: App, url: string) => app.inject({ method: 'GET', url, headers: internalAuth });

/** One veteran, one package; the MHV correlation id is derived from the number so AAL events can be told apart. */
const veteran = (n: number) => ({
  patient_icn: icn(n),
  rx_number: `${n}`.padStart(7, '7'),
  tracking_number: `1Z${String(n).padStart(16, '0')}`,
  mhv_correlation_id: String(15_000_000 + n),
});

/** Waits for the sandbox to finish its status changes and callbacks, then (bounded) for the database to show them. */
async function settle(vaNotify: SandboxVaNotify, sql: Sql, expectOpen = 0): Promise<number> {
  await vaNotify.whenIdle();
  let open = -1;
  for (let i = 0; i < 100; i++) {
    const [row] = await sql<{ n: number }[]>`
      select count(*)::int as n from notification where status in ('created', 'sending', 'pending', 'sent')`;
    open = row!.n;
    if (open <= expectOpen) break;
    await sleep(20);
  }
  return open;
}

const sendsTo = (vaNotify: SandboxVaNotify, veteranIcn: string) =>
  [...vaNotify.state.notifications.values()].filter((n) => n.recipientIdentifier?.id_value === veteranIcn);

const emailOf = async (sql: Sql, veteranIcn: string) => {
  const [row] = await sql`select id, state, state_reason, attempts from tracking_email where patient_icn = ${veteranIcn}`;
  return row!;
};

const declined = 1;
const temporary = 2;
const deliveredA = 11;
const deliveredB = 12;

/** Grouping and sending with every callback lost, then a sweep that polls each notification. */
async function lostCallbackRun(t: Test) {
  const run = await testApp(t, { STATUS_POLL_AFTER_MINUTES: '0' }, { listen: true, vaNotifyOptions: { faults: { dropCallbackRate: 1 } } });
  const { app, db, vaNotify } = run;
  await insertDispenses(db.sql, [declined, temporary, deliveredA, deliveredB].map(veteran));
  t.match(await runJob(app, 'grouping'), { emailsCreated: 4 });
  t.match(await runJob(app, 'send'), { sent: 4 });
  t.equal(await settle(vaNotify, db.sql, 4), 4, 'no callback came: every notification is still open');
  t.equal(vaNotify.state.counters.callbacksDropped, 4);
  const sweep = await runJob(app, 'sweep');
  t.match(sweep, { status: 'done', polled: 4, statusesApplied: 4, expired: 0, adopted: 0, released: 0, replayed: 0, errors: 0 });
  return run;
}

t.test('lost callbacks: every email reaches its final state through polls, and each delivery one AAL event', async (t) => {
  const { app, db, vaNotify, aal, logs } = await lostCallbackRun(t);
  t.equal(vaNotify.state.counters.getsById, 4, 'one GET per open notification');

  t.match(await emailOf(db.sql, icn(declined)), { state: 'permanent_failure', state_reason: PreferencesDeclinedReason });
  t.match(await emailOf(db.sql, icn(temporary)), { state: 'temporary_failure', state_reason: RetryableReason });
  t.match(await emailOf(db.sql, icn(deliveredA)), { state: 'delivered' });
  t.match(await emailOf(db.sql, icn(deliveredB)), { state: 'delivered' });
  const sources = await db.sql`select distinct source from notification_status_event`;
  t.same(
    sources.map((r) => r.source),
    ['poll'],
  );

  t.match(await runJob(app, 'sweep'), { status: 'done', polled: 0 }, 'final notifications are not polled again');
  t.equal(vaNotify.state.counters.getsById, 4);

  t.match(await runJob(app, 'aal'), { posted: 2, failed: 0 });
  t.equal(aal.state.events.length, 2);
  const byVeteran = new Map<string, number>();
  for (const event of aal.state.events) byVeteran.set(event.sessionCorrelationId, (byVeteran.get(event.sessionCorrelationId) ?? 0) + 1);
  t.same(Object.fromEntries(byVeteran), { [veteran(deliveredA).mhv_correlation_id]: 1, [veteran(deliveredB).mhv_correlation_id]: 1 });
  t.match(await runJob(app, 'aal'), { posted: 0 }, 'nothing posted twice');

  for (const n of [declined, temporary, deliveredA, deliveredB]) t.notMatch(logs.text, icn(n), 'no ICN in the log');
});

t.test('metrics, stats and the email view after a lost-callback run', async (t) => {
  const { app, db } = await lostCallbackRun(t);
  await runJob(app, 'aal');

  const metrics = await app.inject({ method: 'GET', url: '/metrics' });
  t.equal(metrics.statusCode, 200);
  const value = (series: string) => {
    const line = metrics.body.split('\n').find((l) => l.startsWith(`${series} `));
    return line === undefined ? undefined : Number(line.slice(series.length + 1));
  };
  t.equal(value('rx_status_polls_total{outcome="applied"}'), 4);
  t.equal(value('rx_sends_total{outcome="sent"}'), 4);
  t.equal(value('rx_aal_posts_total{outcome="posted"}'), 2);
  t.equal(value('rx_rows{table="tracking_email",state="temporary_failure"}'), 1);
  t.equal(value('rx_rows{table="tracking_email",state="queued"}'), 0, 'work in progress is counted, also when there is none');
  t.equal(value('rx_rows{table="notification",state="sending"}'), 0);
  t.equal(value('rx_rows{table="aal_event",state="posting"}'), 0);
  t.equal(
    value('rx_rows{table="tracking_email",state="delivered"}'),
    undefined,
    'history is not counted at every scrape: GET /v1/stats has it',
  );
  t.equal(value('rx_rows{table="aal_event",state="posted"}'), undefined);
  t.equal(value('rx_rows{table="tracking_email",state="permanent_failure"}'), undefined);
  t.equal(value('rx_oldest_open_notification_age_seconds'), 0);
  t.equal(value('rx_callbacks_total{outcome="applied",status="delivered"}'), undefined, 'no callback was received');

  const stats = await get(app, '/v1/stats');
  t.same(stats.json(), {
    dispenses: { grouped: 4 },
    emails: { delivered: 2, permanent_failure: 1, temporary_failure: 1 },
    notifications: { delivered: 2, 'permanent-failure': 1, 'temporary-failure': 1 },
    aalEvents: { posted: 2 },
  });

  const email = await emailOf(db.sql, icn(deliveredA));
  const detail = await get(app, `/v1/tracking-emails/${email.id}`);
  t.equal(detail.statusCode, 200);
  const view = detail.json();
  t.match(view, { id: email.id, state: 'delivered', attempts: 1, aalEvent: { state: 'posted', attempts: 1 } });
  t.equal(view.notifications.length, 1);
  t.match(view.notifications[0], { attempt: 1, status: 'delivered' });
  t.match(view.notifications[0].history, [{ status: 'delivered', source: 'poll' }]);

  const listing = await get(app, '/v1/tracking-emails');
  t.equal(listing.json().emails.length, 4);
  for (const n of [declined, temporary, deliveredA, deliveredB]) t.notMatch(listing.body, icn(n), 'the listing carries no ICN');

  // Paging and filters: newest first, each condition alone and together.
  await db.sql`update tracking_email set created_at = now() - make_interval(mins => n::int)
                 from (select id, row_number() over (order by id) as n from tracking_email) o where o.id = tracking_email.id`;
  const page = async (query: string) =>
    (await get(app, `/v1/tracking-emails${query}`)).json() as { emails: { id: string }[]; nextCursor?: string };
  const ids = async (query: string) => (await page(query)).emails.map((e) => e.id);
  const newestFirst = await db.sql<{ id: string; state: string; created_at: Date }[]>`
    select id, state, created_at from tracking_email order by created_at desc`;
  t.same(
    await ids(''),
    newestFirst.map((r) => r.id),
  );
  t.same(
    await ids('?limit=2'),
    newestFirst.slice(0, 2).map((r) => r.id),
  );
  const before = newestFirst[1]!.created_at.toISOString();
  t.same(
    await ids(`?before=${before}`),
    newestFirst.slice(2).map((r) => r.id),
    'the emails created before the second',
  );
  t.same(
    await ids('?state=delivered'),
    newestFirst.filter((r) => r.state === 'delivered').map((r) => r.id),
  );
  t.same(
    await ids(`?state=delivered&before=${before}`),
    newestFirst
      .slice(2)
      .filter((r) => r.state === 'delivered')
      .map((r) => r.id),
  );

  // One grouping run's emails share one created_at, to the microsecond: the cursor still walks every
  // email exactly once, a page at a time.
  await db.sql`update tracking_email set created_at = '2026-05-14 16:00:00.123456+00'`;
  const walked: string[] = [];
  let cursor: string | undefined;
  for (let pages = 0; pages < 10; pages++) {
    const next = await page(`?limit=3${cursor ? `&cursor=${cursor}` : ''}`);
    walked.push(...next.emails.map((e) => e.id));
    cursor = next.nextCursor;
    if (!cursor) break;
  }
  const all = await db.sql<{ id: string }[]>`select id from tracking_email order by id desc`;
  t.same(
    walked,
    all.map((r) => r.id),
    'pages of 3: every email once, newest first, then by id',
  );
  const bad = await get(app, '/v1/tracking-emails?cursor=bm90LWEtY3Vyc29y');
  t.equal(bad.statusCode, 400);
  t.match(bad.json(), { message: /cursor/ });

  // An open notification is counted and aged by the gauges.
  await db.sql`update notification set status = 'sending', created_at = now() - interval '90 seconds'
                 where id = (select id from notification order by id limit 1)`;
  const scrape = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  const gauge = (series: string) =>
    Number(
      scrape
        .split('\n')
        .find((l) => l.startsWith(`${series} `))
        ?.slice(series.length + 1),
    );
  t.equal(gauge('rx_rows{table="notification",state="sending"}'), 1);
  const age = gauge('rx_oldest_open_notification_age_seconds');
  t.ok(age >= 90 && age < 120, `the oldest open notification's age (${age} s)`);
});

t.test('with callbacks flowing, sweeps ask VA Notify nothing', async (t) => {
  const { app, db, vaNotify, aal } = await testApp(t, { STATUS_POLL_AFTER_MINUTES: '0' }, { listen: true });
  await insertDispenses(db.sql, [declined, temporary, deliveredA, deliveredB, 13, 14].map(veteran));
  t.match(await runJob(app, 'grouping'), { emailsCreated: 6 });
  t.match(await runJob(app, 'send'), { sent: 6 });
  t.equal(await settle(vaNotify, db.sql), 0, 'the callbacks brought every notification to a final status');
  t.match(await runJob(app, 'aal'), { posted: 4 });
  for (let i = 0; i < 3; i++) {
    t.match(await runJob(app, 'sweep'), { status: 'done', polled: 0, adopted: 0, released: 0, errors: 0 });
  }
  t.equal(vaNotify.state.counters.getsById + vaNotify.state.counters.getsByReference, 0, 'no poll, no lookup');
  t.equal(aal.state.events.length, 4);
});

t.test("a temporary failure is replayed, at most SEND_MAX_ATTEMPTS sends, then failed with VA Notify's reason", async (t) => {
  const { app, db, vaNotify } = await testApp(t, { REPLAY_DELAY_MINUTES: '0', SEND_MAX_ATTEMPTS: '3' }, { listen: true });
  await insertDispenses(db.sql, [veteran(temporary)]);
  await runJob(app, 'grouping');
  const results = [];
  for (let round = 0; round < 6; round++) {
    await runJob(app, 'send');
    await settle(vaNotify, db.sql);
    results.push(await runJob(app, 'sweep'));
  }
  t.same(
    results.map((r) => r.replayed),
    [1, 1, 0, 0, 0, 0],
    'two replays after the first send',
  );
  t.equal(sendsTo(vaNotify, icn(temporary)).length, 3, 'VA Notify received the email three times');
  t.match(await emailOf(db.sql, icn(temporary)), { state: 'failed', state_reason: RetryableReason, attempts: 3 });
  const notifications = await db.sql`select attempt, status from notification order by attempt`;
  t.same(
    notifications.map((n) => [n.attempt, n.status]),
    [
      [1, 'temporary-failure'],
      [2, 'temporary-failure'],
      [3, 'temporary-failure'],
    ],
  );
  const references = new Set(sendsTo(vaNotify, icn(temporary)).map((n) => n.reference));
  t.equal(references.size, 1, 'every send is the same email (one reference)');
});

t.test('a replayed email that is then delivered gets exactly one AAL event', async (t) => {
  const { app, db, vaNotify, aal } = await testApp(t, { REPLAY_DELAY_MINUTES: '0' }, { listen: true });
  const dispense = veteran(21);
  vaNotify.state.outcomeOverrides.set(dispense.patient_icn, { status: 'temporary-failure', statusReason: RetryableReason });
  await insertDispenses(db.sql, [dispense]);
  await runJob(app, 'grouping');
  await runJob(app, 'send');
  await settle(vaNotify, db.sql);
  t.match(await emailOf(db.sql, dispense.patient_icn), { state: 'temporary_failure' });

  vaNotify.state.outcomeOverrides.delete(dispense.patient_icn);
  t.match(await runJob(app, 'sweep'), { replayed: 1 });
  t.match(await runJob(app, 'send'), { sent: 1 });
  await settle(vaNotify, db.sql);
  t.match(await emailOf(db.sql, dispense.patient_icn), { state: 'delivered', state_reason: null, attempts: 2 });
  t.match(await runJob(app, 'sweep'), { replayed: 0 });
  t.match(await runJob(app, 'aal'), { posted: 1 });
  t.equal(aal.state.events.length, 1);
  t.equal(sendsTo(vaNotify, dispense.patient_icn).length, 2);
});

/** An email as the sender leaves it after a send, with one notification row VA Notify may not know. */
async function sentEmailWithNotification(sql: Sql, p: { createdMinutesAgo: number; silentMinutes: number }) {
  const emailId = await insertTrackingEmail(sql, {
    patient_icn: icn(31),
    mhv_correlation_id: '15000031',
    personalisation: { tracking_info: 'UPS 1Z0000000000000031' },
    state: 'sent',
    attempts: 1,
  });
  const minutesAgo = (minutes: number) => new Date(Date.now() - minutes * 60_000);
  const notificationId = await insertNotification(sql, emailId, {
    created_at: minutesAgo(p.createdMinutesAgo),
    last_event_at: minutesAgo(p.silentMinutes),
    status_received_at: minutesAgo(p.createdMinutesAgo),
  });
  return { emailId, notificationId };
}

t.test('404s: past the retention the notification expires; a young one is asked again after the quiet period', async (t) => {
  const { app, db, vaNotify } = await testApp(t);
  const old = await sentEmailWithNotification(db.sql, { createdMinutesAgo: 8 * 24 * 60, silentMinutes: 7 * 24 * 60 });
  const young = await sentEmailWithNotification(db.sql, { createdMinutesAgo: 60, silentMinutes: 45 });

  t.match(await runJob(app, 'sweep'), { status: 'done', polled: 0, expired: 1, notFound: 1 });
  t.equal(vaNotify.state.counters.getsById, 2);
  const [expired] =
    await db.sql`select status, status_reason, completed_at is not null as completed from notification where id = ${old.notificationId}`;
  t.match(expired, { status: 'expired', status_reason: /404 after its 7-day retention/, completed: true });
  const [expiredEmail] = await db.sql`select state, state_reason from tracking_email where id = ${old.emailId}`;
  t.match(expiredEmail, { state: 'expired', state_reason: /404 after its 7-day retention/ });
  const [event] = await db.sql`select status, source from notification_status_event where notification_id = ${old.notificationId}`;
  t.same(event, { status: 'expired', source: 'poll' });

  const [waiting] =
    await db.sql`select status, poll_count, last_event_at > now() - interval '1 minute' as recent from notification where id = ${young.notificationId}`;
  t.same(waiting, { status: 'created', poll_count: 1, recent: true }, 'a young 404 is left open and marked as just asked');

  t.match(await runJob(app, 'sweep'), { polled: 0, expired: 0, notFound: 0 }, 'not asked again right away');
  t.equal(vaNotify.state.counters.getsById, 2);

  await db.sql`update notification set last_event_at = now() - interval '31 minutes' where id = ${young.notificationId}`;
  t.match(await runJob(app, 'sweep'), { notFound: 1, expired: 0 }, 'asked again once silent for STATUS_POLL_AFTER_MINUTES');
  t.equal(vaNotify.state.counters.getsById, 3);
  const [again] = await db.sql`select status, poll_count from notification where id = ${young.notificationId}`;
  t.same(again, { status: 'created', poll_count: 2 });
});

t.test('orphaned sends: adopted when VA Notify has them, released and sent once when it does not', async (t) => {
  const { app, db, vaNotify, config } = await testApp(t);
  const had = veteran(41);
  const lost = veteran(42);
  await insertDispenses(db.sql, [had, lost]);
  await runJob(app, 'grouping');
  // A sender that claims both, sends one, and dies before recording anything.
  const claimed = await claimDueEmails(db.sql, { batchSize: 10, claim: { token: randomUUID(), instanceId: 'crashed', leaseSeconds: 60 } });
  t.equal(claimed.length, 2);
  const sent = claimed.find((e) => e.patient_icn === had.patient_icn)!;
  const client = vaNotifyClientFromConfig(config, vaNotify.url, SandboxDefaults);
  const outcome = await client.sendEmail({ icn: sent.patient_icn, reference: sent.id, personalisation: sent.personalisation });
  if (outcome.kind !== 'accepted') throw new Error(`the direct send was not accepted: ${outcome.kind}`);
  await vaNotify.whenIdle();

  t.match(await runJob(app, 'sweep'), { adopted: 0, released: 0 }, 'a live claim is left alone');
  t.equal(vaNotify.state.counters.getsByReference, 0);
  await db.sql`update tracking_email set lease_until = now() - interval '1 second'`;
  t.match(await runJob(app, 'sweep'), { status: 'done', adopted: 1, released: 1, errors: 0 });
  // One listing per orphan; the non-empty one is followed to its (empty) next page, as VA Notify pages.
  t.equal(vaNotify.state.counters.getsByReference, 3, 'each orphan looked up once');

  const [adopted] = await db.sql`
    select e.state, e.attempts, e.lease_until, n.id as notification_id, n.attempt, n.status
      from tracking_email e join notification n on n.tracking_email_id = e.id
     where e.id = ${sent.id}`;
  t.match(
    adopted,
    { state: 'delivered', attempts: 1, lease_until: null, notification_id: outcome.notificationId, attempt: 1, status: 'delivered' },
    'recorded with the status the listing showed',
  );
  t.match(await emailOf(db.sql, lost.patient_icn), { state: 'queued', attempts: 1 }, 'released with its attempt count unchanged');

  t.match(await runJob(app, 'send'), { sent: 1, recovered: 0 });
  t.match(await emailOf(db.sql, lost.patient_icn), { state: 'sent', attempts: 2 });
  t.match(await runJob(app, 'send'), { sent: 0 });
  t.equal(sendsTo(vaNotify, had.patient_icn).length, 1, 'the adopted email was not sent again');
  t.equal(sendsTo(vaNotify, lost.patient_icn).length, 1, 'the released email was sent once');
  t.equal(vaNotify.state.counters.sendsAccepted, 2);
});

// A send whose answer never came, met while VA Notify looks down, is handed back as an orphan with
// its attempt given back (releaseClaimedOrphans). When the sweep then finds that VA Notify had it,
// that send happened and counts: recorded under the attempt it was, never one an earlier send holds.
/**
 * What a sender does when VA Notify looks down mid-send: it claims the due email, VA Notify accepts
 * the send but the answer is lost, and the claim goes back with its attempt given back. Answers the
 * claimed email and the notification VA Notify created.
 */
async function sendGivenBack({ db, vaNotify, config }: TestApp) {
  const claim = { token: randomUUID(), instanceId: 'outage', leaseSeconds: 60 };
  const [email] = await claimDueEmails(db.sql, { batchSize: 10, claim });
  if (!email) throw new Error('no email was due');
  const client = vaNotifyClientFromConfig(config, vaNotify.url, SandboxDefaults);
  const outcome = await client.sendEmail({ icn: email.patient_icn, reference: email.id, personalisation: email.personalisation });
  if (outcome.kind !== 'accepted') throw new Error(`the direct send was not accepted: ${outcome.kind}`);
  if ((await releaseClaimedOrphans(db.sql, [email.id], claim)) !== 1) throw new Error('the claim was not given back');
  await settle(vaNotify, db.sql);
  return { email, notificationId: outcome.notificationId };
}

t.test('an orphan whose attempt was given back: adopted as the send it was, and counted against SEND_MAX_ATTEMPTS', async (t) => {
  const service = await testApp(t, { REPLAY_DELAY_MINUTES: '0', SEND_MAX_ATTEMPTS: '2' }, { listen: true });
  const { app, db, vaNotify } = service;
  const dispense = veteran(61);
  vaNotify.state.outcomeOverrides.set(dispense.patient_icn, { status: 'temporary-failure', statusReason: RetryableReason });
  await insertDispenses(db.sql, [dispense]);
  await runJob(app, 'grouping');
  t.match(await runJob(app, 'send'), { sent: 1 });
  await settle(vaNotify, db.sql);
  t.match(await runJob(app, 'sweep'), { replayed: 1 });

  // The replay: VA Notify accepts it, the answer is lost, and the claim goes back uncharged.
  const { email: replay, notificationId } = await sendGivenBack(service);
  t.equal(replay.attempts, 2);

  // The sandbox's callback for the lost send names the email in its reference: the email may have adopted it already.
  t.match(await runJob(app, 'sweep'), { status: 'done', released: 0 });
  const notifications = await db.sql`select id, attempt, status from notification order by attempt`;
  t.same(
    notifications.map((n) => [n.attempt, n.status]),
    [
      [1, 'temporary-failure'],
      [2, 'temporary-failure'],
    ],
    'the adopted send is stored beside the first, under the next attempt',
  );
  t.equal(notifications[1]!.id, notificationId);
  t.match(
    await emailOf(db.sql, dispense.patient_icn),
    { state: 'failed', state_reason: RetryableReason, attempts: 2 },
    'two sends of two allowed: failed, not left sent',
  );

  t.match(await runJob(app, 'sweep'), { replayed: 0 });
  t.match(await runJob(app, 'send'), { sent: 0 });
  t.equal(sendsTo(vaNotify, dispense.patient_icn).length, 2, 'VA Notify received the email twice, SEND_MAX_ATTEMPTS');
});

t.test('a first send whose attempt was given back: adopted as attempt 1, so no replay goes past SEND_MAX_ATTEMPTS', async (t) => {
  const service = await testApp(t, { REPLAY_DELAY_MINUTES: '0', SEND_MAX_ATTEMPTS: '1' }, { listen: true });
  const { app, db, vaNotify } = service;
  const dispense = veteran(62);
  vaNotify.state.outcomeOverrides.set(dispense.patient_icn, { status: 'temporary-failure', statusReason: RetryableReason });
  await insertDispenses(db.sql, [dispense]);
  await runJob(app, 'grouping');
  await sendGivenBack(service);

  // The sandbox's callback for the lost send names the email in its reference: the email may have adopted it already.
  t.match(await runJob(app, 'sweep'), { status: 'done', released: 0 });
  const [notification] = await db.sql`select attempt, status from notification`;
  t.match(notification, { attempt: 1, status: 'temporary-failure' });
  t.match(await emailOf(db.sql, dispense.patient_icn), { state: 'failed', attempts: 1 });
  t.match(await runJob(app, 'sweep'), { replayed: 0 });
  t.match(await runJob(app, 'send'), { sent: 0 });
  t.equal(sendsTo(vaNotify, dispense.patient_icn).length, 1, 'sent once, as SEND_MAX_ATTEMPTS allows');
});

t.test('two sweeps at once: one runs, the other answers already_running', async (t) => {
  const { app, db, vaNotify } = await testApp(t, {}, { vaNotifyOptions: { faults: { latencyMs: 400 } } });
  await sentEmailWithNotification(db.sql, { createdMinutesAgo: 60, silentMinutes: 45 });
  const [first, second] = await Promise.all([runJob(app, 'sweep'), runJob(app, 'sweep')]);
  t.same([first.status, second.status].sort(), ['already_running', 'done']);
  t.same(first.status === 'done' ? second : first, { status: 'already_running' });
  t.equal(vaNotify.state.counters.getsById, 1, 'the notification was asked about once');

  // The same while another instance holds the lock.
  const other = await db.sql.reserve();
  await other`select pg_advisory_lock(${AdvisoryLock.sweep})`;
  t.same(await runJob(app, 'sweep'), { status: 'already_running' });
  await other`select pg_advisory_unlock(${AdvisoryLock.sweep})`;
  other.release();
  t.match(await runJob(app, 'sweep'), { status: 'done' }, 'runs again once the lock is free');
});

t.test('VA Notify rejecting our credentials stops polling, pauses sending everywhere, and says so', async (t) => {
  const { app, db, vaNotify, logs } = await testApp(t, {}, { vaNotifyOptions: { secret: '0d5e6f70-1111-4222-8333-944455556666' } });
  await sentEmailWithNotification(db.sql, { createdMinutesAgo: 60, silentMinutes: 45 });
  await sentEmailWithNotification(db.sql, { createdMinutesAgo: 60, silentMinutes: 40 });
  const result = await runJob(app, 'sweep');
  t.match(result, { status: 'done', polled: 0, vaNotifyRejected: true });
  t.ok(vaNotify.state.counters.getsById <= 2, 'at most the requests already in flight');
  t.match(logs.text, /VA Notify rejected our credentials: the sweep stopped polling and sending is paused on every instance/);
  const open = await db.sql`select status from notification`;
  t.same(
    open.map((n) => n.status),
    ['created', 'created'],
    'nothing changed',
  );
  const [pause] = await db.sql`select paused_until > now() + interval '200 seconds' as paused, pause_kind, pause_reason from rate_budget`;
  t.match(
    pause,
    { paused: true, pause_kind: 'credentials', pause_reason: /Invalid token/ },
    'SEND_PAUSE_SECONDS, as a sender would have set',
  );
  const getsBefore = vaNotify.state.counters.getsById;
  t.match(await runJob(app, 'send'), { paused: true });
  t.match(await runJob(app, 'sweep'), { status: 'done', polled: 0 });
  t.equal(vaNotify.state.counters.getsById, getsBefore, 'neither asks VA Notify during the pause');
  t.match(logs.text, /sending is paused: the sweep asks VA Notify nothing until the pause ends/);
});

// VA Notify's daily limit is on sends: the pause until the next UTC day must not keep a lost
// callback's email from its final state (and its AAL event) until then, since GETs still answer.
t.test('the daily send limit pauses sending only: the sweep still polls lost callbacks and looks up orphans', async (t) => {
  // One send at a time, so that the 429 stops the run before the other email goes.
  const settings = { STATUS_POLL_AFTER_MINUTES: '0', SEND_CONCURRENCY: '1' };
  const { app, db, vaNotify, logs } = await testApp(t, settings, { listen: true, vaNotifyOptions: { faults: { dropCallbackRate: 1 } } });
  await insertDispenses(db.sql, [veteran(51)]);
  await runJob(app, 'grouping');
  t.match(await runJob(app, 'send'), { sent: 1 });
  t.equal(await settle(vaNotify, db.sql, 1), 1, 'its callback was lost');

  await insertDispenses(db.sql, [veteran(52), veteran(53)]);
  await runJob(app, 'grouping');
  vaNotify.state.forcedResponses.push({ status: 429, error: 'TooManyRequestsError', message: 'Exceeded send limits (1) for today' });
  t.match(await runJob(app, 'send'), { sent: 0, paused: true });
  const [pause] = await db.sql`select paused_until > now() + interval '1 minute' as long, pause_kind from rate_budget`;
  t.same(pause, { long: true, pause_kind: 'daily_limit' });
  // A sender that claimed the third veteran's email before the pause and died without an outcome.
  const [orphan] = await db.sql`
    update tracking_email set state = 'sending', attempts = 1, lease_until = now() - interval '1 second'
     where patient_icn = ${icn(53)} returning id`;

  const sweep = await runJob(app, 'sweep');
  t.match(sweep, { status: 'done', polled: 1, statusesApplied: 1, released: 1, vaNotifyRejected: false });
  t.equal(vaNotify.state.counters.getsById, 1, 'the silent notification was asked about');
  t.equal(vaNotify.state.counters.getsByReference, 1, 'the orphan was looked up');
  t.match(await emailOf(db.sql, icn(51)), { state: 'delivered' }, 'final today, not on the next UTC day');
  t.match(await emailOf(db.sql, icn(53)), { id: orphan!.id, state: 'queued' }, 'VA Notify does not have it: queued, for after the pause');
  const [aal] = await db.sql`select count(*)::int as n from aal_event`;
  t.equal(aal!.n, 1, 'its AAL event is written');
  t.match(await runJob(app, 'send'), { paused: true, sent: 0 }, 'sending stays paused');
  t.notMatch(logs.text, /the sweep asks VA Notify nothing/);
});

t.test('which sending pauses stop the sweep asking VA Notify', async (t) => {
  const { app, db, vaNotify } = await testApp(t);
  const cases: [SendingPauseKind, boolean][] = [
    ['credentials', false], // every request would be refused as well
    ['no_endpoint', false], // a wrong URL: a GET's 404 would read as a notification VA Notify no longer has
    ['rate_limit', true], // the limits are on sends; the shared budget paces the GETs
    ['daily_limit', true],
    ['unavailable', true], // sends went unanswered; the sweep's own requests fail (or not) on their own
  ];
  const nothingStale = () => db.sql`update notification set last_event_at = now()`;
  for (const [kind, asks] of cases) {
    await nothingStale();
    await resumeSending(db.sql);
    await pauseSending(db.sql, 3600, kind, `a ${kind} pause`);
    await sentEmailWithNotification(db.sql, { createdMinutesAgo: 60, silentMinutes: 45 });
    const before = vaNotify.state.counters.getsById;
    t.match(await runJob(app, 'sweep'), { status: 'done', notFound: asks ? 1 : 0 }, kind);
    t.equal(vaNotify.state.counters.getsById - before, asks ? 1 : 0, `${kind}: ${asks ? 'polled' : 'nothing asked'}`);
  }

  // A shorter pause met during a longer one keeps the longer one's kind, as it keeps its reason.
  await nothingStale();
  await resumeSending(db.sql);
  await pauseSending(db.sql, 300, 'credentials', 'Invalid token: API key expired');
  await pauseSending(db.sql, 60, 'rate_limit', 'Exceeded rate limit for key type LIVE of 3000 requests per 60 seconds');
  await sentEmailWithNotification(db.sql, { createdMinutesAgo: 60, silentMinutes: 45 });
  const before = vaNotify.state.counters.getsById;
  t.match(await runJob(app, 'sweep'), { status: 'done', notFound: 0 });
  t.equal(vaNotify.state.counters.getsById, before, 'the credentials still stop the sweep');
});

t.test('shadow mode: the sweep calls nobody', async (t) => {
  const { app, db, vaNotify } = await testApp(t, { DELIVERY_MODE: 'shadow' });
  await sentEmailWithNotification(db.sql, { createdMinutesAgo: 60, silentMinutes: 45 });
  t.match(await runJob(app, 'sweep'), { status: 'done', polled: 0 });
  t.equal(vaNotify.state.counters.getsById + vaNotify.state.counters.getsByReference, 0);
});

t.test('shutdown: a sweep stops between requests and leaves the rest for the next one', async (t) => {
  const { db, vaNotify, config } = await testApp(t, { SEND_CONCURRENCY: '1' });
  for (let i = 0; i < 5; i++) await sentEmailWithNotification(db.sql, { createdMinutesAgo: 60, silentMinutes: 45 });
  const shutdown = new AbortController();
  const client = vaNotifyClientFromConfig(config, vaNotify.url, SandboxDefaults);
  // The real client; the process "receives SIGTERM" while its first poll is on the way.
  const vaNotifyClient = {
    ...client,
    getNotification: (id: string) => {
      shutdown.abort(new Error('shutting down'));
      return client.getNotification(id);
    },
  };
  const result = await runSweep({
    sql: db.sql,
    config,
    vaNotify: vaNotifyClient,
    budget: createRateBudget(db.sql, 0),
    log: createLogger('silent'),
    signal: shutdown.signal,
  });
  // The one request made was answered (404: the sandbox never saw these ids), and no other started.
  t.match(result, { status: 'done', notFound: 1, stopped: true });
  t.equal(vaNotify.state.counters.getsById, 1, 'no request started after the signal');
  const [asked] = await db.sql`select count(*)::int as n from notification where poll_count > 0`;
  t.equal(asked!.n, 5, 'the claimed batch waits a quiet period before it is asked again');
  const other = await db.sql.reserve();
  const [lock] = await other`select pg_try_advisory_lock(${AdvisoryLock.sweep}) as acquired`;
  t.equal(lock!.acquired, true, 'the sweep lock was released');
  await other`select pg_advisory_unlock(${AdvisoryLock.sweep})`;
  other.release();
});
