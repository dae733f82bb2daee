// The sender against the sandbox VA Notify: one email per veteran, exactly once, whatever fails.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { connect, type Sql } from '../../src/db/connect.ts';
import { testConfig } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';
import { runGrouping } from '../../src/grouping/grouping-job.ts';
import { createRateBudget, type RateBudget } from '../../src/sending/rate-budget.ts';
import { resumeSending } from '../../src/sending/va-notify-pause.ts';
import { claimDueEmails, releaseClaimedEmails, renewLease } from '../../src/sending/repository.ts';
import { runSend } from '../../src/sending/sender.ts';
import { vaNotifyClientFromConfig } from '../../src/sending/va-notify-client.ts';
import { SandboxDefaults, startSandboxVaNotify, type SandboxVaNotify } from '../../src/sandbox/va-notify.ts';
import { testApp, internalAuth, runJob } from '../support/app.ts';
import { testDatabase } from '../support/database.ts';
import { icn, insertDispenses } from '../support/fixtures.ts';

const alpha = '1012345678V123456';
const bravo = '1098765432V654321';

async function twoVeterans(sql: Parameters<typeof insertDispenses>[0]) {
  await insertDispenses(sql, [
    { patient_icn: alpha, rx_number: '2719043', tracking_number: '1Z9999990312345678', carrier: 'UPS' },
    { patient_icn: alpha, rx_number: '2719100', tracking_number: '1Z9999990312345678', carrier: 'UPS' },
    { patient_icn: bravo, rx_number: '7004512', tracking_number: '9400100000000000000012', carrier: 'USPS' },
    { patient_icn: bravo, rx_number: '7004520', tracking_number: '771234567890', carrier: 'FEDEX' },
  ]);
}

t.test('one email per veteran, by ICN, with only the properties the contract allows', async (t) => {
  const { app, db, vaNotify, logs } = await testApp(t);
  await twoVeterans(db.sql);
  t.same(await runJob(app, 'grouping'), { emailsCreated: 2, dispensesGrouped: 4, dispensesExcluded: 0, dispensesHeld: 0, skipped: false });
  t.same(await runJob(app, 'send'), { sent: 2, recovered: 0, retried: 0, failed: 0, released: 0, paused: false });

  const received = [...vaNotify.state.notifications.values()];
  t.equal(received.length, 2);
  const byIcn = new Map(received.map((n) => [n.recipientIdentifier?.id_value, n]));
  t.same([...byIcn.keys()].sort(), [alpha, bravo]);
  for (const notification of received) {
    t.same(Object.keys(notification.request).sort(), ['personalisation', 'recipient_identifier', 'reference', 'template_id']);
    t.equal(notification.recipientIdentifier?.id_type, 'ICN');
    t.equal(notification.request.template_id, SandboxDefaults.templateId);
  }
  t.match(byIcn.get(alpha)!.request.personalisation, {
    tracking_info: /1Z9999990312345678[\s\S]*ending in 9043\n- Prescription ending in 9100/,
    package_count: '1',
    prescription_count: '2',
  });
  t.match(byIcn.get(bravo)!.request.personalisation, { package_count: '2', tracking_info: /ending in 4520[\s\S]*ending in 4512/ });

  const emails = await db.sql`select e.id, e.state, e.attempts, n.id as notification_id, n.attempt
                                from tracking_email e join notification n on n.tracking_email_id = e.id`;
  t.equal(emails.length, 2);
  for (const email of emails) {
    t.equal(email.state, 'sent');
    t.equal(email.attempts, 1);
    t.equal(email.attempt, 1);
    t.equal(vaNotify.state.notifications.get(email.notification_id)?.request.reference, email.id, 'reference is our email id');
  }
  t.same(await runJob(app, 'send'), { sent: 0, recovered: 0, retried: 0, failed: 0, released: 0, paused: false }, 'nothing sent twice');
  t.notMatch(logs.text, alpha);
  t.notMatch(logs.text, bravo);
});

