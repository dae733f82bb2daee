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
 * The bucket refills continuously at perMinute/60 tokens a second and holds at most one second's
 * worth, so any 60-second window sees at most perMinute + perMinute/60 requests: 2,900 a minute keeps
 * under VA Notify's 3,000 sliding window. perMinute = 0 turns pacing off (benchmarks only).
 */
export function createRateBudget(sql: Sql, perMinute: number, name = 'va-notify'): RateBudget {
  if (perMinute <= 0) return { take: async () => {} };
  const perSecond = perMinute / 60;
  const capacity = Math.max(1, perSecond);
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
 * Stops sending on every instance for a while: VA Notify rejected our credentials (until a person
 * looks), or said we are over its limit. A pause already running longer is kept, with its reason:
 * a 429 seen a moment after a 403 must not shorten the credentials' pause.
 */
export async function pauseSending(sql: Sql, seconds: number, reason: string, name = 'va-notify'): Promise<Date> {
  const [row] = await sql<{ paused_until: Date }[]>`
    update rate_budget
       set paused_until = greatest(paused_until, now() + make_interval(secs => ${seconds})),
           pause_reason = case when paused_until > now() + make_interval(secs => ${seconds}) then pause_reason else ${reason} end
     where name = ${name}
    returning paused_until`;
  return row!.paused_until;
}

export async function sendingPausedUntil(sql: Sql, name = 'va-notify'): Promise<{ until: Date; reason: string | null } | undefined> {
  const [row] = await sql<{ paused_until: Date; pause_reason: string | null }[]>`
    select paused_until, pause_reason from rate_budget where name = ${name} and paused_until > now()`;
  return row ? { until: row.paused_until, reason: row.pause_reason } : undefined;
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
  await sql`update rate_budget set pause_reason = null where name = ${name} and paused_until <= now()`;
}

export async function resumeSending(sql: Sql, name = 'va-notify'): Promise<void> {
  await sql`update rate_budget set paused_until = null, pause_reason = null where name = ${name}`;
}
