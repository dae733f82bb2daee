// The packages held at the cut-over (sql/021_cutover_hold.sql): what is held, and the decision that
// releases to this service the ones MHV did not email and leaves to MHV the ones it did.
import type { Sql, SqlHandle } from '../db/connect.ts';
import { AdvisoryLock } from '../db/locks.ts';

export const ReleasedReason = "held at the cut-over; released: MHV's export does not list this package";
export const EmailedByMhvReason = "held at the cut-over; MHV's export lists this package (MHV emailed it)";

export interface HeldPackage {
  trackingNumber: string;
  /** The last four characters of the veteran's ICN: enough to find the row, never the ICN. */
  icnLast4: string | null;
  dispenses: number;
  /** The earliest shipped-at of its held fills (ISO). */
  shippedAt: string | null;
  /** When its first fill was held (ISO). */
  heldAt: string;
}

export interface CutoverCounts {
  packages: number;
  dispenses: number;
}

export interface CutoverStatus {
  held: CutoverCounts & { oldestHeldAt: string | null };
  emailedByMhv: CutoverCounts;
  released: CutoverCounts;
  /** Held packages, longest held first, up to the limit asked for. */
  heldPackages: HeldPackage[];
}

/** What is held and what was decided; reads cutover_dispense, never the dispense history. */
export async function cutoverStatus(sql: SqlHandle, limit: number): Promise<CutoverStatus> {
  const [counts] = await sql<
    {
      held_packages: number;
      held_dispenses: number;
      oldest_held_at: Date | null;
      mhv_packages: number;
      mhv_dispenses: number;
      released_packages: number;
      released_dispenses: number;
    }[]
  >`
    select count(distinct tracking_number) filter (where set_aside = 'held' and decision is null)::int as held_packages,
           count(*) filter (where set_aside = 'held' and decision is null)::int as held_dispenses,
           min(set_aside_at) filter (where set_aside = 'held' and decision is null) as oldest_held_at,
           count(distinct tracking_number) filter (where decision = 'emailed_by_mhv')::int as mhv_packages,
           count(*) filter (where decision = 'emailed_by_mhv')::int as mhv_dispenses,
           count(distinct tracking_number) filter (where decision = 'released')::int as released_packages,
           count(*) filter (where decision = 'released')::int as released_dispenses
      from cutover_dispense
     where decision is not null or set_aside = 'held'`;
  const held = await sql<
    { tracking_number: string; icn_last4: string | null; dispenses: number; shipped_at: Date | null; held_at: Date }[]
  >`
    select c.tracking_number, right(max(d.patient_icn), 4) as icn_last4, count(*)::int as dispenses,
           min(d.shipped_at) as shipped_at, min(c.set_aside_at) as held_at
      from cutover_dispense c
      join medication_dispense d on d.id = c.dispense_id
     where c.set_aside = 'held' and c.decision is null
     group by c.tracking_number
     order by held_at, c.tracking_number
     limit ${limit}`;
  const c = counts!;
  return {
    held: { packages: c.held_packages, dispenses: c.held_dispenses, oldestHeldAt: c.oldest_held_at?.toISOString() ?? null },
    emailedByMhv: { packages: c.mhv_packages, dispenses: c.mhv_dispenses },
    released: { packages: c.released_packages, dispenses: c.released_dispenses },
    heldPackages: held.map((h) => ({
      trackingNumber: h.tracking_number,
      icnLast4: h.icn_last4,
      dispenses: h.dispenses,
      shippedAt: h.shipped_at?.toISOString() ?? null,
      heldAt: h.held_at.toISOString(),
    })),
  };
}

export interface ReleaseResult {
  /** Held packages MHV's export does not list: this service emails them (their excluded fills too). */
  released: CutoverCounts & { trackingNumbers: string[] };
  /** Held packages MHV's export lists: MHV emailed them, so they stay MHV's. */
  emailedByMhv: CutoverCounts & { trackingNumbers: string[] };
  /**
   * Held packages with a fill that arrived here at or after mhvJobRunAt: MHV's job may not have seen
   * that fill yet, so they stay held for a later export.
   */
  stillHeld: CutoverCounts & { trackingNumbers: string[] };
}

/**
 * Decides every held package from MHV's export, per tracking number, never per fill:
 *
 * - listed in the export (under any ICN): MHV emailed it; its held fills become `excluded`;
 * - not listed: MHV did not email it; its held fills, and any fill of it excluded at the cut-over,
 *   become `pending` under their veteran's tracking email draft and go out in the next grouping
 *   after the quiet period;
 * - a package with a fill that arrived here at or after `mhvJobRunAt` is left held: the export
 *   cannot tell whether MHV will email it.
 *
 * The decision is recorded in cutover_dispense, and a fill of a decided package that arrives later
 * follows it (sql/021_cutover_hold.sql). One decision at a time (an advisory lock); drafts are
 * created or locked in ICN order, as ingest does, so a decision never deadlocks with ingest.
 */
