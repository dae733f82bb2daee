// Ingest's SQL: the raw inbound message and the dispense rows it produced.
import postgres from 'postgres';
import { DeadlockDetected, type Sql, type SqlHandle, type TransactionSql } from '../db/connect.ts';
import { dispenseKey, type DispenseRecord, type IngestedDispenseState } from './dispense.ts';

export const InboundOutcomes = ['received', 'accepted', 'partial', 'rejected'] as const;
export type InboundOutcome = (typeof InboundOutcomes)[number];

/**
 * Text as inbound_message can hold it: each NUL (U+0000) replaced by U+FFFD, the replacement
 * character. Postgres text cannot hold a NUL and refuses the whole statement over one, so a body
 * with a NUL in it (a raw byte, or a JSON `\u0000`) was not kept at all, nor was an error that
 * quoted one (a JSON parse error echoes part of the body). The parsers still see the NUL and refuse
 * the message or event that holds it; only the stored copy, which an operator reads, has the stand-in.
 */
export function storableText<T extends string | null>(text: T): T {
  return (text === null || !text.includes('\0') ? text : text.replaceAll('\0', '\uFFFD')) as T;
}

/** Where an event-bus record was read: kept with its body, and what makes a redelivery a no-op. */
export interface EventPosition {
  topic: string;
  partition: number;
  offset: bigint;
}

/**
 * Keeps a request body before anything is parsed, so a body that later fails to parse (or a crash
 * mid-request) still leaves it on record. The caller passes the body as received, SSNs masked; it is
 * stored with each NUL as U+FFFD ({@link storableText}).
 */
export async function insertInboundMessage(
  sql: SqlHandle,
  message: { source: string; contentType: string; maskedBody: string; event?: EventPosition },
): Promise<number> {
  const event = message.event;
  const [row] = await sql<{ id: number }[]>`
    insert into inbound_message (source, content_type, body, event_topic, event_partition, event_offset)
    values (${message.source}, ${message.contentType}, ${storableText(message.maskedBody)},
            ${event?.topic ?? null}, ${event?.partition ?? null}, ${event === undefined ? null : String(event.offset)})
    returning id`;
  return row!.id;
}

/** A body kept at an event-bus position with what became of it, as a batch stores it. */
export interface PositionedMessage {
  source: string;
  contentType: string;
  maskedBody: string;
  event: EventPosition;
  outcome: InboundOutcomeRecord;
}

/**
 * Positioned bodies as the columns of their insert, one text[] literal each: built once (the bodies'
 * column is the whole batch's text), before the statement, and kept for another attempt.
 */
export interface PositionedMessageColumns {
  count: number;
  source: string;
  contentType: string;
  body: string;
  topic: string;
  partition: string;
  offset: string;
  outcome: string;
  messageCount: string;
  error: string;
}

export function positionedMessageColumns(messages: readonly PositionedMessage[]): PositionedMessageColumns {
  const literal = (pick: (m: PositionedMessage) => string | null) => textArrayLiteral(messages.map(pick));
  return {
    count: messages.length,
    source: literal((m) => m.source),
    contentType: literal((m) => m.contentType),
    body: literal((m) => storableText(m.maskedBody)),
    topic: literal((m) => m.event.topic),
    partition: literal((m) => String(m.event.partition)),
    offset: literal((m) => String(m.event.offset)),
    outcome: literal((m) => m.outcome.outcome),
    messageCount: literal((m) => String(m.outcome.messageCount)),
    error: literal((m) => storableText(m.outcome.error)),
  };
}

/** The insert of positioned bodies, skipping a position stored before; it returns each stored body's id and position. */
function positionedInsert(sql: SqlHandle, c: PositionedMessageColumns) {
  return sql`
    insert into inbound_message (source, content_type, body, event_topic, event_partition, event_offset, outcome, message_count, error, processed_at)
    select source, content_type, body, event_topic, event_partition::integer, event_offset::bigint, outcome, message_count::integer, error, now()
      from unnest(${c.source}::text[], ${c.contentType}::text[], ${c.body}::text[], ${c.topic}::text[], ${c.partition}::text[], ${c.offset}::text[],
                  ${c.outcome}::text[], ${c.messageCount}::text[], ${c.error}::text[])
             with ordinality as b (source, content_type, body, event_topic, event_partition, event_offset, outcome, message_count, error, position)
     order by position
    on conflict (event_topic, event_partition, event_offset) where event_topic is not null do nothing
    returning id, event_topic, event_partition, event_offset`;
}

