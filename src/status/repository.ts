// Delivery status events and their effects, one transaction per event: the event is appended
// (de-duplicated), the notification's status moves forward only, the tracking email follows its
// latest notification, and the first delivery of an email writes its AAL event (the outbox row).
// Callbacks, the fallback poll and the sender all come through here.
import { AdvisoryLock } from '../db/locks.ts';
import type { Sql, SqlHandle, TransactionSql } from '../db/connect.ts';
import {
  FINAL_STATUSES,
  PERMANENT_FAILURES,
  isFinal,
  normaliseStatus,
  progressRank,
  type NotificationStatus,
} from './notification-status.ts';

/** What VA Notify said about one notification (a callback body or a polled notification). */
export interface StatusEvent {
  notificationId: string;
  status: string;
  statusReason?: string | null;
  reference?: string | null;
  /** VA Notify's timestamps; strings keep their microseconds, which the de-duplication key needs. */
  createdAt?: string | Date | null;
  sentAt?: string | Date | null;
  completedAt?: string | Date | null;
  provider?: string | null;
}

export interface StatusLog {
  info(details: object, message: string): void;
  warn(details: object, message: string): void;
}

export interface ApplyOptions {
  /** A temporary failure is replayed this long after it is reported. */
  replayDelayMinutes: number;
  /** An email whose attempts reached this fails instead of being replayed. */
  sendMaxAttempts: number;
  log?: StatusLog;
}

export interface RecordOptions extends ApplyOptions {
  source: 'callback' | 'poll';
}

export type StatusOutcome =
  | 'applied' // the notification's status changed
  | 'duplicate' // this (notification, status, completed_at) was recorded before
  | 'stale' // older than the status the notification already has
  | 'pending_notification' // the notification id is not stored yet; applied when the sender stores it
  | 'unrecognised'; // a status this service does not know; kept, never applied

export interface StatusEventResult {
  outcome: StatusOutcome;
  aalEventCreated: boolean;
}

/** Timestamps stay in the row (microseconds intact) and are read there by the statements that need them. */
interface StoredEvent {
  id: number;
  notification_id: string;
  status: string;
  status_reason: string | null;
}

/**
 * Namespace of the per-notification advisory lock (two-key form, so it never meets the one-key
 * migration lock). Recording an event and storing a notification id both take it: without it, a
 * callback that commits while the sender's transaction is open would see no notification, and the
 * sender would see no event, and the event would never be applied.
 */
const NOTIFICATION_LOCK = AdvisoryLock.notification;

const messages: Record<StatusOutcome, string> = {
  applied: 'notification status applied',
  duplicate: 'duplicate status event ignored',
  stale: 'late status event ignored',
  pending_notification: 'status event kept until its notification is stored',
  unrecognised: 'unrecognised notification status kept, not applied',
};

/**
 * Records one status event and applies it, all in one transaction (a savepoint when `sql` is
 * already a transaction). Duplicates and late events are harmless and reported as such.
 */
export async function recordStatusEvent(
  sql: Sql | TransactionSql,
  event: StatusEvent,
  options: RecordOptions,
): Promise<StatusEventResult> {
  const run = (tx: TransactionSql) => recordInTransaction(tx, event, options);
  const result = 'begin' in sql ? await sql.begin(run) : await sql.savepoint(run);
  const details = { notificationId: event.notificationId, status: event.status, outcome: result.outcome, source: options.source };
  if (result.outcome === 'unrecognised') options.log?.warn(details, messages[result.outcome]);
  else options.log?.info(details, messages[result.outcome]);
  return result;
}

async function recordInTransaction(tx: TransactionSql, event: StatusEvent, options: RecordOptions): Promise<StatusEventResult> {
  const { status, statusReason } = normaliseStatus(event.status, event.statusReason);
  await lockNotification(tx, event.notificationId);
  // The unique key (notification_id, status, completed_at) makes a redelivered callback, or a poll
  // that reads what a callback already said, a no-op. `to` is never stored.
  const [stored] = await tx<StoredEvent[]>`
    insert into notification_status_event
      (notification_id, status, status_reason, reference, notify_created_at, sent_at, completed_at, provider, source)
    values (${event.notificationId}, ${status}, ${statusReason}, ${event.reference ?? null},
            ${timestamp(event.createdAt)}::text::timestamptz, ${timestamp(event.sentAt)}::text::timestamptz,
            ${timestamp(event.completedAt)}::text::timestamptz, ${event.provider ?? null}, ${options.source})
    on conflict on constraint notification_status_event_dedup do nothing
    returning id, notification_id, status, status_reason`;
  if (stored === undefined) {
    await touchNotification(tx, event.notificationId);
    return { outcome: 'duplicate', aalEventCreated: false };
  }
  return applyStoredEvent(tx, stored, options);
}

