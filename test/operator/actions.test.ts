// An operator resends emails that did not reach their veterans and retries AAL events that failed,
// against the sandbox VA Notify and AAL: each is sent or posted once more, exactly once, and nothing
// that reached its veteran or MHV is sent or posted twice.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import type { Sql } from '../../src/db/connect.ts';
import { PreferencesDeclinedReason, type SandboxVaNotify } from '../../src/sandbox/va-notify.ts';
import { callbackToken, internalAuth, testApp, type TestApp, runJob } from '../support/app.ts';
import { icn, insertDispenses } from '../support/fixtures.ts';
import { callbackBody } from '../support/status.ts';

type App = TestApp['app'];

const get = (app: App, url: string) => app.inject({ method: 'GET', url, headers: internalAuth });
const resend = (app: App, body: unknown) =>
  app.inject({ method: 'POST', url: '/v1/tracking-emails/resend', headers: internalAuth, payload: body as object });
const retryAal = (app: App, body: unknown) =>
  app.inject({ method: 'POST', url: '/v1/aal-events/retry', headers: internalAuth, payload: body as object });

/** One veteran, one package, one prescription. ICNs ending 000001 are declined by the sandbox. */
const veteran = (n: number) => ({
  patient_icn: icn(n),
  rx_number: `${n}`.padStart(7, '7'),
  tracking_number: `1Z${String(n).padStart(16, '0')}`,
  mhv_correlation_id: String(15_000_000 + n),
});

async function settle(vaNotify: SandboxVaNotify, sql: Sql): Promise<void> {
  await vaNotify.whenIdle();
  for (let i = 0; i < 100; i++) {
    const [row] = await sql<
      { n: number }[]
    >`select count(*)::int as n from notification where status in ('created', 'sending', 'pending', 'sent')`;
    if (row!.n === 0) return;
    await sleep(20);
  }
}

const emailOf = async (sql: Sql, n: number) => {
  const [row] = await sql<{ id: string; state: string }[]>`
    select id, state from tracking_email where patient_icn = ${icn(n)} and resent_from is null`;
  return row!;
};

