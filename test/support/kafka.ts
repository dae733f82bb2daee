// A real Kafka broker for the event-bus tests: one per test file, started on first use and stopped
// when the file's tests end. Without Java the tests that need it are skipped, saying so in one line.
import { randomBytes } from 'node:crypto';
import { Admin } from '@platformatic/kafka';
import tap from 'tap';
import { kafkaRunnable, startKafkaBroker, type KafkaBroker, type KafkaBrokerOptions } from '../../src/sandbox/kafka-broker.ts';
import { startSandboxSchemaRegistry, type SandboxSchemaRegistry } from '../../src/sandbox/schema-registry.ts';
import type { Sql } from '../../src/db/connect.ts';
import { createPublisher, type Publisher } from '../../src/event-bus/publish.ts';

/** False when Kafka tests can run; else the one line that says why not and how to run them. */
export const kafkaSkip: false | string = kafkaRunnable()
  ? false
  : 'Kafka tests skipped: no Java here, or no Maven to fetch the Kafka jars (install OpenJDK 17 and Maven, then run npm test: scripts/kafka.sh fetches Kafka once)';

let broker: Promise<KafkaBroker> | undefined;

/** This file's broker (3 partitions for an auto-created topic; SASL sessions re-authenticated per options). */
export function testBroker(options: KafkaBrokerOptions = {}): Promise<KafkaBroker> {
  broker ??= (async () => {
    const started = await startKafkaBroker({ partitions: 3, heap: '256m', ...options });
    tap.teardown(() => started.stop());
    return started;
  })();
  return broker;
}

export async function testRegistry(t: { teardown(fn: () => unknown): void }): Promise<SandboxSchemaRegistry> {
  const registry = await startSandboxSchemaRegistry();
  t.teardown(() => registry.close());
  return registry;
}

export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}

export async function createTopic(brokers: string, topic: string, partitions: number): Promise<void> {
  const admin = new Admin({ clientId: 'rx-test-admin', bootstrapBrokers: [brokers] });
  try {
    await admin.createTopics({ topics: [topic], partitions, replicas: 1 });
  } finally {
    await admin.close();
  }
}

/** The settings that point an app's consumer at a test broker, registry and topic. */
export function eventBusSettings(brokers: string, registry: SandboxSchemaRegistry, topic: string, group: string): Record<string, string> {
  return {
    EVENT_BUS_BROKERS: brokers,
    EVENT_BUS_TOPIC: topic,
    EVENT_BUS_GROUP_ID: group,
    EVENT_BUS_SCHEMA_REGISTRY_URL: registry.url,
    EVENT_BUS_AUTH: 'none',
    EVENT_BUS_TLS: 'false',
    EVENT_BUS_SESSION_TIMEOUT_SECONDS: '3',
    EVENT_BUS_RETRY_MAX_SECONDS: '1',
  };
}

/** The group's committed offset of each partition of the topic (the next record it will read). */
export async function committedOffsets(brokers: string, group: string, topic: string): Promise<Map<number, bigint>> {
  const admin = new Admin({ clientId: 'rx-test-admin', bootstrapBrokers: [brokers] });
  try {
    const [result] = await admin.listConsumerGroupOffsets({ groups: [group] });
    const partitions = result?.topics.find((t) => t.name === topic)?.partitions ?? [];
    return new Map(partitions.filter((p) => p.committedOffset >= 0n).map((p) => [p.partitionIndex, p.committedOffset]));
  } finally {
    await admin.close();
  }
}

/** The `n` of a `select count(*)::int as n ...` query. */
export async function countOf(sql: Sql, query: string): Promise<number> {
  return ((await sql.unsafe(query))[0] as unknown as { n: number }).n;
}

/** Event-bus record `n`: one canonical JSON dispense, its event id also its message id. */
export const jsonDispenseEvent = (n: number) => ({
  eventId: `eb-${n}`,
  dispense: {
    messageId: `eb-${n}`,
    stationNumber: '521',
    patient: { icn: '1012345678V123456', mhvCorrelationId: '10123456' },
    prescription: { rxNumber: `88${String(n).padStart(5, '0')}`, fillNumber: 0 },
    carrier: 'UPS',
    trackingNumber: `1Z99999904${String(n).padStart(8, '0')}`,
  },
});

type Teardown = { teardown(fn: () => unknown): void };

/** A topic of its own on a broker (this file's unless given), a schema registry, a consumer group name, and the settings that point a consumer at them. */
export async function testTopic(t: Teardown, partitions: number, broker?: KafkaBroker) {
  const kafka = broker ?? (await testBroker());
  const registry = await testRegistry(t);
  const topic = uniqueName('dispenses');
  const group = uniqueName('group');
  await createTopic(kafka.plaintext, topic, partitions);
  return { broker: kafka, registry, topic, group, settings: eventBusSettings(kafka.plaintext, registry, topic, group) };
}

/** A publisher to a test topic, closed when the test ends. */
export async function testPublisher(
  t: Teardown,
  { broker, registry, topic }: { broker: KafkaBroker; registry: SandboxSchemaRegistry; topic: string },
): Promise<Publisher> {
  const publisher = await createPublisher({ brokers: [broker.plaintext], registryUrl: registry.url, topic });
  t.teardown(() => publisher.close());
  return publisher;
}