t.test('transient failures are retried until VA Notify takes the email', async (t) => {
  const { app, db, vaNotify } = await testApp(t, { VA_NOTIFY_TIMEOUT_MS: '300' });
  await insertDispenses(db.sql, [{ patient_icn: icn(1), rx_number: '1000001', tracking_number: 'T1' }]);
  await runJob(app, 'grouping');
  vaNotify.state.forcedResponses.push({ status: 500 }, { status: 503 });
  t.match(await runJob(app, 'send'), { sent: 1, retried: 0, failed: 0 }, 'quick retries absorb two 5xx');

  await insertDispenses(db.sql, [{ patient_icn: icn(2), rx_number: '2000001', tracking_number: 'T2' }]);
  await runJob(app, 'grouping');
  vaNotify.state.forcedResponses.push({ status: 429 });
  t.same(
    await runJob(app, 'send'),
    { sent: 0, recovered: 0, retried: 0, failed: 0, released: 1, paused: true },
    'a 429: no quick retry, sending paused',
  );
  t.equal(vaNotify.state.forcedResponses.length, 0, 'one request, not three');
  const [waiting] = await db.sql`select state, attempts, next_attempt_at <= now() as due from tracking_email where patient_icn = ${icn(2)}`;
  t.same(waiting, { state: 'queued', attempts: 0, due: true }, 'handed back with its attempt refunded; the pause alone holds it');
  const [pause] =
    await db.sql`select pause_kind, pause_reason, paused_until - now() between interval '50 seconds' and interval '60 seconds' as a_minute from rate_budget`;
  t.match(
    pause,
    { pause_kind: 'rate_limit', pause_reason: /Exceeded rate limit/, a_minute: true },
    'SEND_RATE_LIMIT_PAUSE_SECONDS on every instance',
  );
  t.match(await runJob(app, 'send'), { paused: true, sent: 0 });
  await resumeSending(db.sql);
  t.match(await runJob(app, 'send'), { sent: 1 }, 'sent at once when the pause is cleared');
  const [sent] = await db.sql`select state, attempts from tracking_email where patient_icn = ${icn(2)}`;
  t.same(sent, { state: 'sent', attempts: 1 });

  await insertDispenses(db.sql, [{ patient_icn: icn(3), rx_number: '3000001', tracking_number: 'T3' }]);
  await runJob(app, 'grouping');
  vaNotify.state.forcedResponses.push({ hang: true });
  t.match(await runJob(app, 'send'), { sent: 1 }, 'a timeout, then a lookup by reference, then a send');
  const toThree = [...vaNotify.state.notifications.values()].filter((n) => n.recipientIdentifier?.id_value === icn(3));
  t.equal(toThree.length, 1, 'the veteran got one email');
});

t.test('a VA Notify outage pauses sending on every instance and fails no email, however long it lasts', async (t) => {
  const { app, db, vaNotify, logs } = await testApp(t, { SEND_MAX_ATTEMPTS: '3' });
  await insertDispenses(
    db.sql,
    Array.from({ length: 6 }, (_, i) => ({ patient_icn: icn(40 + i), rx_number: `${4000040 + i}`, tracking_number: `T${40 + i}` })),
  );
  await runJob(app, 'grouping');
  const attempts = async () =>
    (await db.sql<{ attempts: number }[]>`select attempts from tracking_email order by attempts desc, id`).map((r) => r.attempts);
  // The pause ends and every email is due, as if the pause and the retry delays had passed.
  const timePasses = () =>
    db.sql`
    update rate_budget set paused_until = now() - interval '1 second' where paused_until > now();
    update tracking_email set next_attempt_at = now(), lease_until = case when state = 'sending' then now() end`.simple();

  vaNotify.state.faults.sendFailureRate = 1;
  t.same(
    await runJob(app, 'send'),
    { sent: 0, recovered: 0, retried: 2, failed: 0, released: 4, paused: true },
    "two emails in a row without an answer are one email's bad luck; the third is an outage",
  );
  t.same(await attempts(), [1, 1, 0, 0, 0, 0], 'only the first two were charged an attempt');
  const [pause] =
    await db.sql`select pause_kind, pause_reason, paused_until - now() between interval '50 seconds' and interval '60 seconds' as a_minute from rate_budget`;
  t.match(
    pause,
    { pause_kind: 'unavailable', pause_reason: /^VA Notify unavailable: .*503/, a_minute: true },
    'SEND_UNAVAILABLE_PAUSE_SECONDS on every instance',
  );
  const [waiting] =
    await db.sql`select count(*)::int as n from tracking_email where state = 'queued' and attempts = 0 and next_attempt_at > now() + interval '50 seconds'`;
  t.equal(waiting!.n, 4, 'handed back uncharged, due after the first retry delay');
  t.match(logs.text, /VA Notify is not answering: sending is paused on every instance/);
  t.match(await runJob(app, 'send'), { paused: true, sent: 0 }, 'held while the pause lasts');

  for (let probe = 1; probe <= 3; probe++) {
    await timePasses();
    t.match(
      await runJob(app, 'send'),
      { sent: 0, retried: 0, failed: 0, paused: true },
      `probe ${probe} after the pause: the first unanswered email pauses again`,
    );
  }
  t.same(await attempts(), [1, 1, 0, 0, 0, 0], 'three probes later, enough to use up SEND_MAX_ATTEMPTS, no email was charged again');
  const [states] = await db.sql`select count(*) filter (where state = 'failed')::int as failed from tracking_email`;
  t.equal(states!.failed, 0);

  vaNotify.state.faults.sendFailureRate = 0;
  await timePasses();
  t.match(await runJob(app, 'send'), { sent: 6, paused: false }, 'VA Notify is back: every email goes');
  t.same(await attempts(), [2, 2, 1, 1, 1, 1]);
  const [after] = await db.sql`select pause_kind, pause_reason from rate_budget`;
  t.same(after, { pause_kind: null, pause_reason: null }, 'an accepted send ends the probing');
  t.equal(vaNotify.state.counters.sendsAccepted, 6, 'each veteran got one email');

  await insertDispenses(db.sql, [{ patient_icn: icn(46), rx_number: '4000046', tracking_number: 'T46' }]);
  await runJob(app, 'grouping');
  vaNotify.state.forcedResponses.push({ status: 500 }, { status: 500 }, { status: 500 });
  t.match(
    await runJob(app, 'send'),
    { retried: 1, released: 0, paused: false },
    'one email without an answer, once confirmed up, is retried later as before',
  );
});

