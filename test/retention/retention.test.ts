// Retention: what it removes, what it never removes, how it holds its locks, and that a CMOP resend
// of a dispense whose history was removed sends nothing.
import t, { type Test } from 'tap';
import { testConfig } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';
import { restAfterBatch, FirstLookMs, runRetention, YieldMs, type RetentionCounts } from '../../src/retention/retention-job.ts';
import { AdvisoryLock } from '../../src/db/locks.ts';
import { internalAuth, LogCapture, testApp, type TestApp, runJob } from '../support/app.ts';
import { testDatabase } from '../support/database.ts';
import { icn } from '../support/fixtures.ts';
import { postDispenses, readAcks, readSample } from '../support/ingest.ts';
import { waitFor } from '../support/wait.ts';
import type { Sql } from '../../src/db/connect.ts';
import { storeBatch } from '../../src/event-bus/store.ts';

/**
 * Settings for runs beside an idle pipeline: no look at its rate before the first batch (the
 * RETENTION_YIELD_ROWS_PER_SECOND tests below look).
 */
const retentionConfig = (overrides: Record<string, string> = {}) => testConfig({ RETENTION_YIELD_ROWS_PER_SECOND: '0', ...overrides });

const json = { ...internalAuth, 'content-type': 'application/json' };

function dispenseEvent(n: number, rx = `31${String(n).padStart(5, '0')}`) {
  return {
    messageId: `retention-${n}-${rx}`,
    stationNumber: '521',
    patient: { icn: icn(100 + n), mhvCorrelationId: String(30_000_000 + n) },
    prescription: { rxNumber: rx, fillNumber: 0, drugName: 'METOPROLOL TARTRATE 25MG TAB', ndc: '00378001801', quantity: 60 },
    dispensedAt: '2026-05-14T09:12:00Z',
    shippedAt: '2026-05-14T15:40:00Z',
    carrier: 'UPS',
    trackingNumber: `1Z99999903${String(n).padStart(8, '0')}`,
  };
}

async function ingest(app: TestApp['app'], events: unknown[]) {
  const answer = await app.inject({ method: 'POST', url: '/v1/dispenses', headers: json, payload: events });
  if (answer.statusCode !== 200) throw new Error(`ingest answered ${answer.statusCode}: ${answer.body}`);
  return answer.json();
}

/** Waits for the sandbox VA Notify's delivered callbacks to have made `n` emails delivered. */
function deliveredEmails(sql: Sql, n: number) {
  return waitFor(
    `${n} emails delivered`,
    async () => (await sql`select count(*)::int as n from tracking_email where state = 'delivered'`)[0]!.n === n,
    10_000,
    50,
  );
}

/** Moves every timestamp of the stored history `days` into the past, as if it had been written then. */
async function age(sql: Sql, days: number) {
  const by = `${days} days`;
  await sql`update inbound_message set received_at = received_at - ${by}::interval`;
  await sql`update medication_dispense set created_at = created_at - ${by}::interval, updated_at = updated_at - ${by}::interval`;
  await sql`update tracking_email set created_at = created_at - ${by}::interval, updated_at = updated_at - ${by}::interval`;
  await sql`update notification_status_event set received_at = received_at - ${by}::interval`;
}

const counts = (sql: Sql) =>
  sql`
  select (select count(*) from tracking_email)::int as emails, (select count(*) from medication_dispense)::int as dispenses,
         (select count(*) from notification)::int as notifications, (select count(*) from notification_status_event)::int as status_events,
         (select count(*) from aal_event)::int as aal_events, (select count(*) from removed_dispense_key)::int as keys`.then((r) => r[0]!);

