import { randomUUID } from 'node:crypto';
import t from 'tap';
import {
  FinalStatusSet,
  NonFinalStatusSet,
  NotificationStatuses,
  PreferencesDeclinedReason,
  normaliseStatus,
} from '../../src/status/notification-status.ts';
import { applyPendingStatusEvents, recordStatusEvent, recordStatusEvents, type StatusEvent } from '../../src/status/repository.ts';
import { testDatabase } from '../support/database.ts';
import { insertNotification } from '../support/fixtures.ts';
import {
  aalEventsOf,
  advisoryLockWaiter,
  emailRow,
  eventsOf,
  insertGroupedDispenses,
  insertEmail,
  notificationRow,
} from '../support/status.ts';

const options = { replayDelayMinutes: 60, sendMaxAttempts: 5 };
const callback = { ...options, source: 'callback' as const };
const poll = { ...options, source: 'poll' as const };

const delivered = (notificationId: string, fields: Partial<StatusEvent> = {}): StatusEvent => ({
  notificationId,
  status: 'delivered',
  statusReason: null,
  reference: null,
  createdAt: '2026-05-14T13:22:08.123456Z',
  sentAt: '2026-05-14T13:22:09.000001Z',
  completedAt: '2026-05-14T13:22:41.654321Z',
  provider: 'ses',
  ...fields,
});

t.test('the status lists', async (t) => {
  t.same([...FinalStatusSet, ...NonFinalStatusSet].sort(), [...NotificationStatuses].sort(), 'every status is final or not, never both');
  t.same([...NonFinalStatusSet], ['created', 'sending', 'pending', 'sent']);
  t.same(normaliseStatus('technical-failure', null), { status: 'permanent-failure', statusReason: null, known: true });
  t.same(normaliseStatus('preferences-declined', null), {
    status: 'permanent-failure',
    statusReason: PreferencesDeclinedReason,
    known: true,
  });
  t.same(normaliseStatus('preferences-declined', 'declined by veteran'), {
    status: 'permanent-failure',
    statusReason: 'declined by veteran',
    known: true,
  });
  t.same(normaliseStatus('Delivered', null), { status: 'delivered', statusReason: null, known: true });
  t.same(normaliseStatus('virus-scan-failed', null), { status: 'virus-scan-failed', statusReason: null, known: false });
});

