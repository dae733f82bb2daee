// Callbacks that arrive together are recorded by one statement (sql/008_record_status_events.sql),
// each with its own outcome, and one that Postgres refuses fails alone. A callback arriving alone
// is sent at once; one statement runs at a time unless it stalls.
import { randomUUID } from 'node:crypto';
import t from 'tap';
import { applyPendingStatusEvents, recordStatusEvent, StatusEventFailedError, type StatusEvent } from '../../src/status/repository.ts';
import { StatusEventBatcher } from '../../src/status/status-event-batcher.ts';
import { testDatabase } from '../support/database.ts';
import { insertNotification } from '../support/fixtures.ts';
import {
  aalEventsOf,
  advisoryLockWaiter,
  callbackOptions as callback,
  deliveredEvent as event,
  emailRow,
  eventsOf,
  insertEmail,
  notificationRow,
  tracedPool,
} from '../support/status.ts';
import { waitFor } from '../support/wait.ts';

t.test('recording callbacks in batches against a real database', async (t) => {
  const { sql, url } = await testDatabase(t);

  t.test('a callback arriving alone is sent at once, in one statement', async (t) => {
    const { traced, statements } = await tracedPool(t, url, 1);
    const batcher = new StatusEventBatcher(traced, callback);
    const emailId = await insertEmail(sql);
    const id = await insertNotification(sql, emailId);
    const recorded = batcher.record(event(id));
    // No timer and no wait for company: the statement is under way before record() returns.
    t.equal(batcher.inFlight, 1);
    t.same(await recorded, { outcome: 'applied', aalEventCreated: true });
    t.equal(statements.length, 1, statements.join('\n'));
    t.match(statements[0], /record_status_events/);
    t.equal(batcher.inFlight, 0);
    t.equal((await emailRow(sql, emailId)).state, 'delivered');
  });

  t.test('callbacks arriving together share a statement, each with its own outcome', async (t) => {
    const { traced, statements } = await tracedPool(t, url, 2);
    const batcher = new StatusEventBatcher(traced, { ...callback, maxInFlight: 1 });
    const emails = await Promise.all(Array.from({ length: 4 }, () => insertEmail(sql)));
    const ids = await Promise.all(emails.map((emailId) => insertNotification(sql, emailId)));
    const [a, b, c, d] = ids as [string, string, string, string];
    await batcher.record(event(c, { status: 'delivered', completedAt: '2026-05-14T13:30:00Z' }));
    statements.length = 0;
    const unknown = randomUUID();
    const cases: [StatusEvent, string, boolean][] = [
      [event(a), 'applied', true], // sent alone: the batcher was idle
      [event(b), 'applied', true],
      [event(b), 'duplicate', false], // the same event again, in the same batch
      [event(c, { status: 'sending', completedAt: '2026-05-14T13:22:09.500000Z' }), 'stale', false],
      [event(unknown), 'pending_notification', false],
      [event(d, { status: 'virus-scan-failed' }), 'unrecognised', false],
      [event(d, { status: 'delivered' }), 'applied', true],
    ];
    const results = await Promise.all(cases.map(([e]) => batcher.record(e)));
    t.same(
      results,
      cases.map(([, outcome, aalEventCreated]) => ({ outcome, aalEventCreated })),
    );
    t.equal(statements.length, 2, 'the first alone, the six that queued behind it together');
    t.ok(statements.every((s) => /record_status_events/.test(s)));
    t.same(
      (await eventsOf(sql, b)).map((e) => e.status),
      ['delivered'],
    );
    t.same(
      (await eventsOf(sql, unknown)).map((e) => e.applied_at),
      [null],
    );
    t.equal((await notificationRow(sql, c)).status, 'delivered');
    t.same(
      (await eventsOf(sql, d)).map((e) => e.status),
      ['virus-scan-failed', 'delivered'],
    );
    for (const emailId of [emails[0]!, emails[1]!, emails[3]!]) t.equal((await aalEventsOf(sql, emailId)).length, 1);
  });

  t.test('an event Postgres refuses fails alone; the rest of its batch is committed', async (t) => {
    const { traced, statements } = await tracedPool(t, url, 2);
    const batcher = new StatusEventBatcher(traced, { ...callback, maxInFlight: 1 });
    const first = await insertNotification(sql, await insertEmail(sql));
    const emailId = await insertEmail(sql);
    const good = await insertNotification(sql, emailId);
    const bad = await insertNotification(sql, await insertEmail(sql));
    // No 30 February: the route answers 400 for it, but the statement must not trust its callers.
    const batch = [
      batcher.record(event(first)),
      batcher.record(event(bad, { completedAt: '2026-02-30T10:00:00Z' })),
      batcher.record(event(good)),
    ];
    const [a, refused, b] = await Promise.allSettled(batch);
    t.equal(statements.length, 2);
    t.same(a, { status: 'fulfilled', value: { outcome: 'applied', aalEventCreated: true } });
    t.same(b, { status: 'fulfilled', value: { outcome: 'applied', aalEventCreated: true } });
    t.equal(refused!.status, 'rejected');
    const error = (refused as PromiseRejectedResult).reason as StatusEventFailedError;
    t.type(error, StatusEventFailedError);
    t.equal(error.code, '22008');
    t.same(await eventsOf(sql, bad), [], 'nothing of the refused event is kept');
    t.equal((await notificationRow(sql, good)).status, 'delivered');
    t.equal((await aalEventsOf(sql, emailId)).length, 1);
  });

  // A lone surrogate is valid JSON ("\ud800") and so can come in a callback, but Postgres's jsonb
  // input refuses it: sent as it is, it failed the whole statement, every other event of its batch
  // with it, and again on each of VA Notify's retries.
  t.test('a lone surrogate in a text field is stored as U+FFFD, and its batch is committed', async (t) => {
    const { traced, statements } = await tracedPool(t, url, 2);
    const batcher = new StatusEventBatcher(traced, { ...callback, maxInFlight: 1 });
    const first = await insertNotification(sql, await insertEmail(sql));
    const emailId = await insertEmail(sql);
    const good = await insertNotification(sql, emailId);
    const odd = await insertNotification(sql, await insertEmail(sql));
    const results = await Promise.all([
      batcher.record(event(first)),
      batcher.record(event(odd, { statusReason: 'x\ud800y', reference: '\udfffz', provider: 'ses\ud83d' })),
      batcher.record(event(good)),
    ]);
    t.equal(statements.length, 2, 'the last two shared a statement');
    t.same(
      results,
      [1, 2, 3].map(() => ({ outcome: 'applied', aalEventCreated: true })),
    );
    t.same(
      (await eventsOf(sql, odd)).map((e) => e.status_reason),
      ['x\ufffdy'],
    );
    const [stored] = await sql<{ reference: string; provider: string }[]>`
      select reference, provider from notification_status_event where notification_id = ${odd}`;
    t.same(stored, { reference: '\ufffdz', provider: 'ses\ufffd' });
    t.equal((await notificationRow(sql, good)).status, 'delivered');
    t.equal((await aalEventsOf(sql, emailId)).length, 1);
    // What the one-event path stores for the same text.
    const other = await insertNotification(sql, await insertEmail(sql));
    await recordStatusEvent(sql, event(other, { statusReason: 'x\ud800y' }), callback);
    t.same(
      (await eventsOf(sql, other)).map((e) => e.status_reason),
      ['x\ufffdy'],
    );
  });

  t.test('a statement that fails as a whole rejects every event of its batch, and none is kept', async (t) => {
    const { traced } = await tracedPool(t, url, 2);
    const batcher = new StatusEventBatcher(traced, { ...callback, maxInFlight: 1 });
    const held = await insertNotification(sql, await insertEmail(sql));
    const other = await insertNotification(sql, await insertEmail(sql));
    let settled: Promise<PromiseSettledResult<unknown>[]> | undefined;
    await sql.begin(async (tx) => {
      // This transaction holds the lock of `held`, so the batch carrying it waits until its
      // connection is cut: the statement fails as a whole, as when the database goes away.
      await applyPendingStatusEvents(tx, held, callback);
      settled = Promise.allSettled([batcher.record(event(randomUUID())), batcher.record(event(held)), batcher.record(event(other))]);
      await sql`select pg_terminate_backend(${await advisoryLockWaiter(sql)})`;
    });
    const [alone, ...batch] = await settled!;
    t.equal(alone!.status, 'fulfilled', 'the first went alone and committed');
    t.same(
      batch.map((r) => r.status),
      ['rejected', 'rejected'],
    );
    t.same(await eventsOf(sql, held), []);
    t.same(await eventsOf(sql, other), []);
    t.same(await batcher.record(event(other)), { outcome: 'applied', aalEventCreated: true }, 'the batcher goes on');
  });

  t.test('one statement at a time, and a stalled one does not hold the callbacks behind it', async (t) => {
    const { traced, statements } = await tracedPool(t, url, 3);
    const batcher = new StatusEventBatcher(traced, { ...callback, stallMs: 100 });
    const held = await insertNotification(sql, await insertEmail(sql));
    const behind = await Promise.all([1, 2].map(async () => insertNotification(sql, await insertEmail(sql))));
    let heldResult: Promise<unknown> | undefined;
    let heldSettled = false;
    await sql.begin(async (tx) => {
      // This transaction holds the lock of `held`: the statement carrying it waits for the commit.
      await applyPendingStatusEvents(tx, held, callback);
      heldResult = batcher.record(event(held)).finally(() => {
        heldSettled = true;
      });
      await advisoryLockWaiter(sql);
      const queued = behind.map((id) => batcher.record(event(id)));
      t.equal(batcher.inFlight, 1, 'the callbacks behind it queue while it has not yet stalled');
      t.same(
        await Promise.all(queued),
        [1, 2].map(() => ({ outcome: 'applied', aalEventCreated: true })),
      );
      t.equal(heldSettled, false, 'recorded beside the stalled statement, which still waits');
      t.equal(statements.length, 2, 'the two behind it shared the statement that started beside it');
    });
    t.same(await heldResult, { outcome: 'applied', aalEventCreated: true });
    t.equal(batcher.inFlight, 0);
  });

  t.test('what a stalled statement left behind (more than a batch) goes beside it once it stalls', async (t) => {
    const { traced } = await tracedPool(t, url, 3);
    const batcher = new StatusEventBatcher(traced, { ...callback, stallMs: 50, maxBatchSize: 1 });
    const quick = await insertNotification(sql, await insertEmail(sql));
    const held = await insertNotification(sql, await insertEmail(sql));
    const left = await insertNotification(sql, await insertEmail(sql));
    let heldSettled = false;
    let heldResult: Promise<unknown> | undefined;
    await sql.begin(async (tx) => {
      await applyPendingStatusEvents(tx, held, callback);
      // The first goes at once; the other two queue behind it, and the statement after it takes
      // only `held` (one a batch), which stalls on the lock this transaction holds.
      const first = batcher.record(event(quick));
      heldResult = batcher.record(event(held)).finally(() => {
        heldSettled = true;
      });
      const behind = batcher.record(event(left));
      t.same(await first, { outcome: 'applied', aalEventCreated: true });
      t.same(await behind, { outcome: 'applied', aalEventCreated: true }, 'recorded with nothing else arriving');
      t.equal(heldSettled, false, 'beside the stalled statement, which still waits');
    });
    t.same(await heldResult, { outcome: 'applied', aalEventCreated: true });
  });

  t.test('two stalled statements at most: the callbacks behind them wait for one to end', async (t) => {
    const { traced } = await tracedPool(t, url, 4);
    const batcher = new StatusEventBatcher(traced, { ...callback, stallMs: 20 });
    const held = await Promise.all([1, 2].map(async () => insertNotification(sql, await insertEmail(sql))));
    const after = await insertNotification(sql, await insertEmail(sql));
    let results: Promise<unknown[]> | undefined;
    let afterSettled = false;
    await sql.begin(async (tx) => {
      for (const id of held) await applyPendingStatusEvents(tx, id, callback);
      const stalled = held.map((id) => batcher.record(event(id)));
      await waitFor('two statements running', () => batcher.inFlight === 2, 5_000, 5);
      const third = batcher.record(event(after)).finally(() => {
        afterSettled = true;
      });
      await new Promise((resolve) => setTimeout(resolve, 200));
      t.equal(batcher.inFlight, 2, 'no third statement, however long the two have stalled');
      t.equal(afterSettled, false);
      results = Promise.all([...stalled, third]);
    });
    t.same(
      await results,
      [1, 2, 3].map(() => ({ outcome: 'applied', aalEventCreated: true })),
    );
    t.equal(batcher.inFlight, 0);
  });

  t.test('a batch waits for the sender storing one of its ids, and then applies that event', async (t) => {
    const { traced } = await tracedPool(t, url, 2);
    const batcher = new StatusEventBatcher(traced, { ...callback, maxInFlight: 1 });
    const storedEmail = await insertEmail(sql);
    const stored = await insertNotification(sql, storedEmail);
    const sendingEmail = await insertEmail(sql, { state: 'sending' });
    const sending = randomUUID();
    let results: Promise<unknown[]> | undefined;
    await sql.begin(async (tx) => {
      await insertNotification(tx, sendingEmail, { attempt: 1, id: sending });
      await tx`update tracking_email set state = 'sent' where id = ${sendingEmail}`;
      t.same(await applyPendingStatusEvents(tx, sending, callback), { applied: 0, stale: 0, aalEventCreated: false });
      results = Promise.all([batcher.record(event(stored)), batcher.record(event(sending))]);
      await advisoryLockWaiter(sql);
    });
    const outcomes = (await results!) as { outcome: string }[];
    t.same(
      outcomes.map((r) => r.outcome),
      ['applied', 'applied'],
    );
    t.equal((await emailRow(sql, sendingEmail)).state, 'delivered');
    t.equal((await emailRow(sql, storedEmail)).state, 'delivered');
  });
});
