// Retention's SQL. Every batch is one short transaction over at most `batchSize` rows of the table it
// walks: the rows it removes are old and final, so only a late callback, a CMOP resend or an operator
// ever waits for one of its row locks, and then for one batch at most. It takes no lock on a whole
// table beyond the row-exclusive lock every write takes, and waits at most RetentionLockTimeout for a
// row another transaction holds, so a callback or an ingest never queues behind a retention that is
// itself queued.
import type { Sql, SqlHandle } from '../db/connect.ts';
import type { MedicationDispenseState } from '../ingest/dispense.ts';
import { FinalStates } from '../tracking-email/states.ts';
import { NonFinalStatuses } from '../status/notification-status.ts';

/**
 * AAL event states that leave nothing to post: posted, or unpostable (no MHV correlation id, which an
 * operator cannot retry either). A failed event waits for an operator's retry and is kept.
 */
export const RemovableAalStates = ['posted', 'unpostable'] as const;

/** Dispense states that are final without an email. Unprocessable ones wait for a corrected resend. */
export const FinalDispenseStates = ['cancelled', 'excluded'] as const satisfies readonly MedicationDispenseState[];

/** How long a batch waits for a row lock another transaction holds before it gives up for this run. */
export const RetentionLockTimeout = '100ms';

/** Where a walk over one table's old rows has got to within a run, oldest first. */
export interface Cursor {
  /** As Postgres writes it: a JavaScript Date would drop the microseconds, and the walk would stand still. */
  at: string;
  id: string;
}

const Start: Cursor = { at: '-infinity', id: '' };

export interface BatchResult<C> {
  /** The last row the batch looked at (null: nothing left to look at). */
  next: C | null;
}

/**
 * One batch's transaction: the old rows are read through their indexes whatever the statistics say
 * (a table of months of history must never be scanned whole), and a row lock held elsewhere is
 * waited for only briefly.
 */
export function inBatch<T>(sql: Sql, work: (tx: SqlHandle) => Promise<T>): Promise<T> {
  return sql.begin(async (tx) => {
    await tx`
      select set_config('enable_seqscan', 'off', true), set_config('jit', 'off', true),
             set_config('max_parallel_workers_per_gather', '0', true), set_config('lock_timeout', ${RetentionLockTimeout}, true)`;
    return work(tx);
  }) as Promise<T>;
}

/** Messages a body step's batch may read per unit of RETENTION_BATCH_SIZE: about an email's dispenses. */
export const MessagesPerBatchItem = 4;

/**
 * Empties up to `batchSize` bodies received more than `days` ago whose every dispense is final
 * (cancelled, excluded, or grouped into an email in a final state), keeping the row, its outcome and
 * its error. Bodies not yet final are passed over and looked at again by the next run.
 *
 * A body's check reads each of its dispenses, so a batch also ends once its bodies hold
 * {@link MessagesPerBatchItem} × `batchSize` messages: a batch of 1,000-message files (CMOP's HTTP
 * bodies) is one file, as short a statement as a batch of `batchSize` one-message event-bus records
 * or of as many emails' histories.
 */
export async function emptyInboundBodies(
  tx: SqlHandle,
  p: { days: number; batchSize: number; after: Cursor | null },
): Promise<BatchResult<Cursor> & { emptied: number }> {
  const after = p.after ?? Start;
  const [row] = await tx<{ emptied: number; last_at: string | null; last_id: string | null }[]>`
    with walked as (
      select m.id, m.received_at, sum(m.message_count) over (order by m.received_at, m.id) - m.message_count as messages_before
        from (select m.id, m.received_at, m.message_count from inbound_message m
               where m.body_removed_at is null and m.received_at < now() - make_interval(days => ${p.days})
                 and (m.received_at, m.id) > (${after.at}::text::timestamptz, ${after.id === '' ? 0 : Number(after.id)}::bigint)
               order by m.received_at, m.id
               limit ${p.batchSize}) m
    ),
    -- The first body always, then those that keep the batch within its messages.
    candidates as (
      select id, received_at from walked where messages_before < ${p.batchSize * MessagesPerBatchItem}
    ),
    emptied as (
      update inbound_message m set body = '', body_removed_at = now()
        from candidates c
       where m.id = c.id
         and not exists (
           select 1 from medication_dispense d
            where d.inbound_message_id = m.id
              and not (d.state = any(${FinalDispenseStates as unknown as string[]}::text[])
                       or (d.state = 'grouped'
                           and (select e.state from tracking_email e where e.id = d.tracking_email_id) = any(${FinalStates as unknown as string[]}::text[]))))
      returning m.id
    ),
    last as (select received_at, id from candidates order by received_at desc, id desc limit 1)
    select (select count(*) from emptied)::int as emptied, (select received_at::text from last) as last_at, (select id from last)::text as last_id`;
  return { emptied: row!.emptied, next: row!.last_at === null ? null : { at: row!.last_at, id: row!.last_id! } };
}

