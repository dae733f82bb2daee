// The grouping of pending dispenses into tracking emails, in SQL.
import type { SqlHandle } from '../db/connect.ts';

/** The veterans whose ICN hashes to `index` modulo `count`: one of a run's concurrent transactions. */
export interface VeteranPartition {
  index: number;
  count: number;
}

export interface GroupingParameters {
  quietMinutes: number;
  maxWaitMinutes: number;
  batchSize: number;
  includeDrugNames: boolean;
  /** 'queued' to send, 'shadowed' to only record what would be sent. */
  emailState: 'queued' | 'shadowed';
  partition: VeteranPartition;
}

/**
 * Whether an ICN falls in the partition. The hash is the server's (`hashtext`), so every instance
 * agrees on which veteran is whose. A dispense without an ICN is never grouped; excluding it falls
 * to partition 0.
 */
function inPartition(sql: SqlHandle, icn: 'patient_icn' | 'o.patient_icn', partition: VeteranPartition) {
  return sql`coalesce((hashtext(${sql.unsafe(icn)}) & 2147483647) % ${partition.count}, 0) = ${partition.index}`;
}

/**
 * Dispenses shipped before the cut-over instant belong to MHV's own emails: set them aside (they stay
 * visible, with the reason) so that they are never grouped here.
 */
export async function excludeShippedBefore(sql: SqlHandle, startAt: Date, partition: VeteranPartition): Promise<number> {
  const rows = await sql`
    update medication_dispense
       set state = 'excluded', state_reason = 'shipped before DELIVERY_START_AT (MHV sends these)', updated_at = now()
     where state = 'pending' and coalesce(shipped_at, dispensed_at, created_at) < ${startAt}
       and ${inPartition(sql, 'patient_icn', partition)}
    returning id`;
  return rows.length;
}

/**
 * Groups every ready patient's pending dispenses into one tracking email each, in one statement.
 *
 * - A patient is ready when the newest pending dispense arrived more than the quiet period ago (one
 *   shipment batch is not split across two emails), or the oldest more than the maximum wait ago.
 * - `FOR UPDATE SKIP LOCKED` on the dispenses: a second run at the same moment skips the rows this one
 *   holds, and the state check after locking skips rows another run already grouped, so no dispense
 *   lands in two emails. The partition's advisory lock already keeps runs apart; the lock pass stays for the
 *   other writers of a pending row: an ingest of a duplicate event locks the stored row it conflicts
 *   with until its transaction ends, though it changes nothing. Skipping such rows, not waiting for
 *   them, leaves no lock cycle with ingest. Claiming by the UPDATE alone (its own recheck of the
 *   state would still keep a dispense out of two emails) saved 8% of the statement's CPU (1,000,000
 *   dispenses, runs interleaved with this version's), but it waits for those locks and can deadlock
 *   with a duplicate ingest that locks the same rows in another order.
 * - Packages are ordered by first shipment, then tracking number; prescriptions by Rx number and fill:
 *   the same dispenses always render the same email.
 * - Only the pending-dispense indexes are read, so the cost follows pending work, not history; and
 *   with a backlog, only its oldest part: the ready patients whose oldest dispense is oldest are all
 *   among the patients of the oldest dispenses. Patients outside that window have nothing older than
 *   the window's last dispense, so when the window yields a full batch (or holds every pending
 *   dispense) its ready patients are exactly those the whole table would yield; otherwise (a
 *   window of patients still receiving dispenses) every pending dispense is aggregated instead.
 * - With partitions, the window is the run's (the oldest pending dispenses of every partition) and
 *   each partition takes its own patients from it, so the same holds for each partition: its
 *   patients outside the window have nothing older than the window's last dispense either. The
 *   partition is tested after the window is read, not in it: Postgres cannot estimate how many rows
 *   a hash test keeps, and with it in the window's scan chose to sort every pending dispense.
 * - The cost of a run follows its batch: each email's id is drawn before its dispenses are claimed and
 *   travels with them, so no step joins two of the statement's own results (Postgres cannot estimate
 *   their sizes, and a misjudged join of two of them is quadratic in the batch), the claim reaches
 *   the dispenses patient by patient through the pending index, and the update by primary key
 *   (`= any(dispense_ids)`, which no plan can hash: updating by the claimed rows' ctid instead let
 *   Postgres, given the work_mem, hash every row of the table by ctid to join 20,000 of them).
 * - Email ids are time-ordered (`time_ordered_uuid`, sql/007_grouping_cost.sql), so that a run's ids go to the right
 *   edge of the indexes that hold them rather than to random pages of ever-growing indexes.
 */
/** Oldest pending dispenses read per run, per patient of the run's batch (a patient has a few at a time). */
const ReadyWindowFactor = 10;

