// The grouping of pending dispenses into tracking emails, in SQL.
import type { SqlHandle } from '../db/connect.ts';
import type { InitialState } from '../tracking-email/states.ts';

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
  /** EMAIL_MAX_PACKAGES_LISTED (50 when not given): the packages after these are counted, not listed. */
  maxPackagesListed?: number;
  /** 'queued' to send, 'shadowed' to only record what would be sent. */
  emailState: InitialState;
  partition: VeteranPartition;
  /** DELIVERY_START_AT: dispenses shipped before it are MHV's to email, never grouped here. */
  deliveryStartAt: Date | null;
  /** CUTOVER_HOLD_HOURS: packages shipped this close to DELIVERY_START_AT are held (0 when absent). */
  holdHours?: number;
}

/**
 * The cut-over's bounds on a dispense's shipped-at: before `excludeBefore` MHV's, from `holdUntil`
 * on this service's, in between held until MHV's export is compared. A fill shipped before
 * `scanUntil` can still belong to a package held or decided at the cut-over, so only those are
 * looked up (sql/021_cutover_hold.sql); later ones are this service's.
 */
export interface CutoverBounds {
  excludeBefore: Date;
  holdUntil: Date;
  scanUntil: Date;
  /**
   * With a hold, a dispense's times are its dispensed-at and its shipped-at both: CMOP's HL7 gives
   * no ship time, so shipped-at is the message time (MSH-7), which in an RDS^R06 batch can come a day
   * after the fill was completed (RXD-3), and MHV's shipped date may follow either. A fill is
   * MHV's only when both times are before the window, this service's only when both are after it.
   * Without a hold, shipped-at alone decides, at the instant.
   */
  bothTimes: boolean;
}

export function cutoverBounds(deliveryStartAt: Date | null, holdHours = 0): CutoverBounds | null {
  if (deliveryStartAt === null) return null;
  const hold = holdHours * 3_600_000;
  const at = deliveryStartAt.getTime();
  return { excludeBefore: new Date(at - hold), holdUntil: new Date(at + hold), scanUntil: new Date(at + 2 * hold), bothTimes: hold > 0 };
}

/**
 * Whether draft `r`'s veteran falls in the partition. The hash is the server's (`hashtext`), so
 * every instance agrees on which veteran is whose.
 */
function inPartition(sql: SqlHandle, partition: VeteranPartition) {
  return sql`(hashtext(r.patient_icn) & 2147483647) % ${partition.count} = ${partition.index}`;
}

/** Dispense `d`'s shipped-at as grouping reads it. */
function shippedAt(sql: SqlHandle) {
  return sql`coalesce(d.shipped_at, d.dispensed_at, d.created_at)`;
}

/** The earliest and the latest of dispense `d`'s times, as the cut-over reads them ({@link CutoverBounds.bothTimes}). */
function firstTime(sql: SqlHandle, bounds: CutoverBounds) {
  return bounds.bothTimes ? sql`coalesce(least(d.shipped_at, d.dispensed_at), d.created_at)` : shippedAt(sql);
}
function lastTime(sql: SqlHandle, bounds: CutoverBounds) {
  return bounds.bothTimes ? sql`coalesce(greatest(d.shipped_at, d.dispensed_at), d.created_at)` : shippedAt(sql);
}

/** Whether dispense `d`'s earliest time is before the instant. */
function firstBefore(sql: SqlHandle, bounds: CutoverBounds, instant: Date) {
  return sql`${firstTime(sql, bounds)} < ${instant}::timestamptz`;
}

/** Where the cut-over puts pending dispense `d` ('excluded', 'held', ..., or null: this service's); see sql/021. */
function cutoverPlace(sql: SqlHandle, bounds: CutoverBounds) {
  return sql`cutover_set_aside(d.tracking_number, ${firstTime(sql, bounds)}, ${lastTime(sql, bounds)},
                               ${bounds.excludeBefore}::timestamptz, ${bounds.holdUntil}::timestamptz)`;
}

