// Two instances starting together against one empty database: both migration runs succeed and
// every migration is applied exactly once.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { connect } from '../../src/db/connect.ts';
import { listMigrations, migrate } from '../../src/db/migrate.ts';
import { testDatabase } from '../helpers/database.ts';

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
