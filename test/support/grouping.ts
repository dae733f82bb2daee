// One partition of a grouping run taken by hand, for tests of what a run meets between its steps.
import type { Sql } from '../../src/db/connect.ts';
import { groupDrafts, takeReadyDrafts, type GroupingParameters } from '../../src/grouping/repository.ts';

/**
 * Takes the ready drafts and groups them in one transaction, as a run's only partition does, queueing
 * the emails and delivering dispenses shipped from 2026-06-01T12:00Z, unless `overrides` say otherwise.
 */
export function groupReadyDrafts(sql: Sql, overrides: Partial<GroupingParameters> = {}) {
  const parameters: GroupingParameters = {
    quietMinutes: 60,
    maxWaitMinutes: 240,
    batchSize: 10,
    includeDrugNames: false,
    emailState: 'queued',
    partition: { index: 0, count: 1 },
    deliveryStartAt: new Date('2026-06-01T12:00:00Z'),
    ...overrides,
  };
  return sql.begin(async (tx) => groupDrafts(tx, await takeReadyDrafts(tx, parameters), parameters));
}
