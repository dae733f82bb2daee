// sql/schema.sql is the database the migrations make, read in one file: a newly migrated database
// gives the same text, on PostgreSQL 15 (DATABASE_URL) and on the embedded PostgreSQL alike.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { dumpSchema, SchemaHeader } from '../../src/db/schema-dump.ts';
import { testDatabase } from '../support/database.ts';

const committed = readFileSync(new URL('../../sql/schema.sql', import.meta.url), 'utf8');

t.test('sql/schema.sql is what the migrations make', async (t) => {
  const { sql } = await testDatabase(t, { max: 1 });
  const current = await dumpSchema(sql);
  t.ok(current.startsWith(SchemaHeader), 'the text says it is generated and never applied');
  t.match(current, /^CREATE TABLE public\.tracking_email \(/m, 'the tables are in it');
  t.match(current, /^CREATE OR REPLACE FUNCTION public\.tracking_link\(/m, 'the functions are in it');
  t.equal(committed, current, 'sql/schema.sql differs from a newly migrated database: run `npm run schema` and commit sql/schema.sql');
});

t.test('a change a migration makes shows in the text', async (t) => {
  const { sql } = await testDatabase(t, { max: 1 });
  await sql`create index tracking_email_example on tracking_email (leased_by)`;
  await sql`comment on table tracking_email is 'An email about a veteran''s packages.'`;
  const changed = await dumpSchema(sql);
  t.not(changed, committed);
  t.match(changed, 'CREATE INDEX tracking_email_example ON public.tracking_email USING btree (leased_by);');
  t.match(changed, "COMMENT ON TABLE public.tracking_email IS 'An email about a veteran''s packages.';");
});

t.test('an object the text cannot show yet is refused, never left out', async (t) => {
  const { sql } = await testDatabase(t, { max: 1 });
  await sql`create view queued_email as select id from tracking_email where state = 'queued'`;
  await t.rejects(dumpSchema(sql), /cannot show view queued_email/);
});
