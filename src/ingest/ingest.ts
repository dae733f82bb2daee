// Ingest, independent of the transport: the HTTP route is a thin adapter over these functions, and
// an event-bus (Kafka) consumer can call them the same way. Every body is stored (SSNs masked)
// before it is parsed; then its dispenses are upserted idempotently and the body's fate recorded.
import type { Sql, SqlHandle } from '../db/connect.ts';
import type { DispenseRecord, DispenseState } from './dispense.ts';
import { buildAck, parseHl7Body, type AckCode, type Hl7MessageResult } from './hl7.ts';
import { parseJsonBody, type EventError } from './json.ts';
import { maskSsns } from './mask.ts';
import {
  insertDispenses,
  insertInboundMessage,
  notifyDispensePending,
  recordInboundOutcome,
  type InboundOutcome,
} from './repository.ts';

export interface IngestDispensesInput {
  inboundMessageId: number;
  dispenses: readonly DispenseRecord[];
}

export interface IngestDispensesResult {
  inserted: number;
  duplicates: number;
  /** The new rows by state. */
  insertedByState: Record<DispenseState, number>;
  /** The given dispenses this call stored (the others were already stored, or came twice). */
  stored: ReadonlySet<DispenseRecord>;
}

/**
 * Stores dispenses idempotently on (station, Rx number, fill number, tracking number): an event
 * seen before is counted as a duplicate and changes nothing. New pending dispenses wake the
 * grouping job. Pass a transaction to make it atomic with the caller's other writes.
 */
export async function ingestDispenses(sql: SqlHandle, input: IngestDispensesInput): Promise<IngestDispensesResult> {
  const { stored, insertedByState } = await insertDispenses(sql, input.inboundMessageId, input.dispenses);
  if (insertedByState.pending > 0) await notifyDispensePending(sql);
  const inserted = stored.size;
  return { inserted, duplicates: input.dispenses.length - inserted, insertedByState, stored };
}

/** What became of the events of one body, for the `rx_dispenses_ingested_total{outcome}` counter. */
export type IngestOutcome = 'inserted' | 'cancelled' | 'unprocessable' | 'duplicate' | 'rejected';
export type IngestOutcomeCounts = Record<IngestOutcome, number>;

function outcomeCounts(stored: IngestDispensesResult | undefined, rejected: number): IngestOutcomeCounts {
  return {
    inserted: stored?.insertedByState.pending ?? 0,
    cancelled: stored?.insertedByState.cancelled ?? 0,
    unprocessable: stored?.insertedByState.unprocessable ?? 0,
    duplicate: stored?.duplicates ?? 0,
    rejected,
  };
}

export interface InboundBody {
  /** Where the body came from: 'http' today, an event-bus consumer later. */
  source: string;
  contentType: string;
  body: string;
}

/** Stores a body as received, SSNs masked, and returns its id and the masked text to parse. */
async function keepBody(sql: SqlHandle, input: InboundBody): Promise<{ id: number; maskedBody: string }> {
  const maskedBody = maskSsns(input.body);
  const id = await insertInboundMessage(sql, { source: input.source, contentType: input.contentType, maskedBody });
  return { id, maskedBody };
}

function outcomeOf(total: number, accepted: number, stored: number): InboundOutcome {
  if (total > 0 && accepted === total) return 'accepted';
  return stored > 0 ? 'partial' : 'rejected';
}

// ---- HL7 v2

export interface Hl7IngestResult {
  inboundMessageId: number;
  outcome: InboundOutcome;
  /** 400 when nothing in the body could be stored as a dispense (not HL7, or every message rejected). */
  statusCode: 200 | 400;
  /** One ACK per message, in order (one AR for a body that is not HL7). */
  acks: string;
  messages: number;
  acksByCode: Record<AckCode, number>;
  inserted: number;
  duplicates: number;
  unprocessable: number;
  /** New rows by outcome, duplicates, and messages that yielded no dispense (`rejected`). */
  counts: IngestOutcomeCounts;
}

function ackText(result: Hl7MessageResult, stored: ReadonlySet<DispenseRecord>): string {
  if (result.errors.length > 0) return result.errors.join('; ');
  const duplicates = result.dispenses.filter((d) => !stored.has(d)).length;
  if (duplicates === 0) return 'accepted';
  return duplicates === result.dispenses.length ? 'accepted: already received' : `accepted: ${duplicates} already received`;
}

function describeHl7Errors(messages: Hl7MessageResult[], notes: string[]): string | null {
  const lines = messages
    .filter((m) => m.errors.length > 0)
    .map((m) => `message ${m.index + 1}${m.header?.controlId ? ` (${m.header.controlId})` : ''} ${m.ack}: ${m.errors.join('; ')}`);
  const all = [...lines, ...notes];
  return all.length > 0 ? all.join('\n') : null;
}

