// The grouping job: pending dispenses → one tracking email per ready veteran.
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import { planForWorkInProgress, type Sql } from '../db/connect.ts';
import { AdvisoryLock } from '../db/locks.ts';
import { followPackageDecisions } from '../cutover/repository.ts';
import { cutoverBounds, groupDrafts, setAsideForCutover, takeReadyDrafts, type VeteranPartition } from './repository.ts';

export interface GroupingResult {
  emailsCreated: number;
  dispensesGrouped: number;
  dispensesExcluded: number;
  /** Shipped near DELIVERY_START_AT: held until MHV's export is compared (CUTOVER_HOLD_HOURS). */
  dispensesHeld: number;
  /** True when other instances were grouping every partition at that moment (their runs cover the same work). */
  skipped: boolean;
}

const NothingGrouped: GroupingResult = { emailsCreated: 0, dispensesGrouped: 0, dispensesExcluded: 0, dispensesHeld: 0, skipped: false };

/** What one partition's transaction did; `filled`: it took its whole share, so more are probably ready. */
type PartitionRun = Omit<GroupingResult, 'skipped'> & { filled: boolean };

/**
 * One run groups up to GROUPING_BATCH_SIZE veterans, split by ICN hash into GROUPING_CONCURRENCY
 * partitions, each in its own transaction at the same time. A grouping statement is one backend's
 * work, so one transaction at a time would leave the database's other cores idle.
 *
 * A veteran always hashes to the same partition, and each partition's transaction holds that
 * partition's advisory lock, so a veteran's dispenses are never split between two runs of instances
 * configured alike. (Instances with different GROUPING_CONCURRENCY can run overlapping partitions
 * for as long as they differ; a draft is taken by deleting it, so every dispense still goes out in
 * one email.)
 */
async function groupPartitions(deps: { sql: Sql; config: Config }): Promise<{ result: GroupingResult; filled: boolean }> {
  const { sql, config } = deps;
  const batch = config.GROUPING_BATCH_SIZE;
  // Every partition needs a share of at least one veteran, or its veterans would never be grouped.
  const count = Math.min(config.GROUPING_CONCURRENCY, batch);
  const shareOf = (index: number) => Math.floor(batch / count) + (index < batch % count ? 1 : 0);
  // Every partition ends before the run does, also when one fails, so that a run never outlives
  // its report; what the others committed stays committed.
  const settled = await Promise.allSettled(
    Array.from({ length: count }, (_, index) => groupPartition(sql, config, { index, count }, shareOf(index))),
  );
  const failed = settled.find((s) => s.status === 'rejected');
  if (failed) throw failed.reason;
  const runs = settled.map((s) => (s.status === 'fulfilled' ? s.value : null));
  const result: GroupingResult = { ...NothingGrouped, skipped: runs.every((r) => r === null) };
  for (const run of runs) {
    if (!run) continue;
    result.emailsCreated += run.emailsCreated;
    result.dispensesGrouped += run.dispensesGrouped;
    result.dispensesExcluded += run.dispensesExcluded;
    result.dispensesHeld += run.dispensesHeld;
  }
  return { result, filled: runs.some((r) => r?.filled) };
}

function groupPartition(sql: Sql, config: Config, partition: VeteranPartition, share: number): Promise<PartitionRun | null> {
  return sql.begin(async (tx) => {
    const [lock] = await tx<{ acquired: boolean }[]>`
      select pg_try_advisory_xact_lock(${AdvisoryLock.grouping}, ${partition.index}) as acquired`;
    if (!lock?.acquired) return null;
    // Drafts and dispenses through their indexes whatever the statistics say. This also turns JIT
    // off: the grouping statement's estimated cost is far above jit_above_cost, so Postgres
    // compiled it to machine code on every run, about 0.1 s of a run that takes well under a second.
    await planForWorkInProgress(tx);
    const bounds = cutoverBounds(config.DELIVERY_START_AT ?? null, config.CUTOVER_HOLD_HOURS);
    const setAside = bounds ? await setAsideForCutover(tx, bounds, partition) : { excluded: 0, held: 0 };
    const parameters = {
      quietMinutes: config.GROUPING_QUIET_MINUTES,
      maxWaitMinutes: config.GROUPING_MAX_WAIT_MINUTES,
      batchSize: share,
      includeDrugNames: config.EMAIL_INCLUDE_DRUG_NAMES,
      maxPackagesListed: config.EMAIL_MAX_PACKAGES_LISTED,
      emailState: config.DELIVERY_MODE === 'shadow' ? 'shadowed' : 'queued',
      partition,
      deliveryStartAt: config.DELIVERY_START_AT ?? null,
      holdHours: config.CUTOVER_HOLD_HOURS,
    } as const;
    const drafts = await takeReadyDrafts(tx, parameters);
    const grouped = await groupDrafts(tx, drafts, parameters);
    return {
      ...grouped,
      dispensesExcluded: setAside.excluded + grouped.dispensesExcluded,
      dispensesHeld: setAside.held + grouped.dispensesHeld,
      filled: drafts.length >= share,
    };
  });
}

export async function runGrouping(deps: { sql: Sql; config: Config; log: Logger }): Promise<GroupingResult> {
  return (await groupReadyVeterans(deps)).result;
}

/** One grouping run; `filled` (a partition took its whole share) asks the job runner for the next at once. */
export async function groupReadyVeterans(deps: {
  sql: Sql;
  config: Config;
  log: Logger;
}): Promise<{ result: GroupingResult; filled: boolean }> {
  const { sql, config, log } = deps;
  if (config.DELIVERY_MODE === 'off') return { result: NothingGrouped, filled: false };
  if (config.DELIVERY_START_AT !== undefined && config.CUTOVER_HOLD_HOURS > 0) await followPackageDecisions(sql);
  const run = await groupPartitions(deps);
  const { result } = run;
  if (result.emailsCreated > 0 || result.dispensesExcluded > 0 || result.dispensesHeld > 0) {
    log.info(
      {
        emailsCreated: result.emailsCreated,
        dispensesGrouped: result.dispensesGrouped,
        dispensesExcluded: result.dispensesExcluded,
        dispensesHeld: result.dispensesHeld,
        deliveryMode: config.DELIVERY_MODE,
      },
      'dispenses grouped into tracking emails',
    );
  }
  if (result.emailsCreated > 0 && config.DELIVERY_MODE === 'live') await sql`select pg_notify('tracking_email_queued', '')`;
  return run;
}
