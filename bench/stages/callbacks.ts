// Callbacks: VA Notify's delivered callbacks for notifications the service knows, posted over HTTP
// by autocannon at fixed offered loads and at saturation. Each is one transaction (event appended,
// notification and email moved to delivered, AAL outbox row written).
// Limits beside them: the same transaction run by a postgres.js loop at the same concurrency (no
// HTTP), and a bare Fastify answering an empty route, both in the same run.
import type { Static } from '@sinclair/typebox';
import { statusEventFromCallback, type CallbackBody } from '../../src/callbacks/routes.ts';
import type { StageOptions } from '../run.ts';
import { testConfig } from '../../src/config.ts';
import { connect } from '../../src/db/connect.ts';
import { recordStatusEvent } from '../../src/status/repository.ts';
import { cpuAvailable, cpuPer, cpuSnapshot, cpuText, type CpuSnapshot } from '../lib/cpu.ts';
import { benchDatabase, settle } from '../lib/database.ts';
import { deliveredCallback, insertSentNotifications } from '../lib/fixtures.ts';
import { httpLoad, pacedLoad, type HttpLoadResult } from '../lib/load.ts';
import { callbackHeaders, serviceSettings, startBareFastify, startService, type Service } from '../lib/processes.ts';
import {
  count,
  machineNote,
  millis,
  percent,
  progress,
  rate,
  verdict,
  type ResultRow,
  type ResultTable,
  peakRssRow,
} from '../lib/report.ts';

const config = testConfig();

/** Callback bodies for notifications [first, first + n), each delivered once. */
function bodies(first: number, n: number): string[] {
  const at = new Date();
  return Array.from({ length: n }, (_, i) => deliveredCallback(first + i, at));
}

/** The callback transaction without HTTP: recordStatusEvent over a pool like the service's. */
export async function sqlOnlyCallbacks(
  url: string,
  payloads: string[],
  concurrency: number,
  durationSeconds: number,
  /** Stop after this many transactions, even before the duration is over. */
  limit = Number.POSITIVE_INFINITY,
): Promise<{ perSecond: number; done: number }> {
  const sql = connect(url, { max: config.DATABASE_POOL_MAX, applicationName: 'rx-bench-sql-only' });
  try {
    let next = 0;
    let done = 0;
    const deadline = performance.now() + durationSeconds * 1000;
    const started = performance.now();
    async function lane() {
      while (performance.now() < deadline && next < limit) {
        const body = JSON.parse(payloads[next++ % payloads.length]!) as Static<typeof CallbackBody>;
        await recordStatusEvent(sql, statusEventFromCallback(body), {
          source: 'callback',
          replayDelayMinutes: config.REPLAY_DELAY_MINUTES,
          sendMaxAttempts: config.SEND_MAX_ATTEMPTS,
        });
        done += 1;
      }
    }
    await Promise.all(Array.from({ length: concurrency }, lane));
    return { perSecond: done / ((performance.now() - started) / 1000), done };
  } finally {
    await sql.end({ timeout: 5 });
  }
}

