// The fallback sweep's view of the tables: notifications that went silent, sends whose outcome was
// never recorded, temporary failures due for a replay. Each step claims a bounded batch in one
// committed statement, so VA Notify is called outside any transaction and the outcome is recorded
// afterwards in statements of its own.
import { planForWorkInProgress, type Sql, type SqlHandle } from '../db/connect.ts';
import { adoptedSendAttempt } from '../sending/repository.ts';
import { NonFinalStatuses } from '../status/notification-status.ts';
import { stateLiteral, type RetryState } from '../tracking-email/states.ts';

export interface StaleNotification {
  id: string;
  trackingEmailId: string;
  attempt: number;
  /** True when VA Notify has moved it to history (GET answers 404 from then on). */
  pastRetention: boolean;
  pollCount: number;
}

/**
 * Notifications with no final status and no news for `pollAfterMinutes`: the ones whose callbacks
 * may have been lost. Claiming moves last_event_at to now and counts the poll, so a notification
 * that VA Notify cannot answer for (a young 404, an error), or that a stopped run did not reach, is
 * asked again only after another quiet period, never in a tight loop. Oldest news first, so a
 * backlog drains fairly. SKIP LOCKED: a row a callback is updating right now is not silent, and
 * waiting for it would hold up the batch.
 */
export async function claimStaleNotifications(
  sql: Sql,
  p: { batchSize: number; pollAfterMinutes: number; retentionDays: number },
): Promise<StaleNotification[]> {
  // The open notifications are listed in notification_open (sql/031), which its triggers keep as
  // the claim moves last_event_at; planned as work in progress, so that a sweep never reads the history.
  const rows = await sql.begin(async (tx) => {
    await planForWorkInProgress(tx);
    return tx<StaleNotification[]>`
    with stale as (
      select n.id
        from notification_open o
        join notification n on n.id = o.notification_id
       where o.last_event_at < now() - make_interval(mins => ${p.pollAfterMinutes})
         -- Read again on the notification: a row a callback changed while this ran is checked
         -- anew once its lock is had, and a notification with news since is not polled.
         and n.status = any(${NonFinalStatuses as string[]}::text[])
         and n.last_event_at < now() - make_interval(mins => ${p.pollAfterMinutes})
       order by o.last_event_at
       limit ${p.batchSize}
         for update of n skip locked
    )
    update notification n
       set last_event_at = now(), poll_count = n.poll_count + 1
      from stale
     where n.id = stale.id
    returning n.id, n.tracking_email_id as "trackingEmailId", n.attempt,
              n.created_at < now() - make_interval(days => ${p.retentionDays}) as "pastRetention",
              n.poll_count as "pollCount"`;
  });
  return [...rows];
}

export interface OrphanedEmail {
  id: string;
  attempts: number;
}

/**
 * Emails left `sending` by a claim that expired with no outcome: the sender died, or its last try
 * got no answer. The sweep takes the claim over with a lease of its own (committed before VA Notify
 * is asked), so neither a sender nor a later sweep acts on the same email while the lookup runs;
 * if this process dies in between, the lease expires again and the email is an orphan once more.
 */
export async function claimOrphanedEmails(
  sql: SqlHandle,
  p: { batchSize: number; leaseSeconds: number; sweeperId: string },
): Promise<OrphanedEmail[]> {
  return sql<OrphanedEmail[]>`
    with orphaned as (
      select id
        from tracking_email
       where state = ${stateLiteral(sql, 'sending')} and lease_until < now()
       order by lease_until
       limit ${p.batchSize}
         for update skip locked
    )
    update tracking_email e
       -- No send token: a sender whose claim this was can no longer renew it or record anything on it.
       set lease_until = now() + make_interval(secs => ${p.leaseSeconds}), leased_by = ${p.sweeperId}, lease_token = null, updated_at = now()
      from orphaned
     where e.id = orphaned.id
    returning e.id, e.attempts`;
}

/**
 * VA Notify has no notification for this orphaned email: it goes back to the sender's queue, due
 * now. The attempt its lost claim was charged stays charged (a send may have been under way when the
 * claim was lost, and an email that keeps crashing its sender must still end); one that has used all
 * its attempts fails instead. Guarded by the sweep's own lease, so a claim taken over since is left alone.
 */
