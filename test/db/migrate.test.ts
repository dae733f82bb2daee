// Two instances starting together against one empty database: both migration runs succeed and
// every migration is applied exactly once.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { connect } from '../../src/db/connect.ts';
import { listMigrations, migrate } from '../../src/db/migrate.ts';
import { testDatabase } from '../helpers/database.ts';
import { startServiceProcess } from '../helpers/service-process.ts';

t.test('two concurrent migration runs on one empty database', async (t) => {
  // A migrated database gives a connection to the server; the empty one is created beside it.
  const server = await testDatabase(t, { max: 1 });
  const name = `rx_test_empty_${randomBytes(6).toString('hex')}`;
  await server.sql.unsafe(`create database ${name}`);
  const url = new URL(server.url);
  url.pathname = `/${name}`;
  const first = connect(url.toString(), { max: 1, applicationName: 'instance-a' });
  const second = connect(url.toString(), { max: 1, applicationName: 'instance-b' });
  t.teardown(async () => {
    await first.end({ timeout: 5 });
    await second.end({ timeout: 5 });
    await server.sql.unsafe(`drop database if exists ${name} with (force)`);
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
  t.same(recorded.map((r) => r.version), expected, 'every migration is recorded');
  t.ok(recorded.every((r) => r.count === 1), 'each recorded once');
  const [table] = await second`select to_regclass('medication_dispense') is not null as exists`;
  t.equal(table?.exists, true, 'the schema is there');

  t.same(await migrate(first), [], 'a third run finds nothing to do');
});

t.test('two service processes started at once on one empty database both come up', async (t) => {
  const server = await testDatabase(t, { max: 1 });
  const name = `rx_test_empty_${randomBytes(6).toString('hex')}`;
  await server.sql.unsafe(`create database ${name}`);
  const url = new URL(server.url);
  url.pathname = `/${name}`;
  const instances = await Promise.all([
    startServiceProcess({ DATABASE_URL: url.toString(), JOBS_ENABLED: 'false' }),
    startServiceProcess({ DATABASE_URL: url.toString(), JOBS_ENABLED: 'false' }),
  ]);
  const db = connect(url.toString(), { max: 1 });
  t.teardown(async () => {
    for (const instance of instances) instance.child.kill('SIGKILL');
    await Promise.all(instances.map((i) => i.exited));
    await db.end({ timeout: 5 });
    await server.sql.unsafe(`drop database if exists ${name} with (force)`);
  });
  for (const instance of instances) {
    const ready = await fetch(`${instance.url}/health/ready`);
    t.equal(ready.status, 200, `${instance.url} is ready`);
  }
  const rows = await db<{ version: number; n: number }[]>`select version, count(*)::int as n from schema_migration group by version order by version`;
  t.same(rows.map((r) => r.version), (await listMigrations()).map((m) => m.version), 'every migration recorded');
  t.ok(rows.every((r) => r.n === 1), 'each once');
  const applied = instances.map((i) => (i.output().match(/"msg":"migration applied"/g) ?? []).length);
  t.equal(applied[0]! + applied[1]!, rows.length, 'each migration applied by exactly one of the two');
});