export interface RemovedHistories {
  emails: number;
  dispenses: number;
  notifications: number;
  statusEvents: number;
  aalEvents: number;
  dispenseKeys: number;
}

/**
 * Removes the whole histories of up to `batchSize` tracking emails created more than `days` ago and
 * final for as long: the email, its dispenses, its notifications and their status events, and its
 * AAL event. Never an email still in progress, one with a notification VA Notify has not finished, or
 * one whose AAL event is not posted (pending, being posted, or failed and waiting for an operator).
 * The event key of each dispense is kept (removed_dispense_key) so that a resend is recognised.
 *
 * The emails are locked `for update skip locked`: one a callback is changing at that moment is left
 * for the next run rather than waited for. One statement does the rest, so the batch's locks are
 * held for the time of that statement alone.
 */
export async function removeFinalHistories(
  tx: SqlHandle,
  p: { days: number; batchSize: number; after: Cursor | null },
): Promise<BatchResult<Cursor> & RemovedHistories> {
  const after = p.after ?? Start;
  const [row] = await tx<
    {
      emails: number;
      dispenses: number;
      notifications: number;
      status_events: number;
      aal_events: number;
      dispense_keys: number;
      last_at: string | null;
      last_id: string | null;
    }[]
  >`
    with walked as (
      -- The oldest emails first, off tracking_email_created_at (created_at, id).
      select e.id, e.created_at from tracking_email e
       where e.created_at < now() - make_interval(days => ${p.days})
         and (e.created_at, e.id) > (${after.at}::text::timestamptz, ${after.id === '' ? '00000000-0000-0000-0000-000000000000' : after.id}::uuid)
       order by e.created_at, e.id
       limit ${p.batchSize}
    ),
    batch as materialized (
      select e.id from tracking_email e join walked w on w.id = e.id
       where e.state = any(${FinalStates as unknown as string[]}::text[])
         and e.updated_at < now() - make_interval(days => ${p.days})
         and not exists (select 1 from aal_event a where a.tracking_email_id = e.id
                          and a.state <> all(${RemovableAalStates as unknown as string[]}::text[]))
         and not exists (select 1 from notification n where n.tracking_email_id = e.id
                          and n.status = any(${NonFinalStatuses as unknown as string[]}::text[]))
       for update of e skip locked
    ),
    notifications as (
      delete from notification n using batch b where n.tracking_email_id = b.id returning n.id
    ),
    status_events as (
      delete from notification_status_event s where s.notification_id in (select id from notifications) returning 1
    ),
    aal_events as (
      delete from aal_event a using batch b where a.tracking_email_id = b.id returning 1
    ),
    dispenses as (
      delete from medication_dispense d using batch b where d.tracking_email_id = b.id
      returning d.station_number, d.rx_number, d.fill_number, d.tracking_number, d.state
    ),
    keys as (
      insert into removed_dispense_key (key_hash)
      select distinct dispense_key_hash(station_number, rx_number, fill_number, tracking_number) from dispenses where state = 'grouped'
      on conflict (key_hash) do nothing
      returning 1
    ),
    emails as (
      delete from tracking_email e using batch b where e.id = b.id returning 1
    ),
    last as (select created_at, id from walked order by created_at desc, id desc limit 1)
    select (select count(*) from emails)::int as emails, (select count(*) from dispenses)::int as dispenses,
           (select count(*) from notifications)::int as notifications, (select count(*) from status_events)::int as status_events,
           (select count(*) from aal_events)::int as aal_events, (select count(*) from keys)::int as dispense_keys,
           (select created_at::text from last) as last_at, (select id from last)::text as last_id`;
  const r = row!;
  return {
    emails: r.emails,
    dispenses: r.dispenses,
    notifications: r.notifications,
    statusEvents: r.status_events,
    aalEvents: r.aal_events,
    dispenseKeys: r.dispense_keys,
    next: r.last_at === null ? null : { at: r.last_at, id: r.last_id! },
  };
}