t.test('removes the whole history of final emails only, and a resend afterwards sends nothing', async (t) => {
  const { app, db, vaNotify } = await testApp(t, { GROUPING_QUIET_MINUTES: '0' }, { listen: true });
  const sql = db.sql;
  // Three veterans delivered and logged; then one's AAL event is made pending again (not posted yet).
  await ingest(app, [dispenseEvent(1), dispenseEvent(2), dispenseEvent(3)]);
  t.match(await runJob(app, 'grouping'), { emailsCreated: 3 });
  t.match(await runJob(app, 'send'), { sent: 3 });
  await deliveredEmails(sql, 3);
  t.match(await runJob(app, 'aal'), { posted: 3 });
  await sql`update aal_event set state = 'pending', posted_at = null where tracking_email_id =
              (select id from tracking_email where patient_icn = ${icn(102)})`;
  // A fourth veteran's email is grouped and not sent yet; a fifth's dispense is still pending; a
  // sixth's email failed its AAL post and waits for an operator.
  await ingest(app, [dispenseEvent(4)]);
  t.match(await runJob(app, 'grouping'), { emailsCreated: 1 });
  await ingest(app, [dispenseEvent(5)]);
  await sql`update aal_event set state = 'failed' where tracking_email_id = (select id from tracking_email where patient_icn = ${icn(103)})`;
  const sentBefore = vaNotify.state.notifications.size;
  await age(sql, 100);

  const result = await runJob(app, 'retention');
  t.match(result, {
    status: 'done',
    trackingEmails: 1,
    dispenses: 1,
    notifications: 1,
    aalEvents: 1,
    dispenseKeysKept: 1,
    lockTimeouts: 0,
    stopped: false,
  });
  t.ok(result.statusEvents >= 1, "the removed notification's status events");
  const left = await sql`select patient_icn, state from tracking_email order by patient_icn`;
  t.same(
    left.map((e) => e.patient_icn),
    [icn(102), icn(103), icn(104)],
    'kept: AAL event pending, AAL event failed, email queued',
  );
  const dispenses = await sql`select patient_icn, state from medication_dispense order by patient_icn`;
  t.same(
    dispenses.map((d) => [d.patient_icn, d.state]),
    [
      [icn(102), 'grouped'],
      [icn(103), 'grouped'],
      [icn(104), 'grouped'],
      [icn(105), 'pending'],
    ],
  );
  t.match(await counts(sql), { emails: 3, dispenses: 4, notifications: 2, aal_events: 2, keys: 1 });
  const [events] = await sql`select count(*)::int as n from notification_status_event e
                              where not exists (select 1 from notification n where n.id = e.notification_id)`;
  t.equal(events!.n, 0, 'no status event of a removed notification is left');

  // Bodies: emptied when every dispense they carried is final; the body with veterans 1-3 was, the
  // ones holding a queued email's and a pending dispense are kept. The rows keep their outcome.
  const bodies = await sql`select body = '' as emptied, body_removed_at is not null as removed, outcome from inbound_message order by id`;
  t.same(
    bodies.map((b) => [b.emptied, b.removed]),
    [
      [true, true],
      [false, false],
      [false, false],
    ],
  );
  t.ok(
    bodies.every((b) => b.outcome === 'accepted'),
    'each row keeps its outcome',
  );

  const metrics = await app.inject({ method: 'GET', url: '/metrics' });
  t.match(metrics.body, /rx_retention_removed_total\{record="trackingEmails"\} 1\b/);
  t.match(metrics.body, /rx_retention_removed_total\{record="inboundBodies"\} 1\b/);
  t.match(metrics.body, /rx_retention_removed_total\{record="dispenseKeysKept"\} 1\b/);

  // CMOP sends the first veteran's dispense again: it was emailed, so it is a duplicate.
  const resend = await ingest(app, [dispenseEvent(1)]);
  t.match(resend, { duplicates: 1 });
  t.notOk(resend.inserted, 'nothing stored');
  t.match(await runJob(app, 'grouping'), { emailsCreated: 1 }, 'only the fifth veteran');
  await runJob(app, 'send');
  const sentTo = [...vaNotify.state.notifications.values()].slice(sentBefore).map((n) => n.recipientIdentifier?.id_value);
  t.same(sentTo.sort(), [icn(104), icn(105)].sort(), 'no second email to the first veteran');
  const [stored] = await sql`select count(*)::int as n from medication_dispense where patient_icn = ${icn(101)}`;
  t.equal(stored!.n, 0, 'the resend is not stored');

  // The same resend in a body with a new event: the new one is stored, the removed one is not.
  const mixed = await ingest(app, [dispenseEvent(1), dispenseEvent(6)]);
  t.match(mixed, { duplicates: 1 });
  t.same(
    (await sql`select patient_icn from medication_dispense where patient_icn in (${icn(101)}, ${icn(106)})`).map((r) => r.patient_icn),
    [icn(106)],
  );
});

