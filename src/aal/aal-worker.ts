// The AAL worker: posts every due aal_event to the MHV Account Activity Log exactly once. It claims
// a batch (committed), posts outside any transaction with a few quick in-process retries, and
// records each outcome in its own statement: posted, failed (the AAL refused the event), or pending
// again after a durable backoff. When MHV refuses our credentials instead (a 403, or a 401 to the
// session request), no event is at fault: posting pauses on every instance and the claims go back
// uncharged. Safe to run on any number of instances at once.
import pRetry from 'p-retry';
import type { BaseLogger } from 'pino';
import type { Config } from '../config.ts';
import type { Sql } from '../db/connect.ts';
import { AvailabilityWatch } from '../jobs/availability-watch.ts';
import { workClaimedBatch, type ClaimOutcome } from '../jobs/claimed-batch.ts';
import type { AalClient, AalOutcome } from './aal-client.ts';
import {
  aalPauseState,
  claimAalEvents,
  confirmAalPostingResumed,
  pauseAalPosting,
  recordAalEventFailed,
  recordAalEventPosted,
  recordAalEventUnpostable,
  recordAalRetryLater,
  releaseAalEvents,
  type AalBackoff,
  type ClaimedAalEvent,
} from './repository.ts';

export { aalPostingPausedUntil, releaseExpiredAalLeases, resumeAalPosting } from './repository.ts';

/** What became of one claimed event in a run. */
export type AalRunOutcome = 'posted' | ClaimOutcome;

export interface AalRunResult {
  posted: number;
  retried: number;
  failed: number;
  /** Claimed but handed back unposted, attempt refunded: the run was stopped, or posting paused. */
  released: number;
  /** AAL posting is paused (MHV refused our credentials, or the AAL is not answering): found paused, or paused by this run. */
  paused: boolean;
}

export interface QuickRetry {
  /** In-process retries after the first post (so retries + 1 posts at most per run). */
  retries: number;
  minTimeoutMs: number;
  maxTimeoutMs: number;
}

export interface AalWorkerDeps {
  /** The pool: each claim runs in its own transaction. */
  sql: Sql;
  config: Pick<
    Config,
    | 'AAL_BATCH_SIZE'
    | 'AAL_MAX_ATTEMPTS'
    | 'AAL_TIMEOUT_MS'
    | 'AAL_INTERVAL_SECONDS'
    | 'AAL_PAUSE_SECONDS'
    | 'AAL_UNAVAILABLE_PAUSE_SECONDS'
  >;
  aal: AalClient;
  log: Pick<BaseLogger, 'info' | 'warn' | 'error'>;
  /** Aborted on shutdown: no new post starts, and unposted claims are released. */
  signal?: AbortSignal;
  /** Called once per claimed event with what became of it (metrics). */
  onOutcome?: (outcome: AalRunOutcome) => void;
  /** Posts in flight at once; 10 unless given. */
  concurrency?: number;
  quickRetry?: QuickRetry;
}

const DefaultAalConcurrency = 10;
const DefaultQuickRetry: QuickRetry = { retries: 2, minTimeoutMs: 250, maxTimeoutMs: 2000 };

/** Durable retries wait at least one timer interval (sooner would find no run to pick them up), at most 6 h. */
export function aalBackoff(config: Pick<Config, 'AAL_INTERVAL_SECONDS'>): AalBackoff {
  return { baseSeconds: config.AAL_INTERVAL_SECONDS, maxSeconds: 6 * 60 * 60 };
}

/**
 * How long a claim is held: long enough for the whole batch to be worked through even when every
 * request times out (a post is at most two session requests and two activity posts, each bounded by
 * AAL_TIMEOUT_MS, repeated for each quick retry), so a live worker never loses its claim to another.
 */
export function aalLeaseSeconds(
  config: Pick<Config, 'AAL_BATCH_SIZE' | 'AAL_TIMEOUT_MS'>,
  concurrency = DefaultAalConcurrency,
  quickRetry: QuickRetry = DefaultQuickRetry,
): number {
  const postAttempts = quickRetry.retries + 1;
  const worstPostMs = postAttempts * 4 * config.AAL_TIMEOUT_MS + quickRetry.retries * quickRetry.maxTimeoutMs;
  const waves = Math.ceil(config.AAL_BATCH_SIZE / concurrency);
  return Math.ceil((waves * worstPostMs) / 1000) + 30;
}

