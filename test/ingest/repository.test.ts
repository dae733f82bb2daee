// The dispense columns travel to Postgres as text[] literals built by the service: every value must
// come back exactly as it was sent, whatever characters it holds.
import t from 'tap';
import { textArrayLiteral } from '../../src/ingest/repository.ts';
import { testDatabase } from '../helpers/database.ts';

t.test('a text[] literal reads back as the values it was built from', async (t) => {
  const { sql } = await testDatabase(t);
  const values = [
    'plain', '', 'NULL', null, 'with "quotes"', 'back\\slash', '\\"both"\\', 'comma, and {braces}', ' spaces ',
    'tab\tand\nnewline', 'ünïcödé ✓', '"', '\\', '}', '{', "it's",
  ];
  // Read back as rows: postgres.js's own text[] parser returns a NULL element as the string 'NULL'.
  const rows = await sql<{ value: string | null }[]>`
    select value from unnest(${textArrayLiteral(values)}::text[]) with ordinality as x (value, position) order by position`;
  t.same(rows.map((r) => r.value), values);
  const [empty] = await sql<{ length: number }[]>`select cardinality(${textArrayLiteral([])}::text[]) as length`;
  t.equal(empty!.length, 0);
});