/**
 * For up to `batchSize` inbound messages received more than `days` ago: removes their dispenses that
 * no email names and that are final (cancelled, excluded) for as long, then the message row itself
 * once its body is emptied and no dispense names it any more (the emailed ones leave with their
 * email's history).
 */
export async function removeOldInboundMessages(
  tx: SqlHandle,
  p: { days: number; batchSize: number; after: Cursor | null },
): Promise<BatchResult<Cursor> & { messages: number; dispenses: number }> {
  const after = p.after ?? Start;
  const [row] = await tx<{ messages: number; dispenses: number; last_at: string | null; last_id: string | null }[]>`
    with walked as (
      select m.id, m.received_at from inbound_message m
       where m.received_at < now() - make_interval(days => ${p.days})
         and (m.received_at, m.id) > (${after.at}::text::timestamptz, ${after.id === '' ? 0 : Number(after.id)}::bigint)
       order by m.received_at, m.id
       limit ${p.batchSize}
    ),
    dispenses as (
      delete from medication_dispense d using walked w
       where d.inbound_message_id = w.id and d.state = any(${FinalDispenseStates as unknown as string[]}::text[])
         and d.updated_at < now() - make_interval(days => ${p.days})
      returning d.id
    ),
    messages as (
      -- The statement's snapshot still shows the dispenses deleted above: those do not count.
      delete from inbound_message m using walked w
       where m.id = w.id and m.body_removed_at is not null
         and not exists (select 1 from medication_dispense d where d.inbound_message_id = m.id
                          and not (d.state = any(${FinalDispenseStates as unknown as string[]}::text[])
                                   and d.updated_at < now() - make_interval(days => ${p.days})))
      returning 1
    ),
    last as (select received_at, id from walked order by received_at desc, id desc limit 1)
    select (select count(*) from messages)::int as messages, (select count(*) from dispenses)::int as dispenses,
           (select received_at::text from last) as last_at, (select id from last)::text as last_id`;
  return {
    messages: row!.messages,
    dispenses: row!.dispenses,
    next: row!.last_at === null ? null : { at: row!.last_at, id: row!.last_id! },
  };
}

/**
 * Removes up to `batchSize` status events that never matched a notification and are older than
 * `days`: a late callback about a notification whose history was removed, or one that never
 * existed. Read off the partial index of unapplied events, which holds only those.
 */
export async function removeOrphanStatusEvents(tx: SqlHandle, p: { days: number; batchSize: number }): Promise<number> {
  const [row] = await tx<{ removed: number }[]>`
    with gone as (
      delete from notification_status_event s
       where s.id in (
         select e.id from notification_status_event e
          where e.applied_at is null and e.received_at < now() - make_interval(days => ${p.days})
            and not exists (select 1 from notification n where n.id = e.notification_id)
          limit ${p.batchSize})
      returning 1
    )
    select count(*)::int as removed from gone`;
  return row!.removed;
}

/** Removes up to `batchSize` kept dispense keys older than `days`, oldest first. */
export async function purgeDispenseKeys(tx: SqlHandle, p: { days: number; batchSize: number }): Promise<number> {
  const [row] = await tx<{ removed: number }[]>`
    with gone as (
      delete from removed_dispense_key k
       where k.key_hash in (
         select key_hash from removed_dispense_key
          where removed_at < now() - make_interval(days => ${p.days})
          order by removed_at limit ${p.batchSize})
      returning 1
    )
    select count(*)::int as removed from gone`;
  return row!.removed;
}

/**
 * The rows the pipeline has written so far as it works, all instances together, from Postgres's
 * cumulative statistics: status events, dispenses, tracking emails and notifications inserted
 * (callbacks, ingest, grouping, sending), and AAL events updated (each posting leases, then marks
 * its event). Two reads tell how fast the pipeline writes. Retention itself only deletes from these
 * tables. A counter, not a watermark such as the newest id or created_at, so that a row is counted
 * once its transaction ends however long it ran. Each backend adds its counts at most once a second.
 */
export async function pipelineRowsWritten(sql: SqlHandle): Promise<number> {
  const [row] = await sql<{ rows: string }[]>`
    select coalesce(sum(case when relid = 'aal_event'::regclass then n_tup_upd else n_tup_ins end), 0)::text as rows
      from pg_stat_user_tables
     where relid in ('notification_status_event'::regclass, 'medication_dispense'::regclass, 'tracking_email'::regclass,
                     'notification'::regclass, 'aal_event'::regclass)`;
  return Number(row!.rows);
}