/**
 * MHV's message for a refused key, as it is logged and stored with the pause. A 403 is about our
 * credentials, never a veteran, and unlike an event's last_error it is shown apart from the event
 * whose id the client already scrubbed: any long number left in it (an echoed id) is masked too.
 */
function pauseReason(reason: string): string {
  return reason.replace(/\d{6,}/g, '[number]');
}

class TransientAalFailure extends Error {
  override name = 'TransientAalFailure';
  readonly outcome: Extract<AalOutcome, { kind: 'transient' }>;
  constructor(outcome: Extract<AalOutcome, { kind: 'transient' }>) {
    super(outcome.reason);
    this.outcome = outcome;
  }
}

export async function runAalPosts(deps: AalWorkerDeps): Promise<AalRunResult> {
  const { sql, config, log, signal } = deps;
  const concurrency = deps.concurrency ?? DefaultAalConcurrency;
  const quickRetry = deps.quickRetry ?? DefaultQuickRetry;
  const result: AalRunResult = { posted: 0, retried: 0, failed: 0, released: 0, paused: false };
  if (signal?.aborted) return result;
  // Checked before claiming, so a paused instance takes no claim at all, and a failed read leaves no
  // event claimed (and charged) for nothing; once the pause has passed this run is the probe.
  const pause = await aalPauseState(sql);
  if (pause === 'paused') return { ...result, paused: true };
  const claimed = await claimAalEvents(sql, config.AAL_BATCH_SIZE, aalLeaseSeconds(config, concurrency, quickRetry));
  if (claimed.length === 0) return result;

  const run: AalRun = {
    deps,
    quickRetry,
    // The AAL looks down after events in a row get no answer (src/jobs/availability-watch.ts).
    watch: new AvailabilityWatch(pause === 'ended', () => confirmAalPostingResumed(sql)),
    count: (outcome, n = 1) => {
      if (n === 0) return;
      result[outcome] += n;
      for (let i = 0; i < n; i += 1) deps.onOutcome?.(outcome);
    },
    pausing: undefined,
    pausingUnavailable: undefined,
  };
  const failures: unknown[] = [];
  const { unstarted } = await workClaimedBatch(claimed, {
    concurrency,
    stopped: () => signal?.aborted === true || run.pausing !== undefined || run.pausingUnavailable !== undefined,
    work: (event) => postOne(run, event),
    onError: (event, error) => {
      // A database error while recording: the claim stays leased and the sweep releases it.
      failures.push(error);
      log.error({ aalEventId: event.id, emailId: event.trackingEmailId, err: error }, 'AAL event not recorded');
    },
  });

  // Set only once the pause is written: a pause that could not be written pauses nothing.
  const pausedUntil = (await run.pausing?.catch(() => undefined)) ?? (await run.pausingUnavailable?.catch(() => undefined));
  result.paused = pausedUntil !== undefined;
  if (unstarted.length > 0) {
    const released = await releaseAalEvents(sql, unstarted);
    if (pausedUntil !== undefined) log.info({ released, pausedUntil }, 'AAL posting paused; unposted events released');
    else log.info({ released }, 'AAL run stopped; unposted events released');
    run.count('released', released);
  }
  if (failures.length > 0 && failures.length === claimed.length) throw failures[0];
  return result;
}

/** One AAL run: its counts, and the pause its posts may have started. */
interface AalRun {
  deps: AalWorkerDeps;
  quickRetry: QuickRetry;
  watch: AvailabilityWatch;
  count: (outcome: AalRunOutcome, n?: number) => void;
  /**
   * Set by the first post MHV refused for our credentials: no new post starts after it. The pause is
   * written, and the error logged, once per run however many posts in flight are refused with it.
   */
  pausing: Promise<Date> | undefined;
  /** The same for the first event that finds the AAL down. */
  pausingUnavailable: Promise<Date> | undefined;
}

type Ids = { aalEventId: number; emailId: string };

function pauseUnavailableOnce(run: AalRun, outcome: Extract<AalOutcome, { kind: 'transient' }>): Promise<Date> {
  const { sql, config, log } = run.deps;
  run.pausingUnavailable ??= pauseAalPosting(
    sql,
    config.AAL_UNAVAILABLE_PAUSE_SECONDS,
    `AAL unavailable: ${pauseReason(outcome.reason)}`,
  ).then((pausedUntil) => {
    log.error(
      { status: outcome.status, reason: pauseReason(outcome.reason), pausedUntil },
      'the AAL is not answering: AAL posting is paused on every instance; no event is charged for it',
    );
    return pausedUntil;
  });
  return run.pausingUnavailable;
}

