-- Tracking email drafts: each veteran with pending dispenses has one, and each pending dispense is
-- stored already naming it (tracking_email_id), so that grouping only has to set `state`.
--
-- Why: grouping wrote each grouped dispense as a new row version with an entry in every index
-- (`state` is in the pending indexes' predicates, `tracking_email_id` in the email index), and the
-- old version's page whole into the WAL after each checkpoint: 1,165 MB of WAL to group 1,000,000
-- dispenses, where an INSERT ... SELECT of the same rows wrote 526 MB. An update that changes no
-- indexed column, on a page with room for the new version, is HOT (heap-only): no index entry,
-- a small WAL record. So:
-- - the draft holds what the pending indexes gave grouping: the veteran, and when their first and
--   newest pending dispenses arrived (the maximum wait and the quiet period);
-- - its id is the id of the email it becomes, so the email index already holds each pending
--   dispense under the email it goes out in;
-- - medication_dispense keeps half of each page free (fillfactor 50): a run updates every row of
--   the pages it touches, so a fuller page gains nothing (docs/benchmarks.md).
-- The cost: the dispense table takes about twice the space, and ingest upserts a body's drafts.
--
-- Ingest locks a body's drafts in ICN order before it writes a dispense; grouping deletes ready
-- drafts with SKIP LOCKED and then, in a later statement of its transaction, groups the dispenses
-- that name them. A draft's row lock thus orders the two: every dispense written under a draft
-- grouping deleted was committed before it, and an ingest that comes after the delete makes the
-- veteran a new draft.

-- No dispense is written while the pending ones get their drafts, until the constraint holds.
lock table medication_dispense in share row exclusive mode;

create table tracking_email_draft (
  id uuid primary key default time_ordered_uuid(),   -- the id of the tracking email it becomes
  patient_icn text not null unique,
  -- Arrival of the first and of the newest pending dispense (the created_at of the dispenses).
  first_arrival_at timestamptz not null default now(),
  last_arrival_at timestamptz not null default now()
);
-- Grouping takes ready veterans oldest first.
create index tracking_email_draft_age on tracking_email_draft (first_arrival_at);

-- The statement-level reference check (sql/010, sql/014): a pending dispense names its draft, any
-- other one the email it went out in.
create or replace function check_dispense_references() returns trigger
language plpgsql as $$
declare
  v_missing text;
begin
  select format('inbound message %s', d.id) into v_missing
    from (select distinct inbound_message_id as id from written_dispenses where inbound_message_id is not null) d
   where (select true from inbound_message m where m.id = d.id) is null
   limit 1;
  if v_missing is null then
    select format('tracking email draft %s', d.id) into v_missing
      from (select distinct tracking_email_id as id from written_dispenses where state = 'pending') d
     where (select true from tracking_email_draft r where r.id = d.id) is null
     limit 1;
  end if;
  if v_missing is null then
    select format('tracking email %s', d.id) into v_missing
      from (select distinct tracking_email_id as id from written_dispenses
             where tracking_email_id is not null and state <> 'pending') d
     where (select true from tracking_email e where e.id = d.id) is null
     limit 1;
  end if;
  if v_missing is not null then
    raise foreign_key_violation using
      message = format('medication_dispense names %s, which is not stored', v_missing),
      table = 'medication_dispense';
  end if;
  return null;
end
$$;

-- While instances of the version before drafts run beside this one (a rolling deployment), their
-- ingest writes pending dispenses that name no draft: this trigger gives each its veteran's
-- draft, as this version's ingest does. This version's inserts never meet its WHEN condition, so
-- all they pay is the test. (A BEFORE UPDATE trigger would cover the earlier version's
-- corrections and exclusions too, but Postgres locks every row an UPDATE changes before it tests
-- such a trigger's condition, grouping's heap-only updates included. So during the deployment
-- an earlier instance's correction of an unprocessable dispense is refused by
-- medication_dispense_pending_draft, its body kept with the error, and its exclusion at cut-over
-- by the reference check; this version's instances do both.) A later migration drops it, once no
-- earlier instance is left.
create function dispense_draft_for_earlier_version() returns trigger
language plpgsql as $$
begin
  insert into tracking_email_draft as r (patient_icn) values (new.patient_icn)
  on conflict (patient_icn) do update set last_arrival_at = excluded.last_arrival_at
  returning r.id into new.tracking_email_id;
  return new;
end
$$;

create trigger medication_dispense_pending_without_draft
  before insert on medication_dispense
  for each row when (new.state = 'pending' and new.tracking_email_id is null and new.patient_icn is not null)
  execute function dispense_draft_for_earlier_version();

-- A pending dispense without an ICN could never be emailed: ingest keeps such a dispense as
-- unprocessable, and so does this.
update medication_dispense
   set state = 'unprocessable', state_reason = 'no patient ICN (found pending when drafts were introduced)', updated_at = now()
 where state = 'pending' and patient_icn is null;

-- The pending dispenses stored before drafts existed get theirs.
insert into tracking_email_draft (patient_icn, first_arrival_at, last_arrival_at)
select patient_icn, min(created_at), max(created_at)
  from medication_dispense
 where state = 'pending' and patient_icn is not null
 group by patient_icn;

update medication_dispense d
   set tracking_email_id = r.id
  from tracking_email_draft r
 where d.state = 'pending' and d.patient_icn = r.patient_icn;

-- Ingest keeps a dispense without an ICN as unprocessable, so every pending one has a draft.
alter table medication_dispense
  add constraint medication_dispense_pending_draft check (state <> 'pending' or tracking_email_id is not null);

drop index medication_dispense_pending;
drop index medication_dispense_pending_age;

-- Applies to pages written from now on; existing full pages stay as they are.
alter table medication_dispense set (fillfactor = 50);
