// Ingest: CMOP dispenses posted to POST /v1/dispenses as HL7 (one message per body, and 1,000-message
// batch bodies) and as JSON arrays of 1,000 events. Every body is stored raw, parsed, and its
// dispenses upserted.
// Limits beside it: the same dispense rows inserted straight into Postgres by postgres.js in batches
// of the same size at the same concurrency, and a bare Fastify answering an empty route with the
// same bodies.
import type { StageOptions } from '../run.ts';
import type { Sql } from '../../src/db/connect.ts';
import { cpuAvailable, cpuPer, cpuSnapshot, cpuSum, cpuText, cpuTotal, NoCpu, type CpuSnapshot } from '../lib/cpu.ts';
import { benchDatabase } from '../lib/database.ts';
import { withDrafts } from '../../test/support/drafts.ts';
import { bodiesOf, dispenseRow, hl7Message, jsonEvent } from '../lib/feeds.ts';
import { concurrently, httpLoad, postAll, type HttpLoadResult } from '../lib/load.ts';
import { hl7Headers, internalHeaders, serviceSettings, startBareFastify, startService, type Service } from '../lib/processes.ts';
import { count, machineNote, percent, progress, rate, verdict, type ResultRow, type ResultTable, peakRssRow } from '../lib/report.ts';

const perVeteran = 4;
const jsonHeaders = { ...internalHeaders, 'content-type': 'application/json' };

/** The limit: dispense rows inserted by postgres.js, `perBatch` rows a statement, `concurrency` statements in flight. */
export async function directInsert(
  sql: Sql,
  first: number,
  batches: number,
  perBatch: number,
  concurrency: number,
  rxBase: number,
): Promise<{ perSecond: number; ms: number; cpu: CpuSnapshot }> {
  // The rows as ingest stores them, naming their veterans' drafts, made before the clock starts.
  const rows = await Promise.all(
    bodiesOf(first, batches, perBatch, perVeteran, (ds) => ds.map(dispenseRow), rxBase).map((body) => withDrafts(sql, body)),
  );
  const before = cpuSnapshot();
  const ms = await concurrently(batches, concurrency, (b) => sql`insert into medication_dispense ${sql(rows[b]!)}`);
  return { perSecond: (batches * perBatch) / (ms / 1000), ms, cpu: cpuPer(before, cpuSnapshot(), 1) };
}

/** The limit for one-message bodies: one row a statement (a commit each), for a duration. */
async function directInsertFor(sql: Sql, durationSeconds: number, concurrency: number, rxBase: number): Promise<{ perSecond: number }> {
  // Every row names one draft made for the limit: the row's cost, without the draft upsert that
  // ingest does in the same statement.
  const [draft] = await withDrafts(sql, [{ patient_icn: 'direct-insert-limit' }]);
  const draftId = draft!.tracking_email_id;
  let next = 0;
  const deadline = performance.now() + durationSeconds * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        const [row] = bodiesOf(next++, 1, 1, perVeteran, (ds) => ({ ...dispenseRow(ds[0]!), tracking_email_id: draftId }), rxBase);
        await sql`insert into medication_dispense ${sql(row!)}`;
      }
    }),
  );
  return { perSecond: next / ((performance.now() - started) / 1000) };
}

/** The rounds of one load as one: answers and time summed; p50 and p99 the highest of any round's. */
function joinRounds(rounds: HttpLoadResult[]): HttpLoadResult {
  const seconds = rounds.reduce((sum, r) => sum + r.seconds, 0);
  const answered = rounds.reduce((sum, r) => sum + r.answered, 0);
  return {
    perSecond: answered / seconds,
    answered,
    p50Ms: Math.max(...rounds.map((r) => r.p50Ms)),
    p99Ms: Math.max(...rounds.map((r) => r.p99Ms)),
    failures: rounds.reduce((sum, r) => sum + r.failures, 0),
    bodiesUsed: rounds.reduce((sum, r) => sum + r.bodiesUsed, 0),
    seconds,
  };
}

function checkAnswers(what: string, result: HttpLoadResult): void {
  if (result.failures > 0) throw new Error(`${what}: ${result.failures} answers were not 2xx`);
}

