// Publishes CMOP dispense events as the proposed Avro records (Confluent framing, schema registered
// under <topic>-value and <topic>-key), the way mhv-cmop-data-service is to publish them. For
// development (`npm run event-bus:publish`), tests and benchmarks; the service itself only consumes.
import { readFileSync } from 'node:fs';
import { Producer, type SASLOptions } from '@platformatic/kafka';
import avro from 'avsc';
import { DispenseEventSchema, DispenseKeySchema, frame } from './schema.ts';

const valueType = avro.Type.forSchema(DispenseEventSchema as unknown as avro.Schema);
const keyType = avro.Type.forSchema(DispenseKeySchema);

export interface DispenseEventInput {
  eventId: string;
  hl7Message?: string;
  dispense?: unknown;
}

/** Registers a schema under a subject and returns its id (POST /subjects/{subject}/versions). */
export async function registerSchema(registryUrl: string, subject: string, schema: unknown): Promise<number> {
  const response = await fetch(`${registryUrl.replace(/\/+$/, '')}/subjects/${encodeURIComponent(subject)}/versions`, {
    method: 'POST',
    headers: { 'content-type': 'application/vnd.schemaregistry.v1+json' },
    body: JSON.stringify({ schema: JSON.stringify(schema) }),
  });
  if (!response.ok) throw new Error(`registering ${subject} failed: ${response.status} ${await response.text()}`);
  return ((await response.json()) as { id: number }).id;
}

/** The Avro value of one event, framed with its schema id. */
export function encodeDispenseEvent(schemaId: number, event: DispenseEventInput, producedAt = new Date()): Buffer {
  return frame(
    schemaId,
    valueType.toBuffer({
      eventId: event.eventId,
      producedAt: producedAt.getTime(),
      hl7Message: event.hl7Message ?? null,
      dispense: event.dispense === undefined ? null : avroDispense(event.dispense as Record<string, unknown>),
    }),
  );
}

/** A canonical JSON event as the DispenseFields record: every optional field present, null when absent. */
function avroDispense(event: Record<string, unknown>): Record<string, unknown> {
  const patient = (event.patient ?? {}) as Record<string, unknown>;
  const prescription = (event.prescription ?? {}) as Record<string, unknown>;
  return {
    messageId: event.messageId ?? null,
    stationNumber: event.stationNumber,
    patient: { icn: patient.icn, mhvCorrelationId: patient.mhvCorrelationId ?? null },
    prescription: {
      rxNumber: prescription.rxNumber,
      fillNumber: prescription.fillNumber,
      drugName: prescription.drugName ?? null,
      ndc: prescription.ndc ?? null,
      quantity: prescription.quantity ?? null,
    },
    dispensedAt: event.dispensedAt ?? null,
    shippedAt: event.shippedAt ?? null,
    carrier: event.carrier ?? null,
    trackingNumber: event.trackingNumber,
  };
}

/** The events of a sample file: an HL7 file is one event (as one POST would be), a JSON file one event per dispense. */
export function eventsOfFile(path: string): DispenseEventInput[] {
  const text = readFileSync(path, 'utf8');
  if (path.endsWith('.json')) {
    const parsed = JSON.parse(text) as unknown;
    const events = Array.isArray(parsed) ? parsed : [parsed];
    return events.map((dispense, index) => ({
      eventId: String((dispense as { messageId?: string }).messageId ?? `${path}#${index}`),
      dispense,
    }));
  }
  const controlId = /MSH\|[^\r\n]*/.exec(text)?.[0].split('|')[9] ?? path;
  return [{ eventId: controlId, hl7Message: text }];
}

export interface Publisher {
  schemaId: number;
  publish(events: readonly DispenseEventInput[], options?: { partition?: number }): Promise<void>;
  /** Sends raw record values (a test's poison records). */
  publishRaw(values: readonly Buffer[], options?: { partition?: number }): Promise<void>;
  close(): Promise<void>;
}

export async function createPublisher(options: {
  brokers: string[];
  registryUrl: string;
  topic: string;
  sasl?: SASLOptions;
  tls?: boolean;
}): Promise<Publisher> {
  const schemaId = await registerSchema(options.registryUrl, `${options.topic}-value`, DispenseEventSchema);
  const keySchemaId = await registerSchema(options.registryUrl, `${options.topic}-key`, DispenseKeySchema);
  const producer = new Producer({
    clientId: 'rx-dispense-publisher',
    bootstrapBrokers: options.brokers,
    ...(options.sasl && { sasl: options.sasl }),
    ...(options.tls && { tls: {} }),
    autocreateTopics: true,
    acks: -1,
  });
  const send = async (messages: { key: Buffer; value: Buffer }[], partition?: number) => {
    if (messages.length === 0) return;
    await producer.send({
      messages: messages.map((m) => ({ topic: options.topic, key: m.key, value: m.value, ...(partition !== undefined && { partition }) })),
    });
  };
  return {
    schemaId,
    publish: (events, publishOptions = {}) =>
      send(
        events.map((event) => ({ key: frame(keySchemaId, keyType.toBuffer(event.eventId)), value: encodeDispenseEvent(schemaId, event) })),
        publishOptions.partition,
      ),
    publishRaw: (values, publishOptions = {}) =>
      send(
        values.map((value, i) => ({ key: frame(keySchemaId, keyType.toBuffer(`raw-${i}`)), value })),
        publishOptions.partition,
      ),
    close: () => producer.close(),
  };
}
