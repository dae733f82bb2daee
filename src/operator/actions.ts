// What an operator may do about an email that did not reach its veteran, or an AAL event that did not
// reach MHV, once the cause is mended (a VA Notify template fixed, a veteran's VA Profile corrected,
// MHV's AAL back): send it again, post it again. Each request names the rows; nothing is chosen for
// the operator. sql/016_operator_resend.sql says why a resend is a new email.
import type { Sql } from '../db/connect.ts';
import { FINAL_STATUSES } from '../status/notification-status.ts';

/** The email states a resend may start from: the send failed for good, or VA Notify could not deliver it. */
export const ResendableStates = ['failed', 'permanent_failure', 'expired'] as const;

export type ResendOutcome =
  | { id: string; outcome: 'resent' | 'already_resent'; resentAs: string }
  | { id: string; outcome: 'not_resendable'; state: string; reason: string }
  | { id: string; outcome: 'not_found' };

/**
 * Resends each named email that is in a resendable state and has no send still open: a new queued
 * email with the same recipient and text, the dispenses moved to it, `resent_from` naming the old.
 * An email already resent answers the resend that exists, so a repeated request sends nothing more.
 * One transaction; the emails are locked in id order, so two requests naming the same emails wait
 * for each other instead of deadlocking.
 */
export async function resendTrackingEmails(sql: Sql, ids: readonly string[], reason: string): Promise<ResendOutcome[]> {
  const outcomes = await sql.begin(async (tx) => {
    const found = await tx<{ id: string; state: string; resent_as: string | null; open_sends: number }[]>`
      select e.id, e.state,
             (select r.id from tracking_email r where r.resent_from = e.id) as resent_as,
             (select count(*)::int from notification n where n.tracking_email_id = e.id and n.status <> all(${FINAL_STATUSES as string[]})) as open_sends
        from tracking_email e
       where e.id = any(${ids as string[]}::uuid[])
       order by e.id
         for update of e`;
    const byId = new Map(found.map((row) => [row.id, row]));
    const resendable = found.filter(
      (row) => row.resent_as === null && row.open_sends === 0 && (ResendableStates as readonly string[]).includes(row.state),
    );

    // ON CONFLICT: a concurrent request may have resent one of them since this statement's snapshot.
    const copies = resendable.length === 0 ? [] : await tx<{ id: string; resent_from: string }[]>`
      insert into tracking_email (id, patient_icn, mhv_correlation_id, personalisation, package_count, prescription_count,
                                  state, resent_from, resend_reason)
      select time_ordered_uuid(), e.patient_icn, e.mhv_correlation_id, e.personalisation, e.package_count, e.prescription_count,
             'queued', e.id, ${reason}
        from tracking_email e
       where e.id = any(${resendable.map((row) => row.id)}::uuid[])
       order by e.id
          on conflict (resent_from) where resent_from is not null do nothing
      returning id, resent_from`;
    if (copies.length > 0) {
      await tx`
        update medication_dispense d set tracking_email_id = c.id, updated_at = now()
          from (select unnest(${copies.map((c) => c.id)}::uuid[]) as id, unnest(${copies.map((c) => c.resent_from)}::uuid[]) as resent_from) c
         where d.tracking_email_id = c.resent_from`;
      await tx`select pg_notify('tracking_email_queued', '')`;
    }
    const copyOf = new Map(copies.map((c) => [c.resent_from, c.id]));
    const raced = resendable.filter((row) => !copyOf.has(row.id));
    const racedCopies = raced.length === 0 ? [] : await tx<{ id: string; resent_from: string }[]>`
      select id, resent_from from tracking_email where resent_from = any(${raced.map((row) => row.id)}::uuid[])`;
    const existingCopyOf = new Map(racedCopies.map((c) => [c.resent_from, c.id]));

    return ids.map((id): ResendOutcome => {
      const row = byId.get(id);
      if (!row) return { id, outcome: 'not_found' };
      const resentAs = copyOf.get(id);
      if (resentAs) return { id, outcome: 'resent', resentAs };
      const earlier = row.resent_as ?? existingCopyOf.get(id);
      if (earlier) return { id, outcome: 'already_resent', resentAs: earlier };
      if (row.open_sends > 0) {
        return { id, outcome: 'not_resendable', state: row.state, reason: 'a send of this email is still open at VA Notify: wait for its final status' };
      }
      return { id, outcome: 'not_resendable', state: row.state, reason: `only an email in ${ResendableStates.join(', ')} is resent` };
    });
  });
  return outcomes;
}

export type AalRetryOutcome =
  | { trackingEmailId: string; outcome: 'retried' }
  | { trackingEmailId: string; outcome: 'not_retryable'; state: string; reason: string }
  | { trackingEmailId: string; outcome: 'not_found' };

/**
 * Makes the failed AAL event of each named email due again, with a full budget of attempts counted
 * from here. An event in any other state is left alone: pending and posting ones are already on
 * their way, a posted one must not be posted twice, and an unpostable one has no MHV correlation id
 * to post with.
 */
export async function retryAalEvents(sql: Sql, trackingEmailIds: readonly string[]): Promise<AalRetryOutcome[]> {
  const ids = trackingEmailIds as string[];
  const [retried, others] = await sql.begin(async (tx) => [
    await tx<{ tracking_email_id: string }[]>`
      update aal_event
         set state = 'pending', attempts_before_retry = attempts, next_attempt_at = now(), updated_at = now()
       where tracking_email_id = any(${ids}::uuid[]) and state = 'failed'
      returning tracking_email_id`,
    await tx<{ tracking_email_id: string; state: string }[]>`
      select tracking_email_id, state from aal_event where tracking_email_id = any(${ids}::uuid[]) and state <> 'failed'`,
  ] as const);
  const done = new Set(retried.map((row) => row.tracking_email_id));
  const stateOf = new Map(others.map((row) => [row.tracking_email_id, row.state]));
  return trackingEmailIds.map((trackingEmailId): AalRetryOutcome => {
    if (done.has(trackingEmailId)) return { trackingEmailId, outcome: 'retried' };
    const state = stateOf.get(trackingEmailId);
    if (state === undefined) return { trackingEmailId, outcome: 'not_found' };
    const reason = state === 'posted' ? 'already posted: posting it again would log the email twice'
      : state === 'unpostable' ? 'it has no MHV correlation id to post with'
      : 'it is already due, or being posted';
    return { trackingEmailId, outcome: 'not_retryable', state, reason };
  });
}
