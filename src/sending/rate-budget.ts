// VA Notify allows a number of requests per minute per service, counted over every instance of this
// service, and sends no rate-limit headers: each instance must take its share from one budget, so the
// budget is a token bucket in Postgres.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Sql } from '../db/connect.ts';

export interface RateBudget {
  /** Resolves when one request may be made; rejects with the signal's reason if aborted first. */
  take(signal?: AbortSignal): Promise<void>;
}

/**
 * A bucket holding at most one second's worth (at least one token), refilled continuously. Any
 * 60-second window then sees at most the full bucket plus a minute's refill, so the refill is what
 * is left of perMinute after the bucket, less 2% for the spread between when a token is taken and
 * when VA Notify counts the request: no 60-second window sees more than perMinute requests, and a
 * backlog gets about 96 to 98% of perMinute (a budget of 1 a minute allows 2 in a window).
 * perMinute = 0 turns pacing off (benchmarks only).
 */
export function createRateBudget(sql: Sql, perMinute: number, name = 'va-notify'): RateBudget {
  if (perMinute <= 0) return { take: async () => {} };
  const capacity = Math.max(1, perMinute / 60);
  const perSecond = (perMinute > capacity ? (perMinute - capacity) * 0.98 : perMinute) / 60;
  return {
    async take(signal) {
      for (;;) {
        signal?.throwIfAborted();
        // The row lock serialises takers across instances; the refill is computed from the clock, so
        // no timer has to run anywhere.
        const [row] = await sql<{ available: number; granted: boolean }[]>`
          with bucket as (
            select least(${capacity}::float8,
                         tokens + extract(epoch from clock_timestamp() - refilled_at) * ${perSecond}::float8) as available
              from rate_budget where name = ${name}
               for update
          ),
          taken as (
            update rate_budget set tokens = bucket.available - 1, refilled_at = clock_timestamp()
              from bucket
             where rate_budget.name = ${name} and bucket.available >= 1
            returning 1
          )
          select available, exists (select 1 from taken) as granted from bucket`;
        if (!row) throw new Error(`rate budget ${name} is missing`);
        if (row.granted) return;
        const waitMs = Math.max(5, Math.ceil(((1 - row.available) / perSecond) * 1000));
        await sleep(waitMs, undefined, { signal });
      }
    },
  };
}

/**
 * Why sending is paused (rate_budget.pause_kind, sql/018_sending_pause_kind.sql): refused
 * credentials (401/403), no send endpoint at VA_NOTIFY_BASE_URL (404), VA Notify's per-minute rate
 * limit or daily send limit (429), or an outage (sends in a row without an answer).
 */
export type SendingPauseKind = 'credentials' | 'no_endpoint' | 'rate_limit' | 'daily_limit' | 'unavailable';

/**
 * Whether a pause of this kind stops every VA Notify request, the sweep's GETs too. Refused
 * credentials refuse a GET as well, and with a wrong URL a GET's 404 would read as a notification
 * VA Notify no longer has. The limits are on sends (the shared budget paces the GETs under the rate
 * limit), and sends left unanswered do not make a GET useless: the sweep goes on asking.
 */
export function pauseStopsEveryRequest(kind: SendingPauseKind): boolean {
  return kind === 'credentials' || kind === 'no_endpoint';
}

/**
 * Stops sending on every instance for a while: VA Notify rejected our credentials (until a person
 * looks), or said we are over its limit. A pause already running longer is kept, with its reason and
 * kind: a 429 seen a moment after a 403 must not shorten the credentials' pause. (So a 401 met by the
 * sweep during a longer daily-limit pause leaves the kind a limit's: each later sweep asks once,
 * meets the 401 and stops, and says so in the log.)
 */
export async function pauseSending(sql: Sql, seconds: number, kind: SendingPauseKind, reason: string, name = 'va-notify'): Promise<Date> {
  const [row] = await sql<{ paused_until: Date }[]>`
    update rate_budget
       set paused_until = greatest(paused_until, now() + make_interval(secs => ${seconds})),
           pause_reason = case when paused_until > now() + make_interval(secs => ${seconds}) then pause_reason else ${reason} end,
           pause_kind = case when paused_until > now() + make_interval(secs => ${seconds}) then pause_kind else ${kind} end
     where name = ${name}
    returning paused_until`;
  return row!.paused_until;
}

export async function sendingPausedUntil(
  sql: Sql,
  name = 'va-notify',
): Promise<{ until: Date; kind: SendingPauseKind; reason: string } | undefined> {
  const [row] = await sql<{ paused_until: Date; pause_kind: SendingPauseKind; pause_reason: string }[]>`
    select paused_until, pause_kind, pause_reason from rate_budget where name = ${name} and paused_until > now()`;
  return row ? { until: row.paused_until, kind: row.pause_kind, reason: row.pause_reason } : undefined;
}

/**
 * Where a send run starts, in one read: `paused` (a pause is in force), `ended` (the last pause has
 * ended with no send accepted since: the run probes VA Notify, and pauses again on the first send
 * that gets no usable answer), or `none`.
 */
export async function sendingPauseState(sql: Sql, name = 'va-notify'): Promise<'paused' | 'ended' | 'none'> {
  const [row] = await sql<{ state: 'paused' | 'ended' | 'none' }[]>`
    select case when paused_until > now() then 'paused' when pause_reason is not null then 'ended' else 'none' end as state
      from rate_budget where name = ${name}`;
  return row?.state ?? 'none';
}

/** A send was accepted after a pause ended: forget the pause. One started since is left alone. */
export async function confirmSendingResumed(sql: Sql, name = 'va-notify'): Promise<void> {
  await sql`update rate_budget set pause_reason = null, pause_kind = null where name = ${name} and paused_until <= now()`;
}

export async function resumeSending(sql: Sql, name = 'va-notify'): Promise<void> {
  await sql`update rate_budget set paused_until = null, pause_reason = null, pause_kind = null where name = ${name}`;
}
