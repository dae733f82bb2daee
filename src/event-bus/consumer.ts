// The VA Enterprise Event Bus consumer: reads CMOP dispense records from Kafka in batches, stores
// each batch in one transaction (store.ts), and commits a partition's offset only after that
// transaction committed. At least once, made idempotent by the stored positions and the ingest's
// dispense key. A record that cannot be read is kept with its reason and committed past; a registry
// or database that cannot be reached holds the batch (no commit) and is retried with backoff.
import { Consumer, type Message, type MessagesStream, type SASLOptions } from '@platformatic/kafka';
import type { Logger } from 'pino';
import { eventBusTls, type Config } from '../config.ts';
import type { Sql } from '../db/connect.ts';
import type { IngestOutcome } from '../ingest/ingest.ts';
import { mskIamTokenProvider } from './auth.ts';
import { decodeRecord, type RecordOutcome } from './records.ts';
import { RegistryUnavailableError, schemaRegistryClient, type SchemaRegistryClient } from './registry-client.ts';
import { prepareBatch, storeBatch, type BatchRecord, type PreparedBatch } from './store.ts';

type Record = Message<Buffer, Buffer, Buffer, Buffer>;

export type EventBusStatus = 'connecting' | 'ok' | 'broker unreachable';

export interface EventBusConsumerOptions {
  config: Config;
  sql: Sql;
  log: Logger;
  onRecords?: (outcome: RecordOutcome, count: number) => void;
  onDispenses?: (outcome: IngestOutcome, count: number) => void;
  onLag?: (topic: string, partition: number, lag: number | null) => void;
  /** The OAUTHBEARER token for EVENT_BUS_AUTH=msk-iam; defaults to the MSK IAM signer. */
  tokenProvider?: () => Promise<string>;
  /** Defaults to the registry at EVENT_BUS_SCHEMA_REGISTRY_URL. */
  registry?: SchemaRegistryClient;
  /** A name for this instance in the group (client id); defaults to one per process. */
  clientId?: string;
  /** Told of each Kafka client created (tests watch its connection events). */
  onClient?: (consumer: Consumer<Buffer, Buffer, Buffer, Buffer>) => void;
}

export interface EventBusConsumer {
  start(): void;
  /** Finishes the batch being stored (within graceMs), commits what is stored, and leaves the group. */
  stop(graceMs: number): Promise<void>;
  status(): EventBusStatus;
  /** The partitions of the topic this instance holds now. */
  partitions(): number[];
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });

/** Waits for work, or for ms at most, without keeping the process alive for the timer. */
async function within(work: Promise<unknown> | undefined, ms: number): Promise<void> {
  if (work === undefined || ms <= 0) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    work,
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
      timer.unref();
    }),
  ]);
  clearTimeout(timer);
}

const LagIntervalMs = 5000;
const FetchMaxBytes = 1024 * 1024;

export function saslOptions(config: Config, tokenProvider?: () => Promise<string>): SASLOptions | undefined {
  switch (config.EVENT_BUS_AUTH) {
    case 'none':
      return undefined;
    case 'scram-sha-512':
      return { mechanism: 'SCRAM-SHA-512', username: config.EVENT_BUS_SCRAM_USERNAME!, password: config.EVENT_BUS_SCRAM_PASSWORD! };
    case 'msk-iam':
      // Asked again on every (re-)authentication: the broker ends a session when its token expires.
      return {
        mechanism: 'OAUTHBEARER',
        token: tokenProvider ?? mskIamTokenProvider({ region: config.EVENT_BUS_AWS_REGION, roleArn: config.EVENT_BUS_AWS_ROLE_ARN }),
      };
  }
}