t.test('an HL7 resend of a dispense whose history was removed is acknowledged and sends nothing', async (t) => {
  const { app, db, vaNotify } = await testApp(t, { GROUPING_QUIET_MINUTES: '0' }, { listen: true });
  const sql = db.sql;
  const body = readSample('rds-o13-one-package-two-rx.hl7');
  const first = await postDispenses(app, body, 'application/hl7-v2');
  t.same(
    readAcks(first.body).map((a) => a.code),
    ['AA', 'AA'],
  );
  t.match(await runJob(app, 'grouping'), { emailsCreated: 1 });
  t.match(await runJob(app, 'send'), { sent: 1 });
  await deliveredEmails(sql, 1);
  t.match(await runJob(app, 'aal'), { posted: 1 });
  await age(sql, 100);
  t.match(await runJob(app, 'retention'), { status: 'done', trackingEmails: 1, dispenses: 2, dispenseKeysKept: 2 });
  t.match(await counts(sql), { emails: 0, dispenses: 0, keys: 2 });

  const sentBefore = vaNotify.state.notifications.size;
  const resend = await postDispenses(app, body, 'application/hl7-v2');
  t.equal(resend.statusCode, 200);
  t.same(
    readAcks(resend.body).map((a) => [a.code, a.text]),
    [
      ['AA', 'accepted: already received'],
      ['AA', 'accepted: already received'],
    ],
    'each message acknowledged as a duplicate',
  );
  t.match(await runJob(app, 'grouping'), { emailsCreated: 0 });
  await runJob(app, 'send');
  t.equal(vaNotify.state.notifications.size, sentBefore, 'no second email');
  t.match(await counts(sql), { emails: 0, dispenses: 0 });
});

t.test('a second run removes nothing more; 0 keeps every record', async (t) => {
  const { app, db } = await testApp(
    t,
    { GROUPING_QUIET_MINUTES: '0', RECORD_RETENTION_DAYS: '0', INBOUND_BODY_RETENTION_DAYS: '0' },
    { listen: true },
  );
  await ingest(app, [dispenseEvent(1)]);
  await runJob(app, 'grouping');
  await runJob(app, 'send');
  await deliveredEmails(db.sql, 1);
  await runJob(app, 'aal');
  await age(db.sql, 10_000);
  t.match(await runJob(app, 'retention'), { status: 'done', trackingEmails: 0, dispenses: 0, inboundBodies: 0 });
  t.match(await counts(db.sql), { emails: 1, dispenses: 1, notifications: 1, aal_events: 1, keys: 0 });
  const [body] = await db.sql`select body from inbound_message`;
  t.not(body!.body, '', 'the body is kept');
});

/**
 * `n` final email histories written directly, as the pipeline leaves them: a body, one grouped
 * dispense, a delivered email, its notification, a status event, a posted AAL event; all `daysAgo` old.
 */
async function finalHistories(sql: Sql, n: number, daysAgo: number) {
  await sql`
    with body as (
      insert into inbound_message (content_type, body, outcome, received_at) values ('application/json', '[]', 'accepted', now() - make_interval(days => ${daysAgo}))
      returning id
    ),
    emails as (
      insert into tracking_email (patient_icn, mhv_correlation_id, personalisation, package_count, prescription_count, state, created_at, updated_at)
      select '10' || lpad(g::text, 8, '0') || 'V' || lpad(g::text, 6, '0'), '1', '{}', 1, 1, 'delivered',
             now() - make_interval(days => ${daysAgo}), now() - make_interval(days => ${daysAgo})
        from generate_series(1, ${n}) g
      returning id, patient_icn
    ),
    dispenses as (
      insert into medication_dispense (station_number, rx_number, fill_number, tracking_number, patient_icn, state, tracking_email_id, inbound_message_id, created_at, updated_at)
      select '521', 'rx' || e.patient_icn, 0, 'T' || e.patient_icn, e.patient_icn, 'grouped', e.id, (select id from body),
             now() - make_interval(days => ${daysAgo}), now() - make_interval(days => ${daysAgo})
        from emails e
    ),
    notifications as (
      insert into notification (id, tracking_email_id, attempt, status) select gen_random_uuid(), e.id, 1, 'delivered' from emails e
      returning id, tracking_email_id
    ),
    events as (
      insert into notification_status_event (notification_id, status, source, received_at, applied_at)
      select id, 'delivered', 'callback', now() - make_interval(days => ${daysAgo}), now() from notifications
    )
    insert into aal_event (tracking_email_id, notification_id, completion_time, detail_value, state)
    select tracking_email_id, id, now(), 'Packages', 'posted' from notifications`;
}