function pauseOnce(run: AalRun, outcome: Extract<AalOutcome, { kind: 'unauthorized' }>, ids: Ids): Promise<Date> {
  const { sql, config, log } = run.deps;
  const reason = pauseReason(outcome.reason);
  run.pausing ??= pauseAalPosting(sql, config.AAL_PAUSE_SECONDS, reason).then((pausedUntil) => {
    // An operator must act; no event is failed or charged for it. The settings named are where
    // the credentials live.
    log.error(
      { ...ids, status: outcome.status, aalMessage: reason, pausedUntil },
      'MHV refused our AAL credentials: AAL posting is paused on every instance; check AAL_API_KEY (the MHV API gateway x-api-key), AAL_APP_TOKEN and that both are for AAL_BASE_URL',
    );
    return pausedUntil;
  });
  return run.pausing;
}

async function postOne(run: AalRun, event: ClaimedAalEvent): Promise<void> {
  const ids = { aalEventId: event.id, emailId: event.trackingEmailId };
  if (event.mhvCorrelationId === null || event.mhvCorrelationId === '') {
    // Unpostable, as the events created without one at delivery: not a post, and not a failure.
    if (await recordAalEventUnpostable(run.deps.sql, event, 'no MHV correlation id for this veteran')) {
      run.deps.log.warn(ids, 'AAL event unpostable: no MHV correlation id');
    }
    return;
  }
  const activity = { correlationId: event.mhvCorrelationId, completionTime: event.completionTime, detailValue: event.detailValue };
  await recordOutcome(run, event, ids, await postWithQuickRetries(run, activity));
}

/** Posts the activity, retried in process while the AAL answers with a transient failure; answers the last outcome. */
async function postWithQuickRetries(run: AalRun, activity: Parameters<AalClient['post']>[0]): Promise<AalOutcome> {
  const { aal, signal } = run.deps;
  try {
    return await pRetry(
      async () => {
        const answer = await aal.post(activity);
        if (answer.kind === 'transient') throw new TransientAalFailure(answer);
        return answer;
      },
      {
        retries: run.quickRetry.retries,
        minTimeout: run.quickRetry.minTimeoutMs,
        maxTimeout: run.quickRetry.maxTimeoutMs,
        randomize: true,
        // On shutdown the last failure stands and the durable backoff takes over.
        shouldRetry: ({ error }) => error instanceof TransientAalFailure && signal?.aborted !== true,
      },
    );
  } catch (error) {
    if (!(error instanceof TransientAalFailure)) throw error;
    return error.outcome;
  }
}

async function recordOutcome(run: AalRun, event: ClaimedAalEvent, ids: Ids, outcome: AalOutcome): Promise<void> {
  const { sql, config, log, signal } = run.deps;
  if (outcome.kind === 'posted') {
    if (await recordAalEventPosted(sql, event)) {
      log.info(ids, 'AAL event posted');
      run.count('posted');
    } else {
      log.warn(ids, 'AAL event posted after its claim was taken over');
    }
    // After the post is recorded: the AAL has it, whatever happens to this write.
    await run.watch.answered();
  } else if (outcome.kind === 'unauthorized') {
    // Not the event's fault: it goes back as it was, attempt refunded, and waits out the pause.
    await pauseOnce(run, outcome, ids);
    run.count('released', await releaseAalEvents(sql, [event]));
  } else if (outcome.kind === 'permanent') {
    if (await recordAalEventFailed(sql, event, outcome.reason)) {
      log.warn({ ...ids, status: outcome.status }, 'AAL refused the event; not retried');
      run.count('failed');
    }
    await run.watch.answered();
  } else if (run.watch.failed(signal?.aborted === true)) {
    // Not the event's fault either: back uncharged, due after the first retry delay, so that the
    // next probe is another event in case the fault was this one's own.
    await pauseUnavailableOnce(run, outcome);
    run.count('released', await releaseAalEvents(sql, [event], aalBackoff(config).baseSeconds));
  } else {
    const state = await recordAalRetryLater(sql, event, outcome.reason, config.AAL_MAX_ATTEMPTS, aalBackoff(config));
    if (state === 'pending') {
      log.warn({ ...ids, status: outcome.status, attempts: event.attempts }, 'AAL post failed; retrying later');
      run.count('retried');
    } else if (state === 'failed') {
      log.error({ ...ids, status: outcome.status, attempts: event.attempts }, 'AAL post failed; attempts used up');
      run.count('failed');
    }
  }
}
