// Ingest, independent of the transport: the HTTP route is a thin adapter over these functions, and
// an event-bus (Kafka) consumer can call them the same way. Every body is stored (SSNs masked)
// before it is parsed; then its dispenses are upserted idempotently and the body's fate recorded, in
// one statement.
//
// Between parsing a body and hearing from Postgres, only strings and numbers are kept: the insert's
// columns, the ACKs and the counts (dispenseRows in repository.ts says why). The records themselves
// are read again, from the stored text, only when some dispenses turn out to be stored already.
import type { Sql, SqlHandle } from '../db/connect.ts';
import { dispenseKey, type DispenseRecord, type IngestedDispenseState } from './dispense.ts';
import { bodyLimits, buildAck, parseHl7Body, type AckCode, type BodyLimits, type Hl7MessageResult } from './hl7.ts';
import { parseJsonBody, type EventError } from './json.ts';
import { maskSsns } from './mask.ts';
import {
  dispenseRows,
  insertDispenses,
  insertInboundMessage,
  insertPositionedMessages,
  insertPositionedMessagesWithNewDispenses,
  isStoredEventConflict,
  positionedMessageColumns,
  recordInboundOutcome,
  storeDispenseRows,
  storedRecords,
  type DispenseRows,
  type EventPosition,
  type InboundOutcome,
  type InboundOutcomeRecord,
  type PositionedMessageColumns,
  type StoredDispenses,
} from './repository.ts';

export interface IngestDispensesInput {
  inboundMessageId: number;
  dispenses: readonly DispenseRecord[];
}

export interface IngestDispensesResult {
  inserted: number;
  duplicates: number;
  /** The new rows by state. */
  insertedByState: Record<IngestedDispenseState, number>;
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
  return { inserted: stored.size, duplicates: input.dispenses.length - stored.size, insertedByState, stored };
}

/** What became of the events of one body, for the `rx_dispenses_ingested_total{outcome}` counter. */
export type IngestOutcome = 'inserted' | 'cancelled' | 'unprocessable' | 'duplicate' | 'rejected';
export type IngestOutcomeCounts = Record<IngestOutcome, number>;

function outcomeCounts(events: number, stored: StoredDispenses | undefined, rejected: number): IngestOutcomeCounts {
  return {
    inserted: stored?.byState.pending ?? 0,
    cancelled: stored?.byState.cancelled ?? 0,
    unprocessable: stored?.byState.unprocessable ?? 0,
    duplicate: events - (stored?.stored ?? 0),
    rejected,
  };
}

export interface InboundBody {
  /** Where the body came from: 'http', or 'event-bus' (a Kafka record). */
  source: string;
  contentType: string;
  body: string;
  /** An event-bus record's topic, partition and offset. */
  event?: EventPosition;
  /**
   * INGEST_MAX_RECORDS_PER_BODY: HL7 messages and dispenses, or JSON events, one body may hold; a
   * body with more is kept and refused whole. Unbounded when not given.
   */
  maxRecordsPerBody?: number;
}

function limitsOf(input: InboundBody): BodyLimits | undefined {
  return input.maxRecordsPerBody === undefined ? undefined : bodyLimits(input.maxRecordsPerBody);
}