t.test('a template fault, mended: the failed emails are resent, delivered and logged to MHV once each', async (t) => {
  const { app, db, vaNotify, aal, logs } = await testApp(t, {}, { listen: true });
  const [faultA, faultB, delivered, declined] = [11, 12, 13, 1];

  // VA Notify refuses two emails for a placeholder the template asks for and the service does not send.
  await insertDispenses(db.sql, [veteran(faultA), veteran(faultB)]);
  await runJob(app, 'grouping');
  vaNotify.state.forcedResponses.push(
    { status: 400, message: 'Missing personalisation: pharmacy_phone' },
    { status: 400, message: 'Missing personalisation: pharmacy_phone' },
  );
  t.match(await runJob(app, 'send'), { sent: 0, failed: 2 });
  // Two more: one delivered, one declined by the veteran's VA Profile preferences.
  await insertDispenses(db.sql, [veteran(delivered), veteran(declined)]);
  await runJob(app, 'grouping');
  t.match(await runJob(app, 'send'), { sent: 2 });
  await settle(vaNotify, db.sql);
  t.match(await runJob(app, 'aal'), { posted: 1 });

  const a = await emailOf(db.sql, faultA);
  const b = await emailOf(db.sql, faultB);
  const c = await emailOf(db.sql, delivered);
  const d = await emailOf(db.sql, declined);
  t.same([a.state, b.state, c.state, d.state], ['failed', 'failed', 'delivered', 'permanent_failure']);
  t.match((await get(app, `/v1/tracking-emails/${a.id}`)).json(), { stateReason: /Missing personalisation: pharmacy_phone/ });
  t.match((await get(app, `/v1/tracking-emails/${d.id}`)).json(), { stateReason: PreferencesDeclinedReason });

  // The template is mended, and the declining veteran has changed their preferences.
  vaNotify.state.outcomeOverrides.set(icn(declined), { status: 'delivered', statusReason: null });
  const unknown = randomUUID();
  type Result = { id: string; outcome: string; resentAs?: string; state?: string; reason?: string };
  const response = await resend(app, { ids: [a.id, b.id, c.id, d.id, unknown], reason: 'template mended, ticket OPS-4821' });
  t.equal(response.statusCode, 200, response.body);
  const results = response.json().results as Result[];
  t.same(
    results.map((r) => [r.id, r.outcome]),
    [
      [a.id, 'resent'],
      [b.id, 'resent'],
      [c.id, 'not_resendable'],
      [d.id, 'not_resendable'],
      [unknown, 'not_found'],
    ],
  );
  t.match(results[2], { state: 'delivered', reason: /reported it delivered/ });
  // VA Notify reported on the declined send moments ago: a delayed `delivered` could still come.
  t.match(results[3], { state: 'permanent_failure', reason: /may still report on its last send.*resend from \d{4}-/ });
  await db.sql`update notification set last_event_at = now() - interval '7 hours' where tracking_email_id = ${d.id}`;
  const later = (await resend(app, { ids: [d.id], reason: 'template mended, ticket OPS-4821' })).json().results as Result[];
  t.match(later, [{ id: d.id, outcome: 'resent' }], 'resent once its last news is older than the callback retries');
  const copies = new Map([...results, ...later].filter((r) => r.resentAs).map((r) => [r.id, r.resentAs!]));

  // Each copy: queued, the same recipient and text, its dispenses moved over, the old one untouched.
  const rows = await db.sql<
    { id: string; resent_from: string; state: string; same: boolean; dispenses: number; left: number; old_state: string }[]
  >`
    select n.id, n.resent_from, n.state,
           n.patient_icn = o.patient_icn and n.personalisation = o.personalisation and n.mhv_correlation_id is not distinct from o.mhv_correlation_id as same,
           (select count(*)::int from medication_dispense m where m.tracking_email_id = n.id) as dispenses,
           (select count(*)::int from medication_dispense m where m.tracking_email_id = o.id) as left,
           o.state as old_state
      from tracking_email n join tracking_email o on o.id = n.resent_from`;
  t.equal(rows.length, 3);
  for (const row of rows) {
    t.equal(copies.get(row.resent_from), row.id);
    t.match(row, { state: 'queued', same: true, dispenses: 1, left: 0, old_state: 'resent' });
  }

  const oldView = (await get(app, `/v1/tracking-emails/${a.id}`)).json();
  t.match(oldView, {
    state: 'resent',
    stateReason: /Missing personalisation: pharmacy_phone/,
    resentAs: copies.get(a.id),
    resentFrom: null,
    dispenses: [],
  });
  const newView = (await get(app, `/v1/tracking-emails/${copies.get(a.id)}`)).json();
  t.match(newView, { state: 'queued', resentFrom: a.id, resentAs: null, resendReason: 'template mended, ticket OPS-4821', attempts: 0 });
  t.equal(newView.dispenses.length, 1);
  const queued = (await get(app, '/v1/tracking-emails?state=queued')).json().emails as { id: string; resentFrom: string }[];
  t.same(queued.map((e) => e.resentFrom).sort(), [a.id, b.id, d.id].sort());

  // Sent under their own ids as references, delivered, and one AAL event each.
  t.match(await runJob(app, 'send'), { sent: 3, failed: 0 });
  await settle(vaNotify, db.sql);
  const references = [...vaNotify.state.notifications.values()].map((n) => n.request.reference);
  for (const copy of copies.values())
    t.equal(references.filter((r) => r === copy).length, 1, 'the new email is sent once, under its own reference');
  for (const original of [a.id, b.id]) t.notOk(references.includes(original), 'a send VA Notify refused left no notification');
  t.match(await runJob(app, 'aal'), { posted: 3 });
  const aalRows = await db.sql<
    { tracking_email_id: string; detail_value: string }[]
  >`select tracking_email_id, detail_value from aal_event`;
  t.same(aalRows.map((r) => r.tracking_email_id).sort(), [c.id, ...copies.values()].sort(), 'one AAL event per delivered email');
  t.match(
    aalRows.find((r) => r.tracking_email_id === copies.get(a.id)),
    { detail_value: `Packages: UPS ${veteran(faultA).tracking_number} (Rx ending ${veteran(faultA).rx_number.slice(-4)})` },
  );
  t.equal(aal.state.events.length, 4);

  // Asked again: the resend that exists, nothing sent; and a delivered copy is not resent.
  const again = (await resend(app, { ids: [a.id, copies.get(a.id)], reason: 'asked twice' })).json().results;
  t.match(again, [
    { id: a.id, outcome: 'already_resent', resentAs: copies.get(a.id) },
    { id: copies.get(a.id), outcome: 'not_resendable', state: 'delivered', reason: /reported it delivered/ },
  ]);
  const [emails] = await db.sql<{ count: number }[]>`select count(*)::int as count from tracking_email`;
  t.equal(emails?.count, 7);
  t.match(await runJob(app, 'send'), { sent: 0 });

  t.match(logs.text, /tracking emails resent by an operator/);
  t.notMatch(logs.text, /OPS-4821/, "the operator's free text stays out of the log");
  for (const n of [faultA, faultB, delivered, declined]) t.notMatch(logs.text, icn(n), 'no ICN in the log');
});