/**
 * Keeps several bodies, each at an event-bus position and with what became of it, in one statement:
 * the {@link insertInboundMessage} of a batch, for a caller that parsed the bodies first inside the
 * transaction that also stores their dispenses. A body whose position is stored already (a
 * redelivered record) is not stored again: its id is null. The ids come in the order of the bodies.
 */
export async function insertPositionedMessages(sql: SqlHandle, columns: PositionedMessageColumns): Promise<(number | null)[]> {
  if (columns.count === 0) return [];
  const rows = await sql<{ id: number; body_index: number }[]>`with ${storedBodies(sql, columns)} select id, body_index from body_ids`;
  return idsByIndex(columns.count, rows);
}

/**
 * Two CTEs: `bodies`, the positioned insert, and `body_ids`, each stored body's id and index in the
 * batch (from 0). A position given twice is stored once, for its first body.
 */
function storedBodies(sql: SqlHandle, c: PositionedMessageColumns) {
  return sql`
    bodies as (${positionedInsert(sql, c)}),
    body_ids as materialized (
      select b.id, min(p.position)::integer - 1 as body_index
        from bodies b
        join unnest(${c.topic}::text[], ${c.partition}::text[], ${c.offset}::text[]) with ordinality as p (topic, partition, event_offset, position)
          on p.topic = b.event_topic and p.partition::integer = b.event_partition and p.event_offset::bigint = b.event_offset
       group by b.id)`;
}

function idsByIndex(count: number, rows: readonly { id: number; body_index: number }[]): (number | null)[] {
  const ids: (number | null)[] = new Array(count).fill(null);
  for (const row of rows) ids[Number(row.body_index)] = Number(row.id);
  return ids;
}

/** Records what became of an inbound message; an operator reads `error` to see why. */
export async function recordInboundOutcome(sql: SqlHandle, id: number, outcome: InboundOutcomeRecord): Promise<void> {
  await sql`
    update inbound_message
    set outcome = ${outcome.outcome}, message_count = ${outcome.messageCount}, error = ${storableText(outcome.error)}, processed_at = now()
    where id = ${id}`;
}

const text = (value: string | number | null) => (value === null ? null : String(value));

