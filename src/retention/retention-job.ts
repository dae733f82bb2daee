// Retention: PHI is kept only as long as it is needed. Raw CMOP bodies are emptied once every
// dispense they carried is final and INBOUND_BODY_RETENTION_DAYS have passed; the whole history of a
// final email (dispenses, email, notifications, status events, AAL event) is removed after
// RECORD_RETENTION_DAYS, with a hash of each emailed dispense's event key kept for
// DISPENSE_KEY_RETENTION_DAYS more so that a CMOP resend is still a duplicate. One retention at a
// time across all instances; each step walks its table oldest first in small batches of their own
// transactions, until nothing old is left or the service shuts down.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import { LockNotAvailable, type Sql, type SqlHandle } from '../db/connect.ts';
import { AdvisoryLock, withSessionLock } from '../db/locks.ts';
import {
  emptyInboundBodies,
  inBatch,
  pipelineRowsWritten,
  purgeDispenseKeys,
  removeFinalHistories,
  removeOldInboundMessages,
  removeOrphanStatusEvents,
  type Cursor,
} from './repository.ts';

/** What a run removed, by record; also the labels of `rx_retention_removed_total{record}`. */
export interface RetentionCounts {
  inboundBodies: number;
  inboundMessages: number;
  trackingEmails: number;
  dispenses: number;
  notifications: number;
  statusEvents: number;
  aalEvents: number;
  dispenseKeysKept: number;
  dispenseKeysPurged: number;
}

export type RetentionRecord = keyof RetentionCounts;

export type RetentionResult =
  | ({ status: 'done'; batches: number; stopped: boolean; more: boolean; lockTimeouts: number; yieldedMs: number } & RetentionCounts)
  | { status: 'already_running' };