t.test('an outage of no answers at all: the emails VA Notify may have go back as orphans, uncharged', async (t) => {
  const { app, db, vaNotify } = await testApp(t, { VA_NOTIFY_TIMEOUT_MS: '200' });
  await insertDispenses(
    db.sql,
    Array.from({ length: 3 }, (_, i) => ({ patient_icn: icn(60 + i), rx_number: `${4000060 + i}`, tracking_number: `T${60 + i}` })),
  );
  await runJob(app, 'grouping');
  vaNotify.state.faults.latencyMs = 1_000;
  t.match(await runJob(app, 'send'), { sent: 0, retried: 2, released: 1, paused: true });
  vaNotify.state.faults.latencyMs = 0;
  const emails = await db.sql`
    select state, attempts, leased_by is null as unleased,
           lease_until between now() + interval '50 seconds' and now() + interval '60 seconds' as due_in_a_minute
      from tracking_email order by attempts desc`;
  t.same(
    [...emails],
    [
      { state: 'sending', attempts: 1, unleased: false, due_in_a_minute: false },
      { state: 'sending', attempts: 1, unleased: false, due_in_a_minute: false },
      { state: 'sending', attempts: 0, unleased: true, due_in_a_minute: true },
    ],
    'the first two left to expire with their lease, as before; the third handed back uncharged, an orphan still, looked up after the first retry delay',
  );
});

t.test("a shutdown that cuts an email's tries short says nothing of VA Notify: no pause, also right after one", async (t) => {
  const db = await testDatabase(t);
  const vaNotify = await startSandboxVaNotify({ callbackDelayMs: 0 });
  t.teardown(() => vaNotify.close());
  const config = testConfig({ VA_NOTIFY_RATE_LIMIT_PER_MINUTE: '0', SEND_CONCURRENCY: '1' });
  const log = createLogger('silent');
  await insertDispenses(db.sql, [{ patient_icn: icn(71), rx_number: '7000071', tracking_number: 'T71' }]);
  await runGrouping({ sql: db.sql, config, log });
  // A pause that ended a while ago, nothing sent since: the next unanswered email would pause again.
  await db.sql`update rate_budget set paused_until = now() - interval '5 minutes', pause_reason = 'Exceeded rate limit', pause_kind = 'rate_limit'`;
  vaNotify.state.faults.latencyMs = 300;
  vaNotify.state.forcedResponses.push({ status: 503 });
  const stopping = new AbortController();
  setTimeout(() => stopping.abort(), 100);
  const result = await runSend({
    sql: db.sql,
    config,
    log,
    signal: stopping.signal,
    vaNotify: vaNotifyClientFromConfig(config, vaNotify.url, SandboxDefaults),
    budget: createRateBudget(db.sql, 0),
  });
  t.match(result, { paused: false, sent: 0 });
  const [pause] = await db.sql`select paused_until > now() as paused from rate_budget`;
  t.equal(pause!.paused, false, 'one 503 met while stopping, which the quick retries would have absorbed, pauses no instance');
});