/** Stores a body as received, SSNs masked, and returns its id and the masked text to parse. */
async function keepBody(sql: SqlHandle, input: InboundBody, format: 'hl7' | 'json'): Promise<{ id: number; maskedBody: string }> {
  const maskedBody = maskSsns(input.body, format);
  const id = await insertInboundMessage(sql, { source: input.source, contentType: input.contentType, maskedBody, event: input.event });
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

/** Why a resend of a stored event with another ICN or carrier is not applied (kept in medication_dispense_conflict). */
export const ConflictReason = 'already received with another ICN or carrier: this copy is kept for review, not applied';

function conflictsOf(result: Hl7MessageResult, conflicts: ReadonlySet<string> | null | undefined): boolean {
  return conflicts != null && result.dispenses.some((d) => conflicts.has(dispenseKey(d)));
}

function ackText(result: Hl7MessageResult, stored: ReadonlySet<DispenseRecord> | 'all', conflicts?: ReadonlySet<string> | null): string {
  if (conflictsOf(result, conflicts)) return [...result.errors, ConflictReason].join('; ');
  if (result.errors.length > 0) return result.errors.join('; ');
  const duplicates = stored === 'all' ? 0 : result.dispenses.filter((d) => !stored.has(d)).length;
  if (duplicates === 0) return 'accepted';
  return duplicates === result.dispenses.length ? 'accepted: already received' : `accepted: ${duplicates} already received`;
}

/** One ACK per message, in order; `stored` says which dispenses were new ('all': every one). */
function hl7Acks(
  inboundMessageId: number,
  messages: readonly Hl7MessageResult[],
  stored: ReadonlySet<DispenseRecord> | 'all',
  now: Date,
  conflicts?: ReadonlySet<string> | null,
): string {
  // Joined, not appended one by one: join writes one flat string, where += leaves a tree of pieces
  // (thousands of objects for a 1,000-message body) that would be kept while Postgres works.
  return messages
    .map((m) =>
      buildAck({
        header: m.header,
        code: m.ack === 'AA' && conflictsOf(m, conflicts) ? 'AE' : m.ack,
        text: ackText(m, stored, conflicts),
        controlId: `${inboundMessageId}-${m.index + 1}`,
        now,
      }),
    )
    .join('');
}

/** A JSON body's event errors as its inbound message keeps them, one line an event field. */
function describeJsonErrors(errors: readonly EventError[]): string | null {
  return errors.length > 0 ? errors.map((e) => `event[${e.index}].${e.field}: ${e.message}`).join('\n') : null;
}

function describeHl7Errors(messages: Hl7MessageResult[], notes: string[]): string | null {
  const lines = messages
    .filter((m) => m.errors.length > 0)
    .map((m) => `message ${m.index + 1}${m.header?.controlId ? ` (${m.header.controlId})` : ''} ${m.ack}: ${m.errors.join('; ')}`);
  const all = [...lines, ...notes];
  return all.length > 0 ? all.join('\n') : null;
}

/** What the rest of an HL7 ingest needs from a parsed body: strings and numbers only. */
type ReadHl7Body =
  | { kind: 'not-hl7'; reason: string }
  | {
      kind: 'hl7';
      rows: DispenseRows;
      outcome: InboundOutcome;
      error: string | null;
      messages: number;
      acksByCode: Record<AckCode, number>;
      /** The ACKs as they read when every dispense is new. */
      acksIfAllNew: string;
      unprocessable: number;
      /** Messages that yielded no dispense. */
      rejected: number;
    };

function readHl7Body(inboundMessageId: number, maskedBody: string, now: Date, limits: BodyLimits | undefined): ReadHl7Body {
  const parsed = parseHl7Body(maskedBody, limits);
  if (parsed.kind === 'not-hl7') return parsed;
  const { messages, notes } = parsed;
  const dispenses = messages.flatMap((m) => m.dispenses);
  const acksByCode: Record<AckCode, number> = { AA: 0, AE: 0, AR: 0 };
  for (const m of messages) acksByCode[m.ack]++;
  return {
    kind: 'hl7',
    rows: dispenseRows(dispenses),
    outcome: outcomeOf(messages.length, acksByCode.AA, dispenses.length),
    error: describeHl7Errors(messages, notes),
    messages: messages.length,
    acksByCode,
    acksIfAllNew: hl7Acks(inboundMessageId, messages, 'all', now),
    unprocessable: dispenses.filter((d) => d.state === 'unprocessable').length,
    rejected: messages.filter((m) => m.dispenses.length === 0).length,
  };
}

/**
 * The ACKs when some dispenses were stored before (a replayed file, or an event sent twice): the
 * stored text is read again to tell, message by message, which. Replays are rare and each costs
 * one more parse; the usual body keeps no records while Postgres works.
 */
function acksWithDuplicates(inboundMessageId: number, maskedBody: string, result: StoredDispenses, now: Date): string {
  const parsed = parseHl7Body(maskedBody);
  if (parsed.kind === 'not-hl7') throw new Error('a stored body read as HL7 once and not the second time');
  const stored = storedRecords(
    parsed.messages.flatMap((m) => m.dispenses),
    result,
  );
  return hl7Acks(inboundMessageId, parsed.messages, stored, now, result.conflictKeys);
}

/**
 * Adds each body's conflicts (inbound message id → events) to its recorded error, in one statement:
 * the statement that stored the bodies could not know them.
 */
async function recordConflicts(sql: SqlHandle, conflicts: ReadonlyMap<number, number>): Promise<void> {
  if (conflicts.size === 0) return;
  await sql`
    update inbound_message m
       set error = concat_ws(E'\n', m.error, c.events || ${` event(s) ${ConflictReason} (medication_dispense_conflict)`}::text)
      from unnest(${[...conflicts.keys()]}::bigint[], ${[...conflicts.values()]}::int[]) as c (id, events)
     where m.id = c.id`;
}

/**
 * Ingests an HL7 v2 body (one or more messages, batch-wrapped or not) and builds its ACKs. Given a
 * transaction (the event-bus consumer's batch), every write is part of it.
 */
export async function ingestHl7(sql: SqlHandle, input: InboundBody, now = new Date()): Promise<Hl7IngestResult> {
  const { id, maskedBody } = await keepBody(sql, input, 'hl7');
  // The stored, masked text is what is parsed, so reprocessing a stored body gives the same result
  // (but for a NUL, which is parsed, and refused, as sent, and stored as U+FFFD: storableText).
  const read = readHl7Body(id, maskedBody, now, limitsOf(input));
  if (read.kind === 'not-hl7') {
    await recordInboundOutcome(sql, id, { outcome: 'rejected', messageCount: 0, error: read.reason });
    return {
      inboundMessageId: id,
      outcome: 'rejected',
      statusCode: 400,
      acks: buildAck({ header: undefined, code: 'AR', text: read.reason, controlId: `${id}-1`, now }),
      messages: 0,
      acksByCode: { AA: 0, AE: 0, AR: 1 },
      inserted: 0,
      duplicates: 0,
      unprocessable: 0,
      counts: outcomeCounts(0, undefined, 1),
    };
  }

  const { rows, outcome } = read;
  const stored = await storeDispenseRows(sql, id, rows, { outcome, messageCount: read.messages, error: read.error });
  if (stored.conflictKeys) await recordConflicts(sql, new Map([[id, stored.conflictKeys.size]]));
  return {
    inboundMessageId: id,
    outcome,
    statusCode: outcome === 'rejected' ? 400 : 200,
    acks: stored.storedKeys === null ? read.acksIfAllNew : acksWithDuplicates(id, maskedBody, stored, now),
    messages: read.messages,
    acksByCode: read.acksByCode,
    inserted: stored.stored,
    duplicates: rows.events - stored.stored,
    unprocessable: read.unprocessable,
    counts: outcomeCounts(rows.events, stored, read.rejected),
  };
}

// ---- JSON

export interface JsonIngestSummary {
  inboundMessageId: number;
  received: number;
  inserted: number;
  duplicates: number;
  /** Events already stored, sent again with another ICN or carrier: kept for review, not applied. */
  conflicts: number;
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
export async function ingestJson(sql: SqlHandle, input: InboundBody): Promise<JsonIngestResult> {
  const { id, maskedBody } = await keepBody(sql, input, 'json');
  const read = readJsonBody(maskedBody, input.maxRecordsPerBody);
  if (read.kind === 'invalid') {
    await recordInboundOutcome(sql, id, { outcome: 'rejected', messageCount: 0, error: read.error });
    return {
      outcome: 'rejected',
      statusCode: 400,
      summary: {
        inboundMessageId: id,
        received: 0,
        inserted: 0,
        duplicates: 0,
        conflicts: 0,
        rejected: 0,
        errors: [{ message: read.error }],
      },
      counts: outcomeCounts(0, undefined, 1),
    };
  }

  const { received, rows, errors } = read;
  const outcome = outcomeOf(received, rows.events, rows.events);
  const error = describeJsonErrors(errors);
  const stored = await storeDispenseRows(sql, id, rows, { outcome, messageCount: received, error });
  const conflicts: EventError[] = [];
  if (stored.conflictKeys) {
    await recordConflicts(sql, new Map([[id, stored.conflictKeys.size]]));
    // Rare: the body is read again to name each conflicting event by its index.
    const again = parseJsonBody(maskedBody, input.maxRecordsPerBody);
    if (again.kind === 'events') {
      again.dispenses.forEach((d, i) => {
        if (stored.conflictKeys!.has(dispenseKey(d))) conflicts.push({ index: again.indices[i]!, message: ConflictReason });
      });
    }
  }
  return {
    outcome,
    statusCode: rows.events > 0 ? 200 : 400,
    summary: {
      inboundMessageId: id,
      received,
      inserted: stored.stored,
      duplicates: rows.events - stored.stored - conflicts.length,
      conflicts: conflicts.length,
      rejected: received - rows.events,
      errors: [...errors, ...conflicts],
    },
    counts: outcomeCounts(rows.events, stored, received - rows.events),
  };
}

/** A parsed JSON body as the insert's columns: the records are not kept past this call. */
function readJsonBody(
  maskedBody: string,
  maxEvents: number | undefined,
): { kind: 'invalid'; error: string } | { kind: 'events'; received: number; rows: DispenseRows; errors: EventError[] } {
  const parsed = parseJsonBody(maskedBody, maxEvents);
  if (parsed.kind === 'invalid') return parsed;
  return { kind: 'events', received: parsed.received, rows: dispenseRows(parsed.dispenses), errors: parsed.errors };
}

// ---- Several bodies at once (an event-bus batch)

export interface PositionedBody extends InboundBody {
  event: EventPosition;
  /** Set for a body known to be unreadable before it is parsed: kept, rejected for this reason. */
  rejectedFor?: string;
}

export type PositionedBodyResult =
  /** A body at a position stored before (a redelivery): nothing stored. */
  | { kind: 'stored-before' }
  /** `events`: the dispense events the body held; `storedNew`: those this batch stored. */
  | { kind: 'kept'; outcome: InboundOutcome; events: number; storedNew: number };

/** What a parsed body comes to before its dispenses are stored. */
export interface ReadBody {
  dispenses: DispenseRecord[];
  record: InboundOutcomeRecord;
  /** Messages (HL7) or events (JSON) that yielded no dispense; 1 for a body that could not be read. */
  rejected: number;
}

function readBody(input: InboundBody, maskedBody: string): ReadBody {
  const rejectedBody = (error: string): ReadBody => ({
    dispenses: [],
    record: { outcome: 'rejected', messageCount: 0, error },
    rejected: 1,
  });
  if (input.contentType === 'application/json') {
    const parsed = parseJsonBody(maskedBody, input.maxRecordsPerBody);
    if (parsed.kind === 'invalid') return rejectedBody(parsed.error);
    const { received, dispenses, errors } = parsed;
    const error = describeJsonErrors(errors);
    return {
      dispenses,
      record: { outcome: outcomeOf(received, dispenses.length, dispenses.length), messageCount: received, error },
      rejected: received - dispenses.length,
    };
  }
  const parsed = parseHl7Body(maskedBody, limitsOf(input));
  if (parsed.kind === 'not-hl7') return rejectedBody(parsed.reason);
  const { messages, notes } = parsed;
  const dispenses = messages.flatMap((m) => m.dispenses);
  const accepted = messages.filter((m) => m.ack === 'AA').length;
  return {
    dispenses,
    record: {
      outcome: outcomeOf(messages.length, accepted, dispenses.length),
      messageCount: messages.length,
      error: describeHl7Errors(messages, notes),
    },
    rejected: messages.filter((m) => m.dispenses.length === 0).length,
  };
}

/** A caller's way to let other work run between turns of a long read (the event loop's, say). */
export type Pause = () => Promise<void>;

const BodiesPerTurn = 25;

/** Masks and parses bodies, `pause` awaited after every {@link BodiesPerTurn}. */
async function readBodies(bodies: readonly PositionedBody[], pause: Pause): Promise<{ masked: string[]; reads: ReadBody[] }> {
  const masked: string[] = [];
  const reads: ReadBody[] = [];
  for (let i = 0; i < bodies.length; i++) {
    if (i > 0 && i % BodiesPerTurn === 0) await pause();
    readOne(bodies[i]!, masked, reads);
  }
  await pause();
  return { masked, reads };
}

function readOne(b: PositionedBody, masked: string[], reads: ReadBody[]): void {
  const text = maskSsns(b.body, b.contentType === 'application/json' ? 'json' : 'hl7');
  masked.push(text);
  reads.push(
    b.rejectedFor === undefined
      ? readBody(b, text)
      : { dispenses: [], record: { outcome: 'rejected', messageCount: 0, error: b.rejectedFor }, rejected: 0 },
  );
}

/** What storing a body needs of its parse once its dispenses are columns: strings and numbers. */
export interface BodySummary {
  record: InboundOutcomeRecord;
  /** Messages (HL7) or events (JSON) that yielded no dispense. */
  rejected: number;
  /** Its dispenses by state. */
  byState: Record<IngestedDispenseState, number>;
}

/**
 * Positioned bodies masked and parsed, as {@link storePositionedBodies} stores them: the columns of
 * both inserts and a summary of each body: strings and numbers, held while the set before is
 * stored, where the records themselves (some 20,000 objects for a set) would have to survive the
 * young generation's collections.
 */
export interface ReadPositionedBodies {
  summaries: BodySummary[];
  /** The bodies as the columns of their insert. */
  columns: PositionedMessageColumns;
  /** Every body's dispenses, each naming its body by index, when no event comes twice in the set; else null. */
  newRows: DispenseRows | null;
}

/**
 * Masks and parses bodies that each have an event-bus position, and builds the columns of their
 * inserts: the CPU work of ingesting them, apart from {@link storePositionedBodies}, so that it can
 * be done while an earlier set is stored. `pause` is awaited between every few bodies, so that a
 * caller can let other work run meanwhile (so is the read again of the set stored the long way).
 */
export async function readPositionedBodies(bodies: readonly PositionedBody[], pause: Pause): Promise<ReadPositionedBodies> {
  const { masked, reads } = await readBodies(bodies, pause);
  return assemble(bodies, masked, reads);
}

function assemble(bodies: readonly PositionedBody[], masked: readonly string[], reads: readonly ReadBody[]): ReadPositionedBodies {
  const columns = positionedMessageColumns(
    bodies.map((b, i) => ({
      source: b.source,
      contentType: b.contentType,
      maskedBody: masked[i]!,
      event: b.event,
      outcome: reads[i]!.record,
    })),
  );
  const rows = dispensesOfBodies(reads, (i) => i, 'index');
  const summaries = reads.map(({ record, rejected, dispenses }): BodySummary => {
    const byState: Record<IngestedDispenseState, number> = { pending: 0, cancelled: 0, unprocessable: 0 };
    for (const d of dispenses) byState[d.state]++;
    return { record, rejected, byState };
  });
  return { summaries, columns, newRows: rows.distinct === rows.events ? rows : null };
}

/** The dispenses of the bodies `bodyOf` names (an id, or an index; null or undefined: not stored), each naming its body. */
function dispensesOfBodies(
  reads: readonly ReadBody[],
  bodyOf: (i: number) => number | null | undefined,
  namedBy: 'id' | 'index',
): DispenseRows {
  const dispenses: DispenseRecord[] = [];
  const bodyOfDispense = new Map<DispenseRecord, number>();
  reads.forEach((read, i) => {
    const body = bodyOf(i);
    if (body === null || body === undefined) return;
    for (const d of read.dispenses) {
      dispenses.push(d);
      bodyOfDispense.set(d, body);
    }
  });
  return dispenseRows(dispenses, bodyOfDispense, namedBy);
}

const eventsOf = (summary: BodySummary) => summary.byState.pending + summary.byState.cancelled + summary.byState.unprocessable;

/**
 * Stores bodies as one set, `read` being their {@link readPositionedBodies}: each body kept (SSNs
 * masked) with what became of it, skipping a position stored before, and the dispenses of every
 * body new here, each row naming its body. The bodies and their dispenses commit together or not at
 * all, so no dispense is ever stored without the body it came from. An event that comes in two
 * bodies is stored once, from the first (as two bodies in turn would). No ACK is built.
 *
 * Almost every set is new: it is stored by one statement
 * ({@link insertPositionedMessagesWithNewDispenses}). A set that holds an event twice, or that
 * Postgres refuses because an event is stored already, is read again here and stored in a
 * transaction: the bodies by one insert, then their dispenses by the HTTP ingest's statement
 * ({@link storeDispenseRows}), which resolves each conflict.
 */
export async function storePositionedBodies(
  sql: Sql,
  bodies: readonly PositionedBody[],
  read: ReadPositionedBodies,
  pause: Pause,
): Promise<{ results: PositionedBodyResult[]; counts: IngestOutcomeCounts }> {
  if (read.newRows !== null) {
    try {
      const ids = await insertPositionedMessagesWithNewDispenses(sql, read.columns, read.newRows);
      const counts = countsOf(read.summaries, ids);
      read.summaries.forEach((summary, i) => {
        if (ids[i] === null) return;
        counts.inserted += summary.byState.pending;
        counts.cancelled += summary.byState.cancelled;
        counts.unprocessable += summary.byState.unprocessable;
      });
      return { results: resultsOf(read.summaries, ids, (i) => eventsOf(read.summaries[i]!)), counts };
    } catch (error) {
      if (!isStoredEventConflict(error)) throw error;
    }
  }
  const { reads } = await readBodies(bodies, pause);
  return sql.begin(async (tx) => {
    const ids = await insertPositionedMessages(tx, read.columns);
    const counts = countsOf(read.summaries, ids);
    let storedByBody: ReadonlyMap<number, number> = new Map();
    const rows = dispensesOfBodies(reads, (i) => ids[i], 'id');
    if (rows.events > 0) {
      // No one body's id: each row names its own (rows.bodies).
      const stored = await storeDispenseRows(tx, 0, rows, null);
      counts.duplicate = rows.events - stored.stored;
      counts.inserted = stored.byState.pending;
      counts.cancelled = stored.byState.cancelled;
      counts.unprocessable = stored.byState.unprocessable;
      storedByBody = stored.byBody!.stored;
      await recordConflicts(tx, stored.byBody!.conflicts);
    }
    return { results: resultsOf(read.summaries, ids, (i) => storedByBody.get(ids[i]!) ?? 0), counts };
  });
}

/** The counts of a stored set before its dispenses are counted: the messages it rejected. */
function countsOf(summaries: readonly BodySummary[], ids: readonly (number | null)[]): IngestOutcomeCounts {
  const counts: IngestOutcomeCounts = { inserted: 0, cancelled: 0, unprocessable: 0, duplicate: 0, rejected: 0 };
  summaries.forEach((summary, i) => {
    if (ids[i] !== null) counts.rejected += summary.rejected;
  });
  return counts;
}

function resultsOf(
  summaries: readonly BodySummary[],
  ids: readonly (number | null)[],
  storedNew: (i: number) => number,
): PositionedBodyResult[] {
  return summaries.map(
    (summary, i): PositionedBodyResult =>
      ids[i] === null
        ? { kind: 'stored-before' }
        : { kind: 'kept', outcome: summary.record.outcome, events: eventsOf(summary), storedNew: storedNew(i) },
  );
}
