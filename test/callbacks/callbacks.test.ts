import { createHmac, randomUUID } from 'node:crypto';
import t, { type Test } from 'tap';
import { buildApp } from '../../src/app.ts';
import { testConfig } from '../../src/config.ts';
import { connect } from '../../src/db/connect.ts';
import { createLogger } from '../../src/logger.ts';
import { applyPendingStatusEvents } from '../../src/status/repository.ts';
import { LogCapture, testApp } from '../support/app.ts';
import { testDatabase } from '../support/database.ts';
import { insertNotification } from '../support/fixtures.ts';
import {
  aalEventsOf,
  callbackBody,
  emailRow,
  eventsOf,
  insertGroupedDispenses,
  insertEmail,
  notificationRow,
  veteranIcn,
  recipient,
  snapshot,
  postCallback,
} from '../support/status.ts';

const token = 'va-notify-callback-token-0001';
const rotatedToken = 'va-notify-callback-token-0002';
const apiSecret = 'e2b5f1c4-7a3d-4e8b-9c6f-0a1b2c3d4e5f';
const settings = {
  VA_NOTIFY_CALLBACK_TOKENS: `${token},${rotatedToken}`,
  VA_NOTIFY_API_KEY: `rx-tracking-c2f3a4b5-6d7e-4f80-9a1b-2c3d4e5f6a7b-${apiSecret}`,
  SEND_MAX_ATTEMPTS: '3',
  REPLAY_DELAY_MINUTES: '45',
};
const url = '/v1/va-notify/callbacks';
/** A bounce of the notification, as VA Notify reports it. */
const bounceOf = (id: string) =>
  callbackBody(id, {
    status: 'permanent-failure',
    completed_at: '2026-05-14T13:40:02.000001Z',
    status_reason: 'Undeliverable - Unable to deliver',
  });
const json = (body: unknown) => (typeof body === 'string' ? body : JSON.stringify(body));

