// The sender against the sandbox VA Notify: one email per veteran, exactly once, whatever fails.
import t from 'tap';
import { connect } from '../../src/db/connect.ts';
import { testConfig } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';
import { runGrouping } from '../../src/grouping/grouping-job.ts';
import { createRateBudget, resumeSending } from '../../src/sending/rate-budget.ts';
import { claimDueEmails } from '../../src/sending/repository.ts';
import { runSend } from '../../src/sending/sender.ts';
import { vaNotifyClientFromConfig } from '../../src/sending/va-notify-client.ts';
import { sandboxDefaults, startSandboxVaNotify, type SandboxVaNotify } from '../../src/sandbox/va-notify.ts';
import { testApp, internalAuth } from '../helpers/app.ts';
import { testDatabase } from '../helpers/database.ts';
import { icn, insertDispenses } from '../helpers/fixtures.ts';

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

const post = (app: Awaited<ReturnType<typeof testApp>>['app'], job: string) =>
  app.inject({ method: 'POST', url: `/v1/jobs/${job}`, headers: internalAuth }).then((r) => r.json());

t.test('one email per veteran, by ICN, with only the properties the contract allows', async (t) => {
  const { app, db, vaNotify, logs } = await testApp(t);
  await twoVeterans(db.sql);
  t.same(await post(app, 'grouping'), { emailsCreated: 2, dispensesGrouped: 4, dispensesExcluded: 0, skipped: false });
  t.same(await post(app, 'send'), { sent: 2, recovered: 0, retried: 0, failed: 0, skipped: 0, paused: false });

  const received = [...vaNotify.state.notifications.values()];
  t.equal(received.length, 2);
  const byIcn = new Map(received.map((n) => [n.recipientIdentifier?.id_value, n]));
  t.same([...byIcn.keys()].sort(), [alpha, bravo]);
  for (const notification of received) {
    t.same(Object.keys(notification.request).sort(), ['personalisation', 'recipient_identifier', 'reference', 'template_id']);
    t.equal(notification.recipientIdentifier?.id_type, 'ICN');
    t.equal(notification.request.template_id, sandboxDefaults.templateId);
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
  t.same(await post(app, 'send'), { sent: 0, recovered: 0, retried: 0, failed: 0, skipped: 0, paused: false }, 'nothing sent twice');
  t.notMatch(logs.text, alpha);
  t.notMatch(logs.text, bravo);
});

t.test('transient failures are retried until VA Notify takes the email', async (t) => {
  const { app, db, vaNotify } = await testApp(t, { VA_NOTIFY_TIMEOUT_MS: '300' });
  await insertDispenses(db.sql, [{ patient_icn: icn(1), rx_number: '1000001', tracking_number: 'T1' }]);
  await post(app, 'grouping');
  vaNotify.state.forcedResponses.push({ status: 500 }, { status: 503 });
  t.match(await post(app, 'send'), { sent: 1, retried: 0, failed: 0 }, 'quick retries absorb two 5xx');

  await insertDispenses(db.sql, [{ patient_icn: icn(2), rx_number: '2000001', tracking_number: 'T2' }]);
  await post(app, 'grouping');
  vaNotify.state.forcedResponses.push({ status: 429 }, { status: 429 }, { status: 429 });
  t.match(await post(app, 'send'), { sent: 0, retried: 1 }, 'a 429 three times: retried later');
  const [waiting] = await db.sql`select state, attempts, next_attempt_at > now() as later, last_error from tracking_email where patient_icn = ${icn(2)}`;
  t.match(waiting, { state: 'queued', attempts: 1, later: true, last_error: /rate limit/ });
  await db.sql`update tracking_email set next_attempt_at = now() where patient_icn = ${icn(2)}`;
  t.match(await post(app, 'send'), { sent: 1 });
  const [sent] = await db.sql`select state, attempts from tracking_email where patient_icn = ${icn(2)}`;
  t.same(sent, { state: 'sent', attempts: 2 });

  await insertDispenses(db.sql, [{ patient_icn: icn(3), rx_number: '3000001', tracking_number: 'T3' }]);
  await post(app, 'grouping');
  vaNotify.state.forcedResponses.push({ hang: true });
  t.match(await post(app, 'send'), { sent: 1 }, 'a timeout, then a lookup by reference, then a send');
  const toThree = [...vaNotify.state.notifications.values()].filter((n) => n.recipientIdentifier?.id_value === icn(3));
  t.equal(toThree.length, 1, 'the veteran got one email');
});

t.test('an answer lost after VA Notify accepted: recovered by reference, never sent twice', async (t) => {
  const { app, db, vaNotify } = await testApp(t, { VA_NOTIFY_TIMEOUT_MS: '300' });
  await insertDispenses(db.sql, [{ patient_icn: icn(4), rx_number: '4000001', tracking_number: 'T4' }]);
  await post(app, 'grouping');
  vaNotify.state.forcedResponses.push({ acceptThenDrop: true });
  t.match(await post(app, 'send'), { sent: 0, recovered: 1 });
  t.equal(vaNotify.state.counters.sendsAccepted, 1);
  const [email] = await db.sql`select state, (select count(*) from notification n where n.tracking_email_id = e.id) as notifications from tracking_email e`;
  t.same(email, { state: 'sent', notifications: 1 });
});

t.test('a crash between the 201 and our commit: after the lease expires the email is recovered by reference', async (t) => {
  const { app, db, vaNotify, config } = await testApp(t);
  await insertDispenses(db.sql, [{ patient_icn: icn(5), rx_number: '5000001', tracking_number: 'T5' }]);
  await post(app, 'grouping');
  // The "crashed" sender: it claims and sends, and dies before recording anything.
  const [claimed] = await claimDueEmails(db.sql, { batchSize: 10, leaseSeconds: 60, instanceId: 'crashed' });
  const client = vaNotifyClientFromConfig(config, vaNotify.url, sandboxDefaults);
  const outcome = await client.sendEmail({ icn: claimed!.patient_icn, reference: claimed!.id, personalisation: claimed!.personalisation });
  t.equal(outcome.kind, 'accepted');
  t.match(await post(app, 'send'), { sent: 0, recovered: 0 }, 'a live lease is left alone');
  await db.sql`update tracking_email set lease_until = now() - interval '1 second'`;
  t.match(await post(app, 'send'), { sent: 0, recovered: 1 });
  t.equal(vaNotify.state.counters.sendsAccepted, 1, 'VA Notify received the email once');
  const [notification] = await db.sql`select id from notification`;
  t.equal(notification!.id, outcome.kind === 'accepted' ? outcome.notificationId : '');
});

t.test('a 400 fails the email with VA Notify\'s message; a 403 pauses sending without failing any', async (t) => {
  // One request at a time, so that the email due first meets the first forced answer: concurrent
  // sends reach VA Notify in whatever order their rate-budget round trips come back.
  const { app, db, vaNotify, logs } = await testApp(t, { SEND_CONCURRENCY: '1' });
  await insertDispenses(db.sql, [
    { patient_icn: icn(6), rx_number: '6000001', tracking_number: 'T6', arrived_minutes_ago: 200 },
    { patient_icn: icn(7), rx_number: '7000001', tracking_number: 'T7' },
  ]);
  await post(app, 'grouping');
  await db.sql`update tracking_email set next_attempt_at = now() - interval '1 minute' where patient_icn = ${icn(6)}`;
  vaNotify.state.forcedResponses.push({ status: 400, message: 'Missing personalisation: tracking_info' });
  vaNotify.state.forcedResponses.push({ status: 403, message: 'Invalid token: API key expired' });
  const result = await post(app, 'send');
  t.match(result, { sent: 0, failed: 1, skipped: 1, paused: true });
  const rows = await db.sql`select patient_icn, state, state_reason, attempts, next_attempt_at > now() as later from tracking_email order by patient_icn`;
  t.match(rows[0], { state: 'failed', state_reason: 'VA Notify answered 400: Missing personalisation: tracking_info' });
  t.match(rows[1], { state: 'queued', attempts: 0, later: true }, 'released untouched until the pause ends');
  t.match(logs.text, /VA Notify rejected our credentials: sending is paused/);
  t.match(await post(app, 'send'), { paused: true, sent: 0 });
  t.equal(vaNotify.state.counters.sendsAccepted, 0);
  await resumeSending(db.sql);
  await db.sql`update tracking_email set next_attempt_at = now() where state = 'queued'`;
  t.match(await post(app, 'send'), { sent: 1, paused: false });
});

t.test('shadow and off call nobody', async (t) => {
  for (const mode of ['shadow', 'off']) {
    const { app, db, vaNotify } = await testApp(t, { DELIVERY_MODE: mode });
    await insertDispenses(db.sql, [{ patient_icn: icn(8), rx_number: '8000001', tracking_number: 'T8' }]);
    await post(app, 'grouping');
    t.same(await post(app, 'send'), { sent: 0, recovered: 0, retried: 0, failed: 0, skipped: 0, paused: false }, mode);
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
    for (let k = 0; k < 4; k++) dispenses.push({ patient_icn: icn(v), rx_number: `${v}${k}`.padStart(7, '0'), tracking_number: `TRK${v}-${k % 2}` });
  }
  await insertDispenses(sql, dispenses);
  const config = testConfig({ GROUPING_BATCH_SIZE: '40', SEND_BATCH_SIZE: '30', VA_NOTIFY_RATE_LIMIT_PER_MINUTE: '0' });
  const log = createLogger('silent');
  const instance = async (n: number) => {
    const own = connect(url, { max: 3 });
    const vaNotify = vaNotifyClientFromConfig(config, sandbox.url, sandboxDefaults);
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
  await insertDispenses(sql, veterans.map((v) => ({ patient_icn: icn(20 + v), rx_number: `${2000000 + v}`, tracking_number: `T${v}` })));
  await runGrouping({ sql, config: testConfig(), log: createLogger('silent') });
  // Due in the reverse of the order the rows were stored (and of their ids).
  await sql`
    update tracking_email e set next_attempt_at = now() - make_interval(mins => r.rank::int)
      from (select id, row_number() over (order by ctid) as rank from tracking_email) r
     where e.id = r.id`;
  const stored = await sql<{ patient_icn: string }[]>`select patient_icn from tracking_email order by ctid`;
  await sql`analyze tracking_email`;
  const claimed = await claimDueEmails(sql, { batchSize: 300, leaseSeconds: 60, instanceId: 'test' });
  t.same(claimed.map((e) => e.patient_icn), stored.map((e) => e.patient_icn).reverse());
});
