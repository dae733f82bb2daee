// Event bus: CMOP dispenses read from a real Kafka topic (one HL7 message an Avro record, as
// proposed in docs/event-bus.md) into medication_dispense by the service's consumer, batches of
// EVENT_BUS_BATCH_SIZE records, one transaction each, offsets committed after.
// Limits beside it, in the same run: the same client (@platformatic/kafka) reading the same records
// and committing each batch with no database work, and the dispense rows inserted straight into
// Postgres by postgres.js, a batch's rows a statement, one statement at a time (as the consumer stores
// one batch at a time).
import { Admin, Consumer } from '@platformatic/kafka';
import type { StageOptions } from '../run.ts';
import { createPublisher } from '../../src/event-bus/publish.ts';
import { startKafkaBroker } from '../../src/sandbox/kafka-broker.ts';
import { startSandboxSchemaRegistry } from '../../src/sandbox/schema-registry.ts';
import { onInterrupt } from '../lib/cleanup.ts';
import { cpuAvailable, cpuPer, cpuSnapshot, cpuSum, cpuText, NoCpu, type CpuSnapshot } from '../lib/cpu.ts';
import { benchDatabase } from '../lib/database.ts';
import { bodiesOf, hl7Message } from '../lib/feeds.ts';
import { serviceSettings, startService, type Service } from '../lib/processes.ts';
import { count, machineNote, peakRssRow, percent, progress, rate, verdict, type ResultTable } from '../lib/report.ts';
import { directInsert } from './ingest.ts';

const perVeteran = 4;
const partitions = 3;

/** The same client with no database work: reads `records` records, committing each batch. */
async function readOnly(brokers: string, topic: string, records: number, batchSize: number): Promise<{ perSecond: number }> {
  const consumer = new Consumer({
    clientId: 'bench-read-only',
    groupId: `bench-read-${Date.now()}`,
    bootstrapBrokers: [brokers],
    autocommit: false,
    maxWaitTime: 500,
  });
  try {
    const stream = await consumer.consume({ topics: [topic], autocommit: false, mode: 'earliest' });
    let read = 0;
    let first = 0;
    let inBatch = 0;
    for await (const message of stream) {
      if (read === 0) first = performance.now();
      read++;
      inBatch++;
      if (inBatch === batchSize || read === records) {
        await message.commit();
        inBatch = 0;
      }
      if (read === records) break;
    }
    const seconds = (performance.now() - first) / 1000;
    await stream.close();
    return { perSecond: records / seconds };
  } finally {
    await consumer.close(true).catch(() => {});
  }
}

