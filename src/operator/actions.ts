// What an operator may do about an email that did not reach its veteran, or an AAL event that did not
// reach MHV, once the cause is mended (a VA Notify template fixed, a veteran's VA Profile corrected,
// MHV's AAL back): send it again, post it again. Each request names the rows; nothing is chosen for
// the operator. sql/016_operator_resend.sql says why a resend is a new email.
import type { Sql } from '../db/connect.ts';
import { FinalStatuses } from '../status/notification-status.ts';
import { ResendableStates, stateLiteral, type TrackingEmailState } from '../tracking-email/states.ts';

/**
 * How long after the last news of an email's sends a resend waits. VA Notify retries a callback
 * with a backoff capped at 300 s, up to 60 times: about five hours in which a `delivered` answered
 * with a 5xx can still arrive after the failure that ended the email (sql/012), and the veteran would
 * then get the email twice.
 */
export const ResendSettleHours = 6;

export type ResendOutcome =
  | { id: string; outcome: 'resent' | 'already_resent'; resentAs: string }
  | { id: string; outcome: 'not_resendable'; state: TrackingEmailState; reason: string }
  | { id: string; outcome: 'not_found' };

/** Why an email found by a resend request is not resent; undefined when it is. */
function refusal(row: {
  state: TrackingEmailState;
  delivered: boolean;
  open_sends: number;
  settled_at: Date | null;
  settling: boolean;
}): string | undefined {
  if (row.delivered) return 'VA Notify reported it delivered: a resend would email the veteran twice';
  if (!(ResendableStates as readonly string[]).includes(row.state)) return `only an email in ${ResendableStates.join(', ')} is resent`;
  if (row.open_sends > 0) return 'a send of this email is still open at VA Notify: wait for its final status';
  if (row.settling) {
    return `VA Notify may still report on its last send (it retries a callback for about five hours): resend from ${row.settled_at?.toISOString()}`;
  }
  return undefined;
}

/**
 * Resends each named email that is in a resendable state, was never reported delivered, and has
 * had no news of its sends for ResendSettleHours: a new queued email with the same recipient and
 * text, the dispenses moved to it, `resent_from` naming the old, which ends `resent`. An email
 * already resent answers the resend that exists, so a repeated request sends nothing more. One
 * transaction; the emails are locked in id order, so two requests naming the same emails wait for
 * each other instead of deadlocking, and the second then reads the first's `resent`.
 */
export async function resendTrackingEmails(sql: Sql, ids: readonly string[], reason: string): Promise<ResendOutcome[]> {
  return sql.begin(async (tx) => {
    type Found = {
      id: string;
      state: TrackingEmailState;
      delivered: boolean;
      open_sends: number;
      settled_at: Date | null;
      settling: boolean;
    };
    // Delivered: an AAL event, or a `delivered` report about any of its sends. Before sql/012 a
    // delivery that reached us after a later bounce wrote no AAL event, and such an email still
    // stands in permanent_failure.
    const found = await tx<Found[]>`
      select e.id, e.state,
             exists (select 1 from aal_event a where a.tracking_email_id = e.id) or sends.delivered as delivered,
             sends.open_sends, sends.settled_at, coalesce(sends.settled_at > now(), false) as settling
        from tracking_email e
       cross join lateral (
             select count(*) filter (where n.status <> all(${FinalStatuses as string[]}))::int as open_sends,
                    max(n.last_event_at) + make_interval(hours => ${ResendSettleHours}) as settled_at,
                    coalesce(bool_or(exists (select 1 from notification_status_event s
                                              where s.notification_id = n.id and s.status = 'delivered')), false) as delivered
               from notification n where n.tracking_email_id = e.id) sends
       where e.id = any(${ids as string[]}::uuid[])
       order by e.id
         for update of e`;
    const resendable = found.filter((row) => refusal(row) === undefined).map((row) => row.id);

    const copies =
      resendable.length === 0
        ? []
        : await tx<{ id: string; resent_from: string }[]>`
      insert into tracking_email (id, patient_icn, mhv_correlation_id, personalisation, package_count, prescription_count,
                                  state, resent_from, resend_reason)
      select time_ordered_uuid(), e.patient_icn, e.mhv_correlation_id, e.personalisation, e.package_count, e.prescription_count,
             ${stateLiteral(tx, 'queued')}, e.id, ${reason}
        from tracking_email e
       where e.id = any(${resendable}::uuid[])
       order by e.id
      returning id, resent_from`;
    if (copies.length > 0) {
      const [newIds, oldIds] = [copies.map((c) => c.id), copies.map((c) => c.resent_from)];
      await tx`
        update medication_dispense d set tracking_email_id = c.id, updated_at = now()
          from (select unnest(${newIds}::uuid[]) as id, unnest(${oldIds}::uuid[]) as resent_from) c
         where d.tracking_email_id = c.resent_from`;
      await tx`update tracking_email set state = ${stateLiteral(tx, 'resent')}, updated_at = now() where id = any(${oldIds}::uuid[])`;
      await tx`select pg_notify('tracking_email_queued', '')`;
    }
    const copyOf = new Map(copies.map((c) => [c.resent_from, c.id]));
    const resentBefore = found.filter((row) => row.state === 'resent').map((row) => row.id);
    const earlier =
      resentBefore.length === 0
        ? []
        : await tx<{ id: string; resent_from: string }[]>`
      select id, resent_from from tracking_email where resent_from = any(${resentBefore}::uuid[])`;
    const earlierCopyOf = new Map(earlier.map((c) => [c.resent_from, c.id]));
    const byId = new Map(found.map((row) => [row.id, row]));

    return ids.map((id): ResendOutcome => {
      // Postgres answers ids in lower case, whatever case the request named them in.
      const key = id.toLowerCase();
      const row = byId.get(key);
      if (!row) return { id, outcome: 'not_found' };
      const resentAs = copyOf.get(key);
      if (resentAs) return { id, outcome: 'resent', resentAs };
      const earlierCopy = earlierCopyOf.get(key);
      if (earlierCopy) return { id, outcome: 'already_resent', resentAs: earlierCopy };
      // Every email found and not copied was refused: the copies are exactly the unrefused.
      return { id, outcome: 'not_resendable', state: row.state, reason: refusal(row)! };
    });
  });
}

