// What a delivered callback runs in Postgres is planned once a session: a SQL function that
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

// Functions every delivered callback runs, by name.
const CallbackFunctions = ['record_status_events', 'record_status_event', 'apply_status_event_effects', 'aal_detail'];

t.test('a callback runs no aggregate whose steps are SQL functions, which are parsed again on every run', async (t) => {
  const { sql } = await testDatabase(t, { max: 1 });
  const aggregates = await sql<{ name: string }[]>`
    select distinct a.aggfnoid::regproc::text as name
      from pg_aggregate a
      join pg_proc step on step.oid in (a.aggtransfn, a.aggfinalfn)
      join pg_language l on l.oid = step.prolang
     where l.lanname = 'sql' and step.pronamespace = 'public'::regnamespace`;
  t.ok(
    aggregates.some((a) => a.name === 'package_carrier'),
    'the check knows such an aggregate when it sees one',
  );
  const functions = await sql<{ name: string; source: string }[]>`
    select proname as name, prosrc as source from pg_proc where proname = any(${CallbackFunctions}) and pronamespace = 'public'::regnamespace`;
  t.same(functions.map((f) => f.name).sort(), [...CallbackFunctions].sort());
  for (const { name, source } of functions) {
    for (const aggregate of aggregates)
      t.notMatch(source, new RegExp(`\\b${aggregate.name}\\s*\\(`), `${name} does not call ${aggregate.name}`);
  }
  // RETURN QUERY over a function's own variables is planned again on each call.
  const batch = functions.find((f) => f.name === 'record_status_events');
  t.notMatch(batch?.source ?? '', /return\s+query/i, 'record_status_events returns its rows one by one');
});