t.test(
  'batches: each one short transaction over at most RETENTION_BATCH_SIZE emails, taking no table lock and passing by locked rows',
  async (t) => {
    const db = await testDatabase(t);
    const sql = db.sql;
    await finalHistories(sql, 7, 100);
    const emails = await sql<{ id: string }[]>`select id from tracking_email order by created_at, id`;
    const config = retentionConfig({ RETENTION_BATCH_SIZE: '2' });
    const log = createLogger('silent', new LogCapture());

    // A callback is changing the first email at this moment: its row is locked.
    const callback = await sql.reserve();
    t.teardown(() => callback.release());
    await callback`begin`;
    await callback`select id from tracking_email where id = ${emails[0]!.id} for update`;

    const perBatch: Partial<RetentionCounts>[] = [];
    const observations: { lockedEmails: number; tableLocks: string[]; ingestFree: boolean }[] = [];
    const outsider = sql;
    const result = await runRetention({
      sql,
      config,
      log,
      onRemoved: (record, count) => {
        if (record === 'trackingEmails') perBatch.push({ trackingEmails: count });
      },
      onBatch: async (tx, step) => {
        if (step !== 'histories') return;
        const locks = await tx<{ mode: string; relname: string | null; locktype: string }[]>`
        select l.mode, c.relname, l.locktype from pg_locks l left join pg_class c on c.oid = l.relation
         where l.pid = pg_backend_pid() and l.locktype = 'relation' and l.granted`;
        // The emails some transaction holds, seen from outside: those a SKIP LOCKED read passes by.
        const ids = emails.map((e) => e.id);
        const [visible] = await outsider<{ n: number }[]>`select count(*)::int as n from tracking_email where id = any(${ids}::uuid[])`;
        const free = await outsider.begin(
          (o) => o<{ id: string }[]>`select id from tracking_email where id = any(${ids}::uuid[]) for update skip locked`,
        );
        const locked = { n: visible!.n - free.length - 1 }; // less the one the callback holds
        // Outside the batch, at this moment: an ingest's writes need no lock the batch holds (lock_timeout 1ms fails instead of waiting).
        let ingestFree = true;
        try {
          await outsider.begin(async (o) => {
            await o`set local lock_timeout = '1ms'`;
            const [m] = await o<
              { id: number }[]
            >`insert into inbound_message (content_type, body) values ('application/json', '[]') returning id`;
            await o`insert into tracking_email_draft (patient_icn) values ('1099999999V999999') on conflict (patient_icn) do update set last_arrival_at = now()`;
            throw Object.assign(new Error('roll back'), { rollback: m!.id });
          });
        } catch (error) {
          if (!(error as { rollback?: number }).rollback) ingestFree = false;
        }
        observations.push({
          lockedEmails: locked.n,
          tableLocks: locks.filter((l) => l.relname !== null && !l.relname.startsWith('pg_')).map((l) => l.mode),
          ingestFree,
        });
      },
    });
    await callback`rollback`;

    t.match(result, { status: 'done', trackingEmails: 6, lockTimeouts: 0 });
    t.ok(
      perBatch.every((b) => (b.trackingEmails ?? 0) <= 2),
      'no batch removed more than RETENTION_BATCH_SIZE emails',
    );
    t.ok(observations.length >= 3, 'several batches');
    for (const o of observations) {
      t.ok(
        o.lockedEmails <= 2,
        'a batch holds at most RETENTION_BATCH_SIZE emails: a callback locks any other one at once (SKIP LOCKED takes it)',
      );
      t.same(
        [...new Set(o.tableLocks)].filter((mode) => !['AccessShareLock', 'RowShareLock', 'RowExclusiveLock'].includes(mode)),
        [],
        'no lock on a whole table beyond what every write takes',
      );
      t.ok(o.ingestFree, 'an ingest writes without waiting for the batch');
    }
    const [kept] = await sql`select count(*)::int as n from tracking_email where id = ${emails[0]!.id}`;
    t.equal(kept!.n, 1, 'the email a callback held was passed by, not waited for');
    const again = await runRetention({ sql, config, log });
    t.match(again, { status: 'done', trackingEmails: 1 }, 'and removed by the next run');
  },
);

