// Delivery status events and their effects, one transaction per event: the event is appended
// (de-duplicated), the notification's status moves forward only, the tracking email follows its
// latest notification, and the first delivery of an email writes its AAL event (the outbox row).
// Callbacks, the fallback poll and the sender all come through here. The steps run in Postgres
// (sql/006_record_status_event.sql), so that an event costs one round trip, not one per step.
import { AdvisoryLock } from '../db/locks.ts';
import { DeadlockDetected, LockNotAvailable, type Sql, type SqlHandle, type TransactionSql } from '../db/connect.ts';
import { isUuid } from '../http/schemas.ts';
import { adoptedSendAttempt } from '../sending/repository.ts';
import { AwaitingNotificationStates, stateList, stateLiteral, type FinalStatusState } from '../tracking-email/states.ts';
import {
  PermanentFailures,
  StatusOrder,
  isFinal,
  normaliseStatus,
  progressRank,
  type NormalisedStatus,
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

/** A pending event as stored: its status is normalised again to learn what it means. */
interface StoredEvent {
  id: number;
  status: string;
  status_reason: string | null;
}

/**
 * Namespace of the per-notification advisory lock (two-key form, so it never meets the one-key
 * migration lock). Recording an event and storing a notification id both take it: without it, a
 * callback that commits while the sender's transaction is open would see no notification, and the
 * sender would see no event, and the event would never be applied.
 */
const NotificationLock = AdvisoryLock.notification;

const messages: Record<StatusOutcome, string> = {
  applied: 'notification status applied',
  duplicate: 'duplicate status event ignored',
  stale: 'late status event: the newer status stays',
  pending_notification: 'status event kept until its notification is stored',
  unrecognised: 'unrecognised notification status kept, not applied',
};

/**
 * What a status means to the SQL that applies it (sql/006_record_status_event.sql), decided here so
 * that the status tables live in notification-status.ts only.
 */
interface StatusEffects {
  known: boolean;
  final: boolean;
  /** Progress rank of the status; null for a status this service does not know. */
  rank: number | null;
  /** The state the tracking email follows to; null for a non-final (or unknown) status. */
  emailState: FinalStatusState | null;
  emailReason: string | null;
}

function statusEffects({ status, statusReason, known }: NormalisedStatus): StatusEffects {
  if (!known) return { known, final: false, rank: null, emailState: null, emailReason: null };
  const value = status as NotificationStatus;
  const final = isFinal(value);
  const emailState = !final
    ? null
    : value === 'delivered'
      ? 'delivered'
      : value === 'expired'
        ? 'expired'
        : value === 'temporary-failure'
          ? 'temporary_failure'
          : PermanentFailures.has(value)
            ? 'permanent_failure'
            : null;
  const emailReason = value === 'delivered' ? statusReason : (statusReason ?? `VA Notify status ${value}`);
  return { known, final, rank: progressRank(value), emailState, emailReason };
}

/**
 * Records one status event and applies it: one statement, so one round trip and one transaction
 * (a savepoint when `sql` is already a transaction). Duplicates and late events are harmless and
 * reported as such.
 */
export async function recordStatusEvent(sql: Sql | TransactionSql, event: StatusEvent, options: RecordOptions): Promise<StatusEventResult> {
  const normalised = normaliseStatus(event.status, event.statusReason);
  const effects = statusEffects(normalised);
  // Timestamps go as text (see timestamp()); `to` is never stored.
  const run = async (handle: SqlHandle) => {
    const [row] = await handle<{ outcome: StatusOutcome; aal_event_created: boolean }[]>`
      select outcome, aal_event_created from record_status_event(
        p_lock_namespace => ${NotificationLock}::int,
        p_notification_id => ${event.notificationId}::uuid,
        p_status => ${normalised.status}::text,
        p_status_reason => ${normalised.statusReason}::text,
        p_reference => ${event.reference ?? null}::text,
        p_notify_created_at => ${timestamp(event.createdAt)}::text::timestamptz,
        p_sent_at => ${timestamp(event.sentAt)}::text::timestamptz,
        p_completed_at => ${timestamp(event.completedAt)}::text::timestamptz,
        p_provider => ${event.provider ?? null}::text,
        p_source => ${options.source}::text,
        ${effectArguments(handle, effects, options)})`;
    return { outcome: row!.outcome, aalEventCreated: row!.aal_event_created };
  };
  const result = 'begin' in sql ? await run(sql) : await sql.savepoint(run);
  logOutcome(options.log, event, result.outcome, options.source);
  return result;
}

function logOutcome(log: StatusLog | undefined, event: StatusEvent, outcome: StatusOutcome, source: RecordOptions['source']) {
  const details = { notificationId: event.notificationId, status: event.status, outcome, source };
  if (outcome === 'unrecognised') log?.warn(details, messages[outcome]);
  else log?.info(details, messages[outcome]);
}

/** One event of a batch that Postgres refused; the batch's other events were recorded all the same. */
export class StatusEventFailedError extends Error {
  override name = 'StatusEventFailedError';
  /** The SQLSTATE, so that the HTTP error handler tells an unavailable database from other failures. */
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

/** An event of a batch, and where its caller wants its outcome logged. */
export interface BatchedStatusEvent {
  event: StatusEvent;
  log?: StatusLog;
}

/**
 * Records several events in one statement (sql/008_record_status_events.sql): one round trip and,
 * outside a transaction, one commit for all of them. Each event runs in a block of its own, so one
 * that Postgres refuses is rolled back alone and comes back as a StatusEventFailedError in its place;
 * the others are recorded exactly as recordStatusEvent records them. Results are in input order, and
 * each recorded event is logged to its own logger as recordStatusEvent logs it. The statement as a
 * whole failing (the database unreachable) rejects the returned promise.
 */
export async function recordStatusEvents(
  sql: SqlHandle,
  events: readonly BatchedStatusEvent[],
  options: Omit<RecordOptions, 'log'>,
): Promise<(StatusEventResult | StatusEventFailedError)[]> {
  // The arguments record_status_event takes for each event; timestamps as text (see timestamp()).
  const payload = events.map(({ event }) => {
    const normalised = normaliseStatus(event.status, event.statusReason);
    const effects = statusEffects(normalised);
    return {
      notification_id: event.notificationId,
      status: normalised.status,
      status_reason: normalised.statusReason,
      reference: event.reference ?? null,
      created_at: timestamp(event.createdAt),
      sent_at: timestamp(event.sentAt),
      completed_at: timestamp(event.completedAt),
      provider: event.provider ?? null,
      known: effects.known,
      final: effects.final,
      rank: effects.rank,
      email_state: effects.emailState,
      email_reason: effects.emailReason,
    };
  });
  // As text, cast in SQL: a parameter inferred as jsonb would be JSON-encoded again by postgres.js.
  // Every string is made well-formed first: JSON.stringify writes a lone surrogate (valid JSON from
  // VA Notify, e.g. "\ud800" in a status_reason) as that escape, which Postgres's jsonb input refuses,
  // failing the whole statement, every event of the batch with it, and on each of VA Notify's retries.
  // U+FFFD in its place is what recordStatusEvent stores too (postgres.js encodes parameters as UTF-8).
  const rows = await sql<
    { outcome: StatusOutcome | 'failed'; aal_event_created: boolean; error_code: string | null; error_message: string | null }[]
  >`
    select outcome, aal_event_created, error_code, error_message from record_status_events(
      p_lock_namespace => ${NotificationLock}::int,
      p_events => ${eventsJson(payload)}::text::jsonb,
      p_source => ${options.source}::text,
      p_replay_delay_minutes => ${options.replayDelayMinutes}::int,
      p_send_max_attempts => ${options.sendMaxAttempts}::int,
      p_final_statuses => ${StatusOrder.finalStatuses}::text[],
      p_ranked_statuses => ${StatusOrder.rankedStatuses}::text[],
      p_ranks => ${StatusOrder.ranks}::int[])
    order by event_index`;
  return events.map(({ event, log }, index) => {
    const row = rows[index]!;
    if (row.outcome === 'failed')
      return new StatusEventFailedError(row.error_code ?? 'XX000', row.error_message ?? 'status event not recorded');
    logOutcome(log, event, row.outcome, options.source);
    return { outcome: row.outcome, aalEventCreated: row.aal_event_created };
  });
}

/**
 * The batch as JSON, lone surrogates in its strings as U+FFFD (see recordStatusEvents). JSON.stringify
 * writes a lone surrogate as a lowercase `\udXXX` escape and nothing else with `\ud`, barring a
 * string holding that text itself: so the batch is written once, and a second time with every string
 * made well-formed only when that text appears, which a callback's fields almost never hold.
 */
function eventsJson(payload: unknown): string {
  const json = JSON.stringify(payload);
  if (!json.includes('\\ud')) return json;
  return JSON.stringify(payload, (_key, value: unknown) => (typeof value === 'string' ? value.toWellFormed() : value));
}

/** The arguments both SQL functions take after the event itself, in named notation. */
function effectArguments(sql: SqlHandle, effects: StatusEffects, options: ApplyOptions) {
  return sql`
    p_known => ${effects.known}::boolean,
    p_final => ${effects.final}::boolean,
    p_rank => ${effects.rank}::int,
    p_email_state => ${effects.emailState}::text,
    p_email_reason => ${effects.emailReason}::text,
    p_replay_delay_minutes => ${options.replayDelayMinutes}::int,
    p_send_max_attempts => ${options.sendMaxAttempts}::int,
    p_final_statuses => ${StatusOrder.finalStatuses}::text[],
    p_ranked_statuses => ${StatusOrder.rankedStatuses}::text[],
    p_ranks => ${StatusOrder.ranks}::int[]`;
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
  await tx`select pg_advisory_xact_lock(${NotificationLock}, hashtext(${notificationId}::uuid::text))`;
  // Oldest first, the order VA Notify produced them in; the guard makes the end state the same
  // whatever the order, and this order also replays the intermediate effects (a delivery, then its bounce).
  const events = await tx<StoredEvent[]>`
    select id, status, status_reason
    from notification_status_event
    where notification_id = ${notificationId} and applied_at is null
    order by completed_at nulls first, received_at, id`;
  const summary = { applied: 0, stale: 0, aalEventCreated: false };
  for (const event of events) {
    const normalised = normaliseStatus(event.status, event.status_reason);
    const [row] = await tx<{ outcome: StatusOutcome; aal_event_created: boolean }[]>`
      select outcome, aal_event_created from apply_pending_status_event(
        p_event_id => ${event.id}::bigint,
        p_status => ${normalised.status}::text,
        ${effectArguments(tx, statusEffects(normalised), options)})`;
    const outcome = row!.outcome;
    if (outcome === 'applied') summary.applied += 1;
    if (outcome === 'stale') summary.stale += 1;
    summary.aalEventCreated ||= row!.aal_event_created;
    if (outcome !== 'pending_notification') {
      options.log?.info({ notificationId, status: event.status, outcome, source: 'pending' }, messages[outcome]);
    }
  }
  return summary;
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

/**
 * An event for a notification id this service never stored names its tracking email in `reference`
 * (the sender sets it to the email id): a send VA Notify accepted whose answer was lost. The email
 * adopts that notification at once, as the sweep's orphan lookup would later, and the event is
 * applied; an email still queued is then not sent a second time. False when the reference names no
 * email of ours that awaits a notification (none, or one already sent): the event stays pending
 * until it expires ({@link expireOrphanedStatusEvents}).
 */
export async function adoptNotificationByReference(
  sql: Sql,
  event: Pick<StatusEvent, 'notificationId' | 'reference'>,
  options: ApplyOptions,
): Promise<boolean> {
  const reference = event.reference?.trim();
  if (reference === undefined || !isUuid(reference)) return false;
  // A sender storing this very notification holds the email's row and then takes the notification's
  // lock, the reverse of the order here: rather than wait (a deadlock), the adoption gives up at
  // once, and that sender applies the event, which is committed already.
  return sql
    .begin(async (tx) => {
      await tx`select set_config('lock_timeout', '100ms', true)`;
      await tx`select pg_advisory_xact_lock(${NotificationLock}, hashtext(${event.notificationId}::uuid::text))`;
      // The send found is after every send stored: its attempt is one past the last stored.
      const [email] = await tx<{ attempts: number }[]>`
      select ${adoptedSendAttempt(tx)} as attempts
        from tracking_email e
       where e.id = ${reference}::uuid and e.state in ${stateList(tx, AwaitingNotificationStates)}
         and not exists (select 1 from notification where id = ${event.notificationId}::uuid)
       for update`;
      if (email === undefined) return false;
      await tx`
      insert into notification (id, tracking_email_id, attempt, status)
      values (${event.notificationId}, ${reference}, ${email.attempts}, 'created')
      on conflict do nothing`;
      // A send in flight for it finds the email sent and records nothing twice; a queued one is not sent.
      await tx`
      update tracking_email
         set state = ${stateLiteral(tx, 'sent')}, attempts = ${email.attempts}, lease_until = null, leased_by = null, lease_token = null,
             last_error = null, state_reason = null, updated_at = now()
       where id = ${reference}::uuid`;
      await applyPendingStatusEvents(tx, event.notificationId, options);
      options.log?.warn(
        { emailId: reference, notificationId: event.notificationId },
        'status event for a notification never stored: its email adopted it',
      );
      return true;
    })
    .catch((error: { code?: string }) => {
      if (error.code === LockNotAvailable || error.code === DeadlockDetected) return false;
      throw error;
    });
}

/**
 * Pending events older than `olderThanHours` whose notification was never stored (a notification
 * id no email of ours adopted): they can never apply, so they are removed and counted.
 */
export async function expireOrphanedStatusEvents(sql: SqlHandle, olderThanHours: number): Promise<number> {
  const rows = await sql`
    delete from notification_status_event e
     where e.applied_at is null and e.received_at < now() - make_interval(hours => ${olderThanHours})
       and not exists (select 1 from notification n where n.id = e.notification_id)
    returning 1`;
  return rows.length;
}
