// The sender: claims due tracking emails, sends each through VA Notify by the veteran's ICN, and
// records VA Notify's notification id. Exactly-once towards the veteran rests on these rules:
// - the claim is committed before the request, and the outcome recorded after it, outside any transaction;
// - each claim has its own token, and the lease is renewed with it right before every request, so a
//   sender whose lease ran out makes no request for an email someone else has claimed since;
// - an email whose claim expired with no outcome (a crash, or an answer that never came) is looked up
//   by reference at VA Notify before anything is sent again;
// - every VA Notify request takes a token from the budget shared by all instances.
import { randomUUID } from 'node:crypto';
import pRetry, { AbortError } from 'p-retry';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { Sql } from '../db/connect.ts';
import { AvailabilityWatch } from '../jobs/availability-watch.ts';
import { workClaimedBatch, type ClaimOutcome } from '../jobs/claimed-batch.ts';
import { applyPendingStatusEvents } from '../status/repository.ts';
import type { RateBudget } from './rate-budget.ts';
import { confirmSendingResumed, pauseSending, sendingPauseState, type SendingPauseKind } from './va-notify-pause.ts';
import {
  claimDueEmails,
  newestUnstoredNotification,
  recordEmailFailed,
  recordNotificationAccepted,
  recordRetryLater,
  releaseClaimedEmails,
  releaseClaimedOrphans,
  renewLease,
  type ClaimedEmail,
  type SendClaim,
} from './repository.ts';
import type { SendOutcome, VaNotifyClient } from './va-notify-client.ts';

export interface SendResult {
  sent: number;
  /** Found already at VA Notify (a lost answer or a crash) and recorded instead of sent again. */
  recovered: number;
  retried: number;
  failed: number;
  /** Claimed but not sent by this run: handed back (sending paused, or shutdown), or claimed again
   *  by another sender after this claim's lease ran out. */
  released: number;
  paused: boolean;
}

export type SendOutcomeLabel = 'sent' | 'recovered' | ClaimOutcome;

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

/** A send VA Notify refused for good (a 400, or another 4xx that is about the email itself). */
class PermanentSendError extends Error {
  readonly outcome: Extract<SendOutcome, { kind: 'rejected' }>;
  constructor(outcome: PermanentSendError['outcome']) {
    super(outcome.message);
    this.outcome = outcome;
  }
}

/**
 * VA Notify refused the request for a reason that is no email's fault and that every instance would
 * meet: our credentials (401/403), no send endpoint at the configured URL (404), or its per-minute or
 * daily limit (429). Sending pauses everywhere; no email is charged an attempt or failed for it.
 */
class SendingHalted extends Error {
  readonly outcome: Extract<SendOutcome, { kind: 'unauthorized' | 'not_found' | 'rate_limited' }>;
  constructor(outcome: SendingHalted['outcome']) {
    super(outcome.message);
    this.outcome = outcome;
  }
}

/** A send that may succeed later: 5xx, timeouts, connection errors. */
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

/** The email no longer carries this run's claim: its lease ran out and someone else claimed it. */
class ClaimLost extends Error {}

/** An orphan VA Notify has no notification for, whose claims have used every attempt. */
class AttemptsUsedUp extends Error {}

/** A send that got no usable answer while VA Notify looks down: no email's fault, so none is charged. */
class VaNotifyUnavailable extends Error {
  readonly ambiguous: boolean;
  constructor(cause: TransientSendError) {
    super(cause.message);
    this.ambiguous = cause.ambiguous;
  }
}

const DefaultInstanceId = `${process.pid}-${randomUUID().slice(0, 8)}`;

/**
 * A transient outcome after which VA Notify may hold the email: no answer at all, a gateway's 502 or
 * 504 (the upstream may have accepted it before the gateway gave up), or a 2xx whose body could not
 * be read (it did accept it). Other statuses come from VA Notify itself, which did not take it.
 */
