// The grouping of pending dispenses into tracking emails, in SQL.
import type { SqlHandle } from '../db/connect.ts';

export interface GroupingParameters {
  quietMinutes: number;
  maxWaitMinutes: number;
  batchSize: number;
  includeDrugNames: boolean;
  /** 'queued' to send, 'shadowed' to only record what would be sent. */
  emailState: 'queued' | 'shadowed';
}

/**
 * Dispenses shipped before the cut-over instant belong to MHV's own emails: set them aside (they stay
 * visible, with the reason) so that they are never grouped here.
 */
export async function excludeShippedBefore(sql: SqlHandle, startAt: Date): Promise<number> {
  const rows = await sql`
    update medication_dispense
       set state = 'excluded', state_reason = 'shipped before DELIVERY_START_AT (MHV sends these)', updated_at = now()
     where state = 'pending' and coalesce(shipped_at, dispensed_at, created_at) < ${startAt}
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
 *   lands in two emails.
 * - Packages are ordered by first shipment, then tracking number; prescriptions by Rx number and fill:
 *   the same dispenses always render the same email.
 * - Only the pending-dispense index is read, so the cost follows pending work, not history.
 */
export async function groupReadyDispenses(
  sql: SqlHandle,
  p: GroupingParameters,
): Promise<{ emailsCreated: number; dispensesGrouped: number }> {
  const [result] = await sql<{ emails_created: number; dispenses_grouped: number }[]>`
    with ready as (
      select patient_icn
        from medication_dispense
       where state = 'pending' and patient_icn is not null
       group by patient_icn
      having max(created_at) <= now() - make_interval(mins => ${p.quietMinutes})
          or min(created_at) <= now() - make_interval(mins => ${p.maxWaitMinutes})
       order by min(created_at)
       limit ${p.batchSize}
    ),
    claimed as (
      select d.id, d.patient_icn, d.mhv_correlation_id, d.rx_number, d.fill_number, d.drug_name,
             d.carrier, d.tracking_number, coalesce(d.shipped_at, d.dispensed_at, d.created_at) as shipped_at
        from medication_dispense d
        join ready using (patient_icn)
       where d.state = 'pending'
         for update of d skip locked
    ),
    packages as (
      select patient_icn, tracking_number, min(carrier) as carrier, min(shipped_at) as first_shipped_at,
             count(*) as prescriptions,
             package_heading(min(carrier), tracking_number) || E'\n' ||
               string_agg(prescription_line(rx_number, drug_name, ${p.includeDrugNames}), E'\n'
                          order by rx_number, fill_number) as block
        from claimed
       group by patient_icn, tracking_number
    ),
    emails as (
      select c.patient_icn,
             max(c.mhv_correlation_id) as mhv_correlation_id,
             (select count(*) from packages k where k.patient_icn = c.patient_icn) as package_count,
             count(*) as prescription_count,
             max(c.shipped_at) as last_shipped_at
        from claimed c
       group by c.patient_icn
    ),
    inserted as (
      insert into tracking_email (patient_icn, mhv_correlation_id, personalisation, package_count, prescription_count, state)
      select e.patient_icn, e.mhv_correlation_id,
             jsonb_build_object(
               'tracking_info', (select string_agg(k.block, E'\n\n' order by k.first_shipped_at, k.tracking_number)
                                   from packages k where k.patient_icn = e.patient_icn),
               'package_count', e.package_count::text,
               'prescription_count', e.prescription_count::text,
               -- Calendar date in UTC: CMOP stamps shipments in UTC and the email names a day, not a time.
               'shipped_date', to_char(e.last_shipped_at at time zone 'UTC', 'FMMonth FMDD, YYYY')),
             e.package_count, e.prescription_count, ${p.emailState}
        from emails e
      returning id, patient_icn
    ),
    grouped as (
      update medication_dispense d
         set state = 'grouped', tracking_email_id = i.id, updated_at = now()
        from claimed c join inserted i using (patient_icn)
       where d.id = c.id
      returning d.id
    )
    select (select count(*) from inserted) as emails_created, (select count(*) from grouped) as dispenses_grouped`;
  return { emailsCreated: result?.emails_created ?? 0, dispensesGrouped: result?.dispenses_grouped ?? 0 };
}
