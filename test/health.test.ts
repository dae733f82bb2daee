import t from 'tap';
import { testApp } from './support/app.ts';

t.test('liveness and readiness', async (t) => {
  const { app } = await testApp(t);
  const live = await app.inject({ method: 'GET', url: '/health/live' });
  t.equal(live.statusCode, 200);
  t.same(live.json(), { status: 'ok' });
  const ready = await app.inject({ method: 'GET', url: '/health/ready' });
  t.equal(ready.statusCode, 200);
  t.same(ready.json(), { status: 'ready', checks: { database: 'ok', schema: 'ok' } });
});

t.test('readiness fails when migrations are missing', async (t) => {
  const { app, db } = await testApp(t);
  await db.sql`delete from schema_migration where version = (select max(version) from schema_migration)`;
  const ready = await app.inject({ method: 'GET', url: '/health/ready' });
  t.equal(ready.statusCode, 503);
  t.equal(ready.json().checks.schema, 'migrations pending');
});
