// The VA Notify pause: a back-off every instance keeps when VA Notify refuses our credentials, has no
// send endpoint at the configured URL, says we are over its limit, or stops answering. It is kept in
// the row of VA Notify's rate budget (rate_budget.paused_until, pause_reason, pause_kind), which
// every VA Notify request reads already.
import type { Sql } from '../db/connect.ts';

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
