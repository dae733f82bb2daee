// The fallback sweep: the safety net under the callbacks. It asks VA Notify about notifications that
// went silent (a callback can be lost), settles sends whose outcome was never recorded, replays
// temporary failures (VA Notify does not), and hands back AAL claims whose worker died. One sweep at
// a time across all instances. When callbacks arrive and no instance crashes, it finds nothing to do
// and makes no VA Notify request at all.
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { releaseExpiredAalLeases } from '../aal/repository.ts';
import type { Config } from '../config.ts';
import type { Sql } from '../db/connect.ts';
import { AdvisoryLock, withSessionLock } from '../db/locks.ts';
import { workClaimedBatch } from '../jobs/claimed-batch.ts';
import type { JobName } from '../jobs/runner.ts';
import type { Metrics } from '../metrics.ts';
import type { RateBudget } from '../sending/rate-budget.ts';
import { pauseSending, pauseStopsEveryRequest, sendingPausedUntil } from '../sending/va-notify-pause.ts';
import { newestUnstoredNotification, recordNotificationAccepted } from '../sending/repository.ts';
import type { VaNotifyClient, VaNotifyNotification } from '../sending/va-notify-client.ts';
import {
  applyPendingStatusEvents,
  expireOrphanedStatusEvents,
  recordStatusEvent,
  type ApplyOptions,
  type StatusEvent,
} from '../status/repository.ts';
import {
  chargeAdoptedSend,
  claimOrphanedEmails,
  claimStaleNotifications,
  expireOrphanClaims,
  releaseOrphanedEmail,
  requeueTemporaryFailures,
  type OrphanedEmail,
  type StaleNotification,
} from './repository.ts';

export interface SweepDeps {
  sql: Sql;
  config: Config;
  /** Absent when no VA Notify is configured (shadow and off modes): nothing is polled or looked up. */
  vaNotify?: VaNotifyClient;
  /** The VA Notify budget shared with the sender: every poll and lookup takes a token. */
  budget: RateBudget;
  log: Logger;
  /** Aborted at shutdown: no new request starts, and what is claimed but not asked about is left for the next sweep. */
  signal?: AbortSignal;
  metrics?: Pick<Metrics, 'polls' | 'statusEventsExpired'>;
  /** Tells the sender and the AAL worker that the sweep handed them work (the runner's wake). */
  wake?: (job: Extract<JobName, 'send' | 'aal'>) => void;
  /** Names this sweeper in the leases it takes, for operators. */
  instanceId?: string;
}

export interface SweepCounts {
  /** Notifications asked about (GET /v2/notifications/{id}) and answered with a status. */
  polled: number;
  /** Polls whose answer moved a notification's status forward. */
  statusesApplied: number;
  /** Notifications VA Notify no longer has (404 past its retention) and never finished: ended as expired. */
  expired: number;
  /** 404 for a notification younger than the retention: asked again after the next quiet period. */
  notFound: number;
  /** Polls and lookups VA Notify did not answer (timeouts, 5xx, 429): tried again at a later sweep. */
  errors: number;
  /** Orphaned sends VA Notify had: their notification was recorded, nothing was sent again. */
  adopted: number;
  /** Orphaned sends VA Notify did not have: back in the sender's queue. */
  released: number;
  /** Temporary failures put back in the sender's queue for another send. */
  replayed: number;
  /** Emails ended as failed because they had used all their attempts. */
  failed: number;
  /** AAL events whose worker's claim had expired, made due again. */
  aalReleased: number;
  /** Status events for a notification never stored, pending OrphanedStatusEventHours: removed. */
  statusEventsExpired: number;
  /** VA Notify rejected our credentials (401/403): no more requests were made in this run. */
  vaNotifyRejected: boolean;
  /** The run stopped early (shutdown); what it did not reach waits for the next sweep. */
  stopped: boolean;
}

export type SweepResult = ({ status: 'done' } & SweepCounts) | { status: 'already_running' };

/** Why a run stops calling VA Notify before its batches are done. */
type Halt = 'unauthorized' | 'rate_limited' | 'stopped';

/**
 * A status event whose notification was never stored waits this long before it expires: a send's
 * answer is stored within seconds, and an orphaned send is looked up by the next sweeps.
 */
export const OrphanedStatusEventHours = 24;

const DefaultSweeperId = `sweep-${process.pid}-${randomUUID().slice(0, 8)}`;