t.test('an email delivered, then bounced, is not resent; a resent email stays resent whatever VA Notify says late', async (t) => {
  const { app, db, vaNotify } = await testApp(t, { REPLAY_DELAY_MINUTES: '0' }, { listen: true });
  const callback = (body: Record<string, unknown>) =>
    app.inject({ method: 'POST', url: '/v1/va-notify/callbacks', headers: { authorization: `Bearer ${callbackToken}` }, payload: body });
  const [bounced, declined] = [41, 1];
  await insertDispenses(db.sql, [veteran(bounced), veteran(declined)]);
  await runJob(app, 'grouping');
  await runJob(app, 'send');
  await settle(vaNotify, db.sql);
  const notificationOf = async (emailId: string) =>
    (
      await db.sql<
        { id: string; completed: Date }[]
      >`select id, status_completed_at as completed from notification where tracking_email_id = ${emailId}`
    )[0]!;

  // Delivered, then a hard bounce: the email was delivered (sql/012), and has its AAL event.
  const first = await emailOf(db.sql, bounced);
  const delivery = await notificationOf(first.id);
  const bounce = callbackBody(delivery.id, {
    reference: first.id,
    status: 'permanent-failure',
    status_reason: 'Hard bounce',
    completed_at: new Date(delivery.completed.getTime() + 60_000).toISOString(),
  });
  t.equal((await callback(bounce)).statusCode, 200);
  t.equal((await emailOf(db.sql, bounced)).state, 'permanent_failure');
  const second = await emailOf(db.sql, declined);
  const declinedSend = await notificationOf(second.id);
  await db.sql`update notification set last_event_at = now() - interval '7 hours'`;
  vaNotify.state.outcomeOverrides.set(icn(declined), { status: 'delivered', statusReason: null });
  const results = (await resend(app, { ids: [first.id, second.id], reason: 'checking' })).json().results;
  t.match(results, [
    { id: first.id, outcome: 'not_resendable', state: 'permanent_failure', reason: /reported it delivered/ },
    { id: second.id, outcome: 'resent' },
  ]);
  t.match(await runJob(app, 'send'), { sent: 1 });
  await settle(vaNotify, db.sql);

  // A status completed later than the decline, about the old send: it moves that notification only.
  const late = callbackBody(declinedSend.id, {
    reference: second.id,
    status: 'temporary-failure',
    status_reason: 'Retryable',
    completed_at: new Date(declinedSend.completed.getTime() + 60_000).toISOString(),
  });
  t.equal((await callback(late)).statusCode, 200);
  t.match(await db.sql`select status from notification where id = ${declinedSend.id}`, [{ status: 'temporary-failure' }]);
  t.match(
    await db.sql`select state from tracking_email where id = ${second.id}`,
    [{ state: 'resent' }],
    'no late status moves a resent email',
  );
  t.match(await runJob(app, 'sweep'), { replayed: 0 });
  t.match(await runJob(app, 'send'), { sent: 0 });
  const sends = (n: number) => [...vaNotify.state.notifications.values()].filter((x) => x.recipientIdentifier?.id_value === icn(n)).length;
  t.equal(sends(bounced), 1, 'the delivered veteran is emailed once');
  t.equal(sends(declined), 2, 'the declined veteran: the declined send and the resend, no third');
});

