// The sender: claims due tracking emails, sends each through VA Notify by the veteran's ICN, and
// records VA Notify's notification id. Exactly-once towards the veteran rests on three rules:
// - the claim is committed before the request, and the outcome recorded after it, outside any transaction;
// - an email whose claim expired with no outcome (a crash, or an answer that never came) is looked up
//   by reference at VA Notify before anything is sent again;
// - every VA Notify request takes a token from the budget shared by all instances.
import { randomUUID } from 'node:crypto';
import pRetry, { AbortError } from 'p-retry';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { Sql } from '../db/connect.ts';
import { applyPendingStatusEvents } from '../status/repository.ts';
import { pauseSending, sendingPausedUntil, type RateBudget } from './rate-budget.ts';
import {
  claimDueEmails,
  recordEmailFailed,
  recordNotificationAccepted,
  recordRetryLater,
  releaseClaimedEmails,
  storedNotificationIds,
  type ClaimedEmail,
} from './repository.ts';
import type { SendOutcome, VaNotifyClient } from './va-notify-client.ts';

export interface SendResult {
  sent: number;
  /** Found already at VA Notify (a lost answer or a crash) and recorded instead of sent again. */
  recovered: number;
  retried: number;
  failed: number;
  /** Claimed but handed back unsent: sending paused, or shutdown. */
  skipped: number;
  paused: boolean;
}

export type SendOutcomeLabel = 'sent' | 'recovered' | 'retried' | 'failed' | 'released';

export interface SenderDeps {
  sql: Sql;
  config: Config;
  vaNotify: VaNotifyClient;
  budget: RateBudget;
  log: Logger;
  signal?: AbortSignal;
  /** Names this instance in the lease, for operators. */
  instanceId?: string;
  onOutcome?: (outcome: SendOutcomeLabel) => void;
  /** In-process retries of one send (the durable ones follow); tests shorten the delays. */
  quickRetry?: { retries: number; minTimeoutMs: number };
}

/** A send VA Notify refused for good (400), or refused our credentials (401/403). */
class PermanentSendError extends Error {
  readonly outcome: Extract<SendOutcome, { kind: 'rejected' | 'unauthorized' | 'not_found' }>;
  constructor(outcome: PermanentSendError['outcome']) {
    super(outcome.message);
    this.outcome = outcome;
  }
}

/** A send that may succeed later: 5xx, 429, timeouts, connection errors. */
class TransientSendError extends Error {
  /** True when the request may have reached VA Notify although no answer came back. */
  readonly ambiguous: boolean;
  constructor(reason: string, ambiguous: boolean) {
    super(reason);
    this.ambiguous = ambiguous;
  }
}

/** Shutdown came before this email's request was made: nothing was sent, the claim can go back. */
class StoppedBeforeSend extends Error {}

const defaultInstanceId = `${process.pid}-${randomUUID().slice(0, 8)}`;

export async function runSend(deps: SenderDeps): Promise<SendResult> {
  const { sql, config, log } = deps;
  const result: SendResult = { sent: 0, recovered: 0, retried: 0, failed: 0, skipped: 0, paused: false };
  // shadow records emails at grouping and off never groups: neither mode calls VA Notify.
  if (config.DELIVERY_MODE !== 'live') return result;
  const pause = await sendingPausedUntil(sql);
  if (pause) return { ...result, paused: true };

  const claimed = await claimDueEmails(sql, {
    batchSize: config.SEND_BATCH_SIZE,
    leaseSeconds: config.SEND_LEASE_SECONDS,
    instanceId: deps.instanceId ?? defaultInstanceId,
  });
  if (claimed.length === 0) return result;

  const queue = [...claimed];
  const unstarted = () => queue.splice(0).map((email) => email.id);
  let pausedUntil: Date | undefined;

  const count = (label: SendOutcomeLabel) => {
    deps.onOutcome?.(label);
    if (label === 'released') result.skipped++;
    else result[label]++;
  };

  async function worker() {
    for (let email = queue.shift(); email; email = queue.shift()) {
      if (deps.signal?.aborted || pausedUntil) {
        queue.unshift(email);
        return;
      }
      const label = await sendOne(deps, email).catch(async (error: unknown) => {
        if (error instanceof PermanentSendError && error.outcome.kind === 'unauthorized') {
          pausedUntil = await pauseSending(sql, config.SEND_PAUSE_SECONDS, error.message);
          // An operator must act: new or rotated credentials, or a clock fix. No email is failed for it.
          log.error(
            { status: error.outcome.status, vaNotifyMessage: error.message, pausedUntil },
            'VA Notify rejected our credentials: sending is paused on every instance; check VA_NOTIFY_API_KEY, VA_NOTIFY_SERVICE_ID and the clock',
          );
          await releaseClaimedEmails(sql, [email.id], pausedUntil);
          return 'released' as const;
        }
        if (error instanceof StoppedBeforeSend) {
          await releaseClaimedEmails(sql, [email.id]);
          return 'released' as const;
        }
        throw error;
      });
      count(label);
    }
  }

  try {
    await Promise.all(Array.from({ length: Math.min(config.SEND_CONCURRENCY, claimed.length) }, worker));
  } finally {
    // Claims no worker started (shutdown or pause) go back as they were, attempt refunded.
    const leftOver = unstarted();
    const released = await releaseClaimedEmails(sql, leftOver, pausedUntil);
    for (let i = 0; i < released; i++) count('released');
  }
  result.paused = pausedUntil !== undefined;
  if (claimed.length > 0) log.info({ ...result, claimed: claimed.length }, 'send run finished');
  return result;
}