export async function releaseHeldPackages(sql: Sql, exportTrackingNumbers: ReadonlySet<string>, mhvJobRunAt: Date): Promise<ReleaseResult> {
  const listed = [...exportTrackingNumbers].map((n) => n.trim().toUpperCase());
  return sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${AdvisoryLock.cutoverRelease})`;
    const packages = await tx<{ tracking_number: string; dispenses: number; complete: boolean; listed: boolean }[]>`
      select c.tracking_number, count(*)::int as dispenses,
             bool_and(d.created_at < ${mhvJobRunAt}) as complete,
             c.tracking_number = any(${listed}::text[]) as listed
        from cutover_dispense c
        join medication_dispense d on d.id = c.dispense_id
       where c.set_aside = 'held' and c.decision is null
       group by c.tracking_number
       order by c.tracking_number`;
    const byMhv = packages.filter((p) => p.complete && p.listed);
    const toRelease = packages.filter((p) => p.complete && !p.listed);
    const waiting = packages.filter((p) => !p.complete);

    const releasedDispenses = await decide(
      tx,
      byMhv.map((p) => p.tracking_number),
      toRelease.map((p) => p.tracking_number),
    );
    const count = (list: readonly { dispenses: number }[]) => list.reduce((sum, p) => sum + p.dispenses, 0);
    return {
      released: { packages: toRelease.length, dispenses: releasedDispenses, trackingNumbers: toRelease.map((p) => p.tracking_number) },
      emailedByMhv: { packages: byMhv.length, dispenses: count(byMhv), trackingNumbers: byMhv.map((p) => p.tracking_number) },
      stillHeld: { packages: waiting.length, dispenses: count(waiting), trackingNumbers: waiting.map((p) => p.tracking_number) },
    };
  });
}

/**
 * Records the decision on the given packages (upper-cased tracking numbers) and applies it to their
 * undecided fills, held or excluded at the cut-over; returns how many dispenses became pending.
 */
async function decide(tx: SqlHandle, emailedByMhv: readonly string[], released: readonly string[]): Promise<number> {
  if (emailedByMhv.length > 0) {
    await tx`
      with decided as (
        update cutover_dispense
           set decision = 'emailed_by_mhv', decided_at = now()
         where tracking_number = any(${emailedByMhv}::text[]) and decision is null
        returning dispense_id
      )
      update medication_dispense d
         set state = 'excluded', state_reason = ${EmailedByMhvReason}, updated_at = now()
        from decided
       where d.id = decided.dispense_id and d.state = 'held_for_cutover'`;
  }
  if (released.length > 0) {
    const decided = await tx<{ dispense_id: number }[]>`
      update cutover_dispense
         set decision = 'released', decided_at = now()
       where tracking_number = any(${released}::text[]) and decision is null
      returning dispense_id`;
    const ids = decided.map((d) => d.dispense_id);
    // Each veteran's draft, created or locked in ICN order (as ingest does), then their fills.
    await tx`
      insert into tracking_email_draft as r (patient_icn)
      select distinct patient_icn from medication_dispense
       where id = any(${ids}::bigint[]) and state in ('held_for_cutover', 'excluded') and patient_icn is not null
       order by patient_icn
      on conflict (patient_icn) do update set last_arrival_at = excluded.last_arrival_at`;
    const pending = await tx`
      update medication_dispense d
         set state = 'pending', state_reason = ${ReleasedReason}, tracking_email_id = r.id, updated_at = now()
        from tracking_email_draft r
       where d.id = any(${ids}::bigint[]) and d.state in ('held_for_cutover', 'excluded') and r.patient_icn = d.patient_icn
      returning d.id`;
    await tx`select pg_notify('dispense_pending', '')`;
    return pending.length;
  }
  return 0;
}

/**
 * Applies the decision already taken on a package to its fills held since (a fill that arrived, or
 * was set aside by a run that had not yet seen the decision): once MHV's export has decided a
 * package, a later fill of it needs no export of its own. Run by every grouping run while a hold is
 * configured; cheap, it reads the undecided held fills through their partial index. Passes when a
 * release is deciding at that moment.
 */
export async function followPackageDecisions(sql: Sql): Promise<number> {
  return sql.begin(async (tx) => {
    const [lock] = await tx<{ acquired: boolean }[]>`select pg_try_advisory_xact_lock(${AdvisoryLock.cutoverRelease}) as acquired`;
    if (!lock?.acquired) return 0;
    const packages = await tx<{ tracking_number: string; decision: 'emailed_by_mhv' | 'released' }[]>`
      select distinct on (h.tracking_number) h.tracking_number, c.decision
        from cutover_dispense h
        join cutover_dispense c on c.tracking_number = h.tracking_number and c.decision is not null
       where h.set_aside = 'held' and h.decision is null
       order by h.tracking_number, c.decision desc`;
    if (packages.length === 0) return 0;
    await decide(
      tx,
      packages.filter((p) => p.decision === 'emailed_by_mhv').map((p) => p.tracking_number),
      packages.filter((p) => p.decision === 'released').map((p) => p.tracking_number),
    );
    return packages.length;
  });
}
