// Tracking emails as the sender sees them: claimed with a lease, then settled by one outcome.
import { planForWorkInProgress, type Sql, type SqlHandle } from '../db/connect.ts';
import { stateLiteral, type RetryState } from '../tracking-email/states.ts';

export interface ClaimedEmail {
  id: string;
  patient_icn: string;
  personalisation: Record<string, unknown>;
  /** This send's attempt number (1 for the first send, more for retries and replays). */
  attempts: number;
  /** The previous claim's lease expired with no outcome recorded: VA Notify may already have it. */
  orphaned: boolean;
}

/**
 * One send run's claim: the token written on every email it claimed, the instance named in
 * `leased_by`, and the lease's length. Both the token and the instance must still be on an email for
 * the claim to renew it or record anything on it: a claim taken since by another run, the sweep, or
 * an instance of an earlier version (which writes `leased_by` but no token) changes one of them.
 */
export interface SendClaim {
  token: string;
  instanceId: string;
  leaseSeconds: number;
}

/**
 * Claims due emails for this instance. `SKIP LOCKED` lets every instance claim a disjoint batch
 * without waiting; the lease makes a claim expire if this instance dies, and an expired claim comes
 * back here marked `orphaned` so that it is looked up by reference before anything is sent again.
 * Every claim counts an attempt, so even an email whose sends keep timing out ends after
 * SEND_MAX_ATTEMPTS.
 */
export async function claimDueEmails(sql: Sql, p: { batchSize: number; claim: SendClaim }): Promise<ClaimedEmail[]> {
  return sql.begin(async (tx) => {
    await planForWorkInProgress(tx);
    return tx<ClaimedEmail[]>`
    with due as (
      select id, state as previous_state
        from tracking_email
       where (state = ${stateLiteral(tx, 'queued')} and next_attempt_at <= now())
          or (state = ${stateLiteral(tx, 'sending')} and lease_until < now())
       order by next_attempt_at
       limit ${p.batchSize}
         for update skip locked
    ),
    claimed as (
      update tracking_email e
         set state = ${stateLiteral(tx, 'sending')}, attempts = e.attempts + 1,
             lease_until = now() + make_interval(secs => ${p.claim.leaseSeconds}), leased_by = ${p.claim.instanceId},
             lease_token = ${p.claim.token}, updated_at = now()
        from due
       where e.id = due.id
      returning e.id, e.patient_icn, e.personalisation, e.attempts, due.previous_state = ${stateLiteral(tx, 'sending')} as orphaned, e.next_attempt_at
    )
    -- An update's RETURNING follows no ORDER BY, only its plan: sorted here, so that the sender
    -- starts with the email that fell due first.
    select id, patient_icn, personalisation, attempts, orphaned from claimed order by next_attempt_at, id`;
  });
}

/**
 * Extends the claim's lease, right before a request to VA Notify, if the email still carries the
 * claim's token. False means another sender or the sweep has claimed it since (this claim's lease ran
 * out): the request must not be made. A request lasts at most VA_NOTIFY_TIMEOUT_MS, well inside the
 * renewed lease (the configuration checks it), so no one else can claim the email while it is under way.
 */
export async function renewLease(sql: SqlHandle, emailId: string, claim: SendClaim): Promise<boolean> {
  const rows = await sql`
    update tracking_email
       set lease_until = now() + make_interval(secs => ${claim.leaseSeconds}), updated_at = now()
     where id = ${emailId} and state = ${stateLiteral(sql, 'sending')} and lease_token = ${claim.token} and leased_by = ${claim.instanceId}
    returning 1`;
  return rows.length === 1;
}

/**
 * VA Notify accepted the email (or already had it): store its notification id. The insert tolerates
 * a second recording of the same notification (an orphan recovery racing the original sender).
 */
export async function recordNotificationAccepted(
  sql: SqlHandle,
  p: { emailId: string; notificationId: string; attempt: number },
): Promise<void> {
  await sql`
    insert into notification (id, tracking_email_id, attempt, status)
    values (${p.notificationId}, ${p.emailId}, ${p.attempt}, 'created')
    on conflict do nothing`;
  await sql`
    update tracking_email
       set state = ${stateLiteral(sql, 'sent')}, lease_until = null, leased_by = null, lease_token = null, last_error = null, state_reason = null, updated_at = now()
     where id = ${p.emailId} and state = ${stateLiteral(sql, 'sending')}`;
}

/**
 * VA Notify said the request can never succeed (a 400), or the email used all its attempts: it fails
 * with the reason, if it still belongs to this claim.
 */
export async function recordEmailFailed(sql: SqlHandle, emailId: string, claim: SendClaim, reason: string): Promise<void> {
  await sql`
    update tracking_email
       set state = ${stateLiteral(sql, 'failed')}, state_reason = ${reason}, last_error = ${reason},
           lease_until = null, leased_by = null, lease_token = null, updated_at = now()
     where id = ${emailId} and state = ${stateLiteral(sql, 'sending')} and lease_token = ${claim.token} and leased_by = ${claim.instanceId}`;
}

