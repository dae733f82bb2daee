// Two instances starting together against one empty database: both migration runs succeed and
// every migration is applied exactly once.
import { randomBytes, randomUUID } from 'node:crypto';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { connect } from '../../src/db/connect.ts';
import { listMigrations, migrate, MigrationsDir } from '../../src/db/migrate.ts';
import { testDatabase } from '../support/database.ts';
import { startServiceProcess } from '../support/service-process.ts';

/**
 * An empty database beside the test database (whose connection reaches the server): its URL, and
 * how to drop it, once the test has closed its own connections to it.
 */
async function emptyDatabase(t: Parameters<typeof testDatabase>[0]) {
  const server = await testDatabase(t, { max: 1 });
  const name = `rx_test_empty_${randomBytes(6).toString('hex')}`;
  await server.sql.unsafe(`create database ${name}`);
  const url = new URL(server.url);
  url.pathname = `/${name}`;
  return { url: url.toString(), drop: () => server.sql.unsafe(`drop database if exists ${name} with (force)`) };
}

/**
 * A new database with the migrations before `version` applied, as a database deployed before it
 * would have them; dropped after the test.
 */
async function databaseBefore(t: Parameters<typeof testDatabase>[0], version: number) {
  const { url, drop } = await emptyDatabase(t);
  const db = connect(url, { max: 1 });
  const before = await mkdtemp(join(tmpdir(), 'rx-migrations-'));
  t.teardown(async () => {
    await db.end({ timeout: 5 });
    await drop();
    await rm(before, { recursive: true, force: true });
  });
  for (const m of (await listMigrations()).filter((m) => m.version < version))
    await copyFile(join(MigrationsDir, m.file), join(before, m.file));
  await migrate(db, before);
  return db;
}

t.test('two concurrent migration runs on one empty database', async (t) => {
  const { url, drop } = await emptyDatabase(t);
  const first = connect(url, { max: 1, applicationName: 'instance-a' });
  const second = connect(url, { max: 1, applicationName: 'instance-b' });
  t.teardown(async () => {
    await first.end({ timeout: 5 });
    await second.end({ timeout: 5 });
    await drop();
  });

  const [appliedByFirst, appliedBySecond] = await Promise.all([migrate(first), migrate(second)]);

  const expected = (await listMigrations()).map((m) => m.version);
  t.ok(expected.length >= 3, 'there are migrations to apply');
  t.same(
    [...appliedByFirst, ...appliedBySecond].map((m) => m.version).sort((a, b) => a - b),
    expected,
    'each migration was applied by exactly one of the two runs',
  );
  const recorded = await first<{ version: number; count: number }[]>`
    select version, count(*)::int as count from schema_migration group by version order by version`;
  t.same(
    recorded.map((r) => r.version),
    expected,
    'every migration is recorded',
  );
  t.ok(
    recorded.every((r) => r.count === 1),
    'each recorded once',
  );
  const [table] = await second`select to_regclass('medication_dispense') is not null as exists`;
  t.equal(table?.exists, true, 'the schema is there');

  t.same(await migrate(first), [], 'a third run finds nothing to do');
});

t.test('two service processes started at once on one empty database both come up', async (t) => {
  const { url, drop } = await emptyDatabase(t);
  const instances = await Promise.all([
    startServiceProcess({ DATABASE_URL: url, JOBS_ENABLED: 'false' }),
    startServiceProcess({ DATABASE_URL: url, JOBS_ENABLED: 'false' }),
  ]);
  const db = connect(url, { max: 1 });
  t.teardown(async () => {
    for (const instance of instances) instance.child.kill('SIGKILL');
    await Promise.all(instances.map((i) => i.exited));
    await db.end({ timeout: 5 });
    await drop();
  });
  for (const instance of instances) {
    const ready = await fetch(`${instance.url}/health/ready`);
    t.equal(ready.status, 200, `${instance.url} is ready`);
  }
  const rows = await db<
    { version: number; n: number }[]
  >`select version, count(*)::int as n from schema_migration group by version order by version`;
  t.same(
    rows.map((r) => r.version),
    (await listMigrations()).map((m) => m.version),
    'every migration recorded',
  );
  t.ok(
    rows.every((r) => r.n === 1),
    'each once',
  );
  const applied = instances.map((i) => (i.output().match(/"msg":"migration applied"/g) ?? []).length);
  t.equal(applied[0]! + applied[1]!, rows.length, 'each migration applied by exactly one of the two');
});