t.test('VA Notify callbacks', async (t) => {
  const { app, db, logs } = await testApp(t, settings);
  const { sql } = db;
  const post = (body: unknown, headers: Record<string, string> = { authorization: `Bearer ${token}` }) =>
    app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json', ...headers }, payload: json(body) });

  t.test('a delivered callback is recorded and answered 200', async (t) => {
    const emailId = await insertEmail(sql);
    await insertGroupedDispenses(sql, emailId, [{ rx_number: '2719043', tracking_number: '1Z9999990312345678', carrier: 'UPS' }]);
    const id = await insertNotification(sql, emailId);
    const response = await post(callbackBody(id, { reference: emailId }));
    t.equal(response.statusCode, 200);
    t.same(response.json(), { status: 'received' });
    t.equal((await notificationRow(sql, id)).status, 'delivered');
    t.equal((await emailRow(sql, emailId)).state, 'delivered');
    const [aal] = await aalEventsOf(sql, emailId);
    t.equal(aal?.detail_value, 'Packages: UPS 1Z9999990312345678 (Rx ending 9043)');
  });

  t.test('the rotated-in token works as well', async (t) => {
    const id = await insertNotification(sql, await insertEmail(sql));
    t.equal((await post(callbackBody(id), { authorization: `Bearer ${rotatedToken}` })).statusCode, 200);
  });

  t.test('a duplicate callback leaves one event and one AAL event', async (t) => {
    const emailId = await insertEmail(sql);
    const id = await insertNotification(sql, emailId);
    t.equal((await post(callbackBody(id))).statusCode, 200);
    t.equal((await post(callbackBody(id))).statusCode, 200);
    t.equal((await eventsOf(sql, id)).length, 1);
    t.equal((await aalEventsOf(sql, emailId)).length, 1);
  });

  t.test('a late sending after delivered changes nothing', async (t) => {
    const emailId = await insertEmail(sql);
    const id = await insertNotification(sql, emailId);
    await post(callbackBody(id));
    const late = await post(callbackBody(id, { status: 'sending', completed_at: '2026-05-14T13:22:09.500000Z' }));
    t.equal(late.statusCode, 200);
    t.equal((await notificationRow(sql, id)).status, 'delivered');
    t.equal((await emailRow(sql, emailId)).state, 'delivered');
    t.equal((await eventsOf(sql, id)).length, 2, 'the late event is kept');
    t.match(logs.text, /late status event: the newer status stays/);
  });

  t.test('callbacks posted together: one refused answers alone, the others 200', async (t) => {
    const emails = await Promise.all(Array.from({ length: 8 }, () => insertEmail(sql)));
    const ids = await Promise.all(emails.map((emailId) => insertNotification(sql, emailId)));
    // An offset the body's pattern admits and no zone has: a 400 (VA Notify would retry a 5xx for
    // hours), and the callbacks recorded beside it are not affected. (An event Postgres refuses
    // inside a batch fails alone too: test/status/status-event-batcher.test.ts.)
    const refused = ids[3]!;
    const responses = await Promise.all(
      ids.map((id) => post(callbackBody(id, id === refused ? { completed_at: '2026-05-14T13:22:41+99:00' } : {}))),
    );
    t.same(
      responses.map((r) => r.statusCode),
      ids.map((id) => (id === refused ? 400 : 200)),
    );
    t.same(await eventsOf(sql, refused), []);
    for (const [index, id] of ids.entries()) {
      if (id === refused) continue;
      t.equal((await notificationRow(sql, id)).status, 'delivered');
      t.equal((await aalEventsOf(sql, emails[index]!)).length, 1);
    }
    t.notMatch(logs.text, recipient);
  });

  // JSON lets a string hold a lone surrogate ("\ud800"); Postgres's jsonb input does not. Such a
  // callback must not be answered 5xx on every one of VA Notify's retries, nor fail the callbacks
  // recorded in the same statement.
  t.test('a lone surrogate in a field is stored as U+FFFD and answered 200', async (t) => {
    const emails = await Promise.all(Array.from({ length: 4 }, () => insertEmail(sql)));
    const ids = await Promise.all(emails.map((emailId) => insertNotification(sql, emailId)));
    const odd = ids[1]!;
    // JSON.stringify writes it as the escape, as Python's json.dumps (VA Notify) does.
    const body = (id: string) =>
      id === odd ? JSON.stringify(callbackBody(id, { status_reason: 'Undeliverable - x\ud800y' })) : callbackBody(id);
    const responses = await Promise.all(ids.map((id) => post(body(id))));
    t.same(
      responses.map((r) => r.statusCode),
      ids.map(() => 200),
    );
    t.same(
      (await eventsOf(sql, odd)).map((e) => e.status_reason),
      ['Undeliverable - x\ufffdy'],
    );
    for (const [index, id] of ids.entries()) {
      t.equal((await notificationRow(sql, id)).status, 'delivered');
      t.equal((await aalEventsOf(sql, emails[index]!)).length, 1);
    }
    t.equal((await post(body(odd))).statusCode, 200, "VA Notify's retry is a duplicate");
    t.equal((await eventsOf(sql, odd)).length, 1);
  });

  t.test('sending then delivered ends delivered', async (t) => {
    const emailId = await insertEmail(sql);
    const id = await insertNotification(sql, emailId);
    await post(callbackBody(id, { status: 'sending', completed_at: null }));
    t.equal((await notificationRow(sql, id)).status, 'sending');
    t.equal((await emailRow(sql, emailId)).state, 'sent');
    await post(callbackBody(id));
    t.equal((await notificationRow(sql, id)).status, 'delivered');
    t.equal((await aalEventsOf(sql, emailId)).length, 1);
  });

  /** The notification and its email both end in the bounce. */
  const endsBounced = async (t: Test, id: string, emailId: string) => {
    const notification = await notificationRow(sql, id);
    t.same([notification.status, notification.status_reason], ['permanent-failure', 'Undeliverable - Unable to deliver']);
    const email = await emailRow(sql, emailId);
    t.same([email.state, email.state_reason], ['permanent_failure', 'Undeliverable - Unable to deliver']);
  };

  t.test('a bounce after delivered is recorded; the AAL event stays one', async (t) => {
    const emailId = await insertEmail(sql);
    const id = await insertNotification(sql, emailId);
    await post(callbackBody(id));
    t.equal((await post(bounceOf(id))).statusCode, 200);
    await endsBounced(t, id, emailId);
    t.equal((await aalEventsOf(sql, emailId)).length, 1);
  });

  // The reverse order of the test above: the delivered callback was answered 5xx and VA Notify
  // retried it after the bounce had arrived. The end is the same, AAL event included.
  t.test('a delivered retried after its bounce: the bounce stays, the AAL event is written once', async (t) => {
    const emailId = await insertEmail(sql);
    await insertGroupedDispenses(sql, emailId, [{ rx_number: '2719099', tracking_number: '1Z9999990399999999', carrier: 'UPS' }]);
    const id = await insertNotification(sql, emailId);
    t.equal((await post(bounceOf(id))).statusCode, 200);
    t.equal((await aalEventsOf(sql, emailId)).length, 0, 'a bounce alone is no delivery');
    t.equal((await post(callbackBody(id))).statusCode, 200);
    t.equal((await post(callbackBody(id))).statusCode, 200, 'retried once more');
    await endsBounced(t, id, emailId);
    const aal = await aalEventsOf(sql, emailId);
    t.same(
      aal.map((a) => [a.notification_id, a.completion_time.toISOString(), a.detail_value, a.state]),
      [[id, '2026-05-14T13:22:41.654Z', 'Packages: UPS 1Z9999990399999999 (Rx ending 9099)', 'pending']],
    );
  });

  t.test('a callback before the notification id is stored is kept and applied with it', async (t) => {
    // With no reference (a reference naming the email adopts the notification at once: boundaries.test.ts).
    const emailId = await insertEmail(sql, { state: 'sending' });
    const id = randomUUID();
    const early = await post(callbackBody(id, { reference: null }));
    t.equal(early.statusCode, 200, 'an unknown notification id is still a 200');
    t.equal((await eventsOf(sql, id))[0]?.applied_at, null);
    await sql.begin(async (tx) => {
      await insertNotification(tx, emailId, { attempt: 1, id });
      await tx`update tracking_email set state = 'sent' where id = ${emailId}`;
      await applyPendingStatusEvents(tx, id, { replayDelayMinutes: 45, sendMaxAttempts: 3 });
    });
    t.equal((await notificationRow(sql, id)).status, 'delivered');
    t.equal((await emailRow(sql, emailId)).state, 'delivered');
    t.equal((await aalEventsOf(sql, emailId)).length, 1);
  });

  t.test('a temporary failure schedules a replay, or fails the email at the last attempt', async (t) => {
    const reason = 'Retryable - Notification is unable to be processed at this time. Replay the request to VA Notify.';
    const emailId = await insertEmail(sql, { attempts: 2 });
    const id = await insertNotification(sql, emailId, { attempt: 2 });
    await post(callbackBody(id, { status: 'temporary-failure', status_reason: reason }));
    const email = await emailRow(sql, emailId);
    t.same([email.state, email.state_reason, email.replay_in_minutes], ['temporary_failure', reason, 45]);

    const lastEmailId = await insertEmail(sql, { attempts: 3 });
    const lastId = await insertNotification(sql, lastEmailId, { attempt: 3 });
    await post(callbackBody(lastId, { status: 'temporary-failure', status_reason: reason }));
    const last = await emailRow(sql, lastEmailId);
    t.same([last.state, last.state_reason], ['failed', reason]);
  });

  t.test('a legacy technical-failure is a permanent failure', async (t) => {
    const emailId = await insertEmail(sql);
    const id = await insertNotification(sql, emailId);
    t.equal((await post(callbackBody(id, { status: 'technical-failure' }))).statusCode, 200);
    t.equal((await notificationRow(sql, id)).status, 'permanent-failure');
    t.equal((await emailRow(sql, emailId)).state, 'permanent_failure');
  });

  t.test('an email without an MHV correlation id gets an unpostable AAL event', async (t) => {
    const emailId = await insertEmail(sql, { mhv_correlation_id: null });
    const id = await insertNotification(sql, emailId);
    await post(callbackBody(id));
    const [aal] = await aalEventsOf(sql, emailId);
    t.same([aal?.state, aal?.last_error], ['unpostable', 'no MHV correlation id']);
  });

  t.test('a per-notification callback with a good x-enp-signature is accepted', async (t) => {
    const emailId = await insertEmail(sql);
    const id = await insertNotification(sql, emailId, { attempt: 1, id: '3f5a2b1c-9d4e-4f60-8a7b-1c2d3e4f5a6b' });
    const body =
      `{"id": "${id}", "reference": "${emailId}", "to": "${recipient}", "status": "delivered", ` +
      '"created_at": "2026-05-14T13:22:08.123456Z", "completed_at": "2026-05-14T13:22:41.654321Z", ' +
      '"sent_at": "2026-05-14T13:22:09.000001Z", "notification_type": "email", "status_reason": null, ' +
      '"provider": "ses", "provider_payload": null}';
    const encoded =
      `id=${id}&reference=${emailId}&to=veteran%40example.com&status=delivered` +
      '&created_at=2026-05-14T13%3A22%3A08.123456Z&completed_at=2026-05-14T13%3A22%3A41.654321Z' +
      '&sent_at=2026-05-14T13%3A22%3A09.000001Z&notification_type=email&status_reason=None&provider=ses&provider_payload=None';
    const signature = createHmac('sha256', apiSecret).update(encoded).digest('hex');
    const response = await post(body, { 'x-enp-signature': signature });
    t.equal(response.statusCode, 200);
    t.equal((await notificationRow(sql, id)).status, 'delivered');
    t.equal((await aalEventsOf(sql, emailId)).length, 1);
  });

  t.test('rejected requests change nothing', async (t) => {
    const emailId = await insertEmail(sql);
    const id = await insertNotification(sql, emailId);
    const body = callbackBody(id);
    const hugeBody = json({ ...body, status_reason: 'x'.repeat(10 * 1024 * 1024) });
    const goodSignature = createHmac('sha256', apiSecret).update('something else').digest('hex');
    const cases: Array<[string, unknown, Record<string, string>, number]> = [
      ['no token', body, {}, 401],
      ['a wrong token', body, { authorization: 'Bearer not-the-callback-token' }, 401],
      ['a token one character off', body, { authorization: `Bearer ${token.slice(0, -1)}9` }, 401],
      ['a token with a character more', body, { authorization: `Bearer ${token}1` }, 401],
      ['another scheme', body, { authorization: `Basic ${token}` }, 401],
      ['a bad signature', body, { 'x-enp-signature': goodSignature }, 401],
      ['a signature that is not hex', body, { 'x-enp-signature': 'nope' }, 401],
      [
        'a signature by another key',
        body,
        { 'x-enp-signature': createHmac('sha256', 'another-key-0001').update('id=').digest('hex') },
        401,
      ],
      ['malformed JSON', `{"id": "${id}", "status": "delivered", "to": "${recipient}"`, { authorization: `Bearer ${token}` }, 400],
      ['malformed JSON with a signature', `{"id": "${id}", "status": "delivered"`, { 'x-enp-signature': goodSignature }, 401],
      [
        'malformed JSON with a wrong token',
        `{"id": "${id}", "status": "delivered"`,
        { authorization: 'Bearer not-the-callback-token' },
        401,
      ],
      ['an invalid body with a bad signature', { ...body, id: 'notification-1' }, { 'x-enp-signature': goodSignature }, 401],
      ['an array', [body], { authorization: `Bearer ${token}` }, 400],
      ['no id', { ...body, id: undefined }, { authorization: `Bearer ${token}` }, 400],
      ['an id that is no uuid', { ...body, id: 'notification-1' }, { authorization: `Bearer ${token}` }, 400],
      ['no status', { ...body, status: undefined }, { authorization: `Bearer ${token}` }, 400],
      ['a date that does not exist', { ...body, completed_at: '2026-02-30T13:22:41.654321Z' }, { authorization: `Bearer ${token}` }, 400],
      [
        'a zone offset no zone has',
        { ...body, completed_at: '2026-05-14T13:22:41.654321+15:30' },
        { authorization: `Bearer ${token}` },
        400,
      ],
      ['a timestamp that is no timestamp', { ...body, sent_at: 'yesterday' }, { authorization: `Bearer ${token}` }, 400],
      ['a NUL in the reason', { ...body, status_reason: 'a\u0000b' }, { authorization: `Bearer ${token}` }, 400],
      ['a 10 MB body', hugeBody, { authorization: `Bearer ${token}` }, 413],
      ['a 10 MB body without a token', hugeBody, {}, 401],
    ];
    const before = await snapshot(sql);
    for (const [name, payload, headers, expected] of cases) {
      const response = await post(payload, headers);
      t.equal(response.statusCode, expected, name);
      if (expected === 401) {
        t.same(response.json().message, 'a valid bearer token or x-enp-signature is required', `${name}: no detail`);
        t.equal(response.headers['www-authenticate'], 'Bearer');
      }
      t.notMatch(response.body, recipient, `${name}: the answer does not echo the address`);
    }
    t.same(await snapshot(sql), before, 'no table changed');
  });

  t.test('the logs carry no email address and no ICN', async (t) => {
    t.ok(logs.lines.length > 0);
    t.notMatch(logs.text, recipient);
    t.notMatch(logs.text, veteranIcn);
    t.notMatch(logs.text, token);
    t.match(logs.text, /"outcome":"applied"/);
    t.match(logs.text, /"outcome":"duplicate"/);
  });
});