export async function run(options: StageOptions): Promise<ResultTable> {
  const records = options.small ? 2_000 : 50_000;
  // A small run's batches are stored within a few hundred milliseconds: polled often enough to time them.
  const pollMs = options.small ? 10 : 100;
  const batchSize = options.small ? 100 : 500;
  progress('starting a Kafka broker and a schema registry');
  const broker = await startKafkaBroker({ partitions, heap: '512m' });
  const forgetBroker = onInterrupt(() => broker.stop());
  const registry = await startSandboxSchemaRegistry();
  const db = await benchDatabase();
  let service: Service | undefined;
  try {
    const topic = 'cmop_medication_dispense';
    const admin = new Admin({ clientId: 'bench-admin', bootstrapBrokers: [broker.plaintext] });
    await admin.createTopics({ topics: [topic], partitions, replicas: 1 });
    await admin.close();

    progress(`publishing ${count(records)} one-message HL7 records`);
    const publisher = await createPublisher({ brokers: [broker.plaintext], registryUrl: registry.url, topic });
    const messages = bodiesOf(
      0,
      records,
      1,
      perVeteran,
      (ds) => ({ eventId: ds[0]!.controlId, hl7Message: hl7Message(ds[0]!) }),
      40_000_000,
    );
    for (let i = 0; i < messages.length; i += 1000) await publisher.publish(messages.slice(i, i + 1000));
    await publisher.close();

    progress('limit: the same client reading the records, committing each batch, no database work');
    await readOnly(broker.plaintext, topic, Math.min(records, 2000), batchSize);
    const read = await readOnly(broker.plaintext, topic, records, batchSize);

    progress(`limit: the rows inserted by postgres.js, ${batchSize} a statement, one at a time`);
    const batches = Math.max(1, Math.floor(records / batchSize));
    await directInsert(db.sql, 0, Math.max(1, Math.floor(batches / 10)), batchSize, 1, 41_000_000);
    // Three rounds, the median taken: on a shared machine one round of this limit ranges over ±20%.
    const rounds: number[] = [];
    let directCpu: CpuSnapshot = NoCpu;
    for (let round = 0; round < 3; round++) {
      const direct = await directInsert(db.sql, 0, batches, batchSize, 1, 42_000_000 + round * 1_000_000);
      rounds.push(direct.perSecond);
      directCpu = cpuSum(directCpu, cpuPer(NoCpu, direct.cpu, (3 * batches * batchSize) / 1000));
    }
    const direct = { perSecond: [...rounds].sort((a, b) => a - b)[1]! };

    progress('service: consuming the topic');
    service = await startService(
      serviceSettings(db.url, {
        EVENT_BUS_BROKERS: broker.plaintext,
        EVENT_BUS_SCHEMA_REGISTRY_URL: registry.url,
        EVENT_BUS_TOPIC: topic,
        EVENT_BUS_GROUP_ID: 'bench-service',
        EVENT_BUS_AUTH: 'none',
        EVENT_BUS_TLS: 'false',
        EVENT_BUS_BATCH_SIZE: String(batchSize),
      }),
    );
    // Timed from the first batch seen committed to the last, by polling: a transaction's rows all
    // carry its start time, so created_at cannot time a batch. The records of that first batch are
    // left out of the count, as the group join is left out of the time. A poll reads the highest
    // offset stored of each partition (every record is kept at its offset, and a partition's records
    // come in order, from offset 0 of this new topic): three index probes, so that polling every
    // pollMs takes nothing from the Postgres it measures, whatever the table's size.
    const deadline = Date.now() + 30 * 60_000;
    let first: { at: number; stored: number; cpu: CpuSnapshot } | undefined;
    let last = 0;
    let serviceCpu: CpuSnapshot = NoCpu;
    for (;;) {
      const [row] = await db.sql<{ n: number }[]>`
        select coalesce(sum(1 + (select max(m.event_offset) from inbound_message m
                                  where m.event_topic = ${topic} and m.event_partition = p)), 0)::int as n
          from generate_series(0, ${partitions - 1}) as p`;
      const now = performance.now();
      if (first === undefined && row!.n > 0) first = { at: now, stored: row!.n, cpu: cpuSnapshot(service.pid, broker.process.pid) };
      if (row!.n === records) {
        last = now;
        serviceCpu = cpuPer(first!.cpu, cpuSnapshot(service.pid, broker.process.pid), (records - first!.stored) / 1000);
        break;
      }
      if (Date.now() > deadline) throw new Error(`only ${row!.n} of ${records} records stored after 30 minutes`);
      await new Promise((resolve) => setTimeout(resolve, pollMs));
    }
    // Every record became its dispense (each record is new).
    const [stored] = await db.sql<{ n: number }[]>`
      select count(*)::int as n from medication_dispense where rx_number::bigint between 40000000 and 40999999`;
    if (stored!.n !== records) throw new Error(`${stored!.n} dispenses stored of ${records} records`);
    const { peakRssBytes, errorLines } = await service.stop();
    service = undefined;
    const [span] = await db.sql<{ inbound: number; committed: number }[]>`
      select (select count(*)::int from inbound_message where source = 'event-bus') as inbound,
             (select count(*)::int from inbound_message where source = 'event-bus' and outcome = 'accepted') as committed`;
    const timed = records - first!.stored;
    const serviceRate = timed === 0 ? Number.NaN : timed / ((last - first!.at) / 1000);
    const lower = Math.min(read.perSecond, direct.perSecond);
    return {
      title: 'Event bus: CMOP dispenses from a Kafka topic (one HL7 message an Avro record)',
      rows: [
        {
          measure: `records into medication_dispense (batches of ${batchSize}, one transaction each)`,
          result: rate(serviceRate, 'records'),
          limit: `the lower of the two below: ${rate(lower, 'records')}`,
          ratio: percent(serviceRate / lower),
          target: verdict('≥ 50%', serviceRate / lower >= 0.5),
        },
        {
          measure: 'against the client alone',
          result: rate(serviceRate, 'records'),
          limit: `@platformatic/kafka reading and committing, no database: ${rate(read.perSecond, 'records')}`,
          ratio: percent(serviceRate / read.perSecond),
        },
        {
          measure: 'against the database alone',
          result: rate(serviceRate, 'records'),
          limit: `postgres.js insert, ${batchSize} rows a statement, one at a time: ${rate(direct.perSecond, 'rows')} (median of ${rounds.map((r) => rate(r, 'rows')).join(', ')})`,
          ratio: percent(serviceRate / direct.perSecond),
        },
        ...(cpuAvailable() && timed > 0
          ? [
              {
                measure: 'CPU per 1,000 records',
                result: cpuText(serviceCpu, ['service', 'postgres', 'broker']),
                limit: `postgres.js insert, per 1,000 rows: ${cpuText(directCpu, ['postgres', 'driver'])}`,
              },
            ]
          : []),
        peakRssRow(peakRssBytes),
      ],
      notes: [
        `${count(records)} records on ${partitions} partitions of a single-node Apache Kafka broker (KRaft, 512 MB heap) on this machine; stored: ${count(span!.inbound)} inbound messages (${count(span!.committed)} accepted); service error log lines: ${errorLines}`,
        `the service figure counts the records stored after the first batch seen committed (${count(timed)} of ${count(records)}), over the time from then to the last, by polling every ${pollMs} ms (the group join left out); the client limit runs from the first record read to the last`,
        'every record is new; each message carries an SSN that the service masks before storing the body',
        machineNote(db.description),
      ],
    };
  } finally {
    await service?.stop().catch(() => {});
    await db.close();
    await registry.close();
    await broker.stop();
    forgetBroker();
  }
}