export type AalRetryOutcome =
  | { trackingEmailId: string; outcome: 'retried' }
  | { trackingEmailId: string; outcome: 'not_retryable'; state?: string; reason: string }
  | { trackingEmailId: string; outcome: 'not_found' };

/**
 * Makes the failed AAL event of each named email due again, with a full budget of attempts counted
 * from here. An event in any other state is left alone: pending and posting ones are already on
 * their way, a posted one must not be posted twice, and an unpostable one has no MHV correlation id
 * to post with. An email with no AAL event was never reported delivered.
 */
export async function retryAalEvents(sql: Sql, trackingEmailIds: readonly string[]): Promise<AalRetryOutcome[]> {
  const ids = trackingEmailIds as string[];
  const rows = await sql.begin(async (tx) => {
    const retried = await tx<{ tracking_email_id: string }[]>`
      update aal_event
         set state = 'pending', attempts_before_retry = attempts, next_attempt_at = now(), updated_at = now()
       where tracking_email_id = any(${ids}::uuid[]) and state = 'failed'
      returning tracking_email_id`;
    const found = await tx<{ id: string; email_state: string; aal_state: string | null }[]>`
      select e.id, e.state as email_state, a.state as aal_state
        from tracking_email e left join aal_event a on a.tracking_email_id = e.id
       where e.id = any(${ids}::uuid[])`;
    return { retried: new Set(retried.map((row) => row.tracking_email_id)), found: new Map(found.map((row) => [row.id, row])) };
  });
  return trackingEmailIds.map((trackingEmailId): AalRetryOutcome => {
    // As for a resend: the rows name the ids in lower case.
    const key = trackingEmailId.toLowerCase();
    if (rows.retried.has(key)) return { trackingEmailId, outcome: 'retried' };
    const row = rows.found.get(key);
    if (!row) return { trackingEmailId, outcome: 'not_found' };
    if (row.aal_state === null) {
      return {
        trackingEmailId,
        outcome: 'not_retryable',
        reason: `the email has no AAL event: it is ${row.email_state}, and was never reported delivered`,
      };
    }
    const reason =
      row.aal_state === 'posted'
        ? 'already posted: posting it again would log the email twice'
        : row.aal_state === 'unpostable'
          ? 'it has no MHV correlation id to post with'
          : 'it is already due, or being posted';
    return { trackingEmailId, outcome: 'not_retryable', state: row.aal_state, reason };
  });
}