// The sweep reads a sending pause's kind (sql/018): a pause in force while 018 is applied gets one
// from its reason, the only record of it until then.
t.test('a sending pause recorded before pause_kind existed gets its kind from its reason', async (t) => {
  const db = await databaseBefore(t, 18);
  await db`update rate_budget set paused_until = now() + interval '1 hour', pause_reason = 'Exceeded send limits (1000) for today'`;
  await db`
    insert into rate_budget (name, tokens, paused_until, pause_reason) values
      ('outage', 0, now() + interval '1 minute', 'VA Notify unavailable: HTTP 503'),
      ('minute', 0, now() + interval '1 minute', 'Exceeded rate limit for key type LIVE of 3000 requests per 60 seconds'),
      ('key', 0, now() + interval '5 minutes', 'Invalid token: API key expired'),
      ('ended', 0, now() - interval '1 minute', 'VA Notify unavailable: HTTP 503'),
      ('none', 0, null, null)`;
  t.same((await migrate(db)).map((m) => m.version)[0], 18);
  const rows = await db<{ name: string; pause_kind: string | null }[]>`select name, pause_kind from rate_budget order by name`;
  t.same(Object.fromEntries(rows.map((r) => [r.name, r.pause_kind])), {
    ended: 'unavailable', // the probe after an outage's pause still knows what it probes for
    key: 'credentials',
    minute: 'rate_limit',
    none: null,
    outage: 'unavailable',
    'va-notify': 'daily_limit',
  });
  await t.rejects(
    db`update rate_budget set pause_reason = 'x' where name = 'none'`,
    /rate_budget_pause_kind_with_reason/,
    'a reason without a kind is refused',
  );
});

// Grouping reads pending dispenses through their drafts (sql/019): the pending dispenses of a
// database deployed before drafts existed get theirs, and are grouped as before.
t.test("pending dispenses stored before drafts existed get their veterans' drafts", async (t) => {
  const db = await databaseBefore(t, 19);
  const [email] = await db<{ id: string }[]>`
    insert into tracking_email (patient_icn, personalisation, package_count, prescription_count, state)
    values ('1012345678V123456', '{}', 1, 1, 'delivered') returning id`;
  await db`
    insert into medication_dispense (station_number, rx_number, fill_number, tracking_number, patient_icn, state, tracking_email_id, created_at)
    values ('521', '1', 0, '1ZA', '1012345678V123456', 'grouped', ${email!.id}, now() - interval '2 days'),
           ('521', '2', 0, '1ZB', '1012345678V123456', 'pending', null, now() - interval '30 minutes'),
           ('521', '3', 0, '1ZB', '1012345678V123456', 'pending', null, now() - interval '20 minutes'),
           ('521', '4', 0, '1ZC', '1098765432V654321', 'pending', null, now() - interval '10 minutes'),
           ('521', '5', 0, '1ZD', null, 'unprocessable', null, now()),
           ('521', '6', 0, '1ZE', null, 'pending', null, now())`;
  t.same((await migrate(db)).map((m) => m.version)[0], 19);

  const drafts = await db<{ patient_icn: string; first: number; last: number; dispenses: number }[]>`
    select r.patient_icn, round(extract(epoch from now() - r.first_arrival_at) / 60)::int as first,
           round(extract(epoch from now() - r.last_arrival_at) / 60)::int as last,
           (select count(*)::int from medication_dispense d where d.tracking_email_id = r.id and d.state = 'pending') as dispenses
      from tracking_email_draft r order by r.patient_icn`;
  t.same(
    drafts,
    [
      { patient_icn: '1012345678V123456', first: 30, last: 20, dispenses: 2 },
      { patient_icn: '1098765432V654321', first: 10, last: 10, dispenses: 1 },
    ],
    'one draft a veteran with pending dispenses, spanning their arrivals',
  );
  const others = await db`select rx_number, state, tracking_email_id from medication_dispense where state <> 'pending' order by rx_number`;
  t.same(
    others.map((r) => [r.rx_number, r.state, r.tracking_email_id]),
    [
      ['1', 'grouped', email!.id],
      ['5', 'unprocessable', null],
      ['6', 'unprocessable', null],
    ],
    'other dispenses are left as they were; a pending one without an ICN is unprocessable, as ingest keeps it',
  );
  const [table] = await db<{ options: string[] }[]>`select reloptions as options from pg_class where relname = 'medication_dispense'`;
  t.same(table!.options, ['fillfactor=50']);
});

