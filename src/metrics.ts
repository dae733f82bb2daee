// Prometheus metrics. Counters and the latency histogram count what this instance did; the gauges
// are read from Postgres at scrape time, so every instance reports the same whole-service picture.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { planForWorkInProgress, type Sql } from './db/connect.ts';

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

  const eventBusRecords = new Counter({
    name: 'rx_event_bus_records_total',
    help: 'Event-bus (Kafka) records by outcome: stored, duplicate (every dispense stored before), redelivered (the record stored before), not_avro, unknown_schema, undecodable, invalid_dispense (the last four kept as rejected)',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  const eventBusLag = new Gauge({
    name: 'rx_event_bus_consumer_lag',
    help: "Records of each partition this instance consumes not yet committed by its group (the partition's end offset less the committed offset)",
    labelNames: ['topic', 'partition'] as const,
    registers: [registry],
  });

  const rowsByState = new Gauge({
    name: 'rx_rows',
    help: 'Rows of work in progress, by table and state: medication_dispense pending; tracking_email queued, sending, temporary_failure; notification (status) created, sending, pending, sent; aal_event pending, posting. Every state: GET /v1/stats',
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
    const gauges = await gaugeReadings(sql);
    rowsByState.reset();
    for (const [table, states] of Object.entries(gauges.counts)) {
      for (const [state, count] of Object.entries(states)) rowsByState.set({ table, state }, count);
    }
    oldestPendingDispense.set(gauges.dispenseAge);
    oldestOpenNotification.set(gauges.notificationAge);
    sendingPaused.set(gauges.sendingPaused ? 1 : 0);
    aalPaused.set(gauges.aalPaused ? 1 : 0);
  }

  return { registry, dispensesIngested, eventBusRecords, eventBusLag, sends, vaNotifyLatency, callbacks, polls, aalPosts, collectFromDatabase };
}

export type Metrics = ReturnType<typeof createMetrics>;

export type StateCounts = Record<'medication_dispense' | 'tracking_email' | 'notification' | 'aal_event', Record<string, number>>;

/**
 * What a scrape reads from Postgres. Only work in progress, each state through the partial index
 * that holds it (pending dispenses through their tracking email drafts), so that a scrape reads the work and not the history: counting every state read the
 * four tables whole (0.7 to 1.7 s a scrape beside 400,000 emails). Failures are history too (kept
 * for good, they grow with it): they are alerted on from the outcome counters. Planned for work in
 * progress ({@link planForWorkInProgress}), so that stale statistics cannot send it to the tables.
 */
async function gaugeReadings(sql: Sql): Promise<{
  counts: StateCounts;
  dispenseAge: number;
  notificationAge: number;
  sendingPaused: boolean;
  aalPaused: boolean;
}> {
  return sql.begin(async (tx) => {
    await planForWorkInProgress(tx);
    const [row] = await tx<{
      dispense_pending: number; email_queued: number; email_sending: number; email_temporary_failure: number;
      aal_pending: number; aal_posting: number;
      dispense_age: number; paused: boolean; aal_paused: boolean;
    }[]>`
      select
        -- Pending dispenses are those of the tracking email drafts (sql/019), read by the email index.
        (select count(*) from tracking_email_draft r
           join medication_dispense d on d.tracking_email_id = r.id and d.state = 'pending')::int as dispense_pending,
        (select count(*) from tracking_email where state = 'queued')::int as email_queued,
        (select count(*) from tracking_email where state = 'sending')::int as email_sending,
        (select count(*) from tracking_email where state = 'temporary_failure')::int as email_temporary_failure,
        (select count(*) from aal_event where state = 'pending')::int as aal_pending,
        (select count(*) from aal_event where state = 'posting')::int as aal_posting,
        -- The oldest draft's first arrival, off the draft age index: a draft left with no pending
        -- dispense (its dispenses excluded at cut-over) waits for grouping to delete it, unnamed here.
        coalesce(extract(epoch from now() - (
          select r.first_arrival_at from tracking_email_draft r
           where exists (select 1 from medication_dispense d where d.tracking_email_id = r.id and d.state = 'pending')
           order by r.first_arrival_at limit 1)), 0)::float8 as dispense_age,
        exists (select 1 from rate_budget where paused_until > now()) as paused,
        exists (select 1 from aal_pause where paused_until > now()) as aal_paused`;
    // Open notifications, counted and aged in one pass (the list is the notification_open index's).
    const open = await tx<{ status: string; count: number; age: number }[]>`
      select status, count(*)::int as count, extract(epoch from now() - min(created_at))::float8 as age
        from notification
       where status in ('created', 'sending', 'pending', 'sent') group by status`;
    const r = row!;
    return {
      counts: {
        medication_dispense: { pending: r.dispense_pending },
        tracking_email: { queued: r.email_queued, sending: r.email_sending, temporary_failure: r.email_temporary_failure },
        notification: { created: 0, sending: 0, pending: 0, sent: 0, ...Object.fromEntries(open.map((o) => [o.status, o.count])) },
        aal_event: { pending: r.aal_pending, posting: r.aal_posting },
      },
      dispenseAge: r.dispense_age,
      notificationAge: Math.max(0, ...open.map((o) => o.age)),
      sendingPaused: r.paused,
      aalPaused: r.aal_paused,
    };
  });
}

/** Row counts of every state for the four tables an operator watches (GET /v1/stats, on demand: it reads the tables whole). */
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
