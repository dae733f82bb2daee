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

  // The open notifications are listed in a table of their own (sql/031), so that no index of
  // notification holds a column a status changes: each status update rewrites the row in place.
  t.test('a status update rewrites its notification in place, and the open ones are listed apart', async (t) => {
    const listed = async (id: string) => {
      const [row] = await sql<{ status: string; same: boolean }[]>`
        select o.status, o.last_event_at = n.last_event_at as same
          from notification_open o join notification n on n.id = o.notification_id where o.notification_id = ${id}`;
      return row ? [row.status, row.same] : null;
    };
    /**
     * The notification updates `work` made, and how many of them were in place (HOT): the counts of
     * the connection's statistics not yet reported, before and after, in one transaction.
     */
    const updatesIn = async (work: (tx: typeof sql) => Promise<unknown>) =>
      sql.begin(async (tx) => {
        const counts = async () => {
          const [row] = await tx<{ updated: number; hot: number }[]>`
            select pg_stat_get_xact_tuples_updated('notification'::regclass)::int as updated,
                   pg_stat_get_xact_tuples_hot_updated('notification'::regclass)::int as hot`;
          return row!;
        };
        const before = await counts();
        await work(tx as unknown as typeof sql);
        const after = await counts();
        return { updated: after.updated - before.updated, hot: after.hot - before.hot };
      });
    const id = await insertNotification(sql, await insertEmail(sql));
    t.same(await listed(id), ['created', true], 'a new notification is listed');
    t.same(await updatesIn((tx) => recordStatusEvent(tx, event(id, { status: 'sending', completedAt: null }), callback)), {
      updated: 1,
      hot: 1,
    });
    t.same(await listed(id), ['sending', true], 'its list entry follows its status and last news');
    t.same(await updatesIn((tx) => recordStatusEvent(tx, event(id), callback)), { updated: 1, hot: 1 }, 'delivered: in place');
    t.equal(await listed(id), null, 'a final notification leaves the list');
    t.same(await updatesIn((tx) => recordStatusEvent(tx, event(id), callback)), { updated: 1, hot: 1 }, 'a duplicate: in place');
    t.equal(await listed(id), null, "a final notification's later news does not list it again");
  });
});