t.test('one email VA Notify never answers, among others it takes, pauses nothing and fails in the end', async (t) => {
  const { app, db, vaNotify } = await testApp(t, { SEND_MAX_ATTEMPTS: '2', SEND_CONCURRENCY: '1' });
  await insertDispenses(
    db.sql,
    Array.from({ length: 4 }, (_, i) => ({ patient_icn: icn(50 + i), rx_number: `${4000050 + i}`, tracking_number: `T${50 + i}` })),
  );
  await runJob(app, 'grouping');
  const [first] = await db.sql<{ id: string }[]>`select id from tracking_email order by next_attempt_at, id limit 1`;
  for (let round = 1; round <= 2; round++) {
    // One request at a time: the first email due meets the three 500s of its quick retries.
    vaNotify.state.forcedResponses.push({ status: 500 }, { status: 500 }, { status: 500 });
    const result = await runJob(app, 'send');
    t.match(result, { paused: false, released: 0 }, `round ${round}: not an outage`);
    await db.sql`update tracking_email set next_attempt_at = now() where state = 'queued'`;
  }
  const [poisoned] = await db.sql`select state, attempts, state_reason from tracking_email where id = ${first!.id}`;
  t.match(poisoned, { state: 'failed', attempts: 2, state_reason: /gave up after 2 attempts/ });
  const [others] = await db.sql`select count(*)::int as sent from tracking_email where state = 'sent'`;
  t.equal(others!.sent, 3);
});

t.test('an answer lost after VA Notify accepted: recovered by reference, never sent twice', async (t) => {
  const { app, db, vaNotify } = await testApp(t, { VA_NOTIFY_TIMEOUT_MS: '300' });
  await insertDispenses(db.sql, [{ patient_icn: icn(4), rx_number: '4000001', tracking_number: 'T4' }]);
  await runJob(app, 'grouping');
  vaNotify.state.forcedResponses.push({ acceptThenDrop: true });
  t.match(await runJob(app, 'send'), { sent: 0, recovered: 1 });
  t.equal(vaNotify.state.counters.sendsAccepted, 1);
  const [email] =
    await db.sql`select state, (select count(*) from notification n where n.tracking_email_id = e.id) as notifications from tracking_email e`;
  t.same(email, { state: 'sent', notifications: 1 });
});

t.test('a crash between the 201 and our commit: after the lease expires the email is recovered by reference', async (t) => {
  const { app, db, vaNotify, config } = await testApp(t);
  await insertDispenses(db.sql, [{ patient_icn: icn(5), rx_number: '5000001', tracking_number: 'T5' }]);
  await runJob(app, 'grouping');
  // The "crashed" sender: it claims and sends, and dies before recording anything.
  const [claimed] = await claimDueEmails(db.sql, {
    batchSize: 10,
    claim: { token: randomUUID(), instanceId: 'crashed', leaseSeconds: 60 },
  });
  const client = vaNotifyClientFromConfig(config, vaNotify.url, SandboxDefaults);
  const outcome = await client.sendEmail({ icn: claimed!.patient_icn, reference: claimed!.id, personalisation: claimed!.personalisation });
  t.equal(outcome.kind, 'accepted');
  t.match(await runJob(app, 'send'), { sent: 0, recovered: 0 }, 'a live lease is left alone');
  await db.sql`update tracking_email set lease_until = now() - interval '1 second'`;
  t.match(await runJob(app, 'send'), { sent: 0, recovered: 1 });
  t.equal(vaNotify.state.counters.sendsAccepted, 1, 'VA Notify received the email once');
  const [notification] = await db.sql`select id from notification`;
  t.equal(notification!.id, outcome.kind === 'accepted' ? outcome.notificationId : '');
});

t.test("a 400 fails the email with VA Notify's message; a 403 pauses sending without failing any", async (t) => {
  // One request at a time, so that the email due first meets the first forced answer: concurrent
  // sends reach VA Notify in whatever order their rate-budget round trips come back.
  const { app, db, vaNotify, logs } = await testApp(t, { SEND_CONCURRENCY: '1' });
  await insertDispenses(db.sql, [
    { patient_icn: icn(6), rx_number: '6000001', tracking_number: 'T6', arrived_minutes_ago: 200 },
    { patient_icn: icn(7), rx_number: '7000001', tracking_number: 'T7' },
  ]);
  await runJob(app, 'grouping');
  await db.sql`update tracking_email set next_attempt_at = now() - interval '1 minute' where patient_icn = ${icn(6)}`;
  vaNotify.state.forcedResponses.push({ status: 400, message: 'Missing personalisation: tracking_info' });
  vaNotify.state.forcedResponses.push({ status: 403, message: 'Invalid token: API key expired' });
  const result = await runJob(app, 'send');
  t.match(result, { sent: 0, failed: 1, released: 1, paused: true });
  const rows = await db.sql`select patient_icn, state, state_reason, attempts from tracking_email order by patient_icn`;
  t.match(rows[0], { state: 'failed', state_reason: 'VA Notify answered 400: Missing personalisation: tracking_info' });
  t.match(rows[1], { state: 'queued', attempts: 0 }, 'released untouched; the pause holds it');
  t.match(logs.text, /VA Notify rejected our credentials: sending is paused/);
  const [pause] = await db.sql`select pause_kind from rate_budget`;
  t.equal(pause!.pause_kind, 'credentials');
  t.match(await runJob(app, 'send'), { paused: true, sent: 0 });
  t.equal(vaNotify.state.counters.sendsAccepted, 0);
  await resumeSending(db.sql);
  t.match(await runJob(app, 'send'), { sent: 1, paused: false });
});

