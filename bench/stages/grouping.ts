// Grouping: pending dispenses → one tracking email per veteran, driven through the service's trigger
// (POST /v1/jobs/grouping, one run of GROUPING_BATCH_SIZE veterans per call) until nothing is left.
// Limit beside it: one INSERT ... SELECT of the same pending rows into a scratch table shaped like
// medication_dispense (same columns and indexes), i.e. Postgres writing those rows once.
import type { StageOptions } from '../run.ts';
import type { Sql } from '../../src/db/connect.ts';
import { loadConfig } from '../../src/config.ts';
import { benchDatabase, settle } from '../lib/database.ts';
import { insertGroupedHistory, insertPendingDispenses } from '../lib/fixtures.ts';
import { untilDone } from '../lib/load.ts';
import { serviceSettings, startService } from '../lib/processes.ts';
import { count, machineNote, megabytes, percent, progress, rate, seconds, verdict, type ResultTable, peakRssRow } from '../lib/report.ts';

interface GroupingRun {
  ms: number;
  dispenses: number;
  emails: number;
  runs: number;
  peakRssBytes: number;
}

/** One INSERT ... SELECT of the pending rows into a fresh table with medication_dispense's shape. */
export async function scratchInsertSelect(sql: Sql): Promise<{ ms: number; rows: number }> {
  await sql`drop table if exists grouping_scratch`;
  await sql`create table grouping_scratch (like medication_dispense including all)`;
  const started = performance.now();
  const result = await sql`
    insert into grouping_scratch overriding system value
    select * from medication_dispense where state = 'pending'`;
  const ms = performance.now() - started;
  await sql`drop table grouping_scratch`;
  return { ms, rows: result.count };
}

async function groupEverything(databaseUrl: string, sql: Sql): Promise<GroupingRun> {
  const service = await startService(serviceSettings(databaseUrl));
  let runs = 0;
  let dispenses = 0;
  let emails = 0;
  const ms = await untilDone(async () => {
    const result = await service.trigger<{ emailsCreated: number; dispensesGrouped: number }>('grouping');
    runs += 1;
    dispenses += result.dispensesGrouped;
    emails += result.emailsCreated;
    return result.emailsCreated > 0;
  });
  const { peakRssBytes } = await service.stop();
  const [left] = await sql<{ pending: number }[]>`select count(*)::int as pending from medication_dispense where state = 'pending'`;
  if (left!.pending !== 0) throw new Error(`${left!.pending} dispenses are still pending after grouping`);
  return { ms, dispenses, emails, runs, peakRssBytes };
}

export async function run(options: StageOptions): Promise<ResultTable> {
  const pending = options.small ? 4_000 : 1_000_000;
  const veterans = options.small ? 1_000 : 250_000;
  const history = options.small ? 20_000 : 5_000_000;
  const perEmail = 4;
  const db = await benchDatabase();
  try {
    const { sql } = db;
    progress(`inserting ${count(pending)} pending dispenses of ${count(veterans)} veterans`);
    await insertPendingDispenses(sql, { first: 0, count: pending, veterans, arrivedMinutesAgo: 120 });
    await sql`vacuum analyze medication_dispense`;

    progress('limit: INSERT ... SELECT of the pending rows into a scratch table');
    await settle(sql);
    const scratch = await scratchInsertSelect(sql);
    progress('grouping through the service (no history)');
    await settle(sql);
    const fresh = await groupEverything(db.url, sql);
    progress(`grouped ${count(fresh.dispenses)} dispenses into ${count(fresh.emails)} emails in ${seconds(fresh.ms)} (${fresh.runs} runs)`);

    // History: grouped rows and delivered emails, so that the table holds `history` grouped rows in all.
    const historyToAdd = history - fresh.dispenses;
    progress(`adding ${count(historyToAdd)} grouped dispenses of history (${count(history)} grouped in all)`);
    await insertGroupedHistory(sql, { emails: Math.ceil(historyToAdd / perEmail), perEmail, veterans });
    await insertPendingDispenses(sql, { first: pending, count: pending, veterans, arrivedMinutesAgo: 120 });
    await sql`vacuum analyze medication_dispense`;
    await sql`vacuum analyze tracking_email`;
    const [sizes] = await sql<{ grouped: number; table_bytes: number }[]>`
      select count(*) filter (where state = 'grouped')::int as grouped, pg_total_relation_size('medication_dispense')::bigint as table_bytes
        from medication_dispense`;

    progress('limit: INSERT ... SELECT again, beside the history');
    await settle(sql);
    const scratchWithHistory = await scratchInsertSelect(sql);
    progress('grouping through the service (with history)');
    await settle(sql);
    const withHistory = await groupEverything(db.url, sql);
    progress(`grouped ${count(withHistory.dispenses)} dispenses in ${seconds(withHistory.ms)} (${withHistory.runs} runs)`);

    const rateOf = (r: { ms: number }, rows: number) => rows / (r.ms / 1000);
    const freshRatio = rateOf(fresh, fresh.dispenses) / rateOf(scratch, scratch.rows);
    const historyRatio = rateOf(withHistory, withHistory.dispenses) / rateOf(scratchWithHistory, scratchWithHistory.rows);
    const slowdown = withHistory.ms / fresh.ms;
    const peak = Math.max(fresh.peakRssBytes, withHistory.peakRssBytes);
    // The settings the service ran with: its defaults, and any BENCH_SERVICE_ENV experiment.
    const settings = loadConfig(serviceSettings(db.url));
    return {
      title: `Grouping: ${count(pending)} pending dispenses of ${count(veterans)} veterans`,
      rows: [
        {
          measure: 'dispenses grouped, no history',
          result: `${rate(rateOf(fresh, fresh.dispenses), 'dispenses')} (${seconds(fresh.ms)})`,
          limit: `INSERT ... SELECT: ${rate(rateOf(scratch, scratch.rows), 'rows')} (${seconds(scratch.ms)})`,
          ratio: percent(freshRatio),
          target: verdict('≥ 50%', freshRatio >= 0.5),
        },
        {
          measure: `dispenses grouped, ${count(sizes!.grouped)} grouped rows of history`,
          result: `${rate(rateOf(withHistory, withHistory.dispenses), 'dispenses')} (${seconds(withHistory.ms)})`,
          limit: `INSERT ... SELECT: ${rate(rateOf(scratchWithHistory, scratchWithHistory.rows), 'rows')} (${seconds(scratchWithHistory.ms)})`,
          ratio: percent(historyRatio),
          target: verdict('≥ 50%', historyRatio >= 0.5),
        },
        {
          measure: 'time with history / time without',
          result: `${seconds(withHistory.ms)} / ${seconds(fresh.ms)}`,
          limit: 'the same grouping without history',
          ratio: percent(slowdown),
          target: verdict('≤ 120%', slowdown <= 1.2),
        },
        peakRssRow(peak),
      ],
      notes: [
        `emails created: ${count(fresh.emails)} then ${count(withHistory.emails)}; grouping runs (POST /v1/jobs/grouping, GROUPING_BATCH_SIZE ${count(settings.GROUPING_BATCH_SIZE)} veterans each, in GROUPING_CONCURRENCY ${settings.GROUPING_CONCURRENCY} transactions at once): ${fresh.runs} and ${withHistory.runs}`,
        `medication_dispense with history: ${megabytes(sizes!.table_bytes)} with indexes`,
        'the service runs in its own process; peak RSS is its kernel high-water mark (VmHWM)',
        machineNote(db.description),
      ],
    };
  } finally {
    await db.close();
  }
}