function mayHaveBeenAccepted(status: number | undefined): boolean {
  return status === undefined || status === 502 || status === 504 || (status >= 200 && status < 300);
}

export async function runSend(deps: SenderDeps): Promise<SendResult> {
  const { sql, config, log } = deps;
  const result: SendResult = { sent: 0, recovered: 0, retried: 0, failed: 0, released: 0, paused: false };
  // shadow records emails at grouping and off never groups: neither mode calls VA Notify.
  if (config.DELIVERY_MODE !== 'live') return result;
  // Read before the claim: a paused instance claims nothing, and a failed read leaves nothing claimed.
  const pause = await sendingPauseState(sql);
  if (pause === 'paused') return { ...result, paused: true };
  const claim: SendClaim = {
    token: randomUUID(),
    instanceId: deps.instanceId ?? DefaultInstanceId,
    leaseSeconds: config.SEND_LEASE_SECONDS,
  };
  const claimed = await claimDueEmails(sql, { batchSize: config.SEND_BATCH_SIZE, claim });
  if (claimed.length === 0) return result;

  const run: SendRun = {
    deps,
    claim,
    // VA Notify looks down after emails in a row get no answer (src/jobs/availability-watch.ts).
    watch: new AvailabilityWatch(pause === 'ended', () => confirmSendingResumed(sql)),
    mayBeAtVaNotify: new Set(claimed.filter((email) => email.orphaned).map((email) => email.id)),
    pausedUntil: undefined,
    unavailablePauseTaken: false,
  };
  const count = (label: SendOutcomeLabel, n = 1) => {
    for (let i = 0; i < n; i++) {
      deps.onOutcome?.(label);
      result[label]++;
    }
  };
  const end = await workClaimedBatch(claimed, {
    concurrency: config.SEND_CONCURRENCY,
    stopped: () => deps.signal?.aborted === true || run.pausedUntil !== undefined,
    work: async (email) => count(await sendOne(run, email).catch((error: unknown) => handBackOnHalt(run, email, error))),
  });
  // Claims no lane started (shutdown, pause, or a failure) go back as they were, attempt refunded.
  count(
    'released',
    await handBack(
      run,
      end.unstarted.map((email) => email.id),
    ),
  );
  if (end.failure) throw end.failure.error;
  result.paused = run.pausedUntil !== undefined;
  log.info({ ...result, claimed: claimed.length }, 'send run finished');
  return result;
}

/** One send run's claim, and what its emails have learned that the others must act on. */
interface SendRun {
  deps: SenderDeps;
  claim: SendClaim;
  watch: AvailabilityWatch;
  /**
   * Emails VA Notify may already have: orphans until a lookup finds nothing, and any email after a
   * send whose answer was lost. Handed back, they stay orphans, so that they are looked up first.
   */
  mayBeAtVaNotify: Set<string>;
  /** Set once this run paused sending: no lane starts another email. */
  pausedUntil: Date | undefined;
  unavailablePauseTaken: boolean;
}

/** Hands claims back, each as what it is: an email VA Notify may have stays an orphan. */
async function handBack(run: SendRun, emailIds: string[], delaySeconds = 0): Promise<number> {
  const { sql } = run.deps;
  const orphans = emailIds.filter((id) => run.mayBeAtVaNotify.has(id));
  const others = emailIds.filter((id) => !run.mayBeAtVaNotify.has(id));
  return (
    (await releaseClaimedOrphans(sql, orphans, run.claim, delaySeconds)) +
    (await releaseClaimedEmails(sql, others, run.claim, delaySeconds))
  );
}

/**
 * An email whose send stopped for no fault of its own: VA Notify down or refusing every send (sending
 * pauses on every instance), shutdown before its request, or its claim lost to another. Released.
 */
