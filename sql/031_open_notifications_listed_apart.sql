-- The notifications still waiting for a final status are listed in a table of their own, so that a
-- status callback rewrites its notification in place (a heap-only, HOT, update) instead of adding
-- an entry to each of the table's indexes.
--
-- The list was the partial index notification_open (last_event_at, where the status is open). A
-- column an index holds, or one its WHERE clause reads, stops Postgres from updating a row in place,
-- and every callback changes both, so each one wrote a new entry in the notification key. VA Notify's
-- ids are random, so that entry went to a random page of a key that grows with the history kept:
-- beside 60 days of national volume, a full-page image in the WAL for nearly every callback after a
-- checkpoint, and a dirty page for the server to write back. Measured there, 20,000 status updates
-- of new notifications wrote 85 MB of WAL in 1.3 s; with the index dropped and half of each page
-- kept free, 15 MB in 0.6 s, 94% of them in place (docs/benchmarks.md, History).
--
-- notification_open holds only the open ones (a day's sends at most), so its own key stays small
-- whatever the history. Triggers keep it, for every path that writes a notification: a send's
-- insert, a callback or a poll that changes the status or last_event_at, the sweep's claim.
-- Retention removes only notifications that are final, which the list no longer holds; the foreign
-- key removes a listed one with its notification all the same.
--
-- The partial index is dropped last, once the list is filled through it: dropping an index locks its
-- table against reads too, until the migration commits. An instance of the version before this one,
-- running beside it during a rolling deployment, finds stale notifications and counts open ones by
-- reading the whole notification table, until it is replaced (README, Upgrading across sql/031).
alter index notification_open rename to notification_open_by_last_event;
create table notification_open (
  notification_id uuid primary key references notification (id) on delete cascade,
  status text not null,
  created_at timestamptz not null,
  last_event_at timestamptz not null
);
create index notification_open_last_event on notification_open (last_event_at);

-- VA Notify's statuses that are not final (NonFinalStatuses in src/status/notification-status.ts).
-- A SQL function of one expression: Postgres writes it in place wherever it is called.
create or replace function notification_is_open(p_status text) returns boolean
language sql immutable parallel safe as $$
  select p_status in ('created', 'sending', 'pending', 'sent')
$$;

-- Lists or unlists a notification by its status.
create or replace function notification_open_follow() returns trigger
language plpgsql as $$
begin
  if notification_is_open(new.status) then
    insert into notification_open (notification_id, status, created_at, last_event_at)
    values (new.id, new.status, new.created_at, new.last_event_at)
    on conflict (notification_id) do update
      set status = excluded.status, created_at = excluded.created_at, last_event_at = excluded.last_event_at;
  else
    delete from notification_open where notification_id = new.id;
  end if;
  return null;
end
$$;

create trigger notification_open_inserted after insert on notification
  for each row when (notification_is_open(new.status)) execute function notification_open_follow();
-- A final notification's later news (a duplicate, a stale event) moves last_event_at only: not listed, nothing to do.
create trigger notification_open_updated after update of status, last_event_at on notification
  for each row when (notification_is_open(old.status) or notification_is_open(new.status))
  execute function notification_open_follow();

-- Filled once the triggers are in place: creating them locks notification against writes until the
-- migration commits, so no notification changes between this and them.
insert into notification_open (notification_id, status, created_at, last_event_at)
select id, status, created_at, last_event_at from notification where notification_is_open(status);

drop index notification_open_by_last_event;

-- Room on each page for a row's next version: a notification is updated once or twice after its
-- send (its callbacks, a poll). Rows written from now on; the table takes about twice its rows' space.
alter table notification set (fillfactor = 50);