t.test('a resend is refused while a send is open, outside live mode, and for a malformed request', async (t) => {
  const { app, db } = await testApp(t);
  await insertDispenses(db.sql, [veteran(21)]);
  await runJob(app, 'grouping');
  await runJob(app, 'send');
  const email = await emailOf(db.sql, 21);
  // A send VA Notify has not finished (a callback may still say delivered): resending could send twice.
  await db.sql`update tracking_email set state = 'failed' where id = ${email.id}`;
  const open = (await resend(app, { ids: [email.id], reason: 'checking' })).json().results;
  t.match(open, [{ id: email.id, outcome: 'not_resendable', state: 'failed', reason: /still open/ }]);

  const bad = async (body: unknown, message: RegExp) => {
    const response = await resend(app, body);
    t.equal(response.statusCode, 400, JSON.stringify(body));
    t.match(response.json(), { message }, JSON.stringify(body));
  };
  await bad({ ids: [], reason: 'x' }, /ids/);
  await bad({ ids: ['not-a-uuid'], reason: 'x' }, /ids/);
  await bad({ ids: [email.id, email.id], reason: 'x' }, /ids/);
  await bad({ ids: [email.id] }, /reason/);
  await bad({ ids: [email.id], reason: '   ' }, /reason/);
  await bad({ ids: [email.id], reason: 'x', state: 'failed' }, /state|additional/);
  t.equal((await retryAal(app, { trackingEmailIds: [] })).statusCode, 400);
  const notDelivered = (await retryAal(app, { trackingEmailIds: [email.id] })).json().results;
  t.match(notDelivered, [
    { trackingEmailId: email.id, outcome: 'not_retryable', reason: /no AAL event: it is failed, and was never reported delivered/ },
  ]);

  const unauthorised = await app.inject({ method: 'POST', url: '/v1/tracking-emails/resend', payload: { ids: [email.id], reason: 'x' } });
  t.equal(unauthorised.statusCode, 401);

  const shadow = await testApp(t, { DELIVERY_MODE: 'shadow' });
  const refused = await resend(shadow.app, { ids: [randomUUID()], reason: 'x' });
  t.equal(refused.statusCode, 409);
  t.match(refused.json(), { message: /DELIVERY_MODE=live.*shadow/ });
});