async function handBackOnHalt(run: SendRun, email: ClaimedEmail, error: unknown): Promise<SendOutcomeLabel> {
  const { sql, config, log } = run.deps;
  if (error instanceof VaNotifyUnavailable) {
    if (!run.unavailablePauseTaken) {
      run.unavailablePauseTaken = true;
      run.pausedUntil = await pauseSending(
        sql,
        config.SEND_UNAVAILABLE_PAUSE_SECONDS,
        'unavailable',
        `VA Notify unavailable: ${error.message}`,
      );
      log.error(
        { reason: error.message, pausedUntil: run.pausedUntil },
        'VA Notify is not answering: sending is paused on every instance; no email is charged for it',
      );
    }
    // Due after the first retry delay rather than at once, so that the next probe is another
    // email: if the fault was this email's own, it does not hold every other email back.
    await handBack(run, [email.id], config.SEND_RETRY_BASE_SECONDS);
    return 'released';
  }
  if (error instanceof SendingHalted) {
    run.pausedUntil = await pauseSending(sql, pauseSeconds(config, error.outcome), pauseKind(error.outcome), error.message);
    logHalt(log, error.outcome, run.pausedUntil);
    await handBack(run, [email.id]);
    return 'released';
  }
  if (error instanceof StoppedBeforeSend) {
    await handBack(run, [email.id]);
    return 'released';
  }
  if (error instanceof ClaimLost) {
    log.warn({ emailId: email.id }, 'send claim lost: the lease ran out and the email was claimed again; left to that claim');
    return 'released';
  }
  throw error;
}

/** How long a halt pauses sending: the day's limit lasts until VA Notify's day ends (UTC). */
function pauseSeconds(config: Config, outcome: SendingHalted['outcome']): number {
  if (outcome.kind !== 'rate_limited') return config.SEND_PAUSE_SECONDS;
  if (!outcome.daily) return config.SEND_RATE_LIMIT_PAUSE_SECONDS;
  const now = new Date();
  const nextUtcDay = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
  return Math.ceil((nextUtcDay - now.getTime()) / 1000);
}

/** What the halt says of VA Notify's other endpoints: the sweep asks on through a limit's pause only. */
function pauseKind(outcome: SendingHalted['outcome']): SendingPauseKind {
  switch (outcome.kind) {
    case 'unauthorized':
      return 'credentials';
    case 'not_found':
      return 'no_endpoint';
    case 'rate_limited':
      return outcome.daily ? 'daily_limit' : 'rate_limit';
  }
}

function logHalt(log: Logger, outcome: SendingHalted['outcome'], pausedUntil: Date): void {
  const fields = { status: outcome.status, vaNotifyMessage: outcome.message, pausedUntil };
  switch (outcome.kind) {
    case 'unauthorized':
      // An operator must act: new or rotated credentials, or a clock fix.
      log.error(
        fields,
        'VA Notify rejected our credentials: sending is paused on every instance; check VA_NOTIFY_API_KEY, VA_NOTIFY_SERVICE_ID and the clock',
      );
      break;
    case 'not_found':
      // The send endpoint's path names no email: a 404 means the URL is wrong, not the email.
      log.error(
        fields,
        'VA Notify has no send endpoint at the configured URL: sending is paused on every instance; check VA_NOTIFY_BASE_URL',
      );
      break;
    case 'rate_limited':
      if (outcome.daily)
        log.error(fields, "VA Notify's daily send limit is reached: sending is paused on every instance until the next UTC day");
      else
        log.warn(
          fields,
          "VA Notify's rate limit was exceeded: sending is paused on every instance; VA_NOTIFY_RATE_LIMIT_PER_MINUTE may be above this service's limit",
        );
      break;
  }
}