export async function releaseOrphanedEmail(
  sql: SqlHandle,
  p: { emailId: string; sweeperId: string; maxAttempts: number },
): Promise<RetryState | undefined> {
  const [row] = await sql<{ state: RetryState }[]>`
    update tracking_email
       set state = case when attempts >= ${p.maxAttempts} then ${stateLiteral(sql, 'failed')} else ${stateLiteral(sql, 'queued')} end,
           state_reason = case when attempts >= ${p.maxAttempts}
                               then 'gave up after ' || attempts || ' attempts: the last send was never confirmed and VA Notify has no notification for it'
                               else state_reason end,
           next_attempt_at = now(), lease_until = null, leased_by = null, updated_at = now()
     where id = ${p.emailId} and state = ${stateLiteral(sql, 'sending')} and leased_by = ${p.sweeperId}
    returning state`;
  return row?.state;
}

/**
 * The attempt an orphan's send found at VA Notify was, charged to the email, under the sweep's own
 * lease (undefined when the claim was taken over since). A sender that met VA Notify looking down
 * hands an unanswered send back with its attempt given back (releaseClaimedOrphans), so the email's
 * count can be one short of the sends VA Notify has: recorded under that count, the send would take
 * an earlier send's attempt number (and be dropped by the notification insert, the email left `sent`
 * with nothing open to poll), or attempt 0, and its temporary failure be replayed past
 * SEND_MAX_ATTEMPTS. The send VA Notify had is after every send already stored.
 */
export async function chargeAdoptedSend(sql: SqlHandle, p: { emailId: string; sweeperId: string }): Promise<number | undefined> {
  const [row] = await sql<{ attempts: number }[]>`
    update tracking_email e
       set attempts = ${adoptedSendAttempt(sql)},
           updated_at = now()
     where e.id = ${p.emailId} and e.state = ${stateLiteral(sql, 'sending')} and e.leased_by = ${p.sweeperId}
    returning e.attempts`;
  return row?.attempts;
}

/**
 * Orphans whose lookup did not settle them (VA Notify could not say, or the sweep stopped first):
 * the sweep's claim expires at once, so the next sweep, or a sender, looks them up again. Settled
 * emails no longer match the guard and are left as they are.
 */
export async function expireOrphanClaims(sql: SqlHandle, p: { emailIds: string[]; sweeperId: string }): Promise<void> {
  if (p.emailIds.length === 0) return;
  await sql`
    update tracking_email
       set lease_until = now() - interval '1 second', updated_at = now()
     where id = any(${p.emailIds}::uuid[]) and state = ${stateLiteral(sql, 'sending')} and leased_by = ${p.sweeperId}`;
}

/**
 * Temporary failures whose replay time has come go back to the sender's queue, due now; the sender
 * sends a new notification of the same email and counts the attempt when it claims it. The status
 * state machine already failed the emails that used all their attempts; the same bound is applied
 * here for emails whose limit was lowered since. SKIP LOCKED and one statement: a late callback on
 * the same email waits for nothing and sees either state.
 */
export async function requeueTemporaryFailures(
  sql: SqlHandle,
  p: { batchSize: number; maxAttempts: number },
): Promise<{ replayed: string[]; failed: string[] }> {
  const rows = await sql<{ id: string; state: RetryState }[]>`
    with due as (
      select id
        from tracking_email
       where state = ${stateLiteral(sql, 'temporary_failure')} and next_attempt_at <= now()
       order by next_attempt_at
       limit ${p.batchSize}
         for update skip locked
    )
    update tracking_email e
       set state = case when e.attempts >= ${p.maxAttempts} then ${stateLiteral(sql, 'failed')} else ${stateLiteral(sql, 'queued')} end,
           next_attempt_at = now(), updated_at = now()
      from due
     where e.id = due.id
    returning e.id, e.state`;
  return {
    replayed: rows.filter((r) => r.state === 'queued').map((r) => r.id),
    failed: rows.filter((r) => r.state === 'failed').map((r) => r.id),
  };
}