/**
 * A transient failure outlived the quick retries: try again later, with exponential backoff and
 * jitter (0.5x to 1.5x) so that a VA Notify outage does not end in every instance retrying in step,
 * or give up once the email has used all its attempts.
 */
export async function recordRetryLater(
  sql: SqlHandle,
  p: { emailId: string; claim: SendClaim; error: string; maxAttempts: number; baseSeconds: number },
): Promise<'retry' | 'failed'> {
  const [row] = await sql<{ state: RetryState }[]>`
    update tracking_email
       set state = case when attempts >= ${p.maxAttempts} then ${stateLiteral(sql, 'failed')} else ${stateLiteral(sql, 'queued')} end,
           state_reason = case when attempts >= ${p.maxAttempts}
                               then 'gave up after ' || attempts || ' attempts: ' || ${p.error} end,
           last_error = ${p.error},
           next_attempt_at = now() + make_interval(secs => ${p.baseSeconds} * power(2, greatest(attempts - 1, 0)) * (0.5 + random())),
           lease_until = null, leased_by = null, lease_token = null, updated_at = now()
     where id = ${p.emailId} and state = ${stateLiteral(sql, 'sending')} and lease_token = ${p.claim.token} and leased_by = ${p.claim.instanceId}
    returning state`;
  return row?.state === 'failed' ? 'failed' : 'retry';
}

/**
 * Hands claimed emails back untouched (shutdown, or sending paused): the attempt they were charged
 * is given back, since nothing was sent, and they are due at once; a pause holds every email back
 * by itself, so one cleared early lets them go at once. `delaySeconds` makes them due later instead
 * (an email that met a VA Notify outage must not be the first to probe it again, in case the fault
 * is its own). Emails claimed by someone else since are left alone. Only for emails VA Notify cannot
 * already have: see {@link releaseClaimedOrphans}.
 */
export async function releaseClaimedEmails(sql: SqlHandle, emailIds: string[], claim: SendClaim, delaySeconds = 0): Promise<number> {
  if (emailIds.length === 0) return 0;
  const rows = await sql`
    update tracking_email
       set state = ${stateLiteral(sql, 'queued')}, attempts = greatest(attempts - 1, 0), lease_until = null, leased_by = null, lease_token = null,
           next_attempt_at = now() + make_interval(secs => ${delaySeconds}), updated_at = now()
     where id = any(${emailIds}::uuid[]) and state = ${stateLiteral(sql, 'sending')} and lease_token = ${claim.token} and leased_by = ${claim.instanceId}
    returning id`;
  return rows.length;
}

/**
 * Hands back claimed emails that VA Notify may already have (an orphan not yet looked up, or a send
 * whose answer was lost) as orphans still: left `sending` with the lease run out (or running out
 * after `delaySeconds`), so that the next claim, a sender's or the sweep's, looks each up by
 * reference before anything is sent. Queued again, the next claim would send without looking. The
 * attempt is given back, as above.
 */
export async function releaseClaimedOrphans(sql: SqlHandle, emailIds: string[], claim: SendClaim, delaySeconds = 0): Promise<number> {
  if (emailIds.length === 0) return 0;
  const rows = await sql`
    update tracking_email
       set attempts = greatest(attempts - 1, 0), lease_until = now() + make_interval(secs => ${delaySeconds}),
           leased_by = null, lease_token = null, updated_at = now()
     where id = any(${emailIds}::uuid[]) and state = ${stateLiteral(sql, 'sending')} and lease_token = ${claim.token} and leased_by = ${claim.instanceId}
    returning id`;
  return rows.length;
}

/** Notification ids this service already stored for an email (to tell which of VA Notify's are new). */
async function storedNotificationIds(sql: SqlHandle, emailId: string): Promise<Set<string>> {
  const rows = await sql<{ id: string }[]>`select id from notification where tracking_email_id = ${emailId}`;
  return new Set(rows.map((r) => r.id));
}

/**
 * The attempt a send found at VA Notify but never stored counts as, for the tracking email `e` of
 * the statement: one past every send stored for it, and never less than the attempts it was charged.
 * The sweep's adoption of an orphan and a status event's adoption by reference both charge it so.
 */
export function adoptedSendAttempt(sql: SqlHandle) {
  return sql`greatest(e.attempts, 1 + coalesce((select max(n.attempt) from notification n where n.tracking_email_id = e.id), 0))`;
}

/**
 * Of the notifications VA Notify lists for an email's reference, the newest this service never
 * stored: the send of an orphan (or of a send whose answer was lost) that VA Notify accepted.
 * Undefined when there is none, and the email may be sent. The sender and the sweep both ask this.
 */
export async function newestUnstoredNotification<N extends { id: string; created_at?: unknown }>(
  sql: SqlHandle,
  emailId: string,
  listed: readonly N[],
): Promise<N | undefined> {
  const known = await storedNotificationIds(sql, emailId);
  return listed.filter((n) => !known.has(n.id)).sort((a, b) => String(b.created_at ?? '').localeCompare(String(a.created_at ?? '')))[0];
}
