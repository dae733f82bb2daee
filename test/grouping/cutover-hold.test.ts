// The cut-over hold in grouping: dispenses shipped near DELIVERY_START_AT are held, a package whole,
// and recorded in cutover_dispense (sql/021_cutover_hold.sql).
import t from 'tap';
import { runGrouping } from '../../src/grouping/grouping-job.ts';
import { groupReadyDrafts } from '../support/grouping.ts';
import { testConfig } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';
import { testDatabase } from '../support/database.ts';
import { icn, insertDispenses } from '../support/fixtures.ts';

const log = createLogger('silent');
const group = (sql: Parameters<typeof runGrouping>[0]['sql'], env: Record<string, string> = {}) =>
  runGrouping({ sql, config: testConfig(env), log });

t.test('CUTOVER_HOLD_HOURS holds what shipped near DELIVERY_START_AT, each package whole', async (t) => {
  const { sql } = await testDatabase(t);
  const T = Date.parse('2026-06-01T12:00:00Z');
  const at = (hours: number) => new Date(T + hours * 3_600_000);
  await insertDispenses(sql, [
    { patient_icn: icn(1), rx_number: '1000001', tracking_number: 'EARLY', shipped_at: at(-7) },
    { patient_icn: icn(1), rx_number: '1000002', tracking_number: 'BEFORE', shipped_at: at(-5) },
    { patient_icn: icn(1), rx_number: '1000003', tracking_number: 'AFTER', shipped_at: at(5.9) },
    { patient_icn: icn(1), rx_number: '1000004', tracking_number: 'LATE', shipped_at: at(7) },
    // One package whose fills' message times fall on both sides of the window's start...
    { patient_icn: icn(2), rx_number: '2000001', tracking_number: 'EDGE1', shipped_at: at(-6.1) },
    { patient_icn: icn(2), rx_number: '2000002', tracking_number: 'EDGE1', shipped_at: at(-5.9) },
    // ... and one on both sides of its end.
    { patient_icn: icn(3), rx_number: '3000001', tracking_number: 'edge2', shipped_at: at(5.9) },
    { patient_icn: icn(3), rx_number: '3000002', tracking_number: 'EDGE2', shipped_at: at(6.1) },
    // A package before the window with a fill after it: the fills disagree, so MHV's export decides.
    { patient_icn: icn(4), rx_number: '4000001', tracking_number: 'SPLIT', shipped_at: at(-6.5) },
    { patient_icn: icn(4), rx_number: '4000002', tracking_number: 'SPLIT', shipped_at: at(6.5) },
  ]);
  const result = await group(sql, { DELIVERY_START_AT: '2026-06-01T12:00:00Z', CUTOVER_HOLD_HOURS: '6' });
  t.same(result, { emailsCreated: 1, dispensesGrouped: 1, dispensesExcluded: 1, dispensesHeld: 8, skipped: false });
  const rows =
    await sql`select tracking_number, state, state_reason, tracking_email_id is null as unnamed from medication_dispense order by rx_number`;
  t.same(
    rows.map((r) => [r.tracking_number, r.state]),
    [
      ['EARLY', 'excluded'],
      ['BEFORE', 'held_for_cutover'],
      ['AFTER', 'held_for_cutover'],
      ['LATE', 'grouped'],
      ['EDGE1', 'held_for_cutover'],
      ['EDGE1', 'held_for_cutover'],
      ['edge2', 'held_for_cutover'],
      ['EDGE2', 'held_for_cutover'],
      ['SPLIT', 'held_for_cutover'],
      ['SPLIT', 'held_for_cutover'],
    ],
  );
  t.match(rows[1]!.state_reason, /CUTOVER_HOLD_HOURS/);
  t.ok(
    rows.filter((r) => r.state === 'held_for_cutover').every((r) => r.unnamed),
    'a held dispense names no draft, so no email',
  );
  const recorded = await sql`select tracking_number, set_aside from cutover_dispense order by dispense_id`;
  t.same(
    recorded.map((r) => [r.tracking_number, r.set_aside]),
    [
      ['EARLY', 'excluded'],
      ['BEFORE', 'held'],
      ['AFTER', 'held'],
      ['EDGE1', 'held'],
      ['EDGE1', 'held'],
      ['EDGE2', 'held'],
      ['EDGE2', 'held'],
      ['SPLIT', 'held'],
      ['SPLIT', 'held'],
    ],
    'every fill set aside is recorded under its package, upper-cased',
  );

  // Later fills follow their package, wherever their own shipped-at falls.
  await insertDispenses(sql, [
    { patient_icn: icn(1), rx_number: '1000005', tracking_number: 'BEFORE', shipped_at: at(6.5) },
    { patient_icn: icn(1), rx_number: '1000006', tracking_number: 'EARLY', shipped_at: at(-6.5) },
    { patient_icn: icn(1), rx_number: '1000007', tracking_number: 'EARLY', shipped_at: at(6.5) },
  ]);
  t.same(await group(sql, { DELIVERY_START_AT: '2026-06-01T12:00:00Z', CUTOVER_HOLD_HOURS: '6' }), {
    emailsCreated: 0,
    dispensesGrouped: 0,
    dispensesExcluded: 0,
    dispensesHeld: 3,
    skipped: false,
  });
  const later =
    await sql`select rx_number, state from medication_dispense where rx_number in ('1000005', '1000006', '1000007') order by rx_number`;
  t.same(
    later.map((r) => [r.rx_number, r.state]),
    [
      ['1000005', 'held_for_cutover'],
      ['1000006', 'held_for_cutover'],
      ['1000007', 'held_for_cutover'],
    ],
    'a late fill of a held package is held; an excluded package that gets a fill after the window is held: its fills disagree',
  );

  await insertDispenses(sql, [{ patient_icn: icn(5), rx_number: '5000001', tracking_number: 'EARLY', shipped_at: at(-8) }]);
  await sql`insert into medication_dispense (station_number, rx_number, fill_number, tracking_number, patient_icn, shipped_at, state, state_reason)
            values ('521', '6000001', 0, 'OLD', ${icn(6)}, ${at(-9)}, 'excluded', 'shipped before DELIVERY_START_AT (MHV sends these)')`;
  await sql`insert into cutover_dispense (dispense_id, tracking_number, set_aside)
            select id, 'OLD', 'excluded' from medication_dispense where rx_number = '6000001'`;
  await insertDispenses(sql, [{ patient_icn: icn(6), rx_number: '6000002', tracking_number: 'OLD', shipped_at: at(-8) }]);
  t.same(
    await group(sql, { DELIVERY_START_AT: '2026-06-01T12:00:00Z', CUTOVER_HOLD_HOURS: '6' }),
    { emailsCreated: 0, dispensesGrouped: 0, dispensesExcluded: 1, dispensesHeld: 1, skipped: false },
    'a fill before the window follows its held package; one of an excluded package that agrees is excluded',
  );
});

t.test('a dispense shipped near DELIVERY_START_AT that the run did not see is held and recorded when its draft is grouped', async (t) => {
  const { sql } = await testDatabase(t);
  await insertDispenses(sql, [
    { patient_icn: icn(1), rx_number: '1000001', tracking_number: 'T1', shipped_at: new Date('2026-06-01T13:00:00Z') },
    { patient_icn: icn(1), rx_number: '1000002', tracking_number: 'T2', shipped_at: new Date('2026-06-01T19:00:00Z') },
  ]);
  const result = await groupReadyDrafts(sql, { holdHours: 6 });
  t.same(result, { emailsCreated: 1, dispensesGrouped: 1, dispensesExcluded: 0, dispensesHeld: 1 });
  const rows = await sql`select rx_number, state from medication_dispense order by rx_number`;
  t.same(
    rows.map((r) => [r.rx_number, r.state]),
    [
      ['1000001', 'held_for_cutover'],
      ['1000002', 'grouped'],
    ],
  );
  const recorded = await sql`select tracking_number, set_aside from cutover_dispense`;
  t.same(
    recorded.map((r) => [r.tracking_number, r.set_aside]),
    [['T1', 'held']],
  );
});
