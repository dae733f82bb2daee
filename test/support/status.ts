// Rows as the grouping job and the sender leave them, written directly, and a look at every table
// so a test can tell that a request changed nothing.
import postgres from 'postgres';
import type { SqlHandle } from '../../src/db/connect.ts';
import type { buildApp } from '../../src/app.ts';
import type { StatusEvent } from '../../src/status/repository.ts';
import { insertDispenses, insertTrackingEmail, type DispenseFixture, type TrackingEmailFixture } from './fixtures.ts';

export const veteranIcn = '1012845631V123456';
export const recipient = 'veteran@example.com';

/** A tracking email as the sender leaves it after its first send; returns its id. */
export function insertEmail(sql: SqlHandle, email: TrackingEmailFixture = {}): Promise<string> {
  return insertTrackingEmail(sql, {
    patient_icn: veteranIcn,
    mhv_correlation_id: '15176497',
    personalisation: { tracking_info: 'UPS 1Z9999990312345678' },
    state: 'sent',
    attempts: 1,
    ...email,
  });
}

/** The email's dispenses, grouped into it: one package line each in its AAL event. */
export function insertGroupedDispenses(
  sql: SqlHandle,
  emailId: string,
  dispenses: Omit<DispenseFixture, 'patient_icn'>[],
): Promise<number[]> {
  return insertDispenses(
    sql,
    dispenses.map((dispense, index) => ({
      station_number: '741',
      patient_icn: veteranIcn,
      fill_number: index,
      mhv_correlation_id: '15176497',
      shipped_at: null,
      arrived_minutes_ago: 0,
      ...dispense,
      state: 'grouped',
      tracking_email_id: emailId,
    })),
  );
}

/** The callback body exactly as the VA Notify contract shows it (service-level mechanism). */
export function callbackBody(notificationId: string, fields: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: notificationId,
    reference: null,
    to: recipient,
    status: 'delivered',
    created_at: '2026-05-14T13:22:08.123456Z',
    completed_at: '2026-05-14T13:22:41.654321Z',
    sent_at: '2026-05-14T13:22:09.000001Z',
    notification_type: 'email',
    status_reason: null,
    provider: 'ses',
    ...fields,
  };
}

const tables = [
  'inbound_message',
  'medication_dispense',
  'tracking_email',
  'notification',
  'notification_status_event',
  'aal_event',
  'rate_budget',
] as const;

/** Posts a VA Notify callback body (an object, or a string sent as it is) with the bearer token given. */
export function postCallback(app: Awaited<ReturnType<typeof buildApp>>, token: string, body: unknown) {
  return app.inject({
    method: 'POST',
    url: '/v1/va-notify/callbacks',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    payload: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

/** Every row of every table, as a digest per table: equal snapshots mean nothing was written. */
export async function snapshot(sql: SqlHandle): Promise<Record<string, string>> {
  const result: Record<string, string> = {};
  for (const table of tables) {
    const [row] = await sql<{ rows: number; digest: string | null }[]>`
      select count(*)::int as rows, md5(string_agg(t::text, ',' order by t::text)) as digest from ${sql(table)} t`;
    result[table] = `${row!.rows}:${row!.digest ?? ''}`;
  }
  return result;
}

export async function eventsOf(sql: SqlHandle, notificationId: string) {
  return sql<{ status: string; status_reason: string | null; applied_at: Date | null; source: string }[]>`
    select status, status_reason, applied_at, source from notification_status_event
    where notification_id = ${notificationId} order by id`;
}

export async function notificationRow(sql: SqlHandle, notificationId: string) {
  const [row] = await sql<
    { status: string; status_reason: string | null; completed_at: Date | null; sent_at: Date | null; last_event_at: Date }[]
  >`
    select status, status_reason, completed_at, sent_at, last_event_at from notification where id = ${notificationId}`;
  return row!;
}

export async function emailRow(sql: SqlHandle, emailId: string) {
  const [row] = await sql<{ state: string; state_reason: string | null; next_attempt_at: Date; replay_in_minutes: number }[]>`
    select state, state_reason, next_attempt_at,
           round(extract(epoch from next_attempt_at - now()) / 60)::int as replay_in_minutes
    from tracking_email where id = ${emailId}`;
  return row!;
}

export async function aalEventsOf(sql: SqlHandle, emailId: string) {
  return sql<
    {
      notification_id: string;
      mhv_correlation_id: string | null;
      completion_time: Date;
      detail_value: string;
      state: string;
      last_error: string | null;
    }[]
  >`
    select notification_id, mhv_correlation_id, completion_time, detail_value, state, last_error
    from aal_event where tracking_email_id = ${emailId}`;
}

/** The options the callback route records with. */
export const callbackOptions = { replayDelayMinutes: 60, sendMaxAttempts: 5, source: 'callback' as const };

/** A `delivered` event for the notification, with microseconds in its completion time. */
export const deliveredEvent = (notificationId: string, fields: Partial<StatusEvent> = {}): StatusEvent => ({
  notificationId,
  status: 'delivered',
  completedAt: '2026-05-14T13:22:41.654321Z',
  ...fields,
});

/**
 * A pool whose statements are listed, warmed so that its connections' own start-up is not counted:
 * for tests of how many statements a piece of work sends.
 */
export async function tracedPool(t: { teardown: (fn: () => unknown) => void }, url: string, max: number) {
  const statements: string[] = [];
  const traced = postgres(url, { max, onnotice: () => {}, debug: (_connection, query) => statements.push(query) });
  t.teardown(() => traced.end({ timeout: 5 }));
  await Promise.all(Array.from({ length: max }, () => traced`select pg_sleep(0.01)`));
  statements.length = 0;
  return { traced, statements };
}

/**
 * Waits until a session waits for an advisory lock, that is, until the work under test is queued behind
 * a lock the test holds; returns that session's pid.
 */
export async function advisoryLockWaiter(sql: SqlHandle): Promise<number> {
  for (;;) {
    const [waiting] = await sql<{ pid: number }[]>`select pid from pg_locks where locktype = 'advisory' and not granted`;
    if (waiting) return waiting.pid;
    await new Promise((resolve) => setImmediate(resolve));
  }
}