/** Only strings reach the status events: VA Notify's timestamps keep their microseconds that way. */
function text(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

function statusEventFrom(notificationId: string, n: VaNotifyNotification): StatusEvent {
  return {
    notificationId,
    status: n.status,
    statusReason: text(n.status_reason),
    reference: text(n.reference),
    createdAt: text(n.created_at),
    sentAt: text(n.sent_at),
    completedAt: text(n.completed_at),
    provider: text(n.sent_by),
  };
}

export async function runSweep(deps: SweepDeps): Promise<SweepResult> {
  const locked = await withSessionLock(deps.sql, AdvisoryLock.sweep, () => sweep(deps));
  if (locked === undefined) {
    deps.log.info('another instance is sweeping; this run did nothing');
    return { status: 'already_running' };
  }
  return { status: 'done', ...locked.result };
}

/** One sweep: what it has counted, and whether it has stopped calling VA Notify. */
interface SweepRun {
  deps: SweepDeps;
  counts: SweepCounts;
  apply: ApplyOptions;
  halt: Halt | undefined;
  /** AAL events written by the statuses this sweep applied: the AAL worker is woken for them. */
  aalEventsCreated: number;
}

async function sweep(deps: SweepDeps): Promise<SweepCounts> {
  const { config, log } = deps;
  const run: SweepRun = {
    deps,
    counts: {
      polled: 0,
      statusesApplied: 0,
      expired: 0,
      notFound: 0,
      errors: 0,
      adopted: 0,
      released: 0,
      replayed: 0,
      failed: 0,
      aalReleased: 0,
      statusEventsExpired: 0,
      vaNotifyRejected: false,
      stopped: false,
    },
    apply: { replayDelayMinutes: config.REPLAY_DELAY_MINUTES, sendMaxAttempts: config.SEND_MAX_ATTEMPTS, log },
    halt: undefined,
    aalEventsCreated: 0,
  };
  const callsVaNotify = await vaNotifyAvailable(deps);
  if (callsVaNotify && !stopping(run)) await pollStaleNotifications(run);
  if (callsVaNotify && !stopping(run)) await settleOrphanedSends(run);
  if (!deps.signal?.aborted) await replayTemporaryFailures(run);
  // AAL claims whose worker died. Events waiting out a backoff are the AAL worker's own business:
  // it claims every pending event whose time has come.
  if (!deps.signal?.aborted) run.counts.aalReleased = await releaseExpiredAalLeases(deps.sql);
  if (!deps.signal?.aborted) await expireUnstoredStatusEvents(run);
  return finish(run);
}

/** True once the run has stopped calling VA Notify: refused, over its limit, or shutting down. */
function stopping(run: SweepRun): boolean {
  if (run.deps.signal?.aborted) run.halt ??= 'stopped';
  return run.halt !== undefined;
}

/** Works the claimed items a few at a time until done or halted; the first error (not a shutdown's) is rethrown once every lane ended. */
async function inLanes<T>(run: SweepRun, items: readonly T[], work: (item: T) => Promise<void>): Promise<void> {
  const { failure } = await workClaimedBatch(items, {
    concurrency: run.deps.config.SEND_CONCURRENCY,
    stopped: () => stopping(run),
    work: async (item) => {
      try {
        await work(item);
      } catch (error) {
        if (!run.deps.signal?.aborted) throw error;
        run.halt ??= 'stopped';
      }
    },
  });
  if (failure) throw failure.error;
}

const pollMetric = (run: SweepRun, outcome: string) => run.deps.metrics?.polls.inc({ outcome });

/**
 * VA Notify refused our credentials: a person must act (key rotation, service id, clock), and every
 * later request would fail the same way, the senders' too: they pause as if they had met it themselves.
 */
async function rejected(run: SweepRun, status: number, message: string, during: string): Promise<void> {
  run.halt = 'unauthorized';
  run.counts.vaNotifyRejected = true;
  const pausedUntil = await pauseSending(run.deps.sql, run.deps.config.SEND_PAUSE_SECONDS, 'credentials', message);
  run.deps.log.error(
    { status, vaNotifyMessage: message, during, pausedUntil },
    'VA Notify rejected our credentials: the sweep stopped polling and sending is paused on every instance; check VA_NOTIFY_API_KEY, VA_NOTIFY_SERVICE_ID and the clock',
  );
}

/** Step 1: notifications whose callbacks never came, asked about at VA Notify. */
async function pollStaleNotifications(run: SweepRun): Promise<void> {
  const { sql, config } = run.deps;
  const stale = await claimStaleNotifications(sql, {
    batchSize: config.SWEEP_BATCH_SIZE,
    pollAfterMinutes: config.STATUS_POLL_AFTER_MINUTES,
    retentionDays: config.VA_NOTIFY_RETENTION_DAYS,
  });
  await inLanes(run, stale, (notification) => pollOne(run, notification));
}

async function pollOne(run: SweepRun, notification: StaleNotification): Promise<void> {
  const { sql, log, signal } = run.deps;
  const ids = { notificationId: notification.id, emailId: notification.trackingEmailId };
  await run.deps.budget.take(signal);
  const answer = await run.deps.vaNotify!.getNotification(notification.id);
  switch (answer.kind) {
    case 'accepted': {
      run.counts.polled++;
      const result = await recordStatusEvent(sql, statusEventFrom(notification.id, answer.body), { ...run.apply, source: 'poll' });
      if (result.outcome === 'applied') run.counts.statusesApplied++;
      if (result.aalEventCreated) run.aalEventsCreated++;
      pollMetric(run, result.outcome);
      return;
    }
    case 'not_found':
      return notFound(run, notification);
    case 'unauthorized':
      pollMetric(run, 'unauthorized');
      return rejected(run, answer.status, answer.message, 'status poll');
    case 'rate_limited':
      run.counts.errors++;
      pollMetric(run, 'rate_limited');
      // The budget keeps us under the limit; a 429 means another client shares it. Back off until the next sweep.
      run.halt ??= 'rate_limited';
      log.warn({ ...ids, vaNotifyMessage: answer.message }, 'VA Notify rate limit reached; polling resumes at the next sweep');
      return;
    case 'transient':
    case 'rejected':
      run.counts.errors++;
      pollMetric(run, answer.kind === 'transient' ? 'error' : 'rejected');
      log.warn({ ...ids, reason: answer.kind === 'transient' ? answer.reason : answer.message }, 'status poll failed; asked again later');
      return;
  }
}

/** VA Notify does not know the notification: not yet (asked again later), or no longer, past its retention. */
async function notFound(run: SweepRun, notification: StaleNotification): Promise<void> {
  const { sql, config, log } = run.deps;
  const ids = { notificationId: notification.id, emailId: notification.trackingEmailId };
  if (!notification.pastRetention) {
    run.counts.notFound++;
    pollMetric(run, 'not_found');
    log.warn({ ...ids, polls: notification.pollCount }, 'VA Notify does not know this notification yet; asked again later');
    return;
  }
  // VA Notify moved it to history without a final status we heard of: it will never answer
  // again, so it ends here instead of being polled forever.
  const result = await recordStatusEvent(
    sql,
    {
      notificationId: notification.id,
      status: 'expired',
      statusReason: `VA Notify answered 404 after its ${config.VA_NOTIFY_RETENTION_DAYS}-day retention; no final status was received`,
    },
    { ...run.apply, source: 'poll' },
  );
  if (result.outcome === 'applied') run.counts.expired++;
  pollMetric(run, 'expired');
  log.warn(ids, 'notification expired: VA Notify no longer has it and never reported a final status');
}

/** Step 2: sends whose outcome was never recorded, looked up at VA Notify by reference. */
async function settleOrphanedSends(run: SweepRun): Promise<void> {
  const { sql, config } = run.deps;
  const sweeperId = run.deps.instanceId ?? DefaultSweeperId;
  const orphans = await claimOrphanedEmails(sql, {
    batchSize: config.SWEEP_BATCH_SIZE,
    leaseSeconds: config.SEND_LEASE_SECONDS,
    sweeperId,
  });
  try {
    await inLanes(run, orphans, (email) => settleOrphan(run, email, sweeperId));
  } finally {
    // Orphans not settled are left to the next sweep (or a sender) at once, not held for a lease.
    await expireOrphanClaims(sql, { emailIds: orphans.map((e) => e.id), sweeperId });
  }
}

async function settleOrphan(run: SweepRun, email: OrphanedEmail, sweeperId: string): Promise<void> {
  const ids = { emailId: email.id, attempt: email.attempts };
  await run.deps.budget.take(run.deps.signal);
  const found = await run.deps.vaNotify!.findByReference(email.id);
  if (found.kind !== 'accepted') {
    // Unknown whether VA Notify has it: sending now could send twice, so it stays an orphan (its
    // claim expires when the step ends).
    if (found.kind === 'unauthorized') return rejected(run, found.status, found.message, 'orphan lookup');
    run.counts.errors++;
    if (found.kind === 'rate_limited') run.halt ??= 'rate_limited';
    run.deps.log.warn(
      { ...ids, reason: found.kind === 'transient' ? found.reason : found.message },
      'orphaned send lookup failed; looked up again later',
    );
    return;
  }
  const newest = await newestUnstoredNotification(run.deps.sql, email.id, found.body);
  if (newest === undefined) await releaseOrphan(run, email, sweeperId);
  else await adoptOrphanSend(run, email, sweeperId, newest);
}

/** VA Notify does not have the orphan's send: back to the sender's queue, or failed with its attempts used up. */
async function releaseOrphan(run: SweepRun, email: OrphanedEmail, sweeperId: string): Promise<void> {
  const ids = { emailId: email.id, attempt: email.attempts };
  const state = await releaseOrphanedEmail(run.deps.sql, { emailId: email.id, sweeperId, maxAttempts: run.deps.config.SEND_MAX_ATTEMPTS });
  if (state === 'queued') {
    run.counts.released++;
    run.deps.log.info(ids, 'orphaned send: VA Notify does not have it; queued for sending');
  } else if (state === 'failed') {
    run.counts.failed++;
    run.deps.log.warn(ids, 'orphaned send: VA Notify does not have it and its attempts are used up; failed');
  }
}

/** The orphan's send went through and only its answer was lost: record it as the sender would have. */
async function adoptOrphanSend(
  run: SweepRun,
  email: OrphanedEmail,
  sweeperId: string,
  newest: VaNotifyNotification & { id: string },
): Promise<void> {
  const { sql, log } = run.deps;
  const ids = { emailId: email.id, attempt: email.attempts };
  const attempt = await sql.begin(async (tx) => {
    const charged = await chargeAdoptedSend(tx, { emailId: email.id, sweeperId });
    if (charged === undefined) return undefined;
    await recordNotificationAccepted(tx, { emailId: email.id, notificationId: newest.id, attempt: charged });
    const pending = await applyPendingStatusEvents(tx, newest.id, run.apply);
    if (pending.aalEventCreated) run.aalEventsCreated++;
    return charged;
  });
  if (attempt === undefined) {
    log.info(ids, 'orphaned send: claimed again since the lookup; left to that claim');
    return;
  }
  run.counts.adopted++;
  log.warn({ ...ids, attempt, notificationId: newest.id }, 'orphaned send: VA Notify already had it; recorded instead of sending again');
  // The listing already says where the notification stands: no need to poll it later.
  const result = await recordStatusEvent(sql, statusEventFrom(newest.id, newest), { ...run.apply, source: 'poll' });
  if (result.aalEventCreated) run.aalEventsCreated++;
}

/** Step 3: temporary failures due for a replay. No request: the sender does the sending. */
async function replayTemporaryFailures(run: SweepRun): Promise<void> {
  const { replayed, failed } = await requeueTemporaryFailures(run.deps.sql, {
    batchSize: run.deps.config.SWEEP_BATCH_SIZE,
    maxAttempts: run.deps.config.SEND_MAX_ATTEMPTS,
  });
  run.counts.replayed = replayed.length;
  run.counts.failed += failed.length;
  for (const emailId of replayed) run.deps.log.info({ emailId }, 'temporary failure: queued to be sent again');
  for (const emailId of failed) run.deps.log.warn({ emailId }, 'temporary failure with all attempts used: failed');
}

/**
 * Step 5: status events for notifications never stored that no email adopted by their reference:
 * they can never apply. An orphaned send of ours is settled by step 2 long before.
 */
async function expireUnstoredStatusEvents(run: SweepRun): Promise<void> {
  const expired = await expireOrphanedStatusEvents(run.deps.sql, OrphanedStatusEventHours);
  run.counts.statusEventsExpired = expired;
  if (expired === 0) return;
  run.deps.metrics?.statusEventsExpired.inc(expired);
  run.deps.log.warn({ count: expired, olderThanHours: OrphanedStatusEventHours }, 'status events for notifications never stored expired');
}

/** Wakes the jobs the sweep handed work to, and logs a run that did anything. */
function finish(run: SweepRun): SweepCounts {
  const { counts, deps } = run;
  counts.stopped = run.halt === 'stopped' || deps.signal?.aborted === true;
  if (counts.released > 0 || counts.replayed > 0) deps.wake?.('send');
  if (counts.aalReleased > 0 || run.aalEventsCreated > 0) deps.wake?.('aal');
  const { vaNotifyRejected, stopped, ...numbers } = counts;
  if (Object.values(numbers).some((n) => n > 0) || vaNotifyRejected || stopped) deps.log.info(counts, 'sweep finished');
  return counts;
}

/**
 * VA Notify is asked only in live mode, with a client, and while no pause says every request would
 * fail: refused credentials or a wrong URL. A pause for VA Notify's rate or daily send limit, or for
 * an outage, holds the sends only: a lost callback is still polled, not left until the pause ends
 * (for the daily limit, the next UTC day).
 */
async function vaNotifyAvailable(deps: SweepDeps): Promise<boolean> {
  if (deps.vaNotify === undefined || deps.config.DELIVERY_MODE !== 'live') return false;
  const pause = await sendingPausedUntil(deps.sql);
  if (pause && pauseStopsEveryRequest(pause.kind)) {
    deps.log.warn(
      { pausedUntil: pause.until, kind: pause.kind, reason: pause.reason },
      'sending is paused: the sweep asks VA Notify nothing until the pause ends',
    );
    return false;
  }
  return true;
}