t.test('status events against a real database', async (t) => {
  const { sql } = await testDatabase(t);

  t.test('a delivery: the notification, the email and one AAL event with packages and Rx last fours only', async (t) => {
    const emailId = await insertEmail(sql);
    await insertGroupedDispenses(sql, emailId, [
      { rx_number: '2719100', tracking_number: '1Z9999990312345678', carrier: 'UPS' },
      { rx_number: '2719043', tracking_number: '1Z9999990312345678', carrier: 'UPS' },
      { rx_number: '3304512', tracking_number: '9400111899223344556677', carrier: 'USPS', drug_name: 'LISINOPRIL 10MG TAB' },
    ]);
    const id = await insertNotification(sql, emailId);
    const result = await recordStatusEvent(sql, delivered(id), callback);
    t.same(result, { outcome: 'applied', aalEventCreated: true });

    const notification = await notificationRow(sql, id);
    t.equal(notification.status, 'delivered');
    t.equal(notification.completed_at?.toISOString(), '2026-05-14T13:22:41.654Z');
    t.equal(notification.sent_at?.toISOString(), '2026-05-14T13:22:09.000Z');
    t.equal((await emailRow(sql, emailId)).state, 'delivered');

    const [aal, ...more] = await aalEventsOf(sql, emailId);
    t.equal(more.length, 0);
    t.equal(aal?.detail_value, 'Packages: UPS 1Z9999990312345678 (Rx ending 9043, 9100); USPS 9400111899223344556677 (Rx ending 4512)');
    t.notMatch(aal?.detail_value, /SIMVASTATIN|LISINOPRIL|2719043|3304512/, 'no drug name, no full Rx number');
    t.equal(aal?.mhv_correlation_id, '15176497');
    t.equal(aal?.state, 'pending');
    t.equal(aal?.notification_id, id);
    const [time] = await sql<{ completion: string }[]>`
      select to_char(completion_time at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') as completion from aal_event where tracking_email_id = ${emailId}`;
    t.equal(time?.completion, '2026-05-14T13:22:41.654321', "completion_time is VA Notify's completed_at, to the microsecond");
  });

  // VA Notify orders nothing: a `delivered` callback answered 5xx is retried, and its hard bounce
  // can be recorded first. Whichever arrives first, the email was delivered once and its AAL event
  // is written once; the notification and the email end with the bounce.
  t.test('a delivery and its later bounce give one AAL event in either arrival order', async (t) => {
    const bounceReason = 'Undeliverable - Unable to deliver';
    const bounce = (id: string) =>
      delivered(id, { status: 'permanent-failure', statusReason: bounceReason, completedAt: '2026-05-14T13:40:02.000001Z' });
    const endState = async (emailId: string, id: string) => {
      const notification = await notificationRow(sql, id);
      const email = await emailRow(sql, emailId);
      const aal = await aalEventsOf(sql, emailId);
      return {
        notification: [notification.status, notification.status_reason, notification.completed_at?.toISOString()],
        email: [email.state, email.state_reason],
        aal: aal.map((a) => [a.notification_id === id, a.completion_time.toISOString(), a.detail_value, a.state]),
      };
    };
    // Each email its own fill: a dispense event is unique across emails.
    const emailWithPackage = async (rxNumber: string) => {
      const emailId = await insertEmail(sql);
      await insertGroupedDispenses(sql, emailId, [{ rx_number: rxNumber, tracking_number: '1Z9999990312345678', carrier: 'UPS' }]);
      return { emailId, id: await insertNotification(sql, emailId) };
    };
    const expected = (rxNumber: string) => ({
      notification: ['permanent-failure', bounceReason, '2026-05-14T13:40:02.000Z'],
      email: ['permanent_failure', bounceReason],
      aal: [[true, '2026-05-14T13:22:41.654Z', `Packages: UPS 1Z9999990312345678 (Rx ending ${rxNumber.slice(-4)})`, 'pending']],
    });

    const inOrder = await emailWithPackage('4410001');
    t.same(await recordStatusEvent(sql, delivered(inOrder.id), callback), { outcome: 'applied', aalEventCreated: true });
    t.same(await recordStatusEvent(sql, bounce(inOrder.id), callback), { outcome: 'applied', aalEventCreated: false });
    t.same(await endState(inOrder.emailId, inOrder.id), expected('4410001'), 'delivered, then the bounce');

    const reversed = await emailWithPackage('4410002');
    t.same(await recordStatusEvent(sql, bounce(reversed.id), callback), { outcome: 'applied', aalEventCreated: false });
    t.same(
      await recordStatusEvent(sql, delivered(reversed.id), callback),
      { outcome: 'stale', aalEventCreated: true },
      'the late delivered leaves the status to the bounce and writes the AAL event',
    );
    t.same(await endState(reversed.emailId, reversed.id), expected('4410002'), 'the bounce, then the retried delivered: the same end');

    // Callbacks that arrive together go through record_status_events (sql/008), in arrival order
    // for one notification.
    const batched = await emailWithPackage('4410003');
    const results = await recordStatusEvents(sql, [{ event: bounce(batched.id) }, { event: delivered(batched.id) }], callback);
    t.same(results, [
      { outcome: 'applied', aalEventCreated: false },
      { outcome: 'stale', aalEventCreated: true },
    ]);
    t.same(await endState(batched.emailId, batched.id), expected('4410003'), 'both in one batch, the bounce first: the same end');
  });

  t.test('after a bounce, a delivered arriving again or reported twice still gives exactly one AAL event', async (t) => {
    const emailId = await insertEmail(sql);
    const id = await insertNotification(sql, emailId);
    await recordStatusEvent(sql, delivered(id, { status: 'permanent-failure', completedAt: '2026-05-14T13:40:02.000001Z' }), callback);
    t.same(await recordStatusEvent(sql, delivered(id), callback), { outcome: 'stale', aalEventCreated: true });
    t.same(
      await recordStatusEvent(sql, delivered(id), callback),
      { outcome: 'duplicate', aalEventCreated: false },
      'VA Notify retries it once more',
    );
    t.same(await recordStatusEvent(sql, delivered(id), poll), { outcome: 'duplicate', aalEventCreated: false }, 'the poll reads it too');
    // Another delivered report with its own completion time, also older than the bounce: stale again,
    // and the email's one AAL event is already written.
    t.same(await recordStatusEvent(sql, delivered(id, { completedAt: '2026-05-14T13:23:00Z' }), callback), {
      outcome: 'stale',
      aalEventCreated: false,
    });
    const aal = await aalEventsOf(sql, emailId);
    t.equal(aal.length, 1);
    t.equal(aal[0]?.completion_time.toISOString(), '2026-05-14T13:22:41.654Z', 'the first delivered report names the completion time');
    t.equal((await notificationRow(sql, id)).status, 'permanent-failure');
    t.equal((await emailRow(sql, emailId)).state, 'permanent_failure');
  });

  t.test('a package with a known carrier on one fill and UNK on another is listed once, by its carrier', async (t) => {
    const emailId = await insertEmail(sql);
    await insertGroupedDispenses(sql, emailId, [
      { rx_number: '5520100', tracking_number: '1Z9999990312345678', carrier: 'UNK' },
      { rx_number: '5520043', tracking_number: '1Z9999990312345678', carrier: 'UPS' },
      { rx_number: '5504512', tracking_number: 'ABC123', carrier: 'UNK' },
    ]);
    const id = await insertNotification(sql, emailId);
    await recordStatusEvent(sql, delivered(id), callback);
    const [aal] = await aalEventsOf(sql, emailId);
    t.equal(aal?.detail_value, 'Packages: UNK ABC123 (Rx ending 4512); UPS 1Z9999990312345678 (Rx ending 0043, 0100)');
  });

  t.test('the same event from the poll after the callback is a duplicate', async (t) => {
    const emailId = await insertEmail(sql);
    const id = await insertNotification(sql, emailId);
    t.same(await recordStatusEvent(sql, delivered(id), callback), { outcome: 'applied', aalEventCreated: true });
    t.same(await recordStatusEvent(sql, delivered(id), poll), { outcome: 'duplicate', aalEventCreated: false });
    t.same(
      (await eventsOf(sql, id)).map((e) => e.source),
      ['callback'],
    );
    t.equal((await aalEventsOf(sql, emailId)).length, 1);
  });

  t.test('events before the notification id is stored wait, then the sender applies them', async (t) => {
    const emailId = await insertEmail(sql, { state: 'sending' });
    const id = randomUUID();
    t.same(await recordStatusEvent(sql, delivered(id, { status: 'sending', completedAt: null }), callback), {
      outcome: 'pending_notification',
      aalEventCreated: false,
    });
    t.same(await recordStatusEvent(sql, delivered(id), callback), { outcome: 'pending_notification', aalEventCreated: false });
    t.ok(
      (await eventsOf(sql, id)).every((e) => e.applied_at === null),
      'kept, not applied',
    );
    t.equal((await aalEventsOf(sql, emailId)).length, 0);

    const summary = await sql.begin(async (tx) => {
      await insertNotification(tx, emailId, { attempt: 1, id });
      await tx`update tracking_email set state = 'sent' where id = ${emailId}`;
      return applyPendingStatusEvents(tx, id, options);
    });
    t.same(summary, { applied: 2, stale: 0, aalEventCreated: true });
    t.equal((await notificationRow(sql, id)).status, 'delivered');
    t.equal((await emailRow(sql, emailId)).state, 'delivered');
    t.equal((await aalEventsOf(sql, emailId)).length, 1);
    t.ok((await eventsOf(sql, id)).every((e) => e.applied_at !== null));
  });

  t.test('a callback committed while the sender stores the id is applied by the sender', async (t) => {
    const emailId = await insertEmail(sql, { state: 'sending' });
    const id = randomUUID();
    await sql.begin(async (tx) => {
      await insertNotification(tx, emailId, { attempt: 1, id });
      await tx`update tracking_email set state = 'sent' where id = ${emailId}`;
      // The sender's insert is not visible yet: the callback keeps the event for later.
      t.same(await recordStatusEvent(sql, delivered(id), callback), { outcome: 'pending_notification', aalEventCreated: false });
      t.same(await applyPendingStatusEvents(tx, id, options), { applied: 1, stale: 0, aalEventCreated: true });
    });
    t.equal((await notificationRow(sql, id)).status, 'delivered');
    t.equal((await aalEventsOf(sql, emailId)).length, 1);
  });

  t.test('a callback arriving while the sender applies waits for it and then applies itself', async (t) => {
    const emailId = await insertEmail(sql, { state: 'sending' });
    const id = randomUUID();
    let recorded: Promise<unknown> | undefined;
    await sql.begin(async (tx) => {
      await insertNotification(tx, emailId, { attempt: 1, id });
      await tx`update tracking_email set state = 'sent' where id = ${emailId}`;
      t.same(await applyPendingStatusEvents(tx, id, options), { applied: 0, stale: 0, aalEventCreated: false });
      recorded = recordStatusEvent(sql, delivered(id), callback);
      // Commit only once the callback is queued behind this transaction's lock on the notification.
      await advisoryLockWaiter(sql);
    });
    t.same(await recorded, { outcome: 'applied', aalEventCreated: true });
    t.equal((await emailRow(sql, emailId)).state, 'delivered');
  });

  t.test('a temporary failure is replayed after the delay; at the last attempt the email fails', async (t) => {
    const reason = 'Retryable - Notification is unable to be processed at this time. Replay the request to VA Notify.';
    const emailId = await insertEmail(sql, { attempts: 1 });
    const id = await insertNotification(sql, emailId);
    await recordStatusEvent(sql, delivered(id, { status: 'temporary-failure', statusReason: reason }), callback);
    const email = await emailRow(sql, emailId);
    t.equal(email.state, 'temporary_failure');
    t.equal(email.state_reason, reason);
    t.equal(email.replay_in_minutes, 60);
    t.equal((await aalEventsOf(sql, emailId)).length, 0);

    const lastEmailId = await insertEmail(sql, { attempts: 5 });
    const lastId = await insertNotification(sql, lastEmailId, { attempt: 5 });
    await recordStatusEvent(sql, delivered(lastId, { status: 'temporary-failure', statusReason: reason }), callback);
    const last = await emailRow(sql, lastEmailId);
    t.equal(last.state, 'failed');
    t.equal(last.state_reason, reason);
  });

  t.test('legacy statuses become permanent-failure and fail the email', async (t) => {
    const emailId = await insertEmail(sql);
    const id = await insertNotification(sql, emailId);
    await recordStatusEvent(
      sql,
      delivered(id, { status: 'technical-failure', statusReason: 'Undeliverable - Unable to deliver' }),
      callback,
    );
    t.same(await notificationRow(sql, id).then((n) => [n.status, n.status_reason]), [
      'permanent-failure',
      'Undeliverable - Unable to deliver',
    ]);
    t.same(await emailRow(sql, emailId).then((e) => [e.state, e.state_reason]), ['permanent_failure', 'Undeliverable - Unable to deliver']);

    const declinedEmailId = await insertEmail(sql);
    const declinedId = await insertNotification(sql, declinedEmailId);
    await recordStatusEvent(sql, delivered(declinedId, { status: 'preferences-declined' }), callback);
    t.same(
      (await eventsOf(sql, declinedId)).map((e) => [e.status, e.status_reason]),
      [['permanent-failure', PreferencesDeclinedReason]],
    );
    t.equal((await emailRow(sql, declinedEmailId)).state_reason, PreferencesDeclinedReason);
  });

  t.test('an email without an MHV correlation id gets an unpostable AAL event', async (t) => {
    const emailId = await insertEmail(sql, { mhv_correlation_id: null });
    const id = await insertNotification(sql, emailId);
    await recordStatusEvent(sql, delivered(id, { completedAt: null }), callback);
    const [aal] = await aalEventsOf(sql, emailId);
    t.equal(aal?.state, 'unpostable');
    t.equal(aal?.last_error, 'no MHV correlation id');
    t.equal(aal?.mhv_correlation_id, null);
    t.ok(aal?.completion_time instanceof Date, 'completion time falls back to the receipt time');
  });

  t.test('a late event about an earlier attempt leaves the email with its latest send', async (t) => {
    const emailId = await insertEmail(sql, { attempts: 2 });
    const first = await insertNotification(sql, emailId, { attempt: 1 });
    const second = await insertNotification(sql, emailId, { attempt: 2 });
    await recordStatusEvent(
      sql,
      delivered(first, { status: 'permanent-failure', statusReason: 'Undeliverable - Unable to deliver' }),
      callback,
    );
    t.equal((await notificationRow(sql, first)).status, 'permanent-failure');
    t.equal((await emailRow(sql, emailId)).state, 'sent');
    await recordStatusEvent(sql, delivered(second), callback);
    t.equal((await emailRow(sql, emailId)).state, 'delivered');
  });

  t.test('a real final status replaces our expiry', async (t) => {
    const emailId = await insertEmail(sql);
    const id = await insertNotification(sql, emailId);
    await recordStatusEvent(sql, { notificationId: id, status: 'expired', statusReason: 'no final status within retention' }, poll);
    t.equal((await emailRow(sql, emailId)).state, 'expired');
    t.same(await recordStatusEvent(sql, delivered(id), callback), { outcome: 'applied', aalEventCreated: true });
    t.equal((await emailRow(sql, emailId)).state, 'delivered');
  });

  t.test('an unknown status is kept and changes nothing', async (t) => {
    const emailId = await insertEmail(sql);
    const id = await insertNotification(sql, emailId);
    t.same(await recordStatusEvent(sql, delivered(id, { status: 'virus-scan-failed' }), callback), {
      outcome: 'unrecognised',
      aalEventCreated: false,
    });
    t.equal((await notificationRow(sql, id)).status, 'created');
    t.same(
      (await eventsOf(sql, id)).map((e) => e.status),
      ['virus-scan-failed'],
    );
  });

  t.test('without completion times, progress decides: a retried created does not undo sending', async (t) => {
    const emailId = await insertEmail(sql);
    const id = await insertNotification(sql, emailId);
    const noTimes = { completedAt: null, sentAt: null };
    t.equal((await recordStatusEvent(sql, delivered(id, { status: 'sending', ...noTimes }), callback)).outcome, 'applied');
    t.equal((await recordStatusEvent(sql, delivered(id, { status: 'created', ...noTimes }), callback)).outcome, 'stale');
    t.equal(
      (await recordStatusEvent(sql, delivered(id, { status: 'sending', ...noTimes }), poll)).outcome,
      'duplicate',
      'no completion time is a value of the key too',
    );
    t.equal((await notificationRow(sql, id)).status, 'sending');
    t.equal((await emailRow(sql, emailId)).state, 'sent', 'a non-final status leaves the email sent');
  });
});