t.test('a batch that meets a row lock held elsewhere gives up for this run instead of queueing', async (t) => {
  const db = await testDatabase(t);
  const sql = db.sql;
  await finalHistories(sql, 3, 100);
  // An ingest's conflict on a stored dispense locks it (ON CONFLICT DO UPDATE) until its transaction ends.
  const ingest = await sql.reserve();
  t.teardown(() => ingest.release());
  await ingest`begin`;
  await ingest`select id from medication_dispense order by id limit 1 for no key update`;
  const log = createLogger('silent', new LogCapture());
  const result = await runRetention({ sql, config: retentionConfig({ RETENTION_BATCH_SIZE: '10' }), log });
  t.match(result, { status: 'done', trackingEmails: 0, lockTimeouts: 1 }, 'the batch was rolled back whole');
  await ingest`rollback`;
  t.match(await runRetention({ sql, config: retentionConfig({ RETENTION_BATCH_SIZE: '10' }), log }), {
    trackingEmails: 3,
    lockTimeouts: 0,
  });
});

t.test('a run that reaches its budget answers with more, and the next one goes on from there', async (t) => {
  const db = await testDatabase(t);
  await finalHistories(db.sql, 5, 100);
  const log = createLogger('silent', new LogCapture());
  const config = retentionConfig({ RETENTION_BATCH_SIZE: '2' });
  const first = await runRetention({ sql: db.sql, config, log, budgetMs: 0 });
  t.match(first, { status: 'done', more: true, batches: 0, trackingEmails: 0 }, 'no batch starts past the budget');
  const rest = await runRetention({ sql: db.sql, config, log });
  t.match(rest, { status: 'done', more: false, trackingEmails: 5 });
});

t.test('batches fill RETENTION_DUTY_PERCENT of a run: each one that leaves more is followed by a rest in proportion', async (t) => {
  const db = await testDatabase(t);
  await finalHistories(db.sql, 6, 100);
  const log = createLogger('silent', new LogCapture());
  const rests: number[] = [];
  const rest = async (ms: number) => void rests.push(ms);
  const result = await runRetention({
    sql: db.sql,
    config: retentionConfig({ RETENTION_BATCH_SIZE: '2', RETENTION_DUTY_PERCENT: '25' }),
    log,
    rest,
  });
  t.match(result, { status: 'done', trackingEmails: 6 });
  t.ok(rests.length >= 2, `a rest after each batch that left more (${rests.length})`);
  t.ok(
    rests.every((ms) => ms > 0),
    'each rest as long as three times its batch',
  );

  const other = await testDatabase(t);
  await finalHistories(other.sql, 6, 100);
  rests.length = 0;
  t.match(
    await runRetention({
      sql: other.sql,
      config: retentionConfig({ RETENTION_BATCH_SIZE: '2', RETENTION_DUTY_PERCENT: '100' }),
      log,
      rest,
    }),
    { trackingEmails: 6 },
  );
  t.same(rests, [], '100: batches back to back');
});

t.test('restAfterBatch: the rest that makes batches the given share of the time', async (t) => {
  t.equal(restAfterBatch(100, 25), 300);
  t.equal(restAfterBatch(100, 50), 100);
  t.equal(restAfterBatch(100, 100), 0);
  t.equal(restAfterBatch(40, 80), 10);
});

