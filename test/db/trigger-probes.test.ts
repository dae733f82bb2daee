// The statement triggers on medication_dispense keep their index probes however empty a table was
// when a connection first planned them: a plan made while removed_dispense_key was known to be
// empty (vacuumed before retention's first run) must not stay a sequential scan as the table fills.
import t from 'tap';
import { testDatabase } from '../support/database.ts';

t.test('a connection that first wrote dispenses beside an empty key table still probes it by index once it fills', async (t) => {
  const db = await testDatabase(t);
  await db.sql`vacuum analyze removed_dispense_key`;
  await db.sql`vacuum analyze inbound_message`;
  const conn = await db.sql.reserve();
  t.teardown(() => conn.release());
  const [body] = await conn<
    { id: number }[]
  >`insert into inbound_message (content_type, body) values ('application/json', '[]') returning id`;
  const insertDispense = (rx: string) =>
    conn`insert into medication_dispense (station_number, rx_number, fill_number, state, inbound_message_id)
         values ('521', ${rx}, 0, 'cancelled', ${body!.id})`;
  await insertDispense('7000001'); // the triggers' queries are planned now, removed_dispense_key known empty
  await conn`insert into removed_dispense_key (key_hash) select md5(g::text)::uuid from generate_series(1, 2000) g`;

  // The view counts what this session has not yet reported, earlier work included: the insert's
  // scans are the difference across it.
  const scanCounts = () =>
    conn<{ relname: string; seq_scan: number; idx_scan: number }[]>`
      select relname, seq_scan::int, coalesce(idx_scan, 0)::int as idx_scan from pg_stat_xact_user_tables
       where relname in ('removed_dispense_key', 'inbound_message') order by relname`;
  await conn`begin`;
  const before = await scanCounts();
  await insertDispense('7000002');
  const after = await scanCounts();
  await conn`commit`;
  const scans = after.map((a, i) => ({
    relname: a.relname,
    seq_scan: a.seq_scan - before[i]!.seq_scan,
    idx_scan: a.idx_scan - before[i]!.idx_scan,
  }));
  t.same(
    scans.map((s) => [s.relname, s.seq_scan]),
    [
      ['inbound_message', 0],
      ['removed_dispense_key', 0],
    ],
    'no sequential scan',
  );
  t.ok(
    scans.every((s) => s.idx_scan >= 1),
    'each looked up by its primary key',
  );
});
