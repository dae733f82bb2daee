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
 * backlog gets about 96 to 98% of perMinute from 60 a minute up (less below, where the one-token
 * bucket is a larger share; a budget of 1 a minute allows 2 in a window).
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