export async function run(options: StageOptions): Promise<ResultTable> {
  const perBatch = options.small ? 20 : 1_000;
  const batchBodies = options.small ? 4 : 100;
  const batchConnections = 4;
  const singleConnections = 16;
  const duration = options.small ? 1 : 10;
  const singleBudget = options.small ? 3_000 : 40_000;
  const db = await benchDatabase();
  let service: Service | undefined;
  try {
    const { sql } = db;
    progress(
      `preparing bodies: ${count(singleBudget)} one-message HL7 bodies, ${batchBodies} HL7 and ${batchBodies} JSON bodies of ${count(perBatch)}`,
    );
    const singles = bodiesOf(0, singleBudget, 1, perVeteran, (ds) => hl7Message(ds[0]!), 30_000_000);
    const hl7Batches = bodiesOf(0, batchBodies, perBatch, perVeteran, (ds) => ds.map(hl7Message).join(''), 31_000_000);
    const jsonBatches = bodiesOf(0, batchBodies, perBatch, perVeteran, (ds) => JSON.stringify(ds.map(jsonEvent)), 32_000_000);

    progress(
      `limit warm-up: ${count(Math.max(2, batchBodies / 10) * perBatch)} rows inserted by postgres.js, ${count(perBatch)} a statement`,
    );
    await directInsert(sql, 0, Math.max(2, batchBodies / 10), perBatch, batchConnections, 34_000_000);

    progress(`limit: rows inserted one a statement, ${singleConnections} in flight, for ${duration} s`);
    const oneByOne = await directInsertFor(sql, duration, singleConnections, 36_000_000);

    progress('limit: a bare Fastify answering an empty route');
    const bare = await startBareFastify();
    await httpLoad({ url: bare.url, bodies: singles, headers: hl7Headers, connections: singleConnections, durationSeconds: 1 });
    const bareSingle = await httpLoad({
      url: bare.url,
      bodies: singles,
      headers: hl7Headers,
      connections: singleConnections,
      durationSeconds: duration,
    });
    const bareBatch = await postAll({ url: bare.url, bodies: hl7Batches, headers: hl7Headers, concurrency: batchConnections });
    await bare.stop();

    service = await startService(serviceSettings(db.url));
    const url = `${service.url}/v1/dispenses`;
    progress('service: warm-up');
    const warmup = bodiesOf(0, 2_000, 1, perVeteran, (ds) => hl7Message(ds[0]!), 35_000_000);
    checkAnswers(
      'warm-up',
      await httpLoad({ url, bodies: warmup, headers: hl7Headers, connections: singleConnections, amount: warmup.length }),
    );
    progress(`service: one-message HL7 bodies, ${singleConnections} connections, ${duration} s`);
    const single = await httpLoad({ url, bodies: singles, headers: hl7Headers, connections: singleConnections, durationSeconds: duration });
    checkAnswers('one-message HL7', single);
    // The HL7 batch bodies and their limit take turns, a quarter of each at a time, so that both meet
    // the same moments of a shared machine: run one after the other, a busier minute for one of
    // them moved the ratio by up to 20 points (30 to 56% over seven runs of one build).
    const rounds = 4;
    const perRound = batchBodies / rounds;
    if (!Number.isInteger(perRound)) throw new Error(`${batchBodies} batch bodies do not split into ${rounds} rounds`);
    let directMs = 0;
    let directCpu: CpuSnapshot = NoCpu;
    const hl7Rounds: HttpLoadResult[] = [];
    let hl7Cpu: CpuSnapshot = NoCpu;
    for (let round = 0; round < rounds; round++) {
      progress(
        `round ${round + 1} of ${rounds}: limit, ${count(perRound * perBatch)} rows by postgres.js, ${count(perBatch)} a statement, ${batchConnections} in flight`,
      );
      const direct = await directInsert(sql, round * perRound * perBatch, perRound, perBatch, batchConnections, 33_000_000);
      directMs += direct.ms;
      directCpu = cpuSum(directCpu, cpuPer(NoCpu, direct.cpu, batchBodies));
      progress(
        `round ${round + 1} of ${rounds}: service, ${perRound} HL7 bodies of ${count(perBatch)} messages, ${batchConnections} connections`,
      );
      const beforeHl7 = cpuSnapshot(service.pid);
      const part = await postAll({
        url,
        bodies: hl7Batches.slice(round * perRound, (round + 1) * perRound),
        headers: hl7Headers,
        concurrency: batchConnections,
      });
      hl7Cpu = cpuSum(hl7Cpu, cpuPer(beforeHl7, cpuSnapshot(service.pid), batchBodies));
      checkAnswers('HL7 batches', part);
      hl7Rounds.push(part);
    }
    const direct = { perSecond: (batchBodies * perBatch) / (directMs / 1000) };
    const hl7 = joinRounds(hl7Rounds);
    progress(`service: ${batchBodies} JSON bodies of ${count(perBatch)} events, ${batchConnections} connections`);
    const json = await postAll({ url, bodies: jsonBatches, headers: jsonHeaders, concurrency: batchConnections });
    checkAnswers('JSON batches', json);
    const { peakRssBytes, errorLines } = await service.stop();
    service = undefined;

    const [stored] = await sql<{ hl7_single: number; hl7_batch: number; json_batch: number; inbound: number }[]>`
      select count(*) filter (where rx_number::bigint between 30000000 and 30999999)::int as hl7_single,
             count(*) filter (where rx_number::bigint between 31000000 and 31999999)::int as hl7_batch,
             count(*) filter (where rx_number::bigint between 32000000 and 32999999)::int as json_batch,
             (select count(*)::int from inbound_message) as inbound
        from medication_dispense`;
    if (stored!.hl7_batch !== batchBodies * perBatch || stored!.json_batch !== batchBodies * perBatch) {
      throw new Error(`stored ${stored!.hl7_batch} HL7 and ${stored!.json_batch} JSON dispenses of ${batchBodies * perBatch} each`);
    }
    const singleRate = single.perSecond;
    const hl7Rate = (hl7.answered * perBatch) / hl7.seconds;
    const jsonRate = (json.answered * perBatch) / json.seconds;
    const bareBatchRate = (bareBatch.answered * perBatch) / bareBatch.seconds;
    const rows: ResultRow[] = [
      {
        measure: `HL7, one message a body (${singleConnections} connections)`,
        result: rate(singleRate, 'dispenses'),
        limit: `postgres.js insert, one row a statement, ${singleConnections} in flight: ${rate(oneByOne.perSecond, 'rows')}`,
        ratio: percent(singleRate / oneByOne.perSecond),
      },
      {
        measure: 'HL7, one message a body, against HTTP alone',
        result: rate(singleRate, 'dispenses'),
        limit: `bare Fastify, same bodies: ${rate(bareSingle.perSecond, 'requests')}`,
        ratio: percent(singleRate / bareSingle.perSecond),
      },
      {
        measure: `HL7, ${count(perBatch)}-message bodies (${batchConnections} connections)`,
        result: rate(hl7Rate, 'dispenses'),
        limit: `postgres.js insert, ${count(perBatch)} rows a statement, ${batchConnections} in flight: ${rate(direct.perSecond, 'rows')}`,
        ratio: percent(hl7Rate / direct.perSecond),
        target: verdict('≥ 50%', hl7Rate / direct.perSecond >= 0.5),
      },
      {
        measure: `JSON, ${count(perBatch)}-event bodies (${batchConnections} connections)`,
        result: rate(jsonRate, 'events'),
        limit: `postgres.js insert: ${rate(direct.perSecond, 'rows')}`,
        ratio: percent(jsonRate / direct.perSecond),
      },
      {
        measure: `HL7 ${count(perBatch)}-message bodies against HTTP alone`,
        result: rate(hl7Rate, 'dispenses'),
        limit: `bare Fastify, same bodies: ${rate(bareBatchRate, 'messages')}`,
        ratio: percent(hl7Rate / bareBatchRate),
      },
      peakRssRow(peakRssBytes),
    ];
    if (cpuAvailable()) {
      rows.splice(rows.length - 1, 0, {
        measure: `CPU per ${count(perBatch)} dispenses, HL7 ${count(perBatch)}-message bodies`,
        result: cpuText(hl7Cpu, ['service', 'postgres', 'driver']),
        limit: `postgres.js insert: ${cpuText(directCpu, ['postgres', 'driver'])}`,
        ratio: percent(cpuTotal(directCpu, ['postgres', 'driver']) / cpuTotal(hl7Cpu, ['service', 'postgres', 'driver'])),
      });
    }
    return {
      title: 'Ingest: CMOP dispenses over HTTP (POST /v1/dispenses)',
      rows,
      notes: [
        `stored: ${count(stored!.hl7_single)} dispenses from one-message bodies, ${count(stored!.hl7_batch)} from HL7 batches, ${count(stored!.json_batch)} from JSON; ${count(stored!.inbound)} inbound messages; service error log lines: ${errorLines}`,
        `one-message bodies: p50 ${single.p50Ms} ms, p99 ${single.p99Ms} ms; ${count(perBatch)}-message HL7 bodies: p50 ${hl7.p50Ms} ms, p99 ${hl7.p99Ms} ms (the highest of the ${rounds} rounds')`,
        'each dispense is new (no duplicates); every message carries an SSN that the service masks before storing the body',
        'autocannon and the postgres.js limit run in the driver process; the service and the bare Fastify in their own',
        `HL7 batch bodies and their postgres.js limit take turns in ${rounds} rounds (a quarter of the bodies, then a quarter of the statements), each figure the sum of its rounds`,
        `CPU: user and system time from /proc of the service process (all its threads), of every PostgreSQL process on the machine, and of the driver; on two shared cores the throughput ratio follows the ratio of total CPU per body${options.small ? ' (counted in 10 ms ticks: a --small run is too short for these figures to mean anything)' : ''}`,
        machineNote(db.description),
      ],
    };
  } finally {
    await service?.stop().catch(() => {});
    await db.close();
  }
}