/** The characters a quoted element of an array literal escapes with a backslash. */
const ArrayElementSpecials = /["\\]/g;

/**
 * A Postgres text[] literal, every element quoted. CMOP's values almost never hold a quote or a
 * backslash, so a column without one (nor a null) is joined whole, with no replacement per element;
 * HL7 bodies all hold one (MSH-2's `\`), and each is escaped by one replacement.
 */
export function textArrayLiteral(values: readonly (string | null)[]): string {
  if (values.every((value) => value !== null && !value.includes('"') && !value.includes('\\'))) {
    // The usual column: one join, one string.
    return values.length === 0 ? '{}' : `{"${values.join('","')}"}`;
  }
  const elements = values.map((value) =>
    value === null
      ? 'NULL'
      : value.includes('"') || value.includes('\\')
        ? `"${value.replace(ArrayElementSpecials, '\\$&')}"`
        : `"${value}"`,
  );
  return `{${elements.join(',')}}`;
}

/**
 * One copy of each event of a body, in the order each event first came: Postgres refuses to update
 * a row twice in one statement. The copy is the first, unless a later copy corrects it by the rule
 * {@link upsertDispenses} applies to a stored row (it was unprocessable, the later copy is not), so a
 * correction later in the same body is taken as it would be from a later request; every other later
 * copy is a duplicate. Both the insert and the reading of what it stored ({@link storedRecords}) pick
 * copies here, so that each message is credited with the copy that was stored.
 */
function distinctEvents(dispenses: readonly DispenseRecord[]): DispenseRecord[] {
  const at = new Map<string, number>();
  const kept: DispenseRecord[] = [];
  for (const d of dispenses) {
    const key = dispenseKey(d);
    const i = at.get(key);
    if (i === undefined) {
      at.set(key, kept.length);
      kept.push(d);
    } else if (corrects(d, kept[i]!)) {
      kept[i] = d;
    }
  }
  return kept;
}

/** The upsert's conflict rule, for two copies of an event in one body. */
function corrects(later: DispenseRecord, kept: DispenseRecord): boolean {
  return kept.state === 'unprocessable' && later.state !== 'unprocessable';
}

/** A body's dispenses as the columns of one insert statement. */
export interface DispenseRows {
  /** The events given, second copies of one event included. */
  events: number;
  /** Distinct events (one copy of each, as {@link distinctEvents} picks it), in the order first given. */
  distinct: number;
  /** The distinct events by state. */
  byState: Record<IngestedDispenseState, number>;
  /** One text[] literal per inserted column, in the statement's order. */
  columns: readonly string[];
  /**
   * When the rows come from several bodies (an event-bus batch): each row's body, as a text[]
   * literal, and how many rows each body has; null for one body's rows. A body is named by its
   * inbound message id, or, `byIndex`, by its index in a batch whose bodies the same statement stores.
   */
  bodies: { ids: string; rows: ReadonlyMap<number, number>; byIndex: boolean } | null;
}

/**
 * Builds the columns of a body's dispense insert, one text[] literal each. The records are not kept:
 * a 1,000-message body's records are some 25,000 objects, and holding them while Postgres works
 * (four bodies in flight) made V8's young-generation collections copy them and promote them, when the
 * collector was already a third of the service's CPU per body. What the insert needs, and what
 * answering the body needs, is built before the wait; a few strings survive it instead.
 */
export function dispenseRows(
  dispenses: readonly DispenseRecord[],
  bodyOf?: ReadonlyMap<DispenseRecord, number>,
  bodyNamedBy: 'id' | 'index' = 'id',
): DispenseRows {
  const rows = distinctEvents(dispenses);
  const byState: Record<IngestedDispenseState, number> = { pending: 0, cancelled: 0, unprocessable: 0 };
  for (const d of rows) byState[d.state]++;
  // Times travel as milliseconds since the epoch: Postgres reads a number faster than an ISO string,
  // and Node writes one faster.
  const column = (pick: (d: DispenseRecord) => string | number | Date | null) =>
    textArrayLiteral(
      rows.map((d) => {
        const value = pick(d);
        return value instanceof Date ? String(value.getTime()) : text(value);
      }),
    );
  return {
    events: dispenses.length,
    distinct: rows.length,
    byState,
    columns: [
      column((d) => d.stationNumber),
      column((d) => d.rxNumber),
      column((d) => d.fillNumber),
      column((d) => d.trackingNumber),
      column((d) => d.carrier),
      column((d) => d.drugName),
      column((d) => d.ndc),
      column((d) => d.quantity),
      column((d) => d.dispensedAt),
      column((d) => d.shippedAt),
      column((d) => d.veteranIcn),
      column((d) => d.mhvCorrelationId),
      column((d) => d.messageControlId),
      column((d) => d.state),
      column((d) => d.stateReason),
    ],
    bodies: bodyOf === undefined ? null : rowsOfBodies(rows, bodyOf, bodyNamedBy === 'index'),
  };
}

/** Each row's body, and the rows of each body, for rows that come from several bodies. */
function rowsOfBodies(
  rows: readonly DispenseRecord[],
  bodyOf: ReadonlyMap<DispenseRecord, number>,
  byIndex: boolean,
): NonNullable<DispenseRows['bodies']> {
  const ids = rows.map((d) => bodyOf.get(d)!);
  const perBody = new Map<number, number>();
  for (const id of ids) perBody.set(id, (perBody.get(id) ?? 0) + 1);
  return { ids: textArrayLiteral(ids.map(String)), rows: perBody, byIndex };
}

/** Positions in {@link DispenseRows.columns} of the columns read on their own. */
const ColumnAt = { stationNumber: 0, rxNumber: 1, fillNumber: 2, trackingNumber: 3, veteranIcn: 10, state: 13 } as const;

export interface StoredDispenses {
  /** Rows this statement created or corrected. */
  stored: number;
  /** The same rows by state (a correction takes the resend's state). */
  byState: Record<IngestedDispenseState, number>;
  /**
   * The event key ({@link dispenseKey}) of each of those rows when not every event given was stored
   * (some were stored before, or came twice); null when every one was.
   */
  storedKeys: ReadonlySet<string> | null;
  /**
   * The keys of events already stored that this body sent with another ICN or carrier (kept in
   * medication_dispense_conflict, not applied); null when there were none. Absent when no event
   * was stored before (the plain insert).
   */
  conflictKeys?: ReadonlySet<string> | null;
  /**
   * For rows from several bodies ({@link DispenseRows.bodies}): the rows stored of each body, and
   * the conflicts each body sent (only bodies with any are listed).
   */
  byBody?: { stored: ReadonlyMap<number, number>; conflicts: ReadonlyMap<number, number> };
}

/** What became of a stored body, recorded in the statement that stores its dispenses. */
export interface InboundOutcomeRecord {
  outcome: InboundOutcome;
  messageCount: number;
  error: string | null;
}

/**
 * Stores a body's dispenses in one statement, whatever their number: the columns travel as 15 arrays
 * and unnest turns them back into rows, so a 1,000-message file costs one round trip and stays far
 * below Postgres's 65,535-parameter limit. The same statement records the body's outcome (when given)
 * and wakes the grouping job when new pending dispenses arrived: one round trip and one commit, where
 * a transaction of these writes took five round trips.
 *
 * A replayed event or file is a no-op (also for two requests racing), except that a dispense kept as
 * unprocessable (no ICN) is replaced by a corrected resend of the same event, which then goes on to
 * be emailed. Almost every body CMOP sends is new, so the rows are first inserted as they are; only
 * when that meets an event already stored is the body stored again by the statement that resolves
 * each conflict. The conflict clause and the rows it returns cost Postgres about as much again as
 * the insert itself, so a replay pays for two statements and a new body for one.
 */
export async function storeDispenseRows(
  sql: SqlHandle,
  inboundMessageId: number,
  rows: DispenseRows,
  outcome: InboundOutcomeRecord | null,
): Promise<StoredDispenses> {
  // From the pool the statement is its own transaction; inside a caller's transaction it runs under
  // a savepoint, so that a refused insert does not abort the rest of the transaction. Rows that hold
  // one event twice have a duplicate by definition, so they go straight to the statement that
  // resolves conflicts.
  if (rows.distinct === rows.events && rows.distinct > 0 && ('reserve' in sql || 'savepoint' in sql)) {
    try {
      if ('savepoint' in sql) await (sql as TransactionSql).savepoint((sp) => insertNewDispenses(sp, inboundMessageId, rows, outcome));
      else await insertNewDispenses(sql, inboundMessageId, rows, outcome);
      return {
        stored: rows.distinct,
        byState: rows.byState,
        storedKeys: null,
        ...(rows.bodies && { byBody: { stored: rows.bodies.rows, conflicts: new Map() } }),
      };
    } catch (error) {
      if (!isStoredEventConflict(error)) throw error;
    }
  }
  return upsertDispenses(sql, inboundMessageId, rows, outcome);
}

export function isStoredEventConflict(error: unknown): boolean {
  return error instanceof postgres.PostgresError && error.code === '23505' && error.constraint_name === 'medication_dispense_event_key';
}

/**
 * The unnest of a body's columns into rows, as the two insert statements below read them: the
 * inserted columns but the draft, and each row's position in the body.
 */
function dispenseSource(sql: SqlHandle, inboundMessageId: number, rows: DispenseRows) {
  const column = (i: number) => rows.columns[i]!;
  // Rows of several bodies carry each one's inbound message id as a 16th column, or, for bodies
  // stored by the same statement, each one's index in the batch, joined to the ids in `body_ids`
  // (storedBodies): the rows of a body not stored (a redelivery) drop out there.
  const bodies = rows.bodies;
  const inboundMessageIdOf = bodies === null ? sql`${inboundMessageId}::bigint` : bodies.byIndex ? sql`i.id` : sql`d.body_id::bigint`;
  return sql`
    select
      station_number, rx_number, fill_number::integer, tracking_number, carrier, drug_name, ndc, quantity::numeric,
      to_timestamp(dispensed_at::bigint / 1000.0) as dispensed_at, to_timestamp(shipped_at::bigint / 1000.0) as shipped_at,
      patient_icn, mhv_correlation_id, message_control_id, state, state_reason,
      ${inboundMessageIdOf} as inbound_message_id, position
    from unnest(
      ${column(0)}::text[], ${column(1)}::text[], ${column(2)}::text[], ${column(3)}::text[], ${column(4)}::text[],
      ${column(5)}::text[], ${column(6)}::text[], ${column(7)}::text[], ${column(8)}::text[], ${column(9)}::text[],
      ${column(10)}::text[], ${column(11)}::text[], ${column(12)}::text[], ${column(13)}::text[], ${column(14)}::text[]${
        bodies === null
          ? sql``
          : sql`,
      ${bodies.ids}::text[]`
      }
    ) with ordinality as d (
      station_number, rx_number, fill_number, tracking_number, carrier, drug_name, ndc, quantity,
      dispensed_at, shipped_at, patient_icn, mhv_correlation_id, message_control_id, state, state_reason,${bodies === null ? sql`` : sql` body_id,`} position)${
        bodies?.byIndex ? sql` join body_ids i on i.body_index = d.body_id::integer` : sql``
      }`;
}

/** The columns {@link dispenseSource} gives, in the order the insert statements write them. */
const SourceColumns = [
  'station_number',
  'rx_number',
  'fill_number',
  'tracking_number',
  'carrier',
  'drug_name',
  'ndc',
  'quantity',
  'dispensed_at',
  'shipped_at',
  'patient_icn',
  'mhv_correlation_id',
  'message_control_id',
  'state',
  'state_reason',
  'inbound_message_id',
];
const InsertedColumns = [...SourceColumns, 'tracking_email_id'].join(', ');
const DraftedColumns = SourceColumns.map((name) => `s.${name}`).join(', ');

/**
 * The body's rows with their veterans' drafts from the table, in the order given, without the
 * events whose history retention removed (sql/022): those were emailed, and a copy is a duplicate.
 * One primary-key probe per row, paid only by the statement that resolves conflicts; the plain
 * insert's trigger refuses such an event and sends the body here.
 */
function sourceWithStoredDrafts(sql: SqlHandle) {
  return sql`
    select ${sql.unsafe(DraftedColumns)}, r.id
      from source s left join tracking_email_draft r on s.state = 'pending' and r.patient_icn = s.patient_icn
     where (select true from removed_dispense_key k
             where k.key_hash = dispense_key_hash(s.station_number, s.rx_number, s.fill_number, s.tracking_number)) is null
     order by s.position`;
}

/**
 * The body's rows with their veterans' drafts as the `drafts` CTE returned them, in the order
 * given. Each pending row finds its draft in one jsonb object keyed by ICN: a join of the two CTEs
 * is planned as a nested loop once postgres.js's prepared statement gets its generic plan (which
 * sees a handful of rows in each), and that compares every row with every draft, some 20 ms of a
 * 500-record event-bus batch.
 */
function sourceWithNewDrafts(sql: SqlHandle) {
  return sql`
    select ${sql.unsafe(DraftedColumns)},
           -- Uncorrelated: built once for the statement.
           case when s.state = 'pending' then ((select jsonb_object_agg(patient_icn, id) from drafts) ->> s.patient_icn)::uuid end
      from source s
     order by s.position`;
}

function outcomeUpdate(sql: SqlHandle, inboundMessageId: number, outcome: InboundOutcomeRecord | null) {
  return outcome === null
    ? sql``
    : sql`,
    outcome as (
      update inbound_message
         set outcome = ${outcome.outcome}, message_count = ${outcome.messageCount}, error = ${storableText(outcome.error)}, processed_at = now()
       where id = ${inboundMessageId})`;
}

/**
 * Every row new: a plain insert, which Postgres refuses whole if any event is stored already.
 *
 * Each veteran of the body's pending dispenses gets their tracking email draft (sql/019), created
 * or, with its newest arrival moved to now, locked, in ICN order, so that two bodies lock drafts in
 * the same order. The body's new rows are the only dispenses this statement locks, so whatever
 * order Postgres runs the two inserts in, it never holds a dispense another writer waits for.
 */
async function insertNewDispenses(
  sql: SqlHandle,
  inboundMessageId: number,
  rows: DispenseRows,
  outcome: InboundOutcomeRecord | null,
): Promise<void> {
  await sql`
    with ${newDispenseWrites(sql, inboundMessageId, rows)}${outcomeUpdate(sql, inboundMessageId, outcome)}
    -- A hint to the grouping job on every instance listening; delivered at commit.
    select pg_notify('dispense_pending', '') where ${rows.byState.pending > 0}`;
}

/** The CTEs of {@link insertNewDispenses}: the rows, their veterans' drafts, and the insert. */
function newDispenseWrites(sql: SqlHandle, inboundMessageId: number, rows: DispenseRows) {
  return sql`
    source as materialized (${dispenseSource(sql, inboundMessageId, rows)}),
    drafts as (
      insert into tracking_email_draft (patient_icn)
      select distinct patient_icn from source where state = 'pending' order by patient_icn
      on conflict (patient_icn) do update set last_arrival_at = excluded.last_arrival_at
      returning id, patient_icn
    ),
    stored as (
      insert into medication_dispense (${sql.unsafe(InsertedColumns)}) ${sourceWithNewDrafts(sql)}
    )`;
}

/**
 * Keeps positioned bodies ({@link insertPositionedMessages}) and stores their dispenses, every one
 * new ({@link insertNewDispenses}), in one statement: one round trip and one commit for a whole
 * event-bus batch. `rows` name their bodies by index in the batch; the rows of a body stored before
 * (a redelivery) are left out with it. Postgres refuses the whole statement, bodies and all, when
 * any event is stored already ({@link isStoredEventConflict}): the caller then stores the batch
 * with {@link insertPositionedMessages} and {@link storeDispenseRows}, which resolves each conflict.
 * Returns the bodies' ids in their order, null for a body stored before.
 */
export async function insertPositionedMessagesWithNewDispenses(
  sql: SqlHandle,
  columns: PositionedMessageColumns,
  rows: DispenseRows,
): Promise<(number | null)[]> {
  const [result] = await sql<{ bodies: { id: number; body_index: number }[] | null }[]>`
    with ${storedBodies(sql, columns)},
    ${newDispenseWrites(sql, 0, rows)}
    select (select json_agg(json_build_object('id', id, 'body_index', body_index)) from body_ids) as bodies,
           -- A hint to the grouping job on every instance listening; delivered at commit.
           case when ${rows.byState.pending > 0} then pg_notify('dispense_pending', '') end as notified`;
  return idsByIndex(columns.count, result!.bodies ?? []);
}

const DeadlockAttempts = 3;

/**
 * Runs `work` in a transaction of its own, again when Postgres ended it to break a deadlock (which
 * rolled all of it back). The replay's drafts leave one deadlock with grouping possible: a stored
 * dispense that became pending under a veteran's draft between its two statements. Also again when
 * retention removed the history of one of the body's events while the statement ran (its trigger
 * refuses the copy): the next attempt leaves that event out.
 */
async function inOwnTransaction<T>(sql: Sql, work: (tx: SqlHandle) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return (await sql.begin(work)) as T;
    } catch (error) {
      const retryable = (error instanceof postgres.PostgresError && error.code === DeadlockDetected) || isStoredEventConflict(error);
      if (attempt >= DeadlockAttempts || !retryable) throw error;
    }
  }
}

