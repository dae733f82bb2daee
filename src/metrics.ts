// Prometheus metrics. Counters and the latency histogram count what this instance did; the gauges
// are read from Postgres at scrape time, so every instance reports the same whole-service picture.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { planForWorkInProgress, type Sql } from './db/connect.ts';
import { stateLiteral, type TrackingEmailState } from './tracking-email/states.ts';

export function createMetrics(sql: Sql) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'rx_tracking_' });

  // Each metric is registered with this instance's registry only, never prom-client's global one.
  const counter = <L extends string = never>(name: string, help: string, labelNames: readonly L[] = []) =>
    new Counter({ name, help, labelNames, registers: [registry] });
  const gauge = <L extends string = never>(name: string, help: string, labelNames: readonly L[] = []) =>
    new Gauge({ name, help, labelNames, registers: [registry] });
  const histogram = <L extends string>(name: string, help: string, labelNames: readonly L[], buckets: number[]) =>
    new Histogram({ name, help, labelNames, buckets, registers: [registry] });

  const dispensesIngested = counter(
    'rx_dispenses_ingested_total',
    'Dispense events ingested, by outcome (inserted, duplicate, unprocessable, cancelled, rejected)',
    ['outcome'],
  );
  const sends = counter('rx_sends_total', 'Tracking email sends by outcome (sent, recovered, retried, failed, released)', ['outcome']);
  const vaNotifyLatency = histogram(
    'rx_va_notify_request_duration_seconds',
    'VA Notify request latency by operation (send, get, list) and outcome',
    ['operation', 'outcome'],
    [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  );
  const callbacks = counter(
    'rx_callbacks_total',
    'VA Notify delivery-status callbacks by outcome (applied, duplicate, stale, pending_notification, unrecognised, unauthorized, invalid) and status (none when refused: unauthorized, invalid)',
    ['outcome', 'status'],
  );
  const polls = counter('rx_status_polls_total', 'Fallback status polls made to VA Notify, by outcome', ['outcome']);
  const statusEventsExpired = counter(
    'rx_status_events_expired_total',
    'Status events for a notification id never stored, whose reference names no email awaiting one, removed by the sweep after 24 hours',
  );
  const aalPosts = counter('rx_aal_posts_total', 'Account Activity Log posts by outcome (posted, retried, failed, released)', ['outcome']);
  const retentionRemoved = counter(
    'rx_retention_removed_total',
    'Records retention removed, by record (inboundBodies emptied; inboundMessages, trackingEmails, dispenses, notifications, statusEvents, aalEvents removed; dispenseKeysKept written, dispenseKeysPurged removed)',
    ['record'],
  );

  const httpRequests = counter(
    'rx_http_requests_total',
    'HTTP requests answered, by method, route pattern (unmatched for unknown URLs) and status code',
    ['method', 'route', 'status_code'],
  );
  const httpRequestDuration = histogram(
    'rx_http_request_duration_seconds',
    'Time from a request arriving to its answer being sent, by method, route pattern and status code',
    ['method', 'route', 'status_code'],
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  );

  const eventBusRecords = counter(
    'rx_event_bus_records_total',
    'Event-bus (Kafka) records by outcome: stored, duplicate (every dispense stored before), redelivered (the record stored before), not_avro, unknown_schema, undecodable, invalid_dispense (the last four kept as rejected)',
    ['outcome'],
  );
  const eventBusLag = gauge(
    'rx_event_bus_consumer_lag',
    "Records of each partition this instance consumes not yet committed by its group (the partition's end offset less the committed offset)",
    ['topic', 'partition'],
  );

  const rowsByState = gauge(
    'rx_rows',
    'Rows of work in progress, by table and state: medication_dispense pending; tracking_email queued, sending, temporary_failure; notification (status) created, sending, pending, sent; aal_event pending, posting. Every state: GET /v1/stats',
    ['table', 'state'],
  );
  const oldestPendingDispense = gauge(
    'rx_oldest_pending_dispense_age_seconds',
    'Age of the oldest dispense not yet grouped into an email (0 when none)',
  );
  const oldestOpenNotification = gauge(
    'rx_oldest_open_notification_age_seconds',
    'Age of the oldest notification without a final status (0 when none)',
  );
  const cutoverHeldDispenses = gauge(
    'rx_cutover_held_dispenses',
    "Dispenses held at the cut-over (CUTOVER_HOLD_HOURS) until MHV's export is compared: POST /v1/cutover/release decides them",
  );
  const cutoverHeldPackages = gauge(
    'rx_cutover_held_packages',
    "Packages (tracking numbers) held at the cut-over until MHV's export is compared",
  );
  const cutoverOldestHeld = gauge(
    'rx_cutover_oldest_held_age_seconds',
    "How long the oldest dispense held at the cut-over has waited for MHV's export to be compared (0 when none): alarm on it, a held package is emailed by nobody",
  );
  const sendingPaused = gauge(
    'rx_sending_paused',
    '1 while sending is paused: VA Notify rejected our credentials, has no send endpoint at the configured URL, is over its limit, or is not answering',
  );
  const aalPaused = gauge('rx_aal_paused', '1 while AAL posting is paused: MHV refused our credentials, or the AAL is not answering');

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
    cutoverHeldDispenses.set(gauges.cutoverHeld.dispenses);
    cutoverHeldPackages.set(gauges.cutoverHeld.packages);
    cutoverOldestHeld.set(gauges.cutoverHeld.oldestAge);
  }

  return {
    registry,
    dispensesIngested,
    eventBusRecords,
    eventBusLag,
    sends,
    vaNotifyLatency,
    callbacks,
    polls,
    statusEventsExpired,
    aalPosts,
    retentionRemoved,
    httpRequests,
    httpRequestDuration,
    collectFromDatabase,
  };
}

