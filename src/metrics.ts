// Prometheus metrics. Counters and the latency histogram count what this instance did; the gauges
// are read from Postgres at scrape time, so every instance reports the same whole-service picture.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Sql } from './db/connect.ts';

export function createMetrics(sql: Sql) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'rx_tracking_' });

  const dispensesIngested = new Counter({
    name: 'rx_dispenses_ingested_total',
    help: 'Dispense events ingested, by outcome (inserted, duplicate, unprocessable, cancelled, rejected)',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  const sends = new Counter({
    name: 'rx_sends_total',
    help: 'Tracking email sends by outcome (sent, recovered, retried, failed, released)',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  const vaNotifyLatency = new Histogram({
    name: 'rx_va_notify_request_duration_seconds',
    help: 'VA Notify request latency by operation (send, get, list) and outcome',
    labelNames: ['operation', 'outcome'] as const,
    buckets: [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const callbacks = new Counter({
    name: 'rx_callbacks_total',
    help: 'VA Notify delivery-status callbacks by outcome (applied, duplicate, stale, pending_notification, unrecognised, unauthorized, invalid) and status',
    labelNames: ['outcome', 'status'] as const,
    registers: [registry],
  });
  const polls = new Counter({
    name: 'rx_status_polls_total',
    help: 'Fallback status polls made to VA Notify, by outcome',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  const aalPosts = new Counter({
    name: 'rx_aal_posts_total',
    help: 'Account Activity Log posts by outcome (posted, retried, failed, released)',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });

  const rowsByState = new Gauge({
    name: 'rx_rows',
    help: 'Rows by table and state: medication_dispense, tracking_email, notification (status), aal_event',
    labelNames: ['table', 'state'] as const,
    registers: [registry],
  });
  const oldestPendingDispense = new Gauge({
    name: 'rx_oldest_pending_dispense_age_seconds',
    help: 'Age of the oldest dispense not yet grouped into an email (0 when none)',
    registers: [registry],
  });
  const oldestOpenNotification = new Gauge({
    name: 'rx_oldest_open_notification_age_seconds',
    help: 'Age of the oldest notification without a final status (0 when none)',
    registers: [registry],
  });
  const sendingPaused = new Gauge({
    name: 'rx_sending_paused',
    help: '1 while sending is paused: VA Notify rejected our credentials, has no send endpoint at the configured URL, is over its limit, or is not answering',
    registers: [registry],
  });
  const aalPaused = new Gauge({
    name: 'rx_aal_paused',
    help: '1 while AAL posting is paused: MHV refused our credentials, or the AAL is not answering',
    registers: [registry],
  });

  /** Reads the whole-service gauges; called at each scrape. */
  async function collectFromDatabase(): Promise<void> {
    const counts = await stateCounts(sql);
    rowsByState.reset();
    for (const [table, states] of Object.entries(counts)) {
      for (const [state, count] of Object.entries(states)) rowsByState.set({ table, state }, count);
    }
    const [ages] = await sql<{ dispense_age: number; notification_age: number; paused: boolean; aal_paused: boolean }[]>`
      select
        coalesce(extract(epoch from now() - (select min(created_at) from medication_dispense where state = 'pending')), 0)::float8 as dispense_age,
        coalesce(extract(epoch from now() - (select min(created_at) from notification
                                              where status in ('created', 'sending', 'pending', 'sent'))), 0)::float8 as notification_age,
        exists (select 1 from rate_budget where paused_until > now()) as paused,
        exists (select 1 from aal_pause where paused_until > now()) as aal_paused`;
    oldestPendingDispense.set(ages?.dispense_age ?? 0);
    oldestOpenNotification.set(ages?.notification_age ?? 0);
    sendingPaused.set(ages?.paused ? 1 : 0);
    aalPaused.set(ages?.aal_paused ? 1 : 0);
  }

  return { registry, dispensesIngested, sends, vaNotifyLatency, callbacks, polls, aalPosts, collectFromDatabase };
}

export type Metrics = ReturnType<typeof createMetrics>;

export type StateCounts = Record<'medication_dispense' | 'tracking_email' | 'notification' | 'aal_event', Record<string, number>>;

/** Row counts by state for the four tables an operator watches (GET /v1/stats and the gauges). */
export async function stateCounts(sql: Sql): Promise<StateCounts> {
  const rows = await sql<{ table_name: keyof StateCounts; state: string; count: number }[]>`
    select 'medication_dispense' as table_name, state, count(*)::int as count from medication_dispense group by state
    union all
    select 'tracking_email', state, count(*)::int from tracking_email group by state
    union all
    select 'notification', status, count(*)::int from notification group by status
    union all
    select 'aal_event', state, count(*)::int from aal_event group by state`;
  const counts: StateCounts = { medication_dispense: {}, tracking_email: {}, notification: {}, aal_event: {} };
  for (const row of rows) counts[row.table_name][row.state] = row.count;
  return counts;
}
