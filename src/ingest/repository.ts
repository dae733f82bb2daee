// Ingest's SQL: the raw inbound message and the dispense rows it produced.
import type { SqlHandle } from '../db/connect.ts';
import { dispenseKey, type DispenseRecord, type DispenseState } from './dispense.ts';

export const InboundOutcomes = ['received', 'accepted', 'partial', 'rejected'] as const;
export type InboundOutcome = (typeof InboundOutcomes)[number];

/**
 * Keeps a request body before anything is parsed, so a body that later fails to parse (or a crash
 * mid-request) still leaves it on record. The caller passes the body as received, SSNs masked.
 */
export async function insertInboundMessage(
  sql: SqlHandle,
  message: { source: string; contentType: string; maskedBody: string },
): Promise<number> {
  const [row] = await sql<{ id: number }[]>`
    insert into inbound_message (source, content_type, body)
    values (${message.source}, ${message.contentType}, ${message.maskedBody})
    returning id`;
  return row!.id;
}

/** Records what became of an inbound message; an operator reads `error` to see why. */
export async function recordInboundOutcome(
  sql: SqlHandle,
  id: number,
  outcome: { outcome: InboundOutcome; messageCount: number; error: string | null },
): Promise<void> {
  await sql`
    update inbound_message
    set outcome = ${outcome.outcome}, message_count = ${outcome.messageCount}, error = ${outcome.error}, processed_at = now()
    where id = ${id}`;
}

const text = (value: string | number | null) => (value === null ? null : String(value));

/**
 * A Postgres text[] literal, every element quoted. postgres.js would build the same text with two
 * regular-expression replacements per element; CMOP's values almost never hold a quote or a
 * backslash, so a column without one (nor a null) is joined whole. With times sent as numbers, the
 * service's CPU for a 1,000-dispense insert went from 4.1 ms to about 2 ms.
 */
