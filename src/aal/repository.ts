// The AAL outbox (aal_event): claiming due events, recording what the AAL answered, releasing
// claims; and the posting pause (aal_pause) taken when MHV refuses our credentials or the AAL is not
// answering. Every outcome
// update is guarded by `state = 'posting' and attempts = <the claim's attempts>`, so a worker whose
// lease ran out and was reclaimed by another can never overwrite the newer claim's result.
import { planForWorkInProgress, type Sql, type SqlHandle } from '../db/connect.ts';

export interface ClaimedAalEvent {
  id: number;
  trackingEmailId: string;
  notificationId: string;
  mhvCorrelationId: string | null;
  completionTime: Date;
  detailValue: string;
  /** Posts started for this event, this one included; also the claim's fencing token. */
  attempts: number;
}

/** Backoff before the n-th durable retry: base·2^(n-1), capped, then ±25 % jitter. */
export interface AalBackoff {
  baseSeconds: number;
  maxSeconds: number;
}

/**
 * Claims up to `limit` due events for `leaseSeconds`: pending ones whose time has come, and
 * posting ones whose lease ran out (their worker died). SKIP LOCKED lets any number of workers
 * claim at once without waiting on, or taking, each other's rows; the claim commits before any post
 * so no transaction stays open across an HTTP call. Oldest due first, so a backlog drains in order.
 */
export async function claimAalEvents(sql: Sql, limit: number, leaseSeconds: number): Promise<ClaimedAalEvent[]> {
  const rows = await sql.begin(async (tx) => {
    await planForWorkInProgress(tx);
    return tx<ClaimedAalEvent[]>`
    with c as (
      select id from aal_event
      where (state = 'pending' and next_attempt_at <= now())
         or (state = 'posting' and lease_until < now())
      order by next_attempt_at, id
      for update skip locked
      limit ${limit}
    )
    update aal_event a
    set state = 'posting',
        lease_until = now() + make_interval(secs => ${leaseSeconds}),
        attempts = a.attempts + 1,
        updated_at = now()
    from c
    where a.id = c.id
    returning a.id, a.tracking_email_id as "trackingEmailId", a.notification_id as "notificationId",
              a.mhv_correlation_id as "mhvCorrelationId", a.completion_time as "completionTime",
              a.detail_value as "detailValue", a.attempts`;
  });
  return [...rows];
}

/**
 * Ends a claim with its outcome. The guard on state and attempts means only the claim that is still
 * current records anything: a worker whose lease ran out and was taken over cannot overwrite the newer result.
 */
async function settleClaim(
  sql: SqlHandle,
  event: ClaimedAalEvent,
  outcome: { state: 'posted' | 'failed' | 'unpostable'; lastError: string | null },
): Promise<boolean> {
  const rows = await sql`
    update aal_event
    set state = ${outcome.state}, last_error = ${outcome.lastError}, lease_until = null, updated_at = now(),
        posted_at = case when ${outcome.state} = 'posted' then now() else posted_at end
    where id = ${event.id} and state = 'posting' and attempts = ${event.attempts}
    returning id`;
  return rows.length === 1;
}

/** The AAL accepted the event: it is never posted again. */
export function recordAalEventPosted(sql: SqlHandle, event: ClaimedAalEvent): Promise<boolean> {
  return settleClaim(sql, event, { state: 'posted', lastError: null });
}

/** The AAL refused the event itself: retrying cannot help, so it stops here with the reason. */
export function recordAalEventFailed(sql: SqlHandle, event: ClaimedAalEvent, reason: string): Promise<boolean> {
  return settleClaim(sql, event, { state: 'failed', lastError: reason });
}

/** The event cannot be posted at all (no correlation id): kept, with the reason, never retried. */
export function recordAalEventUnpostable(sql: SqlHandle, event: ClaimedAalEvent, reason: string): Promise<boolean> {
  return settleClaim(sql, event, { state: 'unpostable', lastError: reason });
}

/**
 * A transient failure: back to pending after an exponential backoff with jitter (computed here, so
 * every instance follows one clock and one rule), or failed once the attempts are used up (counted
 * since an operator's last retry, if any).
 * Returns the state the event ended in, or undefined when the claim was no longer ours.
 */