async function sendOne(deps: SenderDeps, email: ClaimedEmail): Promise<SendOutcomeLabel> {
  const { sql, config, log } = deps;
  if (email.orphaned && (await recoverFromVaNotify(deps, email))) return 'recovered';

  let lastWasAmbiguous = false;
  try {
    const notificationId = await pRetry(
      async () => {
        // A send whose answer was lost may have been accepted: find it rather than send twice.
        if (lastWasAmbiguous && (await recoverFromVaNotify(deps, email))) return null;
        await deps.budget.take(deps.signal).catch((error: unknown) => {
          throw deps.signal?.aborted ? new AbortError(new StoppedBeforeSend()) : error;
        });
        const outcome = await deps.vaNotify.sendEmail({
          icn: email.patient_icn,
          reference: email.id,
          personalisation: email.personalisation,
        });
        switch (outcome.kind) {
          case 'accepted':
            return outcome.notificationId;
          case 'rejected':
          case 'unauthorized':
          case 'not_found':
            throw new AbortError(new PermanentSendError(outcome));
          case 'rate_limited':
            throw new TransientSendError(`VA Notify rate limit: ${outcome.message}`, false);
          case 'transient':
            // Without a status, no answer came: the request may still have been processed.
            throw new TransientSendError(outcome.reason, outcome.status === undefined);
        }
      },
      {
        retries: deps.quickRetry?.retries ?? 2,
        minTimeout: deps.quickRetry?.minTimeoutMs ?? 500,
        factor: 3,
        randomize: true,
        // Not p-retry's `signal`: it would abandon a request already on its way to VA Notify, whose
        // answer must be recorded. Shutdown only stops further attempts.
        shouldRetry: () => !deps.signal?.aborted,
        onFailedAttempt: ({ error }) => {
          lastWasAmbiguous = error instanceof TransientSendError && error.ambiguous;
        },
      },
    );
    if (notificationId === null) return 'recovered';
    await storeNotification(sql, config, email.id, notificationId, email.attempts);
    log.info({ emailId: email.id, notificationId, attempt: email.attempts }, 'tracking email sent');
    return 'sent';
  } catch (error) {
    if (error instanceof PermanentSendError && error.outcome.kind !== 'unauthorized') {
      const reason = `VA Notify answered ${error.outcome.status}: ${error.message}`;
      await recordEmailFailed(sql, email.id, reason);
      log.warn({ emailId: email.id, status: error.outcome.status, reason }, 'tracking email failed: VA Notify refused it');
      return 'failed';
    }
    if (error instanceof TransientSendError) {
      // An unanswered last try leaves the claim to expire instead: it comes back as an orphan and is
      // looked up by reference before it is sent again.
      if (error.ambiguous) {
        log.warn({ emailId: email.id, reason: error.message }, 'send outcome unknown; the email is looked up by reference when its lease expires');
        return 'retried';
      }
      const next = await recordRetryLater(sql, {
        emailId: email.id,
        error: error.message,
        maxAttempts: config.SEND_MAX_ATTEMPTS,
        baseSeconds: config.SEND_RETRY_BASE_SECONDS,
      });
      log.warn({ emailId: email.id, attempt: email.attempts, reason: error.message, next }, 'send failed for now');
      return next === 'failed' ? 'failed' : 'retried';
    }
    throw error;
  }
}

/**
 * Asks VA Notify whether it already has a notification for this email that we never stored, and
 * records it if so. Returns false when there is none (the email may be sent) and throws a
 * TransientSendError when VA Notify cannot tell us (sending now could send twice).
 */
async function recoverFromVaNotify(deps: SenderDeps, email: ClaimedEmail): Promise<boolean> {
  await deps.budget.take(deps.signal);
  const found = await deps.vaNotify.findByReference(email.id);
  if (found.kind === 'unauthorized') throw new AbortError(new PermanentSendError(found));
  if (found.kind !== 'accepted') {
    throw new TransientSendError(`looking up the email by reference: ${found.kind === 'transient' ? found.reason : found.message}`, true);
  }
  const known = await storedNotificationIds(deps.sql, email.id);
  const unknown = found.body.filter((n) => !known.has(n.id));
  const newest = unknown.sort((a, b) => String(b.created_at ?? '').localeCompare(String(a.created_at ?? '')))[0];
  if (!newest) return false;
  await storeNotification(deps.sql, deps.config, email.id, newest.id, email.attempts);
  deps.log.warn({ emailId: email.id, notificationId: newest.id }, 'VA Notify already had this email: recorded it instead of sending again');
  return true;
}

/** Stores the notification id and, in the same transaction, applies status events that arrived first. */
async function storeNotification(sql: Sql, config: Config, emailId: string, notificationId: string, attempt: number) {
  await sql.begin(async (tx) => {
    await recordNotificationAccepted(tx, { emailId, notificationId, attempt });
    await applyPendingStatusEvents(tx, notificationId, {
      replayDelayMinutes: config.REPLAY_DELAY_MINUTES,
      sendMaxAttempts: config.SEND_MAX_ATTEMPTS,
    });
  });
}