t.test('shadow and off call nobody', async (t) => {
  for (const mode of ['shadow', 'off']) {
    const { app, db, vaNotify } = await testApp(t, { DELIVERY_MODE: mode });
    await insertDispenses(db.sql, [{ patient_icn: icn(8), rx_number: '8000001', tracking_number: 'T8' }]);
    await runJob(app, 'grouping');
    t.same(
      await runJob(app, 'send'),
      { sent: 0, recovered: 0, retried: 0, failed: 0, released: 0, paused: false, deliveryMode: mode },
      mode,
    );
    t.equal(vaNotify.state.counters.sendsAccepted + vaNotify.state.counters.getsByReference, 0, `${mode}: no request`);
    const [row] = await db.sql`select count(*)::int as emails, min(state) as state from tracking_email`;
    t.same(row, mode === 'shadow' ? { emails: 1, state: 'shadowed' } : { emails: 0, state: null }, mode);
  }
});

t.test('three instances grouping and sending at once: 500 veterans, 500 emails, each sent once', async (t) => {
  const { sql, url } = await testDatabase(t);
  const sandbox: SandboxVaNotify = await startSandboxVaNotify({ callbackDelayMs: 0, rateLimitPerMinute: 100_000 });
  t.teardown(() => sandbox.close());
  const dispenses = [];
  for (let v = 0; v < 500; v++) {
    for (let k = 0; k < 4; k++)
      dispenses.push({ patient_icn: icn(v), rx_number: `${v}${k}`.padStart(7, '0'), tracking_number: `TRK${v}-${k % 2}` });
  }
  await insertDispenses(sql, dispenses);
  const config = testConfig({ GROUPING_BATCH_SIZE: '40', SEND_BATCH_SIZE: '30', VA_NOTIFY_RATE_LIMIT_PER_MINUTE: '0' });
  const log = createLogger('silent');
  const instance = async (n: number) => {
    const own = connect(url, { max: 3 });
    const vaNotify = vaNotifyClientFromConfig(config, sandbox.url, SandboxDefaults);
    const budget = createRateBudget(own, 0);
    try {
      for (let round = 0; round < 200; round++) {
        const grouped = await runGrouping({ sql: own, config, log });
        const sent = await runSend({ sql: own, config, vaNotify, budget, log, instanceId: `instance-${n}` });
        if (!grouped.skipped && grouped.emailsCreated === 0 && sent.sent === 0) {
          const [left] = await own`select count(*)::int as n from tracking_email where state in ('queued', 'sending')`;
          const [pending] = await own`select count(*)::int as n from medication_dispense where state = 'pending'`;
          if (left!.n === 0 && pending!.n === 0) return;
        }
      }
    } finally {
      await own.end();
    }
  };
  await Promise.all([instance(1), instance(2), instance(3)]);

  const [counts] = await sql`
    select (select count(*)::int from tracking_email) as emails,
           (select count(*)::int from tracking_email where state = 'sent') as sent,
           (select count(*)::int from notification) as notifications,
           (select count(*)::int from medication_dispense where state = 'grouped') as grouped,
           (select coalesce(sum(prescription_count), 0)::int from tracking_email) as listed`;
  t.same(counts, { emails: 500, sent: 500, notifications: 500, grouped: 2000, listed: 2000 });
  t.equal(sandbox.state.counters.sendsAccepted, 500, 'VA Notify received 500 sends');
  const references = new Set([...sandbox.state.notifications.values()].map((n) => n.request.reference));
  t.equal(references.size, 500, 'one send per email');
  const icns = new Set([...sandbox.state.notifications.values()].map((n) => n.recipientIdentifier?.id_value));
  t.equal(icns.size, 500, 'one email per veteran');
});