/**
 * Prescriptions one package lists at most. With EMAIL_MAX_PACKAGES_LISTED at its maximum (100), the
 * longest email is about 100 × (a 250-character heading + 20 × a 430-character line: a 200-character
 * drug name, every character escaped), some 900 kB: under VA Notify's 1 MiB request body.
 */
const MaxPrescriptionsListed = 20;

const ExcludedReason = 'shipped before DELIVERY_START_AT (MHV sends these)';
const HeldReason = "shipped within CUTOVER_HOLD_HOURS of DELIVERY_START_AT: held until MHV's export is compared";
const HeldWithPackageReason = 'a fill of a package held at the cut-over: held with it';
const ExcludedWithPackageReason = 'a fill of a package MHV emails at the cut-over (MHV sends these)';

/** The state and reason of each place {@link cutoverPlace} names. */
type Fragment = ReturnType<typeof shippedAt>;
function placeState(sql: SqlHandle, place: Fragment) {
  return sql`case when ${place} in ('held', 'held_with_package') then 'held_for_cutover' else 'excluded' end`;
}
function placeReason(sql: SqlHandle, place: Fragment) {
  return sql`case ${place} when 'held' then ${HeldReason} when 'held_with_package' then ${HeldWithPackageReason}
                           when 'excluded_with_package' then ${ExcludedWithPackageReason} else ${ExcludedReason} end`;
}

/**
 * Dispenses shipped before the cut-over instant belong to MHV's own emails, and those shipped near
 * it are held until MHV's export says whose they are: set them aside (they stay visible, with the
 * reason, and are recorded in cutover_dispense) so that they are never grouped here. A package goes
 * one way as a whole (sql/021_cutover_hold.sql). They no longer name their draft, whose id becomes
 * an email's; a draft left with no pending dispense is deleted by grouping.
 *
 * Only through drafts it locks, passing by those another transaction holds: an ingest (its
 * dispenses wait for the next run), or a grouping run of an instance whose partitions overlap
 * this one's, which sets them aside itself ({@link groupDrafts}), so that no dispense is both
 * set aside and listed in an email. Every run reads the drafts of the partition, and their
 * dispenses, which is pending work, never history; the package is looked up only for dispenses
 * shipped before the bounds' `scanUntil`.
 */
export async function setAsideForCutover(
  sql: SqlHandle,
  bounds: CutoverBounds,
  partition: VeteranPartition,
): Promise<{ excluded: number; held: number }> {
  const [counts] = await sql<{ excluded: number; held: number }[]>`
    with candidates as (
      select d.id, upper(d.tracking_number) as package, ${cutoverPlace(sql, bounds)} as place
        from (select r.id from tracking_email_draft r
               where ${inPartition(sql, partition)}
                 and exists (select 1 from medication_dispense d
                              where d.tracking_email_id = r.id and d.state = 'pending' and ${firstBefore(sql, bounds, bounds.scanUntil)})
                 for update of r skip locked) r
        join medication_dispense d on d.tracking_email_id = r.id and d.state = 'pending' and ${firstBefore(sql, bounds, bounds.scanUntil)}
    ),
    placed as (
      -- A package whose fills are placed differently is held whole: MHV's export decides it.
      select id,
             case when bool_or(place like 'held%') over package
                    or (bool_or(place like 'excluded%') over package and bool_or(place is null) over package)
                  then case when place = 'held' then 'held' else 'held_with_package' end
                  else place end as place
        from candidates
      window package as (partition by package)
    ),
    set_aside as (
      update medication_dispense d
         set state = ${placeState(sql, sql`p.place`)}, state_reason = ${placeReason(sql, sql`p.place`)}, tracking_email_id = null, updated_at = now()
        from placed p
       where d.id = p.id and p.place is not null
      returning d.id, d.tracking_number, d.state
    ),
    recorded as (
      insert into cutover_dispense (dispense_id, tracking_number, set_aside)
      select id, upper(tracking_number), case state when 'held_for_cutover' then 'held' else 'excluded' end from set_aside
      on conflict (dispense_id) do nothing
    )
    select count(*) filter (where state = 'excluded')::int as excluded,
           count(*) filter (where state = 'held_for_cutover')::int as held
      from set_aside`;
  return counts ?? { excluded: 0, held: 0 };
}