// A rolling deployment runs the version before drafts beside this one for a while: its ingest
// writes pending dispenses naming no draft, which the database gives their veterans' drafts.
// Its correction of an unprocessable dispense, and its exclusion of a pending one, are refused
// rather than leave a dispense that no grouping would find or that names a draft.
t.test('the version before drafts, running beside this one, never leaves a pending dispense without its draft', async (t) => {
  const { sql } = await testDatabase(t);
  const [body] = await sql<{ id: number }[]>`
    insert into inbound_message (content_type, body) values ('application/json', '[]') returning id`;
  const earlierInsert = (rx: string, icn: string | null, state = 'pending') => sql`
    insert into medication_dispense (station_number, rx_number, fill_number, tracking_number, patient_icn, state, inbound_message_id)
    values ('521', ${rx}, 0, ${`1Z${rx}`}, ${icn}, ${state}, ${body!.id})
    on conflict (station_number, rx_number, fill_number, tracking_number) do update
      set patient_icn = excluded.patient_icn, state = excluded.state
      where medication_dispense.state = 'unprocessable' and excluded.state <> 'unprocessable'`;
  await earlierInsert('1', '1012345678V123456');
  await earlierInsert('2', '1012345678V123456');
  await earlierInsert('3', '1098765432V654321');
  await earlierInsert('4', null, 'unprocessable');
  const rows = await sql<{ rx_number: string; state: string; draft_icn: string | null }[]>`
    select d.rx_number, d.state, r.patient_icn as draft_icn
      from medication_dispense d left join tracking_email_draft r on r.id = d.tracking_email_id order by d.rx_number`;
  t.same(
    rows,
    [
      { rx_number: '1', state: 'pending', draft_icn: '1012345678V123456' },
      { rx_number: '2', state: 'pending', draft_icn: '1012345678V123456' },
      { rx_number: '3', state: 'pending', draft_icn: '1098765432V654321' },
      { rx_number: '4', state: 'unprocessable', draft_icn: null },
    ],
    "the earlier version's new pending dispenses name their veterans' drafts",
  );
  const [drafts] = await sql<{ count: number }[]>`select count(*)::int as count from tracking_email_draft`;
  t.equal(drafts!.count, 2, 'one draft a veteran');

  await t.rejects(
    earlierInsert('4', '1055555555V111222'),
    { code: '23514', constraint_name: 'medication_dispense_pending_draft' },
    "the earlier version's correction is refused",
  );
  await t.rejects(
    sql`update medication_dispense set state = 'excluded', state_reason = 'shipped before DELIVERY_START_AT' where rx_number = '1'`,
    { code: '23503' },
    "the earlier version's exclusion is refused",
  );
  const states = await sql`select state from medication_dispense order by rx_number`;
  t.same(
    states.map((r) => r.state),
    ['pending', 'pending', 'pending', 'unprocessable'],
    'both left the dispenses as they were',
  );
});