/**
 * Applies the events that arrived before their notification id was stored. The sender calls this in
 * the transaction that stores the id (after the notification row exists and the email is marked
 * sent), so no event is left behind whichever commits first.
 */
export async function applyPendingStatusEvents(
  tx: SqlHandle,
  notificationId: string,
  options: ApplyOptions,
): Promise<{ applied: number; stale: number; aalEventCreated: boolean }> {
  await lockNotification(tx, notificationId);
  // Oldest first, the order VA Notify produced them in; the guard makes the end state the same
  // whatever the order, and this order also replays the intermediate effects (a delivery, then its bounce).
  const events = await tx<StoredEvent[]>`
    select id, notification_id, status, status_reason
    from notification_status_event
    where notification_id = ${notificationId} and applied_at is null
    order by completed_at nulls first, received_at, id`;
  const summary = { applied: 0, stale: 0, aalEventCreated: false };
  for (const event of events) {
    const result = await applyStoredEvent(tx, event, options);
    if (result.outcome === 'applied') summary.applied += 1;
    if (result.outcome === 'stale') summary.stale += 1;
    summary.aalEventCreated ||= result.aalEventCreated;
    if (result.outcome !== 'pending_notification') {
      options.log?.info({ notificationId, status: event.status, outcome: result.outcome, source: 'pending' }, messages[result.outcome]);
    }
  }
  return summary;
}

async function lockNotification(tx: SqlHandle, notificationId: string): Promise<void> {
  await tx`select pg_advisory_xact_lock(${NOTIFICATION_LOCK}, hashtext(${notificationId}::uuid::text))`;
}

/** Every event counts as news of the notification: the fallback poll only asks about silent ones. */
async function touchNotification(tx: SqlHandle, notificationId: string) {
  const [row] = await tx<{ tracking_email_id: string; attempt: number }[]>`
    update notification set last_event_at = now()
    where id = ${notificationId}
    returning tracking_email_id, attempt`;
  return row;
}

async function applyStoredEvent(tx: SqlHandle, event: StoredEvent, options: ApplyOptions): Promise<StatusEventResult> {
  const notification = await touchNotification(tx, event.notification_id);
  if (notification === undefined) return { outcome: 'pending_notification', aalEventCreated: false };

  await tx`update notification_status_event set applied_at = now() where id = ${event.id}`;
  const known = normaliseStatus(event.status, event.status_reason);
  if (!known.known) return { outcome: 'unrecognised', aalEventCreated: false };
  const status = known.status as NotificationStatus;
  const final = isFinal(status);

  // Status only moves forward. Events are ordered by (final, completed_at, progress, receipt): a
  // final status always ends a non-final one and is never replaced by one; between two finals or
  // two non-finals the later completion wins, so a late `sending` never overwrites `delivered`
  // while a bounce (`permanent-failure` after `delivered`) is still recorded.
  const [updated] = await tx`
    update notification n set
      status = ${status},
      status_reason = e.status_reason,
      status_completed_at = e.completed_at,
      status_received_at = e.received_at,
      sent_at = coalesce(e.sent_at, n.sent_at),
      completed_at = case when ${final}::boolean then coalesce(e.completed_at, e.received_at) else n.completed_at end,
      updated_at = now()
    from notification_status_event e
    where e.id = ${event.id} and n.id = e.notification_id
      and (${final}::boolean, coalesce(e.completed_at, '-infinity'), ${progressRank(status)}::int, e.received_at)
        > (n.status = any(${FINAL_STATUSES as string[]}::text[]),
           coalesce(n.status_completed_at, '-infinity'),
           case n.status when 'created' then 0 when 'sending' then 1 when 'pending' then 1 when 'sent' then 2 else 3 end,
           n.status_received_at)
    returning n.id`;
  if (updated === undefined) return { outcome: 'stale', aalEventCreated: false };

  if (final) await followOnEmail(tx, notification.tracking_email_id, notification.attempt, status, event.status_reason, options);
  const aalEventCreated =
    status === 'delivered' ? await createAalEvent(tx, notification.tracking_email_id, event) : false;
  return { outcome: 'applied', aalEventCreated };
}