t.test('a claim hands emails over in the order they fell due, not the order they were stored', async (t) => {
  const { sql } = await testDatabase(t);
  const veterans = Array.from({ length: 300 }, (_, v) => v);
  await insertDispenses(
    sql,
    veterans.map((v) => ({ patient_icn: icn(20 + v), rx_number: `${2000000 + v}`, tracking_number: `T${v}` })),
  );
  await runGrouping({ sql, config: testConfig(), log: createLogger('silent') });
  // Due in the reverse of the order the rows were stored, read before the update moves them.
  const stored = await sql<{ id: string; patient_icn: string }[]>`select id, patient_icn from tracking_email order by ctid`;
  await sql`
    update tracking_email e set next_attempt_at = now() - make_interval(mins => r.rank::int)
      from unnest(${stored.map((e) => e.id)}::uuid[]) with ordinality as r(id, rank)
     where e.id = r.id`;
  await sql`analyze tracking_email`;
  const claimed = await claimDueEmails(sql, { batchSize: 300, claim: { token: randomUUID(), instanceId: 'test', leaseSeconds: 60 } });
  t.same(
    claimed.map((e) => e.patient_icn),
    stored.map((e) => e.patient_icn).reverse(),
  );
});

t.test('the daily send limit pauses sending until the next UTC day; a 404 pauses it; neither fails an email', async (t) => {
  const { app, db, vaNotify, logs } = await testApp(t, { SEND_CONCURRENCY: '1' });
  await insertDispenses(db.sql, [{ patient_icn: icn(30), rx_number: '3000030', tracking_number: 'T30' }]);
  await runJob(app, 'grouping');

  vaNotify.state.forcedResponses.push({ status: 429, error: 'TooManyRequestsError', message: 'Exceeded send limits (1000) for today' });
  t.match(await runJob(app, 'send'), { sent: 0, failed: 0, released: 1, paused: true });
  const [daily] = await db.sql`
    select abs(extract(epoch from paused_until - (date_trunc('day', now() at time zone 'UTC') + interval '1 day') at time zone 'UTC')) < 2 as next_utc_day,
           pause_kind, pause_reason from rate_budget`;
  t.match(daily, { next_utc_day: true, pause_kind: 'daily_limit', pause_reason: 'Exceeded send limits (1000) for today' });
  t.match(logs.text, /daily send limit is reached: sending is paused on every instance until the next UTC day/);

  await resumeSending(db.sql);
  vaNotify.state.forcedResponses.push({ status: 404, message: 'The requested URL was not found on the server.' });
  t.match(await runJob(app, 'send'), { sent: 0, failed: 0, released: 1, paused: true });
  const [pause] = await db.sql`select paused_until - now() > interval '200 seconds' as long, pause_kind from rate_budget`;
  t.same(pause, { long: true, pause_kind: 'no_endpoint' }, 'SEND_PAUSE_SECONDS, as for refused credentials');
  t.match(logs.text, /no send endpoint at the configured URL: sending is paused on every instance; check VA_NOTIFY_BASE_URL/);

  const [email] = await db.sql`select state, attempts from tracking_email`;
  t.same(email, { state: 'queued', attempts: 0 }, 'never charged, never failed');
  await resumeSending(db.sql);
  t.match(await runJob(app, 'send'), { sent: 1 });
  t.equal(vaNotify.state.counters.sendsAccepted, 1);
});

t.test('a gateway 502 may hide an accepted send: looked up before the next try; a 500 is not', async (t) => {
  const { app, db, vaNotify } = await testApp(t);
  await insertDispenses(db.sql, [{ patient_icn: icn(31), rx_number: '3000031', tracking_number: 'T31' }]);
  await runJob(app, 'grouping');
  vaNotify.state.forcedResponses.push({ status: 502 });
  t.match(await runJob(app, 'send'), { sent: 1 });
  t.equal(vaNotify.state.counters.getsByReference, 1, 'one lookup after the 502');

  await insertDispenses(db.sql, [{ patient_icn: icn(32), rx_number: '3000032', tracking_number: 'T32' }]);
  await runJob(app, 'grouping');
  vaNotify.state.forcedResponses.push({ status: 500 });
  t.match(await runJob(app, 'send'), { sent: 1 });
  t.equal(vaNotify.state.counters.getsByReference, 1, 'none after the 500');
  t.equal(vaNotify.state.counters.sendsAccepted, 2);
});

/** An email whose sender claimed it and vanished: its lease has run out with nothing recorded. */
async function orphan(sql: Sql, attempts?: number) {
  const [claimed] = await claimDueEmails(sql, { batchSize: 1, claim: { token: randomUUID(), instanceId: 'crashed', leaseSeconds: 60 } });
  await sql`update tracking_email set lease_until = now() - interval '1 second', attempts = coalesce(${attempts ?? null}::int, attempts)
             where id = ${claimed!.id}`;
  return claimed!;
}