export function createEventBusConsumer(options: EventBusConsumerOptions): EventBusConsumer {
  const { config, sql } = options;
  const log = options.log.child({ component: 'event-bus' });
  const topic = config.EVENT_BUS_TOPIC;
  const registry = options.registry ?? schemaRegistryClient(config.EVENT_BUS_SCHEMA_REGISTRY_URL!);
  const maxDelayMs = config.EVENT_BUS_RETRY_MAX_SECONDS * 1000;
  const clientId = options.clientId ?? `rx-tracking-email-${process.pid}`;
  const stopping = new AbortController();
  let status: EventBusStatus = 'connecting';
  let running: Promise<void> | undefined;
  /** The last batch being stored and committed; awaiting it awaits every batch before it. */
  let batchInHand: Promise<void> | undefined;
  /** Set on stop: the batch being stored is finished, no other is started. */
  let draining = false;
  let current: { consumer: Consumer<Buffer, Buffer, Buffer, Buffer>; stream?: MessagesStream<Buffer, Buffer, Buffer, Buffer> } | undefined;
  const lagReported = new Set<number>();

  const backoff = (attempt: number) => Math.min(maxDelayMs, 250 * 2 ** Math.min(attempt, 16)) * (0.75 + Math.random() / 2);

  // One token provider for every client this consumer makes: its cached token outlives a reconnect.
  const sasl = saslOptions(config, options.tokenProvider);

  function newConsumer() {
    const consumer = new Consumer({
      clientId,
      groupId: config.EVENT_BUS_GROUP_ID,
      bootstrapBrokers: config.EVENT_BUS_BROKERS,
      ...(eventBusTls(config) && { tls: {} }),
      ...(sasl && { sasl }),
      autocommit: false,
      sessionTimeout: config.EVENT_BUS_SESSION_TIMEOUT_SECONDS * 1000,
      heartbeatInterval: Math.max(200, Math.floor((config.EVENT_BUS_SESSION_TIMEOUT_SECONDS * 1000) / 5)),
      rebalanceTimeout: config.EVENT_BUS_SESSION_TIMEOUT_SECONDS * 1000 * 2,
      maxWaitTime: 500,
      // A fetch answers with up to this much per request (at least one record batch, whatever its
      // size), which bounds the memory one response takes under the heap cap. A fetch's records
      // wait for their turn to be stored: 1 MiB is a few batches, where 4 MiB kept thousands of
      // records alive long enough to be promoted to the old generation, and cost the service about a
      // sixth more CPU a record.
      maxBytes: FetchMaxBytes,
      retries: 3,
      retryDelay: 500,
    });
    consumer.on('consumer:heartbeat:end', () => {
      status = 'ok';
    });
    consumer.on('consumer:heartbeat:error', () => {
      status = 'broker unreachable';
    });
    consumer.on('client:broker:failed', () => {
      status = 'broker unreachable';
    });
    consumer.on('consumer:group:join', () => {
      status = 'ok';
    });
    consumer.on('consumer:lag', (lag) => {
      const partitions = lag.get(topic) ?? [];
      partitions.forEach((value, partition) => {
        if (value >= 0n) {
          lagReported.add(partition);
          options.onLag?.(topic, partition, Number(value));
        } else if (lagReported.delete(partition)) {
          options.onLag?.(topic, partition, null);
        }
      });
    });
    consumer.on('consumer:lag:error', () => {});
    options.onClient?.(consumer);
    return consumer;
  }

  /** Waits before another attempt at a batch; false when the consumer stops meanwhile. */
  async function retryLater(attempt: number, error: unknown): Promise<boolean> {
    if (stopping.signal.aborted) return false;
    const delay = backoff(attempt);
    const what = error instanceof RegistryUnavailableError ? 'the schema registry' : 'the database';
    log.warn(
      {
        err: { message: (error as Error).message, code: (error as { code?: string }).code },
        attempt: attempt + 1,
        retryInMs: Math.round(delay),
      },
      `event-bus batch not stored (${what} unavailable): held uncommitted, retrying`,
    );
    await sleep(delay, stopping.signal);
    return !stopping.signal.aborted;
  }

  /** Decodes, masks and parses a batch, retrying while the registry cannot be reached; undefined if stopped. */
  async function prepare(batch: Record[]): Promise<PreparedBatch | undefined> {
    for (let attempt = 0; ; attempt++) {
      try {
        const records: BatchRecord[] = [];
        for (const message of batch) {
          records.push({
            position: { topic, partition: message.partition, offset: message.offset },
            decoded: await decodeRecord(message.value, registry),
          });
        }
        return await prepareBatch(records);
      } catch (error) {
        if (!(await retryLater(attempt, error))) return undefined;
      }
    }
  }

  /**
   * Stores a prepared batch, retrying while the database cannot be reached; true once stored, false
   * if the consumer stopped first.
   */
  async function write(batch: Record[], prepared: PreparedBatch): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      try {
        const stored = await storeBatch(sql, prepared);
        for (const [outcome, count] of Object.entries(stored.outcomes) as [RecordOutcome, number][])
          if (count > 0) options.onRecords?.(outcome, count);
        for (const [outcome, count] of Object.entries(stored.dispenses) as [IngestOutcome, number][])
          if (count > 0) options.onDispenses?.(outcome, count);
        const rejected = prepared.records.filter((r) => r.decoded.kind === 'bad');
        if (rejected.length > 0) {
          log.warn(
            {
              rejected: rejected.map((r) => ({
                partition: r.position.partition,
                offset: String(r.position.offset),
                reason: r.decoded.kind === 'bad' ? r.decoded.outcome : '',
              })),
            },
            'event-bus records kept as rejected',
          );
        }
        log.debug({ records: batch.length, ...stored.outcomes }, 'event-bus batch stored');
        return true;
      } catch (error) {
        if (!(await retryLater(attempt, error))) return false;
      }
    }
  }

  /** Commits the offset of the last record of each partition of a stored batch: that commits everything before it. */
  async function commitOffsets(batch: Record[]): Promise<void> {
    const last = new Map<number, Record>();
    for (const message of batch) last.set(message.partition, message);
    await Promise.all(
      [...last.values()].map(async (message) => {
        try {
          await message.commit();
        } catch (error) {
          // Lost in a rebalance: the partition's new owner reads these records again and, finding
          // them stored, stores nothing.
          log.info(
            { partition: message.partition, offset: String(message.offset), err: { message: (error as Error).message } },
            'event-bus offset not committed (partition reassigned); the stored records are skipped on redelivery',
          );
        }
      }),
    );
  }

  /** Reads one consumer's stream until it fails or the consumer stops. */
  async function consume(): Promise<void> {
    const consumer = newConsumer();
    current = { consumer };
    try {
      const stream = await consumer.consume({ topics: [topic], autocommit: false, mode: 'committed', fallbackMode: 'earliest' });
      current.stream = stream;
      status = 'ok';
      consumer.startLagMonitoring({ topics: [topic] }, LagIntervalMs);
      const buffer: Record[] = [];
      let failure: Error | undefined;
      let wake: (() => void) | undefined;
      const poke = () => {
        const w = wake;
        wake = undefined;
        w?.();
      };
      stream.on('data', (message: Record) => {
        buffer.push(message);
        if (buffer.length >= config.EVENT_BUS_BATCH_SIZE) stream.pause();
        poke();
      });
      stream.on('error', (error: Error) => {
        failure = error;
        poke();
      });
      stream.on('close', () => {
        failure ??= new Error('the event-bus stream closed');
        poke();
      });
      stopping.signal.addEventListener('abort', poke, { once: true });
      // A batch is decoded and parsed while the one before is stored, and stored once that one is:
      // batches are stored in the order they were read. A stored batch's offsets are committed
      // while the next is stored, in order too, and never past a batch that was not stored (the
      // consumer stopped first): its records, and those after them, are read again by the
      // partitions' next owner.
      let storing: Promise<void> | undefined;
      let committed: Promise<boolean> = Promise.resolve(true);
      while (!stopping.signal.aborted && !draining && failure === undefined) {
        if (buffer.length === 0) {
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
          continue;
        }
        status = 'ok';
        const batch = buffer.splice(0, config.EVENT_BUS_BATCH_SIZE);
        if (stream.isPaused() && buffer.length < config.EVENT_BUS_BATCH_SIZE) stream.resume();
        const prepared = await prepare(batch);
        await storing;
        if (prepared === undefined || stopping.signal.aborted || draining) break;
        const stored = write(batch, prepared);
        storing = stored.then(() => {});
        const before = committed;
        committed = Promise.all([before, stored]).then(async ([earlier, ok]) => {
          if (!earlier || !ok) return false;
          await commitOffsets(batch);
          return true;
        });
        const inHand = committed.then(() => {
          if (batchInHand === inHand) batchInHand = undefined;
        });
        batchInHand = inHand;
      }
      await batchInHand;
      if (failure && !stopping.signal.aborted) throw failure;
    } finally {
      consumer.stopLagMonitoring();
      await within(
        current.stream?.close().catch(() => {}),
        5000,
      );
      await within(
        consumer.close(true).catch(() => {}),
        5000,
      );
      current = undefined;
    }
  }

  async function run(): Promise<void> {
    for (let attempt = 0; !stopping.signal.aborted; attempt++) {
      try {
        await consume();
        attempt = 0;
      } catch (error) {
        if (stopping.signal.aborted) break;
        status = 'broker unreachable';
        const delay = backoff(attempt);
        log.error(
          { err: { message: (error as Error).message }, retryInMs: Math.round(delay) },
          'event-bus consumer stopped reading (brokers lost or refused it); reconnecting',
        );
        await sleep(delay, stopping.signal);
      }
    }
  }

  return {
    start() {
      log.info(
        {
          topic,
          groupId: config.EVENT_BUS_GROUP_ID,
          brokers: config.EVENT_BUS_BROKERS,
          auth: config.EVENT_BUS_AUTH,
          tls: eventBusTls(config),
        },
        'event-bus consumer starting',
      );
      running = run();
    },
    async stop(graceMs) {
      // Everything here is bounded by the grace period: closing a client whose brokers are gone can
      // wait for them indefinitely.
      const deadline = Date.now() + graceMs;
      const untilDeadline = <T>(work: Promise<T> | undefined) => within(work, deadline - Date.now());
      draining = true;
      // The batch being stored is stored and committed if it can be within the grace period; a
      // batch still waiting for the database is left uncommitted, and read again by the next owner.
      // A batch only decoded and parsed is dropped: it was never stored nor committed.
      await untilDeadline(batchInHand);
      stopping.abort();
      const closing = current;
      if (closing) {
        await untilDeadline(closing.stream?.close().catch(() => {}));
        await untilDeadline(closing.consumer.close(true).catch(() => {}));
      }
      await untilDeadline(running);
      log.info('event-bus consumer stopped');
    },
    status: () => status,
    partitions: () =>
      (current?.consumer.assignments ?? [])
        .filter((a) => a.topic === topic)
        .flatMap((a) => a.partitions)
        .sort((a, b) => a - b),
  };
}