t.test('the cut-over hold is added to a database with dispenses in every state', async (t) => {
  const db = await databaseBefore(t, 21);
  const [body] = await db<
    { id: number }[]
  >`insert into inbound_message (content_type, body) values ('application/json', '[]') returning id`;
  for (const [rx, state] of [
    ['1', 'grouped'],
    ['2', 'excluded'],
    ['3', 'cancelled'],
    ['4', 'unprocessable'],
  ] as const) {
    await db`insert into medication_dispense (station_number, rx_number, fill_number, tracking_number, patient_icn, state, inbound_message_id)
             values ('521', ${rx}, 0, ${`1Z${rx}`}, '1012345678V123456', ${state}, ${body!.id})`;
  }
  t.same((await migrate(db)).map((m) => m.version)[0], 21);
  const states = await db`select state from medication_dispense order by rx_number`;
  t.same(
    states.map((r) => r.state),
    ['grouped', 'excluded', 'cancelled', 'unprocessable'],
    'every row kept as it was',
  );
  await db`update medication_dispense set state = 'held_for_cutover' where rx_number = '2'`;
  await t.rejects(db`update medication_dispense set state = 'held' where rx_number = '2'`, {
    code: '23514',
    constraint_name: 'medication_dispense_state_check',
  });
  const [place] = await db`select cutover_set_aside('1z2', now(), now(), now() - interval '1 hour', now() + interval '1 hour') as place`;
  t.equal(place!.place, 'held', 'a fill inside the window is held');
});

t.test('the open notifications of a database deployed before their list are listed, and only those', async (t) => {
  const db = await databaseBefore(t, 31);
  const [email] = await db<{ id: string }[]>`
    insert into tracking_email (patient_icn, personalisation, package_count, prescription_count, state)
    values ('1012345678V123456', '{}', 1, 1, 'sent') returning id`;
  const statuses = ['created', 'sending', 'pending', 'sent', 'delivered', 'permanent-failure', 'temporary-failure'];
  for (const [attempt, status] of statuses.entries()) {
    await db`insert into notification (id, tracking_email_id, attempt, status, last_event_at, created_at)
             values (${randomUUID()}, ${email!.id}, ${attempt + 1}, ${status}, now() - make_interval(mins => ${attempt}), now() - interval '1 day')`;
  }
  t.same((await migrate(db)).map((m) => m.version)[0], 31);
  const listed = await db<{ status: string; same: boolean }[]>`
    select o.status, (o.last_event_at, o.created_at) = (n.last_event_at, n.created_at) as same
      from notification_open o join notification n on n.id = o.notification_id order by n.attempt`;
  t.same(
    listed.map((r) => [r.status, r.same]),
    [
      ['created', true],
      ['sending', true],
      ['pending', true],
      ['sent', true],
    ],
    'each open notification listed with its last news and creation time; no final one',
  );
  const [table] = await db<{ options: string[] }[]>`select reloptions as options from pg_class where relname = 'notification'`;
  t.same(table!.options, ['fillfactor=50'], 'half of each new page kept for the next version of its rows');
  const indexed = await db<{ index: string }[]>`
    select i.indexrelid::regclass::text as index
      from pg_index i
     where i.indrelid = 'notification'::regclass
       and (exists (select 1 from pg_attribute a
                     where a.attrelid = i.indrelid and a.attnum = any(i.indkey) and a.attname in ('status', 'last_event_at'))
            or pg_get_expr(i.indpred, i.indrelid) ~ '(status|last_event_at)'
            or pg_get_expr(i.indexprs, i.indrelid) ~ '(status|last_event_at)')`;
  t.same(indexed, [], 'no index of notification holds or reads its status or last news');
  const [sent] = await db<{ id: string }[]>`select id from notification where status = 'sent'`;
  await db`update notification set status = 'delivered', last_event_at = now() where id = ${sent!.id}`;
  const [stillListed] = await db`select 1 from notification_open where notification_id = ${sent!.id}`;
  t.notOk(stillListed, 'a listed notification that becomes final leaves the list');
});
