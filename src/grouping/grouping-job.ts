// The grouping job: pending dispenses → one tracking email per ready veteran.
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { Sql } from '../db/connect.ts';
import { AdvisoryLock } from '../db/locks.ts';
import { excludeShippedBefore, groupReadyDispenses } from './repository.ts';

export interface GroupingResult {
  emailsCreated: number;
  dispensesGrouped: number;
  dispensesExcluded: number;
  /** True when another instance was grouping at that moment (its run covers the same work). */
  skipped: boolean;
}

const nothing: GroupingResult = { emailsCreated: 0, dispensesGrouped: 0, dispensesExcluded: 0, skipped: false };

export async function runGrouping(deps: { sql: Sql; config: Config; log: Logger }): Promise<GroupingResult> {
  const { sql, config, log } = deps;
  if (config.DELIVERY_MODE === 'off') return nothing;
  const result = await sql.begin(async (tx): Promise<GroupingResult> => {
    const [lock] = await tx<{ acquired: boolean }[]>`select pg_try_advisory_xact_lock(${AdvisoryLock.grouping}) as acquired`;
    if (!lock?.acquired) return { ...nothing, skipped: true };
    // The grouping statement's estimated cost is far above jit_above_cost, so Postgres compiled it
    // to machine code on every run: about 0.1 s of a run that takes well under a second.
    await tx`set local jit = off`;
    const dispensesExcluded = config.DELIVERY_START_AT ? await excludeShippedBefore(tx, config.DELIVERY_START_AT) : 0;
    const grouped = await groupReadyDispenses(tx, {
      quietMinutes: config.GROUPING_QUIET_MINUTES,
      maxWaitMinutes: config.GROUPING_MAX_WAIT_MINUTES,
      batchSize: config.GROUPING_BATCH_SIZE,
      includeDrugNames: config.EMAIL_INCLUDE_DRUG_NAMES,
      emailState: config.DELIVERY_MODE === 'shadow' ? 'shadowed' : 'queued',
    });
    return { ...grouped, dispensesExcluded, skipped: false };
  });
  if (result.emailsCreated > 0 || result.dispensesExcluded > 0) {
    log.info({ emailsCreated: result.emailsCreated, dispensesGrouped: result.dispensesGrouped, dispensesExcluded: result.dispensesExcluded, deliveryMode: config.DELIVERY_MODE }, 'dispenses grouped into tracking emails');
  }
  if (result.emailsCreated > 0 && config.DELIVERY_MODE === 'live') await sql`select pg_notify('tracking_email_queued', '')`;
  return result;
}
