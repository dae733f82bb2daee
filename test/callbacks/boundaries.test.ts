// Callbacks at the service's edge: limited before they are authenticated, times that cannot be true
// refused, and events for a notification the service never stored adopted by their reference or
// expired and counted.
import { randomUUID } from 'node:crypto';
import t from 'tap';
import { internalAuth, runJob, testApp } from '../support/app.ts';
import { insertNotification } from '../support/fixtures.ts';
import { aalEventsOf, callbackBody, emailRow, eventsOf, insertEmail, notificationRow, postCallback } from '../support/status.ts';

const token = 'va-notify-callback-token-0001';
const settings = { VA_NOTIFY_CALLBACK_TOKENS: token, SEND_MAX_ATTEMPTS: '3', REPLAY_DELAY_MINUTES: '45' };

t.test('callbacks that fail authentication are rate limited too', async (t) => {
  const { app } = await testApp(t, { ...settings, CALLBACK_RATE_LIMIT_PER_MINUTE: '2' });
  const guess = (attempt: number) => postCallback(app, `guess-${attempt}-0000000`, callbackBody(randomUUID()));
  const codes = [];
  for (let attempt = 0; attempt < 4; attempt++) codes.push((await guess(attempt)).statusCode);
  t.same(codes, [401, 401, 429, 429]);
});

t.test('internal requests that fail authentication are rate limited too', async (t) => {
  const { app } = await testApp(t, { RATE_LIMIT_PER_MINUTE: '2' });
  const codes = [];
  for (let attempt = 0; attempt < 3; attempt++) {
    codes.push(
      (await app.inject({ method: 'GET', url: '/v1/stats', headers: { authorization: `Bearer guess-${attempt}-000000000000` } }))
        .statusCode,
    );
  }
  t.same(codes, [401, 401, 429]);
  t.equal(
    (await app.inject({ method: 'GET', url: '/v1/stats', headers: internalAuth })).statusCode,
    429,
    'the same client, now with the right token, waits too',
  );
});

t.test('a completed_at far in the future is refused, and the real delivery then applies', async (t) => {
  const { app, db } = await testApp(t, settings);
  const post = (body: unknown) => postCallback(app, token, body);
  const emailId = await insertEmail(db.sql);
  const id = await insertNotification(db.sql, emailId);
  const pinned = await post(callbackBody(id, { status: 'temporary-failure', completed_at: '9999-12-31T23:59:59.000000Z' }));
  t.equal(pinned.statusCode, 400);
  t.match(pinned.json().message, 'body/completed_at is more than 24 hours in the future');
  t.equal((await post(callbackBody(id, { sent_at: '9999-01-01T00:00:00Z' }))).statusCode, 400, 'sent_at too');
  t.same(await eventsOf(db.sql, id), [], 'nothing recorded');

  const now = new Date().toISOString();
  t.equal((await post(callbackBody(id, { completed_at: now, sent_at: now, created_at: now }))).statusCode, 200, 'a time of now is taken');
  t.equal((await notificationRow(db.sql, id)).status, 'delivered');
  t.equal((await emailRow(db.sql, emailId)).state, 'delivered', 'delivered, not replayed');
  t.equal((await aalEventsOf(db.sql, emailId)).length, 1);
});

t.test('an event for a notification never stored is adopted by the email its reference names', async (t) => {
  const { app, db } = await testApp(t, settings);
  const post = (body: unknown) => postCallback(app, token, body);
  // A send VA Notify accepted whose answer was lost: the email is still `sending`, no notification stored.
  const emailId = await insertEmail(db.sql, { state: 'sending', attempts: 2 });
  const orphanId = randomUUID();
  t.equal((await post(callbackBody(orphanId, { reference: emailId }))).statusCode, 200);
  const [notification] = await db.sql`select tracking_email_id, attempt from notification where id = ${orphanId}`;
  t.same(notification, { tracking_email_id: emailId, attempt: 2 }, 'the email adopted the notification');
  t.equal((await notificationRow(db.sql, orphanId)).status, 'delivered');
  t.equal((await emailRow(db.sql, emailId)).state, 'delivered');
  t.equal((await aalEventsOf(db.sql, emailId)).length, 1, 'its AAL event written');
  t.equal(
    (await eventsOf(db.sql, orphanId)).filter((e: { applied_at: Date | null }) => e.applied_at === null).length,
    0,
    'nothing left pending',
  );

  // A queued email (its orphan released for another send) is not sent again once VA Notify says it has it.
  const queued = await insertEmail(db.sql, { state: 'queued', attempts: 1 });
  const queuedOrphan = randomUUID();
  await post(callbackBody(queuedOrphan, { status: 'sending', completed_at: null, reference: queued }));
  t.equal((await emailRow(db.sql, queued)).state, 'sent', 'taken out of the send queue');

  const metrics = await app.inject({ method: 'GET', url: '/metrics' });
  t.match(metrics.body, /rx_callbacks_total\{outcome="applied",status="delivered"\} 1/);
});

t.test('events no email adopts wait, then expire and are counted', async (t) => {
  const { app, db } = await testApp(t, settings);
  const post = (body: unknown) => postCallback(app, token, body);
  const delivered = await insertEmail(db.sql, { state: 'delivered' });
  const foreign = [randomUUID(), randomUUID(), randomUUID()];
  await post(callbackBody(foreign[0]!)); // no reference
  await post(callbackBody(foreign[1]!, { reference: 'not-an-email-id' }));
  await post(callbackBody(foreign[2]!, { reference: delivered })); // an email that has its notification
  t.equal((await emailRow(db.sql, delivered)).state, 'delivered', 'an email already sent adopts nothing');
  const pending = async () =>
    (await db.sql`select count(*)::int as n from notification_status_event where applied_at is null`)[0]!.n as number;
  t.equal(await pending(), 3, 'pending, in case the sender stores the notification yet');

  t.match(await runJob(app, 'sweep'), { statusEventsExpired: 0 }, 'young events are left alone');
  await db.sql`update notification_status_event set received_at = now() - interval '25 hours' where notification_id = any(${foreign}::uuid[])`;
  const stored = await insertNotification(db.sql, await insertEmail(db.sql));
  await db.sql`insert into notification_status_event (notification_id, status, source, received_at) values (${stored}, 'delivered', 'callback', now() - interval '25 hours')`;
  t.match(await runJob(app, 'sweep'), { statusEventsExpired: 3 }, 'only the events of notifications never stored');
  t.equal(await pending(), 1);
  const metrics = await app.inject({ method: 'GET', url: '/metrics' });
  t.match(metrics.body, /rx_status_events_expired_total 3/);
});