/**
 * One veteran's email whose sender sent it, VA Notify accepting it, and died before recording
 * anything: an orphan the veteran already has. Returns a client for the sandbox VA Notify.
 */
async function acceptedOrphan(app: Pick<Awaited<ReturnType<typeof testApp>>, 'db' | 'vaNotify' | 'config'>, veteran: number) {
  const { db, vaNotify, config } = app;
  await insertDispenses(db.sql, [{ patient_icn: icn(veteran), rx_number: `${3000000 + veteran}`, tracking_number: `T${veteran}` }]);
  await runGrouping({ sql: db.sql, config, log: createLogger('silent') });
  const lost = await orphan(db.sql);
  const client = vaNotifyClientFromConfig(config, vaNotify.url, SandboxDefaults);
  const outcome = await client.sendEmail({ icn: lost.patient_icn, reference: lost.id, personalisation: lost.personalisation });
  if (outcome.kind !== 'accepted') throw new Error(`the direct send was not accepted: ${outcome.kind}`);
  return client;
}

t.test('an orphan VA Notify cannot be asked about stays an orphan, without failing the run', async (t) => {
  const { app, db, vaNotify } = await testApp(t, { VA_NOTIFY_TIMEOUT_MS: '300' });
  await insertDispenses(db.sql, [{ patient_icn: icn(33), rx_number: '3000033', tracking_number: 'T33' }]);
  await runJob(app, 'grouping');
  const lost = await orphan(db.sql);
  vaNotify.state.faults.latencyMs = 1_000;
  const response = await app.inject({ method: 'POST', url: '/v1/jobs/send', headers: internalAuth });
  t.equal(response.statusCode, 200, 'the run ends normally');
  t.match(response.json(), { sent: 0, retried: 1 });
  vaNotify.state.faults.latencyMs = 0;
  const [email] = await db.sql`select state, lease_until > now() as leased from tracking_email where id = ${lost.id}`;
  t.same(email, { state: 'sending', leased: true }, 'its claim expires, and it is looked up again');
  t.equal(vaNotify.state.counters.sendsAccepted, 0, 'never sent without an answer to the lookup');
  await vaNotify.whenIdle();
});

t.test('an orphan handed back unlooked-up (a 403 on its lookup) stays an orphan: looked up, not sent, after the pause', async (t) => {
  const { db, vaNotify, config } = await testApp(t);
  const client = await acceptedOrphan({ db, vaNotify, config }, 34);

  const refused = vaNotifyClientFromConfig(config, vaNotify.url, { ...SandboxDefaults, secret: 'not-the-sandbox-secret-0001' });
  const budget = createRateBudget(db.sql, 0);
  const log = createLogger('silent');
  t.match(await runSend({ sql: db.sql, config, vaNotify: refused, budget, log }), { paused: true, released: 1, failed: 0 });
  const [email] = await db.sql`select state, attempts, lease_until <= now() as expired, lease_token from tracking_email`;
  t.same(
    email,
    { state: 'sending', attempts: 1, expired: true, lease_token: null },
    'an orphan still; the lost claim keeps its attempt, this one is refunded',
  );

  await resumeSending(db.sql);
  t.match(await runSend({ sql: db.sql, config, vaNotify: client, budget, log }), { sent: 0, recovered: 1 });
  t.equal(vaNotify.state.counters.sendsAccepted, 1, 'the veteran got one email');
});

t.test('a database error between the tries of an orphan does not skip its lookup', async (t) => {
  const { db, vaNotify, config } = await testApp(t);
  const client = await acceptedOrphan({ db, vaNotify, config }, 36);
  // The budget's first round trip fails as a dropped connection would; the retry follows.
  let failNext = true;
  const budget: RateBudget = {
    async take() {
      if (failNext) {
        failNext = false;
        throw new Error('Connection terminated unexpectedly');
      }
    },
  };
  const result = await runSend({
    sql: db.sql,
    config,
    vaNotify: client,
    budget,
    log: createLogger('silent'),
    quickRetry: { retries: 2, minTimeoutMs: 10 },
  });
  t.match(result, { sent: 0, recovered: 1 });
  t.equal(vaNotify.state.counters.sendsAccepted, 1, 'the veteran got one email');
});

