// Recording a status event is one statement (sql/006_record_status_event.sql), and that statement
// orders statuses by the tables in notification-status.ts, which it is given rather than keeps.
import { randomUUID } from 'node:crypto';
import t from 'tap';
import { NotificationStatuses, isFinal, progressRank } from '../../src/status/notification-status.ts';
import { recordStatusEvent, type StatusEvent } from '../../src/status/repository.ts';
import { testDatabase } from '../support/database.ts';
import { insertNotification } from '../support/fixtures.ts';
import {
  aalEventsOf,
  callbackOptions as callback,
  deliveredEvent as event,
  emailRow,
  eventsOf,
  insertEmail,
  notificationRow,
  tracedPool,
} from '../support/status.ts';

t.test('recording a status event against a real database', async (t) => {
  const { sql, url } = await testDatabase(t);

  t.test('a callback is one statement: no BEGIN, no COMMIT, one round trip', async (t) => {
    const { traced, statements } = await tracedPool(t, url, 1);
    const emailId = await insertEmail(sql);
    const id = await insertNotification(sql, emailId);
    t.same(await recordStatusEvent(traced, event(id), callback), { outcome: 'applied', aalEventCreated: true });
    t.equal(statements.length, 1, statements.join('\n'));
    t.match(statements[0], /record_status_event/);
    t.equal((await emailRow(sql, emailId)).state, 'delivered');
    t.equal((await aalEventsOf(sql, emailId)).length, 1);
  });

  t.test('inside a transaction it is a savepoint: a failed event leaves the transaction usable', async (t) => {
    const emailId = await insertEmail(sql);
    const id = await insertNotification(sql, emailId);
    await sql.begin(async (tx) => {
      await t.rejects(recordStatusEvent(tx, event(id, { completedAt: '2026-02-30T10:00:00Z' }), callback));
      t.same(await recordStatusEvent(tx, event(id), callback), { outcome: 'applied', aalEventCreated: true });
    });
    t.same(
      (await eventsOf(sql, id)).map((e) => e.status),
      ['delivered'],
    );
    t.equal((await notificationRow(sql, id)).status, 'delivered');
  });

  // Without completion times an event replaces the current status when (final, progress rank) is
  // at least as far along; at the same point the later receipt wins. Every ordered pair of known
  // statuses, so that the statement and notification-status.ts cannot disagree about any of them.
  t.test('every pair of statuses is ordered as notification-status.ts says', async (t) => {
    const key = (status: (typeof NotificationStatuses)[number]) => [isFinal(status) ? 1 : 0, progressRank(status)] as const;
    const noTimes = { completedAt: null, sentAt: null };
    for (const first of NotificationStatuses) {
      for (const second of NotificationStatuses) {
        if (first === second) continue; // the same key: a duplicate
        const id = await insertNotification(sql, await insertEmail(sql));
        await recordStatusEvent(sql, event(id, { status: first, ...noTimes }), callback);
        const result = await recordStatusEvent(sql, event(id, { status: second, ...noTimes }), callback);
        const [a, b] = [key(first), key(second)];
        const forward = b[0] > a[0] || (b[0] === a[0] && b[1] >= a[1]);
        t.equal(result.outcome, forward ? 'applied' : 'stale', `${first} then ${second}`);
        t.equal((await notificationRow(sql, id)).status, forward ? second : first);
      }
    }
  });

  t.test('every event is news of its notification: applied, stale, duplicate and unrecognised alike', async (t) => {
    const id = await insertNotification(sql, await insertEmail(sql));
    const steps: [Partial<StatusEvent>, string][] = [
      [{}, 'applied'],
      [{ status: 'sending', completedAt: '2026-05-14T13:22:09.500000Z' }, 'stale'],
      [{}, 'duplicate'],
      [{ status: 'virus-scan-failed' }, 'unrecognised'],
    ];
    for (const [fields, outcome] of steps) {
      await sql`update notification set last_event_at = now() - interval '1 day' where id = ${id}`;
      t.equal((await recordStatusEvent(sql, event(id, fields), callback)).outcome, outcome);
      const { last_event_at } = await notificationRow(sql, id);
      t.ok(Date.now() - last_event_at.getTime() < 60_000, `${outcome}: last_event_at is now`);
    }
  });

  t.test('an unknown notification id: kept, and the same event again is a duplicate', async (t) => {
    const id = randomUUID();
    t.same(await recordStatusEvent(sql, event(id), callback), { outcome: 'pending_notification', aalEventCreated: false });
    t.same(await recordStatusEvent(sql, event(id), callback), { outcome: 'duplicate', aalEventCreated: false });
    t.same(
      (await eventsOf(sql, id)).map((e) => e.applied_at),
      [null],
    );
  });
});