/** Ingests an HL7 v2 body (one or more messages, batch-wrapped or not) and builds its ACKs. */
export async function ingestHl7(sql: Sql, input: InboundBody, now = new Date()): Promise<Hl7IngestResult> {
  const { id, maskedBody } = await keepBody(sql, input);
  // The stored, masked text is what is parsed, so reprocessing a stored body gives the same result.
  const parsed = parseHl7Body(maskedBody);
  if (parsed.kind === 'not-hl7') {
    await recordInboundOutcome(sql, id, { outcome: 'rejected', messageCount: 0, error: parsed.reason });
    return {
      inboundMessageId: id,
      outcome: 'rejected',
      statusCode: 400,
      acks: buildAck({ header: undefined, code: 'AR', text: parsed.reason, controlId: `${id}-1`, now }),
      messages: 0,
      acksByCode: { AA: 0, AE: 0, AR: 1 },
      inserted: 0,
      duplicates: 0,
      unprocessable: 0,
      counts: outcomeCounts(undefined, 1),
    };
  }

  const { messages, notes } = parsed;
  const dispenses = messages.flatMap((m) => m.dispenses);
  const accepted = messages.filter((m) => m.ack === 'AA').length;
  const outcome = outcomeOf(messages.length, accepted, dispenses.length);
  const ingested = await sql.begin(async (tx) => {
    const result = await ingestDispenses(tx, { inboundMessageId: id, dispenses });
    await recordInboundOutcome(tx, id, { outcome, messageCount: messages.length, error: describeHl7Errors(messages, notes) });
    return result;
  });

  const acks = messages
    .map((m) => buildAck({ header: m.header, code: m.ack, text: ackText(m, ingested.stored), controlId: `${id}-${m.index + 1}`, now }))
    .join('');
  const acksByCode: Record<AckCode, number> = { AA: 0, AE: 0, AR: 0 };
  for (const m of messages) acksByCode[m.ack]++;
  return {
    inboundMessageId: id,
    outcome,
    statusCode: outcome === 'rejected' ? 400 : 200,
    acks,
    messages: messages.length,
    acksByCode,
    inserted: ingested.inserted,
    duplicates: ingested.duplicates,
    unprocessable: dispenses.filter((d) => d.state === 'unprocessable').length,
    counts: outcomeCounts(ingested, messages.filter((m) => m.dispenses.length === 0).length),
  };
}

// ---- JSON

export interface JsonIngestSummary {
  inboundMessageId: number;
  received: number;
  inserted: number;
  duplicates: number;
  rejected: number;
  errors: EventError[];
}

export interface JsonIngestResult {
  outcome: InboundOutcome;
  /** 200 when at least one event was accepted (inserted or already known); else 400. */
  statusCode: 200 | 400;
  summary: JsonIngestSummary;
  counts: IngestOutcomeCounts;
}

/**
 * Ingests canonical JSON: one event or an array. Valid events are stored, invalid ones are listed
 * in `errors` with their index and field; the request succeeds when any event was accepted.
 */
export async function ingestJson(sql: Sql, input: InboundBody): Promise<JsonIngestResult> {
  const { id, maskedBody } = await keepBody(sql, input);
  const parsed = parseJsonBody(maskedBody);
  if (parsed.kind === 'invalid') {
    await recordInboundOutcome(sql, id, { outcome: 'rejected', messageCount: 0, error: parsed.error });
    return {
      outcome: 'rejected',
      statusCode: 400,
      summary: { inboundMessageId: id, received: 0, inserted: 0, duplicates: 0, rejected: 0, errors: [{ message: parsed.error }] },
      counts: outcomeCounts(undefined, 1),
    };
  }

  const { received, dispenses, errors } = parsed;
  const outcome = outcomeOf(received, dispenses.length, dispenses.length);
  const error = errors.length > 0 ? errors.map((e) => `event[${e.index}].${e.field}: ${e.message}`).join('\n') : null;
  const stored = await sql.begin(async (tx) => {
    const result = await ingestDispenses(tx, { inboundMessageId: id, dispenses });
    await recordInboundOutcome(tx, id, { outcome, messageCount: received, error });
    return result;
  });
  return {
    outcome,
    statusCode: dispenses.length > 0 ? 200 : 400,
    summary: {
      inboundMessageId: id,
      received,
      inserted: stored.inserted,
      duplicates: stored.duplicates,
      rejected: received - dispenses.length,
      errors,
    },
    counts: outcomeCounts(stored, received - dispenses.length),
  };
}