/**
 * The same rows, each conflict with a stored event resolved: left alone, or taken as the correction
 * of an unprocessable one. RETURNING lists only the rows this statement created or corrected, so
 * the rest are the duplicates. The conflict rule is also {@link corrects}, for copies in one body:
 * the two change together.
 *
 * A conflict locks the stored dispense, also when it is left alone, and grouping updates the
 * pending dispenses of the drafts it took. So the drafts of every veteran of the body's pending
 * rows, and of the stored pending dispenses it names, are created or locked first, in a statement
 * of their own: either grouping took a draft first (and this waits for it before it touches a
 * dispense), or this holds the draft and grouping passes it by. Only the drafts of rows this
 * stores have their newest arrival moved to now: a replayed body does not hold back its veterans'
 * emails.
 */
async function upsertDispenses(
  sql: SqlHandle,
  inboundMessageId: number,
  rows: DispenseRows,
  outcome: InboundOutcomeRecord | null,
): Promise<StoredDispenses> {
  const column = (at: number) => rows.columns[at]!;
  const store = async (tx: SqlHandle) => {
    await tx`
      insert into tracking_email_draft as r (patient_icn)
      select patient_icn from (
        select d.patient_icn
          from unnest(${column(ColumnAt.veteranIcn)}::text[], ${column(ColumnAt.state)}::text[]) as d (patient_icn, state)
         where d.state = 'pending'
        union
        -- The veterans of the stored pending dispenses the body names, under whatever ICN or state
        -- its copies carry: the conflict clause locks those dispenses too.
        select m.patient_icn
          from unnest(${column(ColumnAt.stationNumber)}::text[], ${column(ColumnAt.rxNumber)}::text[],
                      ${column(ColumnAt.fillNumber)}::text[], ${column(ColumnAt.trackingNumber)}::text[])
                 as k (station_number, rx_number, fill_number, tracking_number)
          join medication_dispense m
            on m.station_number = k.station_number and m.rx_number = k.rx_number
           and m.fill_number = k.fill_number::integer and m.tracking_number = k.tracking_number
         where m.state = 'pending') veterans
       order by patient_icn
      on conflict (patient_icn) do update set last_arrival_at = r.last_arrival_at`;
    return tx<
      {
        stored: number;
        pending: number;
        cancelled: number;
        unprocessable: number;
        stored_keys: [string, string, number, string][] | null;
        conflict_keys: [string, string, number, string][] | null;
        stored_by_body?: Record<string, number> | null;
        conflicts_by_body?: Record<string, number> | null;
      }[]
    >`
      with source as materialized (${dispenseSource(tx, inboundMessageId, rows)}),
      stored as (
        insert into medication_dispense (${tx.unsafe(InsertedColumns)}) ${sourceWithStoredDrafts(tx)}
        on conflict (station_number, rx_number, fill_number, tracking_number) do update
          set carrier = excluded.carrier, drug_name = excluded.drug_name, ndc = excluded.ndc, quantity = excluded.quantity,
              dispensed_at = excluded.dispensed_at, shipped_at = excluded.shipped_at, patient_icn = excluded.patient_icn,
              mhv_correlation_id = excluded.mhv_correlation_id, message_control_id = excluded.message_control_id,
              state = excluded.state, state_reason = excluded.state_reason, inbound_message_id = excluded.inbound_message_id,
              tracking_email_id = excluded.tracking_email_id, updated_at = now()
          where medication_dispense.state = 'unprocessable' and excluded.state <> 'unprocessable'
        returning station_number, rx_number, fill_number, tracking_number, state, tracking_email_id, inbound_message_id
      ),
      arrived as (
        update tracking_email_draft set last_arrival_at = now()
         where id in (select tracking_email_id from stored where state = 'pending')
      ),
      -- A resend naming another veteran or carrier than the stored event, and not taken as its
      -- correction, is kept for an operator (sql/024). The snapshot is the statement's: a row this
      -- statement inserts is never its own conflict.
      conflicts as (
        insert into medication_dispense_conflict (dispense_id, inbound_message_id, sent_patient_icn, sent_carrier, sent_message_control_id)
        select m.id, s.inbound_message_id, s.patient_icn, s.carrier, s.message_control_id
          from source s
          join medication_dispense m
            on m.station_number = s.station_number and m.rx_number = s.rx_number
           and m.fill_number = s.fill_number and m.tracking_number = s.tracking_number
         where not (m.state = 'unprocessable' and s.state <> 'unprocessable')
           and ((s.patient_icn is not null and m.patient_icn is distinct from s.patient_icn)
                or (s.carrier <> 'UNK' and s.carrier <> m.carrier))
        returning (select json_build_array(m2.station_number, m2.rx_number, m2.fill_number, m2.tracking_number)
                     from medication_dispense m2 where m2.id = dispense_id) as key, inbound_message_id
      )${outcomeUpdate(tx, inboundMessageId, outcome)}
      select counted.*,
             -- Which rows were stored is sent back only when not all of them were.
             case when counted.stored < ${rows.events}
                  then (select coalesce(json_agg(json_build_array(station_number, rx_number, fill_number, tracking_number)), '[]')
                          from stored)
             end as stored_keys,
             case when counted.pending > 0 then pg_notify('dispense_pending', '') end as notified,
             (select json_agg(key) from conflicts) as conflict_keys${
               rows.bodies === null
                 ? tx``
                 : tx`,
             (select json_object_agg(inbound_message_id, n)
                from (select inbound_message_id, count(*)::int as n from stored group by inbound_message_id) b) as stored_by_body,
             (select json_object_agg(inbound_message_id, n)
                from (select inbound_message_id, count(*)::int as n from conflicts group by inbound_message_id) b) as conflicts_by_body`
             }
        from (select count(*)::int as stored,
                     count(*) filter (where state = 'pending')::int as pending,
                     count(*) filter (where state = 'cancelled')::int as cancelled,
                     count(*) filter (where state = 'unprocessable')::int as unprocessable
                from stored) counted`;
  };
  const [result] = 'begin' in sql ? await inOwnTransaction(sql as Sql, store) : await store(sql);
  const { stored, pending, cancelled, unprocessable, stored_keys: keys, conflict_keys: conflicts } = result!;
  const byBodyId = (counts: Record<string, number> | null | undefined) =>
    new Map(Object.entries(counts ?? {}).map(([id, n]) => [Number(id), n]));
  const keySet = (keyed: [string, string, number, string][] | null) =>
    keyed === null
      ? null
      : new Set(
          keyed.map(([stationNumber, rxNumber, fillNumber, trackingNumber]) =>
            dispenseKey({ stationNumber, rxNumber, fillNumber, trackingNumber }),
          ),
        );
  return {
    ...(rows.bodies && { byBody: { stored: byBodyId(result!.stored_by_body), conflicts: byBodyId(result!.conflicts_by_body) } }),
    stored,
    byState: { pending, cancelled, unprocessable },
    conflictKeys: keySet(conflicts),
    storedKeys: keySet(keys),
  };
}

/**
 * The given records a statement stored, from its {@link StoredDispenses}: every one when it stored
 * every event, else those whose key it stored, only the copy {@link distinctEvents} put in the
 * statement where one event came twice.
 */
export function storedRecords(dispenses: readonly DispenseRecord[], result: StoredDispenses): Set<DispenseRecord> {
  if (result.storedKeys === null) return new Set(dispenses);
  const keys = result.storedKeys;
  return new Set(distinctEvents(dispenses).filter((d) => keys.has(dispenseKey(d))));
}

/**
 * Inserts dispenses outside any body's outcome (the HTTP ingest records both in one statement): for
 * other transports, and for tests. `stored` holds the given records this call stored.
 */
export async function insertDispenses(
  sql: SqlHandle,
  inboundMessageId: number,
  dispenses: readonly DispenseRecord[],
): Promise<{ stored: Set<DispenseRecord>; insertedByState: Record<IngestedDispenseState, number> }> {
  if (dispenses.length === 0) return { stored: new Set(), insertedByState: { pending: 0, cancelled: 0, unprocessable: 0 } };
  const result = await storeDispenseRows(sql, inboundMessageId, dispenseRows(dispenses), null);
  return { stored: storedRecords(dispenses, result), insertedByState: result.byState };
}