export function textArrayLiteral(values: readonly (string | null)[]): string {
  if (values.every((value) => value !== null && !value.includes('"') && !value.includes('\\'))) {
    // The usual column: one join, one string.
    return values.length === 0 ? '{}' : `{"${values.join('","')}"}`;
  }
  let literal = '{';
  for (let i = 0; i < values.length; i++) {
    const value = values[i]!;
    if (i > 0) literal += ',';
    if (value === null) literal += 'NULL';
    else if (value.includes('"') || value.includes('\\')) literal += `"${value.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
    else literal += `"${value}"`;
  }
  return `${literal}}`;
}

/**
 * Inserts the dispenses in one statement, whatever their number: the columns travel as 15 arrays
 * and unnest turns them back into rows, so a 1,000-message file costs one round trip and stays far
 * below Postgres's 65,535-parameter limit. The conflict clause on the event key makes a replayed
 * event or file a no-op (also for two requests racing), except that a dispense kept as unprocessable
 * (no ICN) is replaced by a corrected resend of the same event, which then goes on to be emailed.
 * RETURNING lists only the rows this statement created or corrected, so the rest are the duplicates:
 * `stored` holds those of the given records (the first, where one event came twice). A stored row's
 * state is its record's (a correction takes the resend's state).
 */
export async function insertDispenses(
  sql: SqlHandle,
  inboundMessageId: number,
  dispenses: readonly DispenseRecord[],
): Promise<{ stored: Set<DispenseRecord>; insertedByState: Record<DispenseState, number> }> {
  const insertedByState: Record<DispenseState, number> = { pending: 0, cancelled: 0, unprocessable: 0 };
  if (dispenses.length === 0) return { stored: new Set(), insertedByState };
  // One row per event key: Postgres refuses to update a row twice in one statement, and the second
  // copy of an event in one request is a duplicate anyway.
  const byKey = new Map<string, DispenseRecord>();
  for (const d of dispenses) {
    const key = dispenseKey(d);
    if (!byKey.has(key)) byKey.set(key, d);
  }
  dispenses = [...byKey.values()];
  // Times travel as milliseconds since the epoch: Postgres reads a number faster than an ISO string,
  // and Node writes one faster.
  const column = (pick: (d: DispenseRecord) => string | number | Date | null) =>
    textArrayLiteral(dispenses.map((d) => {
      const value = pick(d);
      return value instanceof Date ? String(value.getTime()) : text(value);
    }));
  const [result] = await sql<{ stored: number; stored_keys: [string, string, number, string][] | null }[]>`
    with stored as (
    insert into medication_dispense (
      station_number, rx_number, fill_number, tracking_number, carrier, drug_name, ndc, quantity,
      dispensed_at, shipped_at, patient_icn, mhv_correlation_id, message_control_id, state, state_reason,
      inbound_message_id)
    select
      station_number, rx_number, fill_number::integer, tracking_number, carrier, drug_name, ndc, quantity::numeric,
      to_timestamp(dispensed_at::bigint / 1000.0), to_timestamp(shipped_at::bigint / 1000.0), patient_icn, mhv_correlation_id, message_control_id, state, state_reason,
      ${inboundMessageId}
    from unnest(
      ${column((d) => d.stationNumber)}::text[], ${column((d) => d.rxNumber)}::text[], ${column((d) => d.fillNumber)}::text[],
      ${column((d) => d.trackingNumber)}::text[], ${column((d) => d.carrier)}::text[], ${column((d) => d.drugName)}::text[],
      ${column((d) => d.ndc)}::text[], ${column((d) => d.quantity)}::text[], ${column((d) => d.dispensedAt)}::text[],
      ${column((d) => d.shippedAt)}::text[], ${column((d) => d.patientIcn)}::text[], ${column((d) => d.mhvCorrelationId)}::text[],
      ${column((d) => d.messageControlId)}::text[], ${column((d) => d.state)}::text[], ${column((d) => d.stateReason)}::text[]
    ) with ordinality as d (
      station_number, rx_number, fill_number, tracking_number, carrier, drug_name, ndc, quantity,
      dispensed_at, shipped_at, patient_icn, mhv_correlation_id, message_control_id, state, state_reason, position)
    order by position
    on conflict (station_number, rx_number, fill_number, tracking_number) do update
      set carrier = excluded.carrier, drug_name = excluded.drug_name, ndc = excluded.ndc, quantity = excluded.quantity,
          dispensed_at = excluded.dispensed_at, shipped_at = excluded.shipped_at, patient_icn = excluded.patient_icn,
          mhv_correlation_id = excluded.mhv_correlation_id, message_control_id = excluded.message_control_id,
          state = excluded.state, state_reason = excluded.state_reason, inbound_message_id = excluded.inbound_message_id,
          updated_at = now()
      where medication_dispense.state = 'unprocessable' and excluded.state <> 'unprocessable'
    returning station_number, rx_number, fill_number, tracking_number)
    -- Which rows were stored is sent back only when not all of them were: a body of new events, the
    -- usual case, answers with one number instead of a row per dispense for the service to read.
    select counted.stored,
           case when counted.stored < ${dispenses.length}
                then (select coalesce(json_agg(json_build_array(station_number, rx_number, fill_number, tracking_number)), '[]')
                        from stored)
           end as stored_keys
      from (select count(*)::int as stored from stored) counted`;
  const stored = new Set<DispenseRecord>(
    result!.stored_keys === null
      ? dispenses
      : result!.stored_keys.map(([stationNumber, rxNumber, fillNumber, trackingNumber]) => byKey.get(dispenseKey({ stationNumber, rxNumber, fillNumber, trackingNumber }))!),
  );
  for (const d of stored) insertedByState[d.state]++;
  return { stored, insertedByState };
}

/**
 * Wakes the grouping job (on any instance listening) when new pending dispenses arrived. Only a
 * hint: grouping also runs on its timer. Inside a transaction it is delivered at commit.
 */
export async function notifyDispensePending(sql: SqlHandle): Promise<void> {
  await sql`select pg_notify('dispense_pending', '')`;
}