/**
 * Takes the partition's ready tracking email drafts, oldest first, up to `batchSize`, deleting them,
 * and returns their ids: the ids of the emails they become.
 *
 * A veteran is ready when their newest pending dispense arrived more than the quiet period ago (one
 * shipment batch is not split across two emails), or their first more than the maximum wait ago.
 * `SKIP LOCKED` passes by a draft an ingest holds: its dispenses are not all committed yet, and it is
 * ready again at the next run at the earliest. Once a draft is deleted, an ingest for the veteran
 * waits for this transaction to end and then makes them a new draft (sql/019_tracking_email_draft.sql),
 * so the dispenses under a taken draft are exactly those committed before it was taken.
 */
export async function takeReadyDrafts(sql: SqlHandle, p: GroupingParameters): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`
    delete from tracking_email_draft
     where id in (
       select r.id from tracking_email_draft r
        where ${inPartition(sql, p.partition)}
          and (r.last_arrival_at <= now() - make_interval(mins => ${p.quietMinutes})
               or r.first_arrival_at <= now() - make_interval(mins => ${p.maxWaitMinutes}))
        order by r.first_arrival_at
        limit ${p.batchSize}
          for update skip locked)
    returning id`;
  return rows.map((row) => row.id);
}

/**
 * Groups the pending dispenses of the taken drafts into one tracking email per draft, with the
 * draft's id, in one statement; a draft with no pending dispense left (every one excluded, or made
 * by a replayed body) becomes no email.
 *
 * - Run after {@link takeReadyDrafts}, as a statement of its own: its snapshot sees every dispense
 *   committed under the drafts taken.
 * - Each dispense's update sets `state` and `updated_at`, which no index holds, on a table that keeps
 *   half of each page free, so that Postgres writes it as a heap-only (HOT) update: no index entry,
 *   and a small WAL record instead of a new row with three (sql/019_tracking_email_draft.sql).
 * - Packages are ordered by first shipment, then tracking number; prescriptions by Rx number and fill:
 *   the same dispenses always render the same email.
 * - Dispenses are found by the email index, which holds each pending dispense under its draft: the
 *   cost follows the run's batch, not the table's history.
 * - Draft ids, and so email ids, are time-ordered (`time_ordered_uuid`, sql/007_grouping_cost.sql), so
 *   that a run's ids go to the right edge of the indexes that hold them rather than to random pages
 *   of ever-growing indexes.
 */