t.test('one retention at a time across instances', async (t) => {
  const db = await testDatabase(t);
  const holder = await db.sql.reserve();
  t.teardown(() => holder.release());
  await holder`select pg_advisory_lock(${AdvisoryLock.retention})`;
  const log = createLogger('silent', new LogCapture());
  t.same(await runRetention({ sql: db.sql, config: retentionConfig(), log }), { status: 'already_running' });
  await holder`select pg_advisory_unlock(${AdvisoryLock.retention})`;
  t.match(await runRetention({ sql: db.sql, config: retentionConfig(), log }), { status: 'done' });
});

t.test('late status events that matched no notification, cancelled dispenses and old keys go too', async (t) => {
  const db = await testDatabase(t);
  const sql = db.sql;
  await finalHistories(sql, 2, 100);
  await sql`insert into notification_status_event (notification_id, status, source, received_at)
            values (gen_random_uuid(), 'delivered', 'callback', now() - interval '100 days'),
                   (gen_random_uuid(), 'delivered', 'callback', now() - interval '1 day')`;
  const [body] = await sql`insert into inbound_message (content_type, body, outcome, received_at)
                           values ('application/hl7-v2', 'MSH|...', 'accepted', now() - interval '100 days') returning id`;
  await sql`insert into medication_dispense (station_number, rx_number, fill_number, state, inbound_message_id, created_at, updated_at)
            values ('521', '1', 0, 'cancelled', ${body!.id}, now() - interval '100 days', now() - interval '100 days'),
                   ('521', '2', 0, 'unprocessable', ${body!.id}, now() - interval '100 days', now() - interval '100 days')`;
  await sql`insert into removed_dispense_key (key_hash, removed_at) values (gen_random_uuid(), now() - interval '500 days'), (gen_random_uuid(), now())`;
  const log = createLogger('silent', new LogCapture());
  const result = await runRetention({ sql, config: retentionConfig(), log });
  t.match(result, { trackingEmails: 2, dispenseKeysKept: 2, dispenseKeysPurged: 1, inboundBodies: 1 });
  t.equal(result.status === 'done' && result.statusEvents, 3, 'two with their notifications, one late event that matched none');
  const left = await sql`select rx_number, state from medication_dispense order by rx_number`;
  t.same(
    left.map((d) => d.state),
    ['unprocessable'],
    'the cancelled dispense is removed; the unprocessable one waits for a correction',
  );
  const messages = await sql`select id, body from inbound_message order by id`;
  t.same(
    messages.map((m) => m.id),
    [body!.id],
    'the first body, emptied, with no dispense left, is removed; the one with an unprocessable dispense is kept',
  );
  t.equal(messages[0]!.body, 'MSH|...', 'with its body: an unprocessable dispense is not final');
  const [events] = await sql`select count(*)::int as n from notification_status_event`;
  t.equal(events!.n, 1, 'the recent late event is kept');
  const [keys] = await sql`select count(*)::int as n from removed_dispense_key`;
  t.equal(keys!.n, 3);
});

t.test(
  'an event-bus record published twice: its second body goes like any other, the first stays while its dispense is at work',
  async (t) => {
    const db = await testDatabase(t);
    const sql = db.sql;
    const record = (offset: number) => ({
      position: { topic: 'cmop_medication_dispense', partition: 0, offset: BigInt(offset) },
      decoded: { kind: 'dispense' as const, contentType: 'application/json' as const, body: JSON.stringify(dispenseEvent(1)) },
    });
    const stored = await storeBatch(sql, [record(0), record(1)]);
    t.match(stored.outcomes, { stored: 1, duplicate: 1 });
    await age(sql, 100);
    const log = createLogger('silent', new LogCapture());
    await runRetention({ sql, config: retentionConfig(), log });
    const kept =
      await sql`select event_offset::int as event_offset, body <> '' as has_body from inbound_message where source = 'event-bus' order by event_offset`;
    t.same(
      kept.map((m) => [m.event_offset, m.has_body]),
      [[0, true]],
      'the copy, which no dispense names, is removed; the body of the pending dispense is kept',
    );
    t.equal(await sql`select count(*)::int as n from medication_dispense`.then((r) => r[0]!.n), 1);
  },
);