export interface RetentionDeps {
  sql: Sql;
  config: Pick<
    Config,
    | 'INBOUND_BODY_RETENTION_DAYS'
    | 'RECORD_RETENTION_DAYS'
    | 'DISPENSE_KEY_RETENTION_DAYS'
    | 'RETENTION_BATCH_SIZE'
    | 'RETENTION_DUTY_PERCENT'
    | 'RETENTION_YIELD_ROWS_PER_SECOND'
  >;
  log: Logger;
  signal?: AbortSignal;
  /** Counts each batch's removals as they commit (the metrics counter). */
  onRemoved?: (record: RetentionRecord, count: number) => void;
  /** Called inside each batch's transaction after its statement, before it commits (tests look at its locks). */
  onBatch?: (tx: SqlHandle, step: string) => Promise<void>;
  /** How long a run goes on starting batches; then it answers with `more` (default {@link RunBudgetMs}). */
  budgetMs?: number;
  /** Waits between batches (default: a timer that the signal cuts short); tests record the rests. */
  rest?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

/** A timer that ends early, without an error, when the service shuts down. */
async function restFor(ms: number, signal?: AbortSignal): Promise<void> {
  await sleep(ms, undefined, { signal }).catch(() => {});
}

/**
 * How long to rest after a batch that took `batchMs`, so that batches fill `dutyPercent` of the run:
 * retention is never urgent (it keeps hundreds of times ahead of the volume), while the callbacks and
 * ingest that share the database's cores with it are.
 */
export function restAfterBatch(batchMs: number, dutyPercent: number): number {
  return dutyPercent >= 100 ? 0 : (batchMs * (100 - dutyPercent)) / dutyPercent;
}

/** How often, at most, a Postgres backend adds its counts to the cumulative statistics (PGSTAT_MIN_INTERVAL). */
const StatisticsFlushMs = 1000;

/** How long retention waits, while the pipeline writes fast, before it looks at its rate again. */
export const YieldMs = 1000;

/**
 * How long a run's first two looks at the pipeline's rate are apart: twice the statistics' flush
 * interval, so that every backend writing meanwhile has added its counts at least once.
 */
export const FirstLookMs = 2 * StatisticsFlushMs;

/**
 * A run starts no batch after this: it answers (a trigger's caller waits for the answer) and, when
 * work is left, the runner starts the next run at once.
 */
export const RunBudgetMs = 30_000;

export async function runRetention(deps: RetentionDeps): Promise<RetentionResult> {
  const held = await withSessionLock(deps.sql, AdvisoryLock.retention, () => retain(deps));
  return held ? held.result : { status: 'already_running' };
}

async function retain(deps: RetentionDeps): Promise<RetentionResult> {
  const { sql, config, signal } = deps;
  const batchSize = config.RETENTION_BATCH_SIZE;
  const counts: RetentionCounts = {
    inboundBodies: 0,
    inboundMessages: 0,
    trackingEmails: 0,
    dispenses: 0,
    notifications: 0,
    statusEvents: 0,
    aalEvents: 0,
    dispenseKeysKept: 0,
    dispenseKeysPurged: 0,
  };
  let batches = 0;
  let lockTimeouts = 0;
  let yieldedMs = 0;
  let more = false;
  const deadline = performance.now() + (deps.budgetMs ?? RunBudgetMs);
  const add = (record: RetentionRecord, count: number) => {
    if (count === 0) return;
    counts[record] += count;
    deps.onRemoved?.(record, count);
  };

  const rest = deps.rest ?? restFor;

  // Rows the pipeline wrote per second since the last look (pipelineRowsWritten). Backends add
  // their counts once a second, so a look a few hundred milliseconds after the last sees a second's
  // rows at once: they are spread over a second at least.
  let lastLook: { rows: number; at: number } | undefined;
  const look = async () => ({ rows: await pipelineRowsWritten(sql), at: performance.now() });
  async function pipelineRowsPerSecond(): Promise<number> {
    const before = lastLook!;
    lastLook = await look();
    return ((lastLook.rows - before.rows) * 1000) / Math.max(lastLook.at - before.at, StatisticsFlushMs);
  }

  /**
   * Waits, before a batch, while the pipeline writes more than RETENTION_YIELD_ROWS_PER_SECOND rows
   * a second (status callbacks, dispenses ingested, tracking emails grouped, emails sent, AAL events
   * posted): retention is never urgent, and a burst of any of them is done fastest with no batch
   * beside it, whose deletes share the CPU, the disk and the WAL with it. Until the run's budget
   * ends, then the next run looks again. A run's first look has none before it to compare with, so
   * the run looks twice, FirstLookMs apart: its first batch waits out a burst under way as every
   * later one does.
   */
  async function yieldToPipeline(): Promise<void> {
    const limit = config.RETENTION_YIELD_ROWS_PER_SECOND;
    if (limit <= 0) return;
    const waiting = () => !signal?.aborted && performance.now() < deadline;
    if (lastLook === undefined && waiting()) {
      lastLook = await look();
      await rest(FirstLookMs, signal);
      yieldedMs += FirstLookMs;
    }
    while (waiting() && (await pipelineRowsPerSecond()) > limit) {
      await rest(YieldMs, signal);
      yieldedMs += YieldMs;
    }
  }

  /**
   * Runs one step's batches until it reports nothing more. A batch that waited too long for a row
   * lock is rolled back and its step ends for this run: the next run finds the same rows.
   */
  async function step<C>(
    name: string,
    batch: (tx: SqlHandle, after: C | null) => Promise<{ next: C | null; more: boolean }>,
  ): Promise<void> {
    let after: C | null = null;
    while (!signal?.aborted && !more) {
      await yieldToPipeline();
      if (signal?.aborted) return;
      if (performance.now() >= deadline) {
        more = true;
        return;
      }
      let outcome: { next: C | null; more: boolean };
      const started = performance.now();
      try {
        outcome = await inBatch(sql, async (tx) => {
          const result = await batch(tx, after);
          await deps.onBatch?.(tx, name);
          return result;
        });
      } catch (error) {
        if ((error as { code?: string }).code !== LockNotAvailable) throw error;
        lockTimeouts++;
        deps.log.info({ step: name }, 'retention waited too long for a row lock; the next run takes it up');
        return;
      }
      batches++;
      if (!outcome.more) return;
      after = outcome.next;
      const restMs = restAfterBatch(performance.now() - started, config.RETENTION_DUTY_PERCENT);
      if (restMs > 0) await rest(restMs, signal);
    }
  }

  // Whole histories first: a body whose dispenses left with their emails' histories has nothing
  // left to check before it is emptied.
  if (config.RECORD_RETENTION_DAYS > 0) {
    await step<Cursor>('histories', async (tx, after) => {
      const r = await removeFinalHistories(tx, { days: config.RECORD_RETENTION_DAYS, batchSize, after });
      add('trackingEmails', r.emails);
      add('dispenses', r.dispenses);
      add('notifications', r.notifications);
      add('statusEvents', r.statusEvents);
      add('aalEvents', r.aalEvents);
      add('dispenseKeysKept', r.dispenseKeys);
      return { next: r.next, more: r.next !== null };
    });
  }
  if (config.INBOUND_BODY_RETENTION_DAYS > 0) {
    await step<Cursor>('inbound_bodies', async (tx, after) => {
      const r = await emptyInboundBodies(tx, { days: config.INBOUND_BODY_RETENTION_DAYS, batchSize, after });
      add('inboundBodies', r.emptied);
      return { next: r.next, more: r.next !== null };
    });
  }
  if (config.RECORD_RETENTION_DAYS > 0) {
    const days = config.RECORD_RETENTION_DAYS;
    await step<Cursor>('inbound_messages', async (tx, after) => {
      const r = await removeOldInboundMessages(tx, { days, batchSize, after });
      add('inboundMessages', r.messages);
      add('dispenses', r.dispenses);
      return { next: r.next, more: r.next !== null };
    });
    await step<null>('orphan_status_events', async (tx) => {
      const removed = await removeOrphanStatusEvents(tx, { days, batchSize });
      add('statusEvents', removed);
      return { next: null, more: removed >= batchSize };
    });
  }
  if (config.DISPENSE_KEY_RETENTION_DAYS > 0) {
    const days = config.DISPENSE_KEY_RETENTION_DAYS;
    await step<null>('dispense_keys', async (tx) => {
      const removed = await purgeDispenseKeys(tx, { days, batchSize });
      add('dispenseKeysPurged', removed);
      return { next: null, more: removed >= batchSize };
    });
  }
  const stopped = signal?.aborted ?? false;
  const removedAny = Object.values(counts).some((count) => count > 0);
  if (removedAny || lockTimeouts > 0) deps.log.info({ ...counts, batches, lockTimeouts, yieldedMs, stopped, more }, 'retention run');
  return { status: 'done', batches, stopped, more, lockTimeouts, yieldedMs, ...counts };
}