export type Metrics = ReturnType<typeof createMetrics>;

export type StateCounts = Record<'medication_dispense' | 'tracking_email' | 'notification' | 'aal_event', Record<string, number>>;

/**
 * What a scrape reads from Postgres. Only work in progress, each state through the partial index
 * that holds it (pending dispenses through their tracking email drafts, open notifications through
 * their list), so that a scrape reads the work and not the history: counting every state read the
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
  cutoverHeld: { dispenses: number; packages: number; oldestAge: number };
}> {
  return sql.begin(async (tx) => {
    await planForWorkInProgress(tx);
    const [row] = await tx<
      {
        dispense_pending: number;
        email_queued: number;
        email_sending: number;
        email_temporary_failure: number;
        aal_pending: number;
        aal_posting: number;
        dispense_age: number;
        paused: boolean;
        aal_paused: boolean;
        held_dispenses: number;
        held_packages: number;
        held_age: number;
      }[]
    >`
      select
        -- Pending dispenses are those of the tracking email drafts (sql/019), read by the email index.
        (select count(*) from tracking_email_draft r
           join medication_dispense d on d.tracking_email_id = r.id and d.state = 'pending')::int as dispense_pending,
        (select count(*) from tracking_email where state = ${stateLiteral(tx, 'queued')})::int as email_queued,
        (select count(*) from tracking_email where state = ${stateLiteral(tx, 'sending')})::int as email_sending,
        (select count(*) from tracking_email where state = ${stateLiteral(tx, 'temporary_failure')})::int as email_temporary_failure,
        (select count(*) from aal_event where state = 'pending')::int as aal_pending,
        (select count(*) from aal_event where state = 'posting')::int as aal_posting,
        -- The oldest draft's first arrival, off the draft age index: a draft left with no pending
        -- dispense (its dispenses excluded at cut-over) waits for grouping to delete it, unnamed here.
        coalesce(extract(epoch from now() - (
          select r.first_arrival_at from tracking_email_draft r
           where exists (select 1 from medication_dispense d where d.tracking_email_id = r.id and d.state = 'pending')
           order by r.first_arrival_at limit 1)), 0)::float8 as dispense_age,
        exists (select 1 from rate_budget where paused_until > now()) as paused,
        exists (select 1 from aal_pause where paused_until > now()) as aal_paused,
        -- Held at the cut-over and not yet decided, off the cutover_dispense_held index (sql/021).
        (select count(*) from cutover_dispense where set_aside = 'held' and decision is null)::int as held_dispenses,
        (select count(distinct tracking_number) from cutover_dispense where set_aside = 'held' and decision is null)::int as held_packages,
        coalesce(extract(epoch from now() - (
          select min(set_aside_at) from cutover_dispense where set_aside = 'held' and decision is null)), 0)::float8 as held_age`;
    // Open notifications, counted and aged in one pass over their list (sql/031).
    const open = await tx<{ status: string; count: number; age: number }[]>`
      select status, count(*)::int as count, extract(epoch from now() - min(created_at))::float8 as age
        from notification_open group by status`;
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
      cutoverHeld: { dispenses: r.held_dispenses, packages: r.held_packages, oldestAge: r.held_age },
    };
  });
}

/** The column holding the state, and the section of GET /v1/stats, of each table an operator watches. */
const StatsTables = {
  medication_dispense: { column: 'state', section: 'dispenses' },
  tracking_email: { column: 'state', section: 'emails' },
  notification: { column: 'status', section: 'notifications' },
  aal_event: { column: 'state', section: 'aalEvents' },
} as const;

/**
 * The email states counted exactly in a large table (tracking_email_state and the partial indexes);
 * written into the statement as literals, so that the planner picks the index for each.
 */
const ExactEmailStates = [
  'queued',
  'sending',
  'sent',
  'temporary_failure',
  'permanent_failure',
  'failed',
  'expired',
  'resent',
] as const satisfies readonly TrackingEmailState[];