t.test("RECORD_RETENTION_DAYS shorter than VA Notify's retention is refused at start", async (t) => {
  t.throws(() => testConfig({ RECORD_RETENTION_DAYS: '3' }), /RECORD_RETENTION_DAYS: must be 0/);
  t.throws(() => testConfig({ RETENTION_BATCH_SIZE: '0' }), /RETENTION_BATCH_SIZE/);
  t.equal(testConfig({ RECORD_RETENTION_DAYS: '0' }).RECORD_RETENTION_DAYS, 0);
  t.equal(testConfig().RECORD_RETENTION_DAYS, 90);
  t.equal(testConfig().INBOUND_BODY_RETENTION_DAYS, 30);
});

t.test('histories go first; a batch of bodies ends at RETENTION_BATCH_SIZE × 4 messages, a long file a batch of its own', async (t) => {
  const db = await testDatabase(t);
  const sql = db.sql;
  await finalHistories(sql, 2, 100);
  // Old bodies whose dispenses are gone: a file of 1,000 messages and three one-message records.
  for (const messages of [1000, 1, 1, 1]) {
    await sql`
      insert into inbound_message (received_at, content_type, body, outcome, message_count)
      values (now() - interval '101 days', 'application/hl7-v2', 'MSH|...', 'accepted', ${messages})`;
  }
  const steps: string[] = [];
  const emptiedPerBatch: number[] = [];
  const result = await runRetention({
    sql,
    config: retentionConfig({ RETENTION_BATCH_SIZE: '2', RETENTION_DUTY_PERCENT: '100' }),
    log: createLogger('silent', new LogCapture()),
    onBatch: async (_tx, step) => void steps.push(step),
    onRemoved: (record, count) => {
      if (record === 'inboundBodies') emptiedPerBatch.push(count);
    },
  });
  t.match(result, { status: 'done', trackingEmails: 2 });
  t.equal(steps[0], 'histories', 'the histories step runs first');
  t.ok(steps.indexOf('inbound_bodies') > steps.lastIndexOf('histories'), 'then the bodies');
  t.same(emptiedPerBatch.slice(0, 2), [1, 2], 'the 1,000-message file alone, then two records (8 messages at most)');
});

/**
 * Runs `write` on one connection, then has that backend add its counts to Postgres's cumulative
 * statistics at once, as a busy backend does within a second.
 */
async function counted(sql: Sql, write: (connection: Sql) => Promise<unknown>): Promise<void> {
  const connection = await sql.reserve();
  try {
    await write(connection as unknown as Sql);
    await connection`select pg_stat_force_next_flush()`;
  } finally {
    connection.release();
  }
}

/**
 * Emails waiting for their send (and so never removed): written before retention starts, so that only
 * what a burst does to them counts.
 */
const waitingEmails = (sql: Sql) => sql`
  insert into tracking_email (patient_icn, mhv_correlation_id, personalisation, package_count, prescription_count, state)
  select '30' || lpad(g::text, 8, '0') || 'V' || lpad(g::text, 6, '0'), '1', '{}', 1, 1, 'sending' from generate_series(1, 200) g`;

/**
 * What the pipeline writes in a burst: status callbacks, a CMOP file's dispenses, a grouping run's
 * emails, a send run's notifications, an AAL run's postings; and what must be there before it.
 */
const PipelineBursts: [string, (sql: Sql) => Promise<unknown>, ((sql: Sql) => Promise<unknown>)?][] = [
  [
    '500 callbacks',
    (sql) => sql`
      insert into notification_status_event (notification_id, status, source)
      select gen_random_uuid(), 'delivered', 'callback' from generate_series(1, 500)`,
  ],
  [
    'a 500-dispense file stored',
    (sql) => sql`
      insert into medication_dispense (station_number, rx_number, fill_number, tracking_number, state)
      select '521', 'burst' || g, 0, 'T' || g, 'cancelled' from generate_series(1, 500) g`,
  ],
  [
    '200 emails grouped',
    (sql) => sql`
      insert into tracking_email (patient_icn, mhv_correlation_id, personalisation, package_count, prescription_count, state)
      select '20' || lpad(g::text, 8, '0') || 'V' || lpad(g::text, 6, '0'), '1', '{}', 1, 1, 'queued' from generate_series(1, 200) g`,
  ],
  [
    '200 emails sent',
    (sql) => sql`
      insert into notification (id, tracking_email_id, attempt, status)
      select gen_random_uuid(), e.id, 1, 'created' from tracking_email e where e.state = 'sending'`,
    waitingEmails,
  ],
  [
    '200 AAL events posted',
    (sql) => sql`update aal_event set state = 'posted', posted_at = now() where state = 'pending'`,
    async (sql) => {
      await waitingEmails(sql);
      await sql`
        insert into aal_event (tracking_email_id, notification_id, completion_time, detail_value)
        select e.id, gen_random_uuid(), now(), 'Packages: none listed' from tracking_email e where e.state = 'sending'`;
    },
  ],
];