export async function groupReadyDispenses(
  sql: SqlHandle,
  p: GroupingParameters,
): Promise<{ emailsCreated: number; dispensesGrouped: number }> {
  const window = p.batchSize * ReadyWindowFactor * p.partition.count;
  const [result] = await sql<{ emails_created: number; dispenses_grouped: number }[]>`
    with oldest as (
      select patient_icn, created_at
        from medication_dispense
       where state = 'pending' and patient_icn is not null
       order by created_at
       limit ${window}
    ),
    early as (
      -- Patients by first pending dispense, probed for readiness in that order only until the batch
      -- is full: the quiet-period probe (one index lookup a patient) runs for the batch, not the window.
      select g.patient_icn, g.first_created_at
        from (select o.patient_icn, min(o.created_at) as first_created_at
                from oldest o
               where ${inPartition(sql, 'o.patient_icn', p.partition)}
               group by o.patient_icn
               order by min(o.created_at)) g
       where g.first_created_at <= now() - make_interval(mins => ${p.maxWaitMinutes})
          or (select max(d.created_at) from medication_dispense d
               where d.patient_icn = g.patient_icn and d.state = 'pending') <= now() - make_interval(mins => ${p.quietMinutes})
       order by g.first_created_at
       limit ${p.batchSize}
    ),
    ready as (
      select patient_icn from early
       where (select count(*) from early) = ${p.batchSize} or (select count(*) from oldest) < ${window}
      union all
      (select patient_icn
         from medication_dispense
        where state = 'pending' and patient_icn is not null
          and ${inPartition(sql, 'patient_icn', p.partition)}
          and (select count(*) from early) < ${p.batchSize} and (select count(*) from oldest) = ${window}
        group by patient_icn
       having max(created_at) <= now() - make_interval(mins => ${p.quietMinutes})
           or min(created_at) <= now() - make_interval(mins => ${p.maxWaitMinutes})
        order by min(created_at)
        limit ${p.batchSize})
    ),
    recipients as materialized (
      select patient_icn, time_ordered_uuid() as email_id from ready
    ),
    claimed as (
      select r.email_id, d.id, d.patient_icn, d.mhv_correlation_id, d.rx_number, d.fill_number, d.drug_name,
             d.carrier, d.tracking_number, coalesce(d.shipped_at, d.dispensed_at, d.created_at) as shipped_at
        from recipients r
        cross join lateral (
          select * from medication_dispense d
           where d.patient_icn = r.patient_icn and d.state = 'pending'
             for update skip locked) d
    ),
    packages as (
      -- A package's carrier is the one its fills name: fills of one package can come in different
      -- messages, one of them without a carrier (UNK), which must not hide the carrier's name and
      -- tracking link ('UNK' sorts before 'UPS' and 'USPS'). The same choice as the AAL detail's
      -- (sql/012_aal_event_late_delivery_and_carrier.sql); Postgres computes the aggregate once.
      select email_id, patient_icn, tracking_number, coalesce(min(carrier) filter (where carrier <> 'UNK'), 'UNK') as carrier,
             min(shipped_at) as first_shipped_at, max(shipped_at) as last_shipped_at,
             count(*) as prescriptions, max(mhv_correlation_id) as mhv_correlation_id, array_agg(id) as dispense_ids,
             package_heading(coalesce(min(carrier) filter (where carrier <> 'UNK'), 'UNK'), tracking_number) || E'\n' ||
               string_agg(prescription_line(rx_number, drug_name, ${p.includeDrugNames}), E'\n'
                          order by rx_number, fill_number) as block
        from claimed
       group by email_id, patient_icn, tracking_number
    ),
    emails as (
      select email_id, patient_icn,
             max(mhv_correlation_id) as mhv_correlation_id,
             count(*)::int as package_count,
             sum(prescriptions)::int as prescription_count,
             string_agg(block, E'\n\n' order by first_shipped_at, tracking_number) as tracking_info,
             max(last_shipped_at) as last_shipped_at
        from packages
       group by email_id, patient_icn
    ),
    inserted as (
      insert into tracking_email (id, patient_icn, mhv_correlation_id, personalisation, package_count, prescription_count, state)
      select e.email_id, e.patient_icn, e.mhv_correlation_id,
             jsonb_build_object(
               'tracking_info', e.tracking_info,
               'package_count', e.package_count::text,
               'prescription_count', e.prescription_count::text,
               -- Calendar date in UTC: CMOP stamps shipments in UTC and the email names a day, not a time.
               'shipped_date', to_char(e.last_shipped_at at time zone 'UTC', 'FMMonth FMDD, YYYY')),
             e.package_count, e.prescription_count, ${p.emailState}
        from emails e
      returning id
    ),
    grouped as (
      update medication_dispense d
         set state = 'grouped', tracking_email_id = k.email_id, updated_at = now()
        from packages k
       where d.id = any(k.dispense_ids)
      returning d.id
    )
    select (select count(*) from inserted) as emails_created, (select count(*) from grouped) as dispenses_grouped`;
  return { emailsCreated: result?.emails_created ?? 0, dispensesGrouped: result?.dispenses_grouped ?? 0 };
}