t.test('a failed AAL event is posted again with a fresh budget of attempts; a posted one never twice', async (t) => {
  const { app, db, vaNotify, aal } = await testApp(t, { AAL_MAX_ATTEMPTS: '2' }, { listen: true });
  await insertDispenses(db.sql, [veteran(31), veteran(32)]);
  await runJob(app, 'grouping');
  await runJob(app, 'send');
  await settle(vaNotify, db.sql);
  const failing = await emailOf(db.sql, 31);
  const posted = await emailOf(db.sql, 32);
  await db.sql`update aal_event set next_attempt_at = now() + interval '1 hour' where tracking_email_id = ${failing.id}`;
  t.match(await runJob(app, 'aal'), { posted: 1 });

  // MHV refuses the other event until it has used its attempts.
  const due = () => db.sql`update aal_event set next_attempt_at = now() where state = 'pending'`;
  await due();
  aal.state.failRate = 1;
  t.match(await runJob(app, 'aal'), { retried: 1 });
  await due();
  t.match(await runJob(app, 'aal'), { failed: 1 });
  const listed = (await get(app, '/v1/tracking-emails?aalState=failed')).json().emails as { id: string }[];
  t.same(
    listed.map((e) => e.id),
    [failing.id],
    'the list finds the email whose AAL event failed',
  );
  t.same((await get(app, '/v1/tracking-emails?aalState=unpostable')).json().emails, []);

  const unknown = randomUUID();
  const response = await retryAal(app, { trackingEmailIds: [failing.id, posted.id, unknown] });
  t.equal(response.statusCode, 200, response.body);
  t.match(response.json().results, [
    { trackingEmailId: failing.id, outcome: 'retried' },
    { trackingEmailId: posted.id, outcome: 'not_retryable', state: 'posted', reason: /already posted/ },
    { trackingEmailId: unknown, outcome: 'not_found' },
  ]);

  // Still refused: the budget counts from the retry, so one more failure is retried, the next fails.
  t.match(await runJob(app, 'aal'), { retried: 1 });
  await due();
  t.match(await runJob(app, 'aal'), { failed: 1 });
  const [spent] =
    await db.sql`select state, attempts, attempts_before_retry, last_error from aal_event where tracking_email_id = ${failing.id}`;
  t.match(spent, { state: 'failed', attempts: 4, attempts_before_retry: 2, last_error: /gave up after 2 attempts/ });
  t.match((await get(app, `/v1/tracking-emails/${failing.id}`)).json(), {
    aalEvent: { state: 'failed', attempts: 4, attemptsBeforeRetry: 2 },
  });

  // MHV is back: retried once more, posted once.
  aal.state.failRate = 0;
  t.match((await retryAal(app, { trackingEmailIds: [failing.id] })).json().results, [{ outcome: 'retried' }]);
  t.match(await runJob(app, 'aal'), { posted: 1 });
  t.match((await retryAal(app, { trackingEmailIds: [failing.id] })).json().results, [{ outcome: 'not_retryable', state: 'posted' }]);
  t.match(await runJob(app, 'aal'), { posted: 0 });
  const byEmail = aal.state.events.map((e) => e.sessionCorrelationId).sort();
  t.same(byEmail, [veteran(31).mhv_correlation_id, veteran(32).mhv_correlation_id].sort(), 'each event reached MHV once');
});

t.test('an id written in capitals names the same email: the answer says what was done to it', async (t) => {
  const { app, db, logs } = await testApp(t);
  await insertDispenses(db.sql, [veteran(51), veteran(52)]);
  await runJob(app, 'grouping');
  const failed = await emailOf(db.sql, 51);
  const delivered = await emailOf(db.sql, 52);
  // A send VA Notify refused (no notification), and a delivered email whose AAL event MHV refused.
  await db.sql`update tracking_email set state = 'failed', state_reason = 'VA Notify answered 400' where id = ${failed.id}`;
  await db.sql`update tracking_email set state = 'delivered' where id = ${delivered.id}`;
  await db.sql`
    insert into aal_event (tracking_email_id, notification_id, mhv_correlation_id, completion_time, detail_value, state, attempts)
    values (${delivered.id}, ${randomUUID()}, ${veteran(52).mhv_correlation_id}, now(), 'Packages: none listed', 'failed', 10)`;

  const resent = (await resend(app, { ids: [failed.id.toUpperCase()], reason: 'template mended' })).json().results;
  const [copy] = await db.sql<{ id: string }[]>`select id from tracking_email where resent_from = ${failed.id}`;
  t.ok(copy, 'the email was resent');
  t.same(resent, [{ id: failed.id.toUpperCase(), outcome: 'resent', resentAs: copy!.id }], 'and the answer says so');
  t.match(logs.text, /tracking emails resent by an operator/);
  t.same((await resend(app, { ids: [failed.id.toUpperCase()], reason: 'again' })).json().results, [
    { id: failed.id.toUpperCase(), outcome: 'already_resent', resentAs: copy!.id },
  ]);

  const retried = (await retryAal(app, { trackingEmailIds: [delivered.id.toUpperCase()] })).json().results;
  t.match(
    await db.sql`select state from aal_event where tracking_email_id = ${delivered.id}`,
    [{ state: 'pending' }],
    'the AAL event was made due',
  );
  t.same(retried, [{ trackingEmailId: delivered.id.toUpperCase(), outcome: 'retried' }], 'and the answer says so');
});

