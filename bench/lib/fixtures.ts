// Rows as the earlier stages would have written them, generated inside Postgres (generate_series),
// so that setting up a million rows takes seconds and never passes through the driver.
//
// Veteran v has the ICN `10` + v (8 digits) + `V` + a 6-digit suffix ending in 5: never one of the
// sandbox's special endings (000001-000003), so every email is delivered. Each veteran's dispenses
// come in two packages (UPS tracking numbers), like a typical CMOP shipment.
import type { Sql } from '../../src/db/connect.ts';

const icn = (v: string) => `'10' || lpad((${v})::text, 8, '0') || 'V' || lpad((((${v}) % 100000) * 10 + 5)::text, 6, '0')`;
const trackingNumber = (v: string, packageNumber: string) => `'1Z999' || lpad((${v})::text, 10, '0') || ((${packageNumber}) % 10)::text`;
/** Deterministic uuids per kind of row, so that fixtures can refer to each other without a round trip. */
export const fixtureUuid = (prefix: 'a' | 'b' | 'c' | 'd' | 'e' | 'f', n: string) =>
  `('${prefix}0000000-0000-4000-8000-' || lpad(to_hex(${n}), 12, '0'))::uuid`;

export function veteranIcn(v: number): string {
  return `10${String(v).padStart(8, '0')}V${String((v % 100000) * 10 + 5).padStart(6, '0')}`;
}