/** Above this many rows (the planner's estimate), a table's history states are estimated, not counted. */
export const StatsExactUpTo = 200_000;

/**
 * Row counts of every state for the four tables an operator watches (GET /v1/stats). A table of up
 * to `exactUpTo` rows is counted whole. Above that, a count over the whole table reads months of
 * history (seconds at a year's volume), so its states are estimated from the planner's statistics
 * (the table's row estimate times each state's sampled frequency, as fresh as the last analyze) and
 * only the states that have an index of their own are counted exactly through it: work in progress
 * and the failures an operator acts on. `estimated` names the sections with estimated states.
 */
export async function stateCounts(sql: Sql, options: { exactUpTo?: number } = {}): Promise<{ counts: StateCounts; estimated: string[] }> {
  const exactUpTo = options.exactUpTo ?? StatsExactUpTo;
  const tables = Object.keys(StatsTables) as (keyof StateCounts)[];
  const sizes = await sql<{ name: keyof StateCounts; rows: number }[]>`
    select c.relname as name, c.reltuples::float8 as rows from pg_class c
     where c.relnamespace = current_schema()::regnamespace and c.relkind = 'r' and c.relname = any(${tables})`;
  // -1: never analyzed nor vacuumed, size unknown (a new database): counted.
  const large = new Set(sizes.filter((s) => s.rows > exactUpTo).map((s) => s.name));
  const counts: StateCounts = { medication_dispense: {}, tracking_email: {}, notification: {}, aal_event: {} };
  const small = tables.filter((t) => !large.has(t));
  if (small.length > 0) {
    const rows = await sql<{ table_name: keyof StateCounts; state: string; count: number }[]>`
      select 'medication_dispense' as table_name, state, count(*)::int as count from medication_dispense where ${small.includes('medication_dispense')} group by state
      union all
      select 'tracking_email', state, count(*)::int from tracking_email where ${small.includes('tracking_email')} group by state
      union all
      select 'notification', status, count(*)::int from notification where ${small.includes('notification')} group by status
      union all
      select 'aal_event', state, count(*)::int from aal_event where ${small.includes('aal_event')} group by state`;
    for (const row of rows) counts[row.table_name][row.state] = row.count;
  }
  if (large.size === 0) return { counts, estimated: [] };

  const sampled = await sql<{ name: keyof StateCounts; rows: number; states: string[] | null; freqs: number[] | null }[]>`
    select c.relname as name, c.reltuples::float8 as rows, s.most_common_vals::text::text[] as states, s.most_common_freqs::float8[] as freqs
      from pg_class c
      left join pg_stats s on s.schemaname = current_schema() and s.tablename = c.relname
       and s.attname = case c.relname when 'notification' then 'status' else 'state' end
     where c.relnamespace = current_schema()::regnamespace and c.relkind = 'r' and c.relname = any(${[...large]})`;
  for (const table of sampled) {
    (table.states ?? []).forEach((state, i) => {
      counts[table.name][state] = Math.round((table.freqs?.[i] ?? 0) * table.rows);
    });
  }
  const exact = await sql.begin(async (tx) => {
    await planForWorkInProgress(tx);
    return tx<{ table_name: keyof StateCounts; state: string; count: number }[]>`
      select 'medication_dispense' as table_name, 'pending' as state,
             (select count(*) from tracking_email_draft r join medication_dispense d on d.tracking_email_id = r.id and d.state = 'pending')::int as count
       where ${large.has('medication_dispense')}
      union all
      ${tx.unsafe(
        ExactEmailStates.map(
          (state) => `
      select 'tracking_email', '${state}', (select count(*) from tracking_email where state = '${state}')::int where ${large.has('tracking_email')}
      union all`,
        ).join(''),
      )}
      select 'notification', status, count(*)::int from notification_open
       where ${large.has('notification')} group by status
      union all
      -- Each state written out, so that the planner can prove its partial index applies.
      select 'aal_event', 'pending', (select count(*) from aal_event where state = 'pending')::int where ${large.has('aal_event')}
      union all
      select 'aal_event', 'posting', (select count(*) from aal_event where state = 'posting')::int where ${large.has('aal_event')}
      union all
      select 'aal_event', 'failed', (select count(*) from aal_event where state = 'failed')::int where ${large.has('aal_event')}
      union all
      select 'aal_event', 'unpostable', (select count(*) from aal_event where state = 'unpostable')::int where ${large.has('aal_event')}`;
  });
  for (const row of exact) {
    if (row.count > 0) counts[row.table_name][row.state] = row.count;
    else delete counts[row.table_name][row.state];
  }
  return { counts, estimated: tables.filter((t) => large.has(t)).map((t) => StatsTables[t].section) };
}