export async function run(options: StageOptions): Promise<ResultTable> {
  const duration = options.small ? 1 : 10;
  const warmup = options.small ? 1 : 3;
  const saturationConnections = 32;
  const loads = options.small ? [50, 100] : [500, 1_000, 2_000];
  // Each phase gets notifications of its own, so that every callback is a first delivery.
  const fixedBudget = (load: number) => Math.ceil(load * duration * 1.5) + 200;
  const saturationBudget = options.small ? 5_000 : 40_000;
  const ranges: { name: string; size: number }[] = [
    { name: 'warmup-sql', size: saturationBudget / 4 },
    { name: 'sql', size: saturationBudget },
    { name: 'warmup-http', size: saturationBudget / 4 },
    { name: 'saturation', size: saturationBudget },
    ...loads.map((load) => ({ name: `load-${load}`, size: fixedBudget(load) })),
  ];
  const total = ranges.reduce((sum, r) => sum + r.size, 0);
  const db = await benchDatabase();
  let service: Service | undefined;
  try {
    const { sql } = db;
    progress(`inserting ${count(total)} sent emails with their notifications and dispenses`);
    await insertSentNotifications(sql, { first: 0, count: total });
    await sql`vacuum analyze`;
    await settle(sql);
    const starts = new Map<string, number>();
    let offset = 0;
    for (const range of ranges) {
      starts.set(range.name, offset);
      offset += range.size;
    }
    const rangeBodies = (name: string) => bodies(starts.get(name)!, ranges.find((r) => r.name === name)!.size);

    progress(
      `limit: the callback transaction from a postgres.js loop, ${saturationConnections} concurrent, pool ${config.DATABASE_POOL_MAX}`,
    );
    await sqlOnlyCallbacks(db.url, rangeBodies('warmup-sql'), saturationConnections, warmup);
    await settle(sql);
    const sqlOnlyFrom = cpuSnapshot();
    const sqlOnly = await sqlOnlyCallbacks(db.url, rangeBodies('sql'), saturationConnections, duration);
    const sqlOnlyCpu = cpuPer(sqlOnlyFrom, cpuSnapshot(), sqlOnly.done / 1000);

    progress('limit: a bare Fastify answering an empty route');
    const bare = await startBareFastify();
    const sampleBodies = rangeBodies('saturation').slice(0, 1000);
    await httpLoad({
      url: bare.url,
      bodies: sampleBodies,
      headers: callbackHeaders,
      connections: saturationConnections,
      durationSeconds: warmup,
    });
    const empty = await httpLoad({
      url: bare.url,
      bodies: sampleBodies,
      headers: callbackHeaders,
      connections: saturationConnections,
      durationSeconds: duration,
    });
    await bare.stop();

    service = await startService(serviceSettings(db.url));
    const callbackUrl = `${service.url}/v1/va-notify/callbacks`;
    progress('service: warm-up');
    await httpLoad({
      url: callbackUrl,
      bodies: rangeBodies('warmup-http'),
      headers: callbackHeaders,
      connections: saturationConnections,
      durationSeconds: warmup,
    });
    progress(`service: saturation, ${saturationConnections} connections`);
    await settle(sql);
    const saturation = await httpLoad({
      url: callbackUrl,
      bodies: rangeBodies('saturation'),
      headers: callbackHeaders,
      connections: saturationConnections,
      durationSeconds: duration,
    });
    const fixed: { load: number; result: HttpLoadResult; cpu: CpuSnapshot }[] = [];
    for (const load of loads) {
      progress(`service: ${load} callbacks/s offered`);
      await settle(sql);
      const from = cpuSnapshot(service.pid);
      const result = await pacedLoad({
        url: callbackUrl,
        bodies: rangeBodies(`load-${load}`),
        headers: callbackHeaders,
        connections: 64,
        durationSeconds: duration,
        ratePerSecond: load,
      });
      fixed.push({ load, result, cpu: cpuPer(from, cpuSnapshot(service.pid), result.answered / 1000) });
    }
    const { peakRssBytes, errorLines } = await service.stop();
    service = undefined;

    const [outcome] = await sql<{ delivered: number; aal_events: number; events: number }[]>`
      select (select count(*)::int from notification where status = 'delivered') as delivered,
             (select count(*)::int from aal_event) as aal_events,
             (select count(*)::int from notification_status_event) as events`;
    const all = [saturation, ...fixed.map((f) => f.result)];
    const failures = all.reduce((sum, r) => sum + r.failures, 0);
    const wrapped = [
      saturation.bodiesUsed > saturationBudget ? 'saturation' : '',
      ...fixed.map((f) => (f.result.bodiesUsed > fixedBudget(f.load) ? `${f.load}/s` : '')),
      sqlOnly.done > saturationBudget ? 'sql-only' : '',
    ].filter((name) => name !== '');

    const satRatio = saturation.perSecond / sqlOnly.perSecond;
    const rows: ResultRow[] = [
      {
        measure: `callbacks/s at saturation (${saturationConnections} connections)`,
        result: `${rate(saturation.perSecond, 'callbacks')}; p50 ${millis(saturation.p50Ms)}, p99 ${millis(saturation.p99Ms)}`,
        limit: `same transaction from a postgres.js loop, ${saturationConnections} concurrent: ${rate(sqlOnly.perSecond, 'transactions')}`,
        ratio: percent(satRatio),
        target: verdict('≥ 60%', satRatio >= 0.6),
      },
      {
        measure: 'the same saturation run against HTTP alone',
        result: rate(saturation.perSecond, 'callbacks'),
        limit: `bare Fastify, empty route, same bodies: ${rate(empty.perSecond, 'requests')}`,
        ratio: percent(saturation.perSecond / empty.perSecond),
      },
      ...fixed.map(
        ({ load, result }): ResultRow => ({
          measure: `${count(load)} callbacks/s offered, paced (up to 64 connections)`,
          result: `${rate(result.perSecond, 'callbacks')}; p50 ${millis(result.p50Ms)}, p99 ${millis(result.p99Ms)}`,
          limit: `SQL-only ${rate(sqlOnly.perSecond, 'transactions')}`,
          ratio: percent(result.perSecond / load),
          target: load === 1_000 ? verdict('p99 < 25 ms', result.p99Ms < 25) : '',
        }),
      ),
      // Where a callback's CPU goes, at the load the latency target is set for (the highest of a
      // small run's): on two shared cores the tail follows how busy they are.
      ...fixed
        .filter(({ load }) => load === (loads.includes(1_000) ? 1_000 : loads.at(-1)) && cpuAvailable())
        .map(
          ({ load, cpu }): ResultRow => ({
            measure: `CPU per 1,000 callbacks at ${count(load)}/s (the driver's is the load generator's)`,
            result: cpuText(cpu, ['service', 'postgres', 'driver']),
            limit: `SQL-only, per 1,000 transactions: ${cpuText(sqlOnlyCpu, ['postgres', 'driver'])}`,
          }),
        ),
      peakRssRow(peakRssBytes),
    ];
    return {
      title: 'Callbacks: delivered status callbacks for known notifications',
      rows,
      notes: [
        `ratio of a fixed load: achieved / offered; every callback is a first delivery (its own notification${wrapped.length > 0 ? `; bodies reused in ${wrapped.join(', ')}: raise the budgets` : ''})`,
        `answers other than 2xx: ${failures}; in the database afterwards: ${count(outcome!.delivered)} notifications delivered, ${count(outcome!.aal_events)} AAL events, ${count(outcome!.events)} status events; service error log lines: ${errorLines}`,
        `fixed loads: an open-loop sender (bench/lib/load.ts pacedLoad), latency from when each callback was due; saturation: autocannon; both in the driver process; the service and the bare Fastify each in their own; ${warmup} s warm-up before each limit and before the service runs, a checkpoint before each timed run; ${duration} s per run`,
        machineNote(db.description),
      ],
    };
  } finally {
    await service?.stop().catch(() => {});
    await db.close();
  }
}