export async function recordAalRetryLater(
  sql: SqlHandle,
  event: ClaimedAalEvent,
  reason: string,
  maxAttempts: number,
  backoff: AalBackoff,
): Promise<'pending' | 'failed' | undefined> {
  const rows = await sql<{ state: 'pending' | 'failed' }[]>`
    update aal_event
    set state = case when attempts - attempts_before_retry >= ${maxAttempts} then 'failed' else 'pending' end,
        next_attempt_at = case
          when attempts - attempts_before_retry >= ${maxAttempts} then next_attempt_at
          else now() + make_interval(secs =>
            least(${backoff.baseSeconds}::float8 * power(2, greatest(attempts - attempts_before_retry - 1, 0)), ${backoff.maxSeconds}::float8)
            * (0.75 + random() * 0.5))
        end,
        last_error = case when attempts - attempts_before_retry >= ${maxAttempts}
          then ${reason} || ' (gave up after ' || (attempts - attempts_before_retry) || ' attempts)' else ${reason} end,
        lease_until = null,
        updated_at = now()
    where id = ${event.id} and state = 'posting' and attempts = ${event.attempts}
    returning state`;
  return rows[0]?.state;
}

/**
 * Gives back claimed events that were never posted (shutdown came first), or whose post was refused
 * for our credentials rather than for the event (posting paused): the attempt they were charged at
 * claim time is returned to them and they are due again at once. During a pause the pause itself
 * keeps them waiting, so clearing it resumes posting at once, oldest first. `delaySeconds` makes
 * them due later instead (an event that met an AAL outage must not be the first to probe it again,
 * in case the fault is its own).
 */
export async function releaseAalEvents(sql: SqlHandle, events: readonly ClaimedAalEvent[], delaySeconds = 0): Promise<number> {
  if (events.length === 0) return 0;
  const ids = events.map((e) => e.id);
  const attempts = events.map((e) => e.attempts);
  const rows = await sql`
    update aal_event a
    set state = 'pending', lease_until = null, next_attempt_at = now() + make_interval(secs => ${delaySeconds}),
        attempts = greatest(a.attempts - 1, 0), updated_at = now()
    from unnest(${ids}::bigint[], ${attempts}::int[]) as claim(id, attempts)
    where a.id = claim.id and a.attempts = claim.attempts and a.state = 'posting'
    returning a.id`;
  return rows.length;
}

/**
 * Returns events whose worker died mid-claim to pending, due at once. Their post may or may not
 * have reached the AAL; the lease is long enough that a live worker has always recorded its result
 * before it runs out, so this only ever picks up abandoned claims.
 */
export async function releaseExpiredAalLeases(sql: SqlHandle): Promise<number> {
  const rows = await sql`
    update aal_event
    set state = 'pending', lease_until = null, next_attempt_at = now(), updated_at = now()
    where state = 'posting' and lease_until < now()
    returning id`;
  return rows.length;
}

/**
 * Stops AAL posting on every instance for `seconds`: MHV refused our credentials, which only a
 * person can fix. A pause already running longer is kept (set by hand, or with a longer setting on
 * another instance); the reason is always the latest refusal. Returns when posting may be tried again.
 */
export async function pauseAalPosting(sql: SqlHandle, seconds: number, reason: string): Promise<Date> {
  const [row] = await sql<{ pausedUntil: Date }[]>`
    insert into aal_pause (singleton, paused_until, pause_reason, paused_at)
    values (true, now() + make_interval(secs => ${seconds}), ${reason}, now())
    on conflict (singleton) do update
      set paused_until = greatest(aal_pause.paused_until, excluded.paused_until),
          pause_reason = excluded.pause_reason, paused_at = excluded.paused_at
    returning paused_until as "pausedUntil"`;
  return row!.pausedUntil;
}

/** The pause in force, if any; a pause whose time has passed is no pause (the next run probes). */
export async function aalPostingPausedUntil(sql: SqlHandle): Promise<{ until: Date; reason: string } | undefined> {
  const [row] = await sql<{ until: Date; reason: string }[]>`
    select paused_until as until, pause_reason as reason from aal_pause where paused_until > now()`;
  return row;
}

/**
 * Where an AAL run starts, in one read: `paused` (a pause is in force), `ended` (the last pause has
 * ended with nothing posted since: the run probes the AAL), or `none`.
 */
export async function aalPauseState(sql: SqlHandle): Promise<'paused' | 'ended' | 'none'> {
  const [row] = await sql<{ state: 'paused' | 'ended' }[]>`
    select case when paused_until > now() then 'paused' else 'ended' end as state from aal_pause`;
  return row?.state ?? 'none';
}

/** An event was posted after a pause ended: forget the pause. One started since is left alone. */
export async function confirmAalPostingResumed(sql: SqlHandle): Promise<void> {
  await sql`delete from aal_pause where paused_until <= now()`;
}

/** Ends a pause at once (an operator fixed the credentials and does not want to wait). */
export async function resumeAalPosting(sql: SqlHandle): Promise<void> {
  await sql`delete from aal_pause`;
}
