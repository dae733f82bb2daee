// What the service would have emailed, read from its dispenses and tracking emails for the shadow
// comparison. Read-only: the comparison changes nothing.
import type { SqlHandle } from '../db/connect.ts';
import type { MedicationDispenseState } from '../ingest/dispense.ts';
import type { OurPackage, Window } from './compare.ts';

interface PackageRow {
  icn: string | null;
  tracking_number: string;
  carrier: string;
  shipped_at: Date | null;
  in_window: boolean;
  email_id: string | null;
  states: MedicationDispenseState[];
  unprocessable_reason: string | null;
}

/** Rows fetched per round trip: bounds what the driver buffers, whatever the period's size. */
const CursorBatch = 2000;

/**
 * The service's packages (dispenses grouped by ICN and tracking number) that shipped within the
 * window, plus every package, whenever shipped and under whatever ICN, with one of the given
 * tracking numbers (the export's), so that a package MHV emailed is found even when it shipped
 * outside the window or came without an ICN.
 *
 * Cost: one pass over medication_dispense. The tracking numbers are probed through a hashed
 * subplan (one hash table of the export's numbers), not a nested loop, and no index is added for a
 * tool that runs a few times during the parallel run, so ingest pays nothing for it. Rows stream
 * through a cursor in batches, so the driver never holds the whole result; the caller keeps one
 * small object per package.
 *
 * A package whose fills went into two tracking emails (a later fill joined a later email) reports
 * the earliest email, the one that first told the veteran about it.
 */
export async function loadOurPackages(sql: SqlHandle, window: Window, exportTrackingNumbers: readonly string[]): Promise<OurPackage[]> {
  const wanted = [...new Set(exportTrackingNumbers.map((n) => n.toUpperCase()))];
  const packages: OurPackage[] = [];
  const cursor = sql<PackageRow[]>`
    with wanted as (
      select tracking_number from unnest(${wanted}::text[]) as t(tracking_number)
    )
    select
      d.patient_icn as icn,
      upper(d.tracking_number) as tracking_number,
      -- The carrier the email names: a fill without one (UNK) does not hide it.
      package_carrier(d.carrier) as carrier,
      min(d.shipped_at) as shipped_at,
      coalesce(bool_or(d.shipped_at >= ${window.from} and d.shipped_at < ${window.to}), false) as in_window,
      (array_agg(e.id order by e.created_at, e.id) filter (where e.id is not null))[1] as email_id,
      array_agg(distinct d.state) as states,
      min(d.state_reason) filter (where d.state = 'unprocessable') as unprocessable_reason
    from medication_dispense d
    left join tracking_email e on e.id = d.tracking_email_id
    -- A fill without a tracking number never shipped: nobody emails it.
    where d.tracking_number <> ''
      and ((d.shipped_at >= ${window.from} and d.shipped_at < ${window.to})
           or upper(d.tracking_number) in (select tracking_number from wanted))
    group by d.patient_icn, upper(d.tracking_number)
  `.cursor(CursorBatch);
  for await (const batch of cursor) {
    for (const row of batch) {
      packages.push({
        icn: row.icn,
        trackingNumber: row.tracking_number,
        carrier: row.carrier,
        shippedAt: row.shipped_at,
        inWindow: row.in_window,
        emailId: row.email_id,
        states: row.states,
        unprocessableReason: row.unprocessable_reason,
      });
    }
  }
  return packages;
}