t.test('an id or a reason Postgres cannot take is refused as a bad request, not a server error', async (t) => {
  const { app, db } = await testApp(t);
  await insertDispenses(db.sql, [veteran(53)]);
  await runJob(app, 'grouping');
  const email = await emailOf(db.sql, 53);
  await db.sql`update tracking_email set state = 'failed' where id = ${email.id}`;

  // RFC 4122's URN form passes a plain `uuid` format check; Postgres does not read it.
  const urn = `urn:uuid:${email.id}`;
  const resendUrn = await resend(app, { ids: [urn], reason: 'x' });
  t.equal(resendUrn.statusCode, 400, resendUrn.body);
  t.match(resendUrn.json(), { message: /ids/ });
  const retryUrn = await retryAal(app, { trackingEmailIds: [urn] });
  t.equal(retryUrn.statusCode, 400, retryUrn.body);
  t.match(retryUrn.json(), { message: /trackingEmailIds/ });
  const view = await get(app, `/v1/tracking-emails/${urn}`);
  t.equal(view.statusCode, 400, view.body);

  // A NUL character is valid JSON and not white space, but no Postgres text holds it.
  const nul = await resend(app, { ids: [email.id], reason: 'ticket\u0000OPS-1' });
  t.equal(nul.statusCode, 400, nul.body);
  t.match(nul.json(), { message: /reason/ });
  t.match(await db.sql`select state from tracking_email where id = ${email.id}`, [{ state: 'failed' }], 'nothing was resent');
  t.match((await resend(app, { ids: [email.id], reason: 'ticket OPS-1' })).json().results, [{ outcome: 'resent' }]);
});

t.test('an email whose delivery was recorded before deliveries always wrote an AAL event is not resent', async (t) => {
  const { app, db } = await testApp(t);
  await insertDispenses(db.sql, [veteran(54)]);
  await runJob(app, 'grouping');
  const email = await emailOf(db.sql, 54);
  // As sql/006 recorded it, before sql/012: a hard bounce completed after the delivery and reached us
  // first, so the delivery was stale and wrote no AAL event. The email ended permanent_failure.
  const notificationId = randomUUID();
  await db.sql`update tracking_email set state = 'permanent_failure', state_reason = 'Hard bounce', attempts = 1 where id = ${email.id}`;
  await db.sql`
    insert into notification (id, tracking_email_id, attempt, status, status_reason, status_completed_at, completed_at, last_event_at)
    values (${notificationId}, ${email.id}, 1, 'permanent-failure', 'Hard bounce', now() - interval '2 days', now() - interval '2 days', now() - interval '2 days')`;
  await db.sql`
    insert into notification_status_event (notification_id, status, status_reason, reference, completed_at, source, received_at, applied_at)
    values (${notificationId}, 'permanent-failure', 'Hard bounce', ${email.id}, now() - interval '2 days', 'callback', now() - interval '2 days', now() - interval '2 days'),
           (${notificationId}, 'delivered', null, ${email.id}, now() - interval '2 days 1 minute', 'callback', now() - interval '2 days', now() - interval '2 days')`;

  const results = (await resend(app, { ids: [email.id], reason: 'bounces mended' })).json().results;
  t.match(results, [{ id: email.id, outcome: 'not_resendable', state: 'permanent_failure', reason: /reported it delivered/ }]);
  t.match(await db.sql`select count(*)::int as n from tracking_email where resent_from = ${email.id}`, [{ n: 0 }], 'no second email');
});