export function fixtureUuidOf(prefix: string, n: number): string {
  return `${prefix}0000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;
}

function int(n: number): string {
  if (!Number.isSafeInteger(n)) throw new Error(`not an integer: ${n}`);
  return String(n);
}

/**
 * Pending dispenses numbered [first, first + count), in arrival order: a veteran's dispenses arrive
 * together (count / veterans of them in a row, as in one CMOP batch: within a quiet period of each
 * other, or they would make two emails), the whole set spread over the 20 minutes that ended
 * `arrivedMinutesAgo` ago, so that grouping finds every veteran ready. Dispense g belongs to
 * veteran (g - first) / (count / veterans). Inserted in slices so that no single statement holds
 * millions of rows.
 */
export async function insertPendingDispenses(
  sql: Sql,
  p: { first: number; count: number; veterans: number; arrivedMinutesAgo: number; slice?: number },
): Promise<void> {
  const slice = p.slice ?? 250_000;
  const perVeteran = Math.max(1, Math.floor(p.count / p.veterans));
  const spreadMs = 20 * 60_000;
  for (let start = p.first; start < p.first + p.count; start += slice) {
    const end = Math.min(start + slice, p.first + p.count) - 1;
    // Each veteran's dispenses name their tracking email draft, as ingest stores them (sql/019).
    await sql.unsafe(`
      with rows as materialized (
        select '521' as station_number, (10000000 + g)::text as rx_number, 0 as fill_number,
               ${trackingNumber('v', `(g - ${int(p.first)}) % ${int(perVeteran)} / 2`)} as tracking_number, 'UPS' as carrier,
               'SIMVASTATIN 40MG TAB' as drug_name, '00093-7155-98' as ndc, 30 as quantity,
               now() - interval '26 hours' as dispensed_at, now() - interval '25 hours' as shipped_at,
               ${icn('v')} as patient_icn, (10000000 + v)::text as mhv_correlation_id, 'CMOP' || g as message_control_id,
               now() - make_interval(mins => ${int(p.arrivedMinutesAgo)})
                 - make_interval(secs => ${int(spreadMs)} / 1000.0 * (${int(p.first + p.count)} - g) / ${int(p.count)}) as created_at,
               g
          from generate_series(${int(start)}, ${int(end)}) g
          cross join lateral (select ((g - ${int(p.first)}) / ${int(perVeteran)}) % ${int(p.veterans)} as v) x
      ),
      drafts as (
        insert into tracking_email_draft as r (patient_icn, first_arrival_at, last_arrival_at)
        select patient_icn, min(created_at), max(created_at) from rows group by patient_icn order by patient_icn
        on conflict (patient_icn) do update
          set first_arrival_at = least(r.first_arrival_at, excluded.first_arrival_at),
              last_arrival_at = greatest(r.last_arrival_at, excluded.last_arrival_at)
        returning id, patient_icn
      )
      insert into medication_dispense
        (station_number, rx_number, fill_number, tracking_number, carrier, drug_name, ndc, quantity,
         dispensed_at, shipped_at, patient_icn, mhv_correlation_id, message_control_id, state, created_at, updated_at,
         tracking_email_id)
      select w.station_number, w.rx_number, w.fill_number, w.tracking_number, w.carrier, w.drug_name, w.ndc, w.quantity,
             w.dispensed_at, w.shipped_at, w.patient_icn, w.mhv_correlation_id, w.message_control_id, 'pending', w.created_at, now(),
             d.id
        from rows w join drafts d on d.patient_icn = w.patient_icn
       order by w.g`);
  }
}

/**
 * Grouped history: `emails` delivered tracking emails, each with `perEmail` grouped dispenses, as
 * months of service would leave behind. Email e belongs to veteran e % veterans.
 */
export async function insertGroupedHistory(
  sql: Sql,
  p: { emails: number; perEmail: number; veterans: number; slice?: number },
): Promise<void> {
  const slice = p.slice ?? 250_000;
  for (let start = 0; start < p.emails; start += slice) {
    const end = Math.min(start + slice, p.emails) - 1;
    await sql.unsafe(`
      insert into tracking_email (id, patient_icn, mhv_correlation_id, personalisation, package_count, prescription_count,
                                  state, attempts, created_at, updated_at)
      select ${fixtureUuid('d', 'e')}, ${icn(`e % ${int(p.veterans)}`)}, (10000000 + e % ${int(p.veterans)})::text,
             '{"tracking_info": "history", "package_count": "2", "prescription_count": "4", "shipped_date": "January 5, 2026"}'::jsonb,
             2, ${int(p.perEmail)}, 'delivered', 1, now() - interval '30 days', now() - interval '30 days'
        from generate_series(${int(start)}, ${int(end)}) e`);
  }
  const dispenses = p.emails * p.perEmail;
  for (let start = 0; start < dispenses; start += slice) {
    const end = Math.min(start + slice, dispenses) - 1;
    await sql.unsafe(`
      insert into medication_dispense
        (station_number, rx_number, fill_number, tracking_number, carrier, drug_name, dispensed_at, shipped_at,
         patient_icn, mhv_correlation_id, message_control_id, state, tracking_email_id, created_at, updated_at)
      select '521', (50000000 + g)::text, 0, ${trackingNumber('e', `g % ${int(p.perEmail)} / 2`)}, 'UPS', 'SIMVASTATIN 40MG TAB',
             now() - interval '31 days', now() - interval '31 days', ${icn(`e % ${int(p.veterans)}`)}, (10000000 + e % ${int(p.veterans)})::text,
             'HIST' || g, 'grouped', ${fixtureUuid('d', 'e')}, now() - interval '31 days', now() - interval '30 days'
        from generate_series(${int(start)}, ${int(end)}) g
        cross join lateral (select g / ${int(p.perEmail)} as e) x`);
  }
}

/**
 * Tracking emails numbered [first, first + count) in `state`, with the personalisation grouping
 * would have rendered (two packages of two prescriptions) and, for sent ones, their grouped
 * dispenses (read when the AAL event is written). Email n has id fixtureUuid('e', n) and belongs
 * to veteran n.
 */
export async function insertEmails(
  sql: Sql,
  p: { first: number; count: number; state: 'queued' | 'sent'; withDispenses?: boolean },
): Promise<void> {
  const slice = 100_000;
  for (let start = p.first; start < p.first + p.count; start += slice) {
    const end = Math.min(start + slice, p.first + p.count) - 1;
    await sql.unsafe(`
      insert into tracking_email (id, patient_icn, mhv_correlation_id, personalisation, package_count, prescription_count,
                                  state, attempts, created_at, updated_at)
      select ${fixtureUuid('e', 'n')}, ${icn('n')}, (10000000 + n)::text,
             jsonb_build_object(
               'tracking_info',
                 package_heading('UPS', ${trackingNumber('n', '0')}) || E'\\n' ||
                 prescription_line((20000000 + n * 4)::text, null, false) || E'\\n' ||
                 prescription_line((20000000 + n * 4 + 1)::text, null, false) || E'\\n\\n' ||
                 package_heading('UPS', ${trackingNumber('n', '1')}) || E'\\n' ||
                 prescription_line((20000000 + n * 4 + 2)::text, null, false) || E'\\n' ||
                 prescription_line((20000000 + n * 4 + 3)::text, null, false),
               'package_count', '2', 'prescription_count', '4', 'shipped_date', 'May 14, 2026'),
             2, 4, '${p.state === 'sent' ? 'sent' : 'queued'}', ${p.state === 'sent' ? 1 : 0}, now(), now()
        from generate_series(${int(start)}, ${int(end)}) n`);
    if (p.withDispenses) {
      await sql.unsafe(`
        insert into medication_dispense
          (station_number, rx_number, fill_number, tracking_number, carrier, drug_name, shipped_at,
           patient_icn, mhv_correlation_id, state, tracking_email_id, created_at, updated_at)
        select '521', (20000000 + n * 4 + k)::text, 0, ${trackingNumber('n', 'k / 2')}, 'UPS', 'SIMVASTATIN 40MG TAB',
               now() - interval '1 day', ${icn('n')}, (10000000 + n)::text, 'grouped', ${fixtureUuid('e', 'n')}, now(), now()
          from generate_series(${int(start)}, ${int(end)}) n cross join generate_series(0, 3) k`);
    }
  }
}

/**
 * Sent emails numbered [first, first + count) with their notification (id fixtureUuid('f', n)),
 * as the sender leaves them: what delivery-status callbacks arrive for.
 */
export async function insertSentNotifications(sql: Sql, p: { first: number; count: number }): Promise<void> {
  await insertEmails(sql, { ...p, state: 'sent', withDispenses: true });
  await sql.unsafe(`
    insert into notification (id, tracking_email_id, attempt, status, created_at, updated_at)
    select ${fixtureUuid('f', 'n')}, ${fixtureUuid('e', 'n')}, 1, 'created', now(), now()
      from generate_series(${int(p.first)}, ${int(p.first + p.count - 1)}) n`);
}

/** A delivered callback for notification n, as the sandbox (and VA Notify) writes it. */
export function deliveredCallback(n: number, at = new Date()): string {
  const stamp = (offsetMs: number) =>
    `${new Date(at.getTime() + offsetMs).toISOString().slice(0, 23)}${String(n % 1000).padStart(3, '0')}Z`;
  return JSON.stringify({
    id: fixtureUuidOf('f', n),
    reference: fixtureUuidOf('e', n),
    to: 'veteran.sandbox@example.com',
    status: 'delivered',
    created_at: stamp(-2000),
    completed_at: stamp(0),
    sent_at: stamp(-1000),
    notification_type: 'email',
    status_reason: null,
    provider: 'ses',
  });
}