t.test('callbacks are rate limited', async (t) => {
  const { app } = await testApp(t, { ...settings, CALLBACK_RATE_LIMIT_PER_MINUTE: '2' });
  const send = () => postCallback(app, token, callbackBody(randomUUID()));
  t.equal((await send()).statusCode, 200);
  t.equal((await send()).statusCode, 200);
  const limited = await send();
  t.equal(limited.statusCode, 429);
  t.equal(limited.json().statusCode, 429);
});

t.test('a database that cannot store the event answers 503 so VA Notify retries', async (t) => {
  const { url: databaseUrl } = await testDatabase(t);
  const sql = connect(databaseUrl, { max: 1 });
  await sql.end();
  const config = testConfig({ ...settings, LOG_LEVEL: 'info' });
  const logs = new LogCapture();
  const app = await buildApp({
    config,
    sql,
    logger: createLogger(config.LOG_LEVEL, logs),
    // Never called: the request fails at the database first.
    sandboxUrls: { aal: 'http://127.0.0.1:9', vaNotify: 'http://127.0.0.1:9' },
  });
  t.teardown(() => app.close());
  const response = await postCallback(app, token, callbackBody(randomUUID()));
  t.equal(response.statusCode, 503);
  t.notMatch(logs.text, recipient);
});

t.test('any other database error answers 5xx too', async (t) => {
  const { app, db } = await testApp(t, settings);
  await db.sql`alter table notification_status_event rename to notification_status_event_gone`;
  const response = await postCallback(app, token, callbackBody(randomUUID()));
  t.ok(response.statusCode >= 500, `answered ${response.statusCode}`);
});
