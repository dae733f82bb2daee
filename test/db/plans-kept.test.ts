// Functions that a statement run once per callback calls are PL/pgSQL, not SQL: a SQL function that
// cannot be inlined is planned again on every execution of the statement calling it, which cost a
// delivered callback more than the rest of its AAL event's insert (docs/benchmarks.md, History).
import t from 'tap';
import { testDatabase } from '../support/database.ts';

t.test('the AAL detail, built once per delivered callback, keeps its plan for the session', async (t) => {
  const { sql } = await testDatabase(t, { max: 1 });
  const [detail] = await sql<{ language: string }[]>`
    select l.lanname as language from pg_proc p join pg_language l on l.oid = p.prolang where p.proname = 'aal_detail'`;
  t.equal(detail?.language, 'plpgsql');
  // The same text as before for an email with no dispense, so the change of language changed nothing else.
  const [none] = await sql<{ detail: string }[]>`select aal_detail(gen_random_uuid()) as detail`;
  t.equal(none?.detail, 'Packages: none listed');
});