async function sendOne(run: SendRun, email: ClaimedEmail): Promise<SendOutcomeLabel> {
  const { deps, claim, mayBeAtVaNotify, watch } = run;
  const { sql, config, log } = deps;

  /** Every request takes a budget token, then renews the claim: no request once the claim is lost. */
  async function beforeRequest(): Promise<void> {
    await deps.budget.take(deps.signal).catch((error: unknown) => {
      throw deps.signal?.aborted ? new AbortError(new StoppedBeforeSend()) : error;
    });
    if (!(await renewLease(sql, email.id, claim))) throw new AbortError(new ClaimLost());
  }

  try {
    const notificationId = await pRetry(
      async () => {
        // An orphan's last send may have been accepted, and so may a send whose answer was lost:
        // find it at VA Notify rather than send twice. Only a lookup that finds nothing clears this.
        if (mayBeAtVaNotify.has(email.id)) {
          await beforeRequest();
          if (await recoverFromVaNotify(deps, email)) return null;
          mayBeAtVaNotify.delete(email.id);
          // Nothing was sent. Each lost claim was charged an attempt, so an email whose sends never
          // get an answer still ends.
          if (email.attempts > config.SEND_MAX_ATTEMPTS) throw new AbortError(new AttemptsUsedUp());
        }
        await beforeRequest();
        const outcome = await deps.vaNotify.sendEmail({
          icn: email.patient_icn,
          reference: email.id,
          personalisation: email.personalisation,
        });
        switch (outcome.kind) {
          case 'accepted':
            return outcome.notificationId;
          case 'rejected':
            throw new AbortError(new PermanentSendError(outcome));
          case 'unauthorized':
          case 'not_found':
          case 'rate_limited':
            // Another try now would meet the same answer, and a 429 counts against the limit too.
            throw new AbortError(new SendingHalted(outcome));
          case 'transient':
            throw new TransientSendError(outcome.reason, mayHaveBeenAccepted(outcome.status));
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
          if (error instanceof TransientSendError && error.ambiguous) mayBeAtVaNotify.add(email.id);
        },
      },
    );
    // The outcome is recorded before anything else is written: VA Notify has the email.
    if (notificationId !== null) await storeNotification(sql, config, email.id, notificationId, email.attempts);
    await watch.answered();
    if (notificationId === null) return 'recovered';
    log.info({ emailId: email.id, notificationId, attempt: email.attempts }, 'tracking email sent');
    return 'sent';
  } catch (error) {
    if (error instanceof PermanentSendError) {
      const reason = `VA Notify answered ${error.outcome.status}: ${error.message}`;
      await recordEmailFailed(sql, email.id, claim, reason);
      await watch.answered();
      log.warn({ emailId: email.id, status: error.outcome.status, reason }, 'tracking email failed: VA Notify refused it');
      return 'failed';
    }
    if (error instanceof AttemptsUsedUp) {
      const reason = `gave up after ${email.attempts - 1} attempts: the last send was never confirmed and VA Notify has no notification for it`;
      await recordEmailFailed(sql, email.id, claim, reason);
      log.warn(
        { emailId: email.id, attempts: email.attempts - 1 },
        'orphaned send: VA Notify does not have it and its attempts are used up; failed',
      );
      return 'failed';
    }
    if (error instanceof TransientSendError) {
      if (watch.failed(deps.signal?.aborted === true)) throw new VaNotifyUnavailable(error);
      // An unanswered last try leaves the claim to expire instead: it comes back as an orphan and is
      // looked up by reference before it is sent again.
      if (error.ambiguous) {
        log.warn(
          { emailId: email.id, reason: error.message },
          'send outcome unknown; the email is looked up by reference when its lease expires',
        );
        return 'retried';
      }
      const next = await recordRetryLater(sql, {
        emailId: email.id,
        claim,
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
  const found = await deps.vaNotify.findByReference(email.id);
  if (found.kind === 'unauthorized' || found.kind === 'rate_limited') throw new AbortError(new SendingHalted(found));
  if (found.kind !== 'accepted') {
    throw new TransientSendError(`looking up the email by reference: ${found.kind === 'transient' ? found.reason : found.message}`, true);
  }
  const newest = await newestUnstoredNotification(deps.sql, email.id, found.body);
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