export async function groupDrafts(
  sql: SqlHandle,
  draftIds: readonly string[],
  p: Pick<GroupingParameters, 'includeDrugNames' | 'emailState' | 'deliveryStartAt' | 'holdHours' | 'maxPackagesListed'>,
): Promise<{ emailsCreated: number; dispensesGrouped: number; dispensesExcluded: number; dispensesHeld: number }> {
  if (draftIds.length === 0) return { emailsCreated: 0, dispensesGrouped: 0, dispensesExcluded: 0, dispensesHeld: 0 };
  const maxPackages = p.maxPackagesListed ?? 50;
  const bounds = cutoverBounds(p.deliveryStartAt, p.holdHours);
  // A dispense the run's setting aside did not see (it committed in between) is set aside here. Only
  // one shipped before the end of the hold is looked up; for every other one this is the one
  // comparison the instant always cost.
  const place = bounds === null ? null : cutoverPlace(sql, bounds);
  const setAside = bounds === null ? sql`false` : sql`(${firstBefore(sql, bounds, bounds.holdUntil)} and ${place} is not null)`;
  const [result] = await sql<{ emails_created: number; dispenses_grouped: number; dispenses_excluded: number; dispenses_held: number }[]>`
    with claimed as (
      select d.tracking_email_id as email_id, d.id, d.patient_icn, d.mhv_correlation_id, d.rx_number, d.fill_number, d.drug_name,
             d.carrier, d.tracking_number, coalesce(d.shipped_at, d.dispensed_at, d.created_at) as shipped_at,
             row_number() over (partition by d.tracking_email_id, d.tracking_number order by d.rx_number, d.fill_number) as line
        from medication_dispense d
       where d.tracking_email_id = any(${draftIds}::uuid[]) and d.state = 'pending' and not ${setAside}
    ),
    packages as (
      -- A package's carrier is the one its fills name: package_carrier's rule (sql/025_package_carrier.sql),
      -- written here with the built-in min(), since a user-defined aggregate costs a function call
      -- per row on grouping's hot path; test/grouping/grouping.test.ts holds the email's carriers equal
      -- to the AAL detail's, which uses the aggregate. Postgres computes the aggregate once.
      select email_id, patient_icn, tracking_number, coalesce(min(carrier) filter (where carrier <> 'UNK'), 'UNK') as carrier,
             min(shipped_at) as first_shipped_at, max(shipped_at) as last_shipped_at,
             count(*) as prescriptions, max(mhv_correlation_id) as mhv_correlation_id, array_agg(id) as dispense_ids,
             package_heading(coalesce(min(carrier) filter (where carrier <> 'UNK'), 'UNK'), tracking_number) || E'\n' ||
               string_agg(prescription_line(rx_number, drug_name, ${p.includeDrugNames}), E'\n'
                          order by rx_number, fill_number) filter (where line <= ${MaxPrescriptionsListed}) ||
               case when count(*) > ${MaxPrescriptionsListed}
                    then E'\n- and ' || (count(*) - ${MaxPrescriptionsListed}) || ' more prescription' ||
                         case when count(*) - ${MaxPrescriptionsListed} = 1 then '' else 's' end
                    else '' end as block,
             -- One email lists a veteran's first packages and counts the rest: a body VA Notify
             -- refuses (over 1 MiB: 20,000 packages made one) would leave the veteran no email.
             row_number() over (partition by email_id order by min(shipped_at), tracking_number) as rank
        from claimed
       group by email_id, patient_icn, tracking_number
    ),
    emails as (
      select email_id, patient_icn,
             max(mhv_correlation_id) as mhv_correlation_id,
             count(*)::int as package_count,
             sum(prescriptions)::int as prescription_count,
             string_agg(block, E'\n\n' order by first_shipped_at, tracking_number) filter (where rank <= ${maxPackages}) ||
               case when count(*) > ${maxPackages}
                    then E'\n\nand ' || (count(*) - ${maxPackages}) || ' more package' ||
                         case when count(*) - ${maxPackages} = 1 then '' else 's' end
                    else '' end as tracking_info,
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
      -- A dispense the cut-over sets aside that arrived after this run's setting aside is set aside
      -- here; for every other one, the tracking email id stays what it was, so the update is HOT.
      update medication_dispense d
         set state = case when ${setAside} then ${bounds === null ? sql`null` : placeState(sql, place!)} else 'grouped' end,
             state_reason = case when ${setAside} then ${bounds === null ? sql`null` : placeReason(sql, place!)} else d.state_reason end,
             tracking_email_id = case when ${setAside} then null else d.tracking_email_id end,
             updated_at = now()
       where d.tracking_email_id = any(${draftIds}::uuid[]) and d.state = 'pending'
      returning d.state${bounds === null ? sql`` : sql`, case when d.state <> 'grouped' then d.id end as set_aside_id, d.tracking_number`}
    )${
      bounds === null
        ? sql``
        : sql`,
    recorded as (
      insert into cutover_dispense (dispense_id, tracking_number, set_aside)
      select set_aside_id, upper(tracking_number), case state when 'held_for_cutover' then 'held' else 'excluded' end
        from grouped where set_aside_id is not null
      on conflict (dispense_id) do nothing
    )`
    }
    select (select count(*) from inserted)::int as emails_created,
           (select count(*) from grouped where state = 'grouped')::int as dispenses_grouped,
           (select count(*) from grouped where state = 'excluded')::int as dispenses_excluded,
           (select count(*) from grouped where state = 'held_for_cutover')::int as dispenses_held`;
  return {
    emailsCreated: result?.emails_created ?? 0,
    dispensesGrouped: result?.dispenses_grouped ?? 0,
    dispensesExcluded: result?.dispenses_excluded ?? 0,
    dispensesHeld: result?.dispenses_held ?? 0,
  };
}