/**
 * The tracking email shows the final status of its latest send: a late event about an earlier
 * attempt (replayed since) changes that notification only. An email that is queued or being sent
 * belongs to the sender, and a shadowed one was never sent, so neither is touched.
 */
async function followOnEmail(
  tx: SqlHandle,
  emailId: string,
  attempt: number,
  status: NotificationStatus,
  statusReason: string | null,
  options: ApplyOptions,
): Promise<void> {
  const temporary = status === 'temporary-failure';
  const state = status === 'delivered' ? 'delivered'
    : status === 'expired' ? 'expired'
    : temporary ? 'temporary_failure'
    : PERMANENT_FAILURES.has(status) ? 'permanent_failure'
    : undefined;
  if (state === undefined) return;
  const reason = status === 'delivered' ? statusReason : (statusReason ?? `VA Notify status ${status}`);
  // A temporary failure is not retried by VA Notify: the sweep replays the email once
  // next_attempt_at passes, until the email has used all its attempts.
  await tx`
    update tracking_email t set
      state = case when ${temporary}::boolean and t.attempts >= ${options.sendMaxAttempts}::int then 'failed' else ${state} end,
      state_reason = ${reason},
      next_attempt_at = case when ${temporary}::boolean and t.attempts < ${options.sendMaxAttempts}::int
                             then now() + make_interval(mins => ${options.replayDelayMinutes}::int)
                             else t.next_attempt_at end,
      updated_at = now()
    where t.id = ${emailId}
      and t.state in ('sent', 'delivered', 'permanent_failure', 'temporary_failure', 'failed', 'expired')
      and ${attempt}::int = (select max(n.attempt) from notification n where n.tracking_email_id = t.id)`;
}

/**
 * The AAL outbox row, written with the delivery it reports. The unique tracking_email_id makes it
 * exactly one per email, however often or late `delivered` arrives. The detail names packages by
 * carrier and tracking number and prescriptions by the last four digits of the Rx number only:
 * no drug names and no full Rx numbers in an audit log.
 */
async function createAalEvent(tx: SqlHandle, emailId: string, event: StoredEvent): Promise<boolean> {
  const inserted = await tx`
    insert into aal_event (tracking_email_id, notification_id, mhv_correlation_id, completion_time, detail_value, state, last_error)
    select t.id, e.notification_id, c.correlation_id,
           coalesce(e.completed_at, e.received_at),
           (select coalesce('Packages: ' || string_agg(p.package, '; ' order by p.carrier, p.tracking_number), 'Packages: none listed')
              from (select d.carrier, d.tracking_number,
                           d.carrier || ' ' || d.tracking_number || ' (Rx ending '
                             || string_agg(distinct right(d.rx_number, 4), ', ' order by right(d.rx_number, 4)) || ')' as package
                      from medication_dispense d
                     where d.tracking_email_id = t.id and d.tracking_number <> ''
                     group by d.carrier, d.tracking_number) p),
           case when c.correlation_id is null then 'unpostable' else 'pending' end,
           case when c.correlation_id is null then 'no MHV correlation id' end
    from tracking_email t
    join notification_status_event e on e.id = ${event.id}
    cross join lateral (select nullif(trim(t.mhv_correlation_id), '') as correlation_id) c
    where t.id = ${emailId}
    on conflict (tracking_email_id) do nothing
    returning id`;
  return inserted.length > 0;
}

/**
 * A timestamp as text for Postgres to read: postgres.js would turn a timestamptz parameter into a
 * JavaScript Date and drop the microseconds. VA Notify's times are UTC; one without a zone is read
 * as UTC, not in the session's zone.
 */
function timestamp(value: string | Date | null | undefined): string | null {
  if (value === undefined || value === null) return null;
  if (value instanceof Date) return value.toISOString();
  return /(Z|[+-]\d{2}(:?\d{2})?)$/i.test(value) ? value : `${value}Z`;
}