t.test('a 201 whose body cannot be read is looked up, not sent again', async (t) => {
  const { app, db, vaNotify } = await testApp(t);
  await insertDispenses(db.sql, [{ patient_icn: icn(37), rx_number: '3000037', tracking_number: 'T37' }]);
  await runJob(app, 'grouping');
  vaNotify.state.forcedResponses.push({ acceptWithUnreadableBody: true });
  t.match(await runJob(app, 'send'), { sent: 0, recovered: 1 });
  t.equal(vaNotify.state.counters.sendsAccepted, 1, 'the veteran got one email');
});

t.test('a claim taken over by an instance that writes no token is not renewed by the one that lost it', async (t) => {
  const { sql } = await testDatabase(t);
  await insertDispenses(sql, [{ patient_icn: icn(38), rx_number: '3000038', tracking_number: 'T38' }]);
  await runGrouping({ sql, config: testConfig(), log: createLogger('silent') });
  const claim = { token: randomUUID(), instanceId: 'new-version', leaseSeconds: 60 };
  const [claimed] = await claimDueEmails(sql, { batchSize: 1, claim });
  t.ok(await renewLease(sql, claimed!.id, claim));
  // An instance of the previous version claims the expired email: leased_by changes, the token stays.
  await sql`update tracking_email set leased_by = 'old-version', lease_until = now() + interval '60 seconds'`;
  t.notOk(await renewLease(sql, claimed!.id, claim), 'no request may be made under the lost claim');
  t.equal(await releaseClaimedEmails(sql, [claimed!.id], claim), 0, 'nor is the email handed back');
});

t.test('an orphan VA Notify has no notification for, with every attempt used, fails unsent', async (t) => {
  const { app, db, vaNotify } = await testApp(t, { SEND_MAX_ATTEMPTS: '3' });
  await insertDispenses(db.sql, [{ patient_icn: icn(35), rx_number: '3000035', tracking_number: 'T35' }]);
  await runJob(app, 'grouping');
  await orphan(db.sql, 3);
  t.match(await runJob(app, 'send'), { sent: 0, failed: 1 });
  const [email] = await db.sql`select state, state_reason from tracking_email`;
  t.same(email, {
    state: 'failed',
    state_reason: 'gave up after 3 attempts: the last send was never confirmed and VA Notify has no notification for it',
  });
  t.equal(vaNotify.state.counters.getsByReference, 1);
  t.equal(vaNotify.state.counters.sendsAccepted, 0);
});

t.test('a sender whose lease ran out mid-run does not send what another sender claimed since', async (t) => {
  // One request at a time, each answered after 1 s: the run's fifth email comes up about 4 s after
  // its claim, past the claim's 3 s lease. A second sender claims the expired emails in between.
  const { db, vaNotify, config } = await testApp(t, {
    SEND_CONCURRENCY: '1',
    SEND_LEASE_SECONDS: '3',
    VA_NOTIFY_TIMEOUT_MS: '1500',
    VA_NOTIFY_RATE_LIMIT_PER_MINUTE: '0',
  });
  const veterans = [40, 41, 42, 43, 44];
  await insertDispenses(
    db.sql,
    veterans.map((v) => ({ patient_icn: icn(v), rx_number: `${4000000 + v}`, tracking_number: `T${v}` })),
  );
  const log = createLogger('silent');
  await runGrouping({ sql: db.sql, config, log });
  vaNotify.state.faults.latencyMs = 1_000;
  const client = vaNotifyClientFromConfig(config, vaNotify.url, SandboxDefaults);
  const budget = createRateBudget(db.sql, 0);

  const first = runSend({ sql: db.sql, config, vaNotify: client, budget, log, instanceId: 'first' });
  // Wait for the first run's claim to expire (measured from the claim itself, not from a clock here).
  for (;;) {
    const [row] =
      await db.sql`select count(*)::int as expired from tracking_email where state = 'sending' and leased_by = 'first' and lease_until < now()`;
    if (row!.expired > 0) break;
    await sleep(50);
  }
  const second = await runSend({ sql: db.sql, config, vaNotify: client, budget, log, instanceId: 'second' });
  const firstResult = await first;
  t.ok(second.sent + second.recovered >= 1, 'the second sender took over what the first had not started');
  t.ok(firstResult.released >= 1, 'the first sender left those alone');
  t.equal(firstResult.sent + second.sent + second.recovered, veterans.length);
  await vaNotify.whenIdle();
  const icns = [...vaNotify.state.notifications.values()].map((n) => n.recipientIdentifier?.id_value);
  t.equal(icns.length, veterans.length, 'one send per email');
  t.equal(new Set(icns).size, veterans.length, 'each veteran got one email');
  const [states] = await db.sql`select count(*) filter (where state = 'sent')::int as sent, count(*)::int as emails from tracking_email`;
  t.same(states, { sent: veterans.length, emails: veterans.length });
});