/**
 * Retention over six final histories, two a batch back to back, with `burst` written (and counted)
 * while its first batch runs, or as the run starts (between its first two looks at the pipeline).
 * `steps` lists the run's waits and batches in order.
 */
async function retentionBesideBurst(
  t: Test,
  burst: (sql: Sql) => Promise<unknown>,
  yieldRowsPerSecond: string,
  before?: (sql: Sql) => Promise<unknown>,
  when: 'during the first batch' | 'as the run starts' = 'during the first batch',
) {
  const db = await testDatabase(t);
  await finalHistories(db.sql, 6, 100);
  if (before) await counted(db.sql, before);
  const rests: number[] = [];
  const steps: string[] = [];
  let pending = true;
  const write = async () => {
    if (!pending) return;
    pending = false;
    await counted(db.sql, burst);
  };
  const result = await runRetention({
    sql: db.sql,
    config: testConfig({ RETENTION_BATCH_SIZE: '2', RETENTION_DUTY_PERCENT: '100', RETENTION_YIELD_ROWS_PER_SECOND: yieldRowsPerSecond }),
    log: createLogger('silent', new LogCapture()),
    rest: async (ms) => {
      rests.push(ms);
      steps.push(`wait ${ms} ms`);
      if (when === 'as the run starts') await write();
    },
    onBatch: async (_tx, step) => {
      steps.push(`batch of ${step}`);
      if (step === 'histories' && when === 'during the first batch') await write();
    },
  });
  return { result, rests, steps };
}

t.test('retention waits while the pipeline writes faster than RETENTION_YIELD_ROWS_PER_SECOND, then goes on', async (t) => {
  for (const [what, burst, before] of PipelineBursts) {
    const { result, rests } = await retentionBesideBurst(t, burst, '50', before);
    t.match(result, { status: 'done', trackingEmails: 6, yieldedMs: FirstLookMs + YieldMs }, what);
    t.same(
      rests,
      [FirstLookMs, YieldMs],
      `${what}: the first look's wait, then one wait after the burst, none between the batches before or after it (duty 100%)`,
    );
  }
  const { result, rests } = await retentionBesideBurst(t, PipelineBursts[0]![1], '0');
  t.match(result, { status: 'done', trackingEmails: 6, yieldedMs: 0 }, '0: never waits');
  t.same(rests, [], '0: no wait after the same burst, nor a look before the first batch');
});

t.test('a retention run that starts during a burst waits before its first batch', async (t) => {
  for (const [what, burst, before] of PipelineBursts) {
    const { result, steps } = await retentionBesideBurst(t, burst, '50', before, 'as the run starts');
    t.match(result, { status: 'done', trackingEmails: 6, yieldedMs: FirstLookMs + YieldMs }, what);
    t.same(
      steps.slice(0, 3),
      [`wait ${FirstLookMs} ms`, `wait ${YieldMs} ms`, 'batch of histories'],
      `${what}: the two looks saw the burst, and the first batch came after a wait`,
    );
  }
  const quiet = await retentionBesideBurst(t, async () => {}, '50', undefined, 'as the run starts');
  t.match(quiet.result, { status: 'done', trackingEmails: 6, yieldedMs: FirstLookMs }, 'no burst: the first look only');
  t.same(quiet.steps.slice(0, 2), [`wait ${FirstLookMs} ms`, 'batch of histories'], 'no burst: the first batch right after the first look');
});
