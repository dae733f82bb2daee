// Read-only views of tracking emails for operators (what they may change is in actions.ts). The listing never carries an ICN; the single
// view does, because the on-call engineer asked about one veteran's email by its id.
import type { Sql } from '../db/connect.ts';
import type { EmailDetailView, EmailSummaryRow } from './schemas.ts';

const summaryColumns = (sql: Sql) => sql`
  e.id, e.state, e.state_reason as "stateReason", e.attempts, e.package_count as "packageCount",
  e.prescription_count as "prescriptionCount", e.next_attempt_at as "nextAttemptAt", e.last_error as "lastError",
  e.created_at as "createdAt", e.updated_at as "updatedAt", e.resent_from as "resentFrom"`;

/** Where a page of the list ends: the last email's exact created_at (UTC, to the microsecond) and id. */
export interface ListPosition {
  createdAt: string;
  id: string;
}

/**
 * Emails newest first, in a total order (created_at, then id: a grouping run's emails share one
 * created_at), a page at a time: `after` is where the previous page ended, `before` an instant to
 * start below. Answers the page and where it ends, when a next page may follow.
 */
export async function listTrackingEmails(
  sql: Sql,
  p: { state?: string; aalState?: string; limit: number; before?: Date; after?: ListPosition },
): Promise<{ emails: EmailSummaryRow[]; end?: ListPosition }> {
  // Only the conditions given, so that the plan is a walk down one index (tracking_email_state for a
  // state, tracking_email_created_at without), a page long; `(x is null or ...)` left the planner
  // unable to use either, and every email ever created was sorted for each page. The position goes
  // as text: a timestamptz parameter passes through a JS Date, which keeps milliseconds only.
  const conditions = [
    ...(p.state === undefined ? [] : [sql`e.state = ${p.state}`]),
    // The few emails whose AAL event needs attention, by their own index (aal_event_needs_attention).
    ...(p.aalState === undefined
      ? []
      : [sql`e.id = any(array(select a.tracking_email_id from aal_event a where a.state = ${p.aalState}))`]),
    ...(p.before === undefined ? [] : [sql`e.created_at < ${p.before}`]),
    ...(p.after === undefined ? [] : [sql`(e.created_at, e.id) < (${p.after.createdAt}::text::timestamptz, ${p.after.id}::uuid)`]),
  ];
  const where = conditions.length === 0 ? sql`` : sql`where ${conditions.reduce((all, c) => sql`${all} and ${c}`)}`;
  const rows = await sql<(EmailSummaryRow & { position: string })[]>`
    select ${summaryColumns(sql)}, to_char(e.created_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US"+00"') as position
      from tracking_email e
     ${where}
     order by e.created_at desc, e.id desc
     limit ${p.limit}`;
  const emails = rows.map(({ position: _, ...email }) => email);
  const last = rows.at(-1);
  return { emails, end: rows.length === p.limit && last ? { createdAt: last.position, id: last.id } : undefined };
}

/**
 * A veteran's emails, newest first: the ones that list their dispenses and the ones resent since.
 * The index is keyed by each email's UTC day, then ICN (sql/027): the lookup probes it once for each
 * day from the oldest email kept to the newest, both read off the created_at index.
 */
export function findVeteranEmails(sql: Sql, veteranIcn: string, limit: number) {
  return sql<EmailSummaryRow[]>`
    select ${summaryColumns(sql)} from tracking_email e
     where (e.created_at at time zone 'UTC')::date = any(array(
             select generate_series(
                      date_trunc('day', (select min(created_at) from tracking_email) at time zone 'UTC'),
                      (select max(created_at) from tracking_email) at time zone 'UTC',
                      interval '1 day')::date))
       and e.patient_icn = ${veteranIcn}
     order by e.created_at desc, e.id desc
     limit ${limit}`;
}

export async function getTrackingEmail(sql: Sql, id: string): Promise<EmailDetailView | undefined> {
  type Head = Omit<EmailDetailView, 'dispenses' | 'notifications' | 'aalEvent'>;
  type Notification = Omit<EmailDetailView['notifications'][number], 'history'>;
  type Event = EmailDetailView['notifications'][number]['history'][number] & { notification_id: string };
  const [email] = await sql<Head[]>`
    select ${summaryColumns(sql)}, e.patient_icn as "patientIcn",
           e.mhv_correlation_id is not null as "hasMhvCorrelationId", e.personalisation,
           e.resend_reason as "resendReason", (select r.id from tracking_email r where r.resent_from = e.id) as "resentAs"
      from tracking_email e where e.id = ${id}`;
  if (!email) return undefined;
  const [dispenses, notifications, events, aal] = await Promise.all([
    sql<
      EmailDetailView['dispenses']
    >`select station_number as "stationNumber", right(rx_number, 4) as "rxLast4", fill_number as "fillNumber",
               carrier, tracking_number as "trackingNumber", shipped_at as "shippedAt"
          from medication_dispense where tracking_email_id = ${id} order by tracking_number, rx_number`,
    sql<Notification[]>`select id, attempt, status, status_reason as "statusReason", sent_at as "sentAt",
               completed_at as "completedAt", created_at as "createdAt"
          from notification where tracking_email_id = ${id} order by attempt`,
    sql<Event[]>`select s.notification_id, s.status, s.status_reason as "statusReason", s.completed_at as "completedAt",
               s.source, s.received_at as "receivedAt"
         -- The email's notification ids first, then their events by index: as a join, a planner
         -- without statistics on the events hashed all of them (800,000: 0.2 to 0.35 s).
          from notification_status_event s
         where s.notification_id = any(array(select id from notification where tracking_email_id = ${id}))
         order by s.received_at, s.id`,
    sql<
      NonNullable<EmailDetailView['aalEvent']>[]
    >`select state, attempts, attempts_before_retry as "attemptsBeforeRetry", last_error as "lastError", completion_time as "completionTime", posted_at as "postedAt"
          from aal_event where tracking_email_id = ${id}`,
  ]);
  return {
    ...email,
    dispenses,
    notifications: notifications.map((n) => ({
      ...n,
      history: events.filter((e) => e.notification_id === n.id).map(({ notification_id: _, ...rest }) => rest),
    })),
    aalEvent: aal[0] ?? null,
  };
}
