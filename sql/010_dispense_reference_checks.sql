-- A dispense names the stored body it came from (inbound_message_id) and, once grouped, its tracking
-- email (tracking_email_id). As foreign keys Postgres checked both row by row, each check a lookup and
-- a share lock on the row named, though the rows a statement writes name few of them:
-- - ingest: all 1,000 dispenses of a body name one inbound message. The checks were 3.5 ms of backend
--   CPU for a 1,000-dispense body (the insert: 15.2 against 11.8 ms without them);
-- - grouping: a run's 20,000 dispenses name its 5,000 new emails. The checks were 3.2 µs of each
--   dispense's 18.8 (400,000 pending dispenses, runs of 5,000 veterans, rolled back and repeated).
-- The same guarantee for every write is kept by one check per statement, after it, on the distinct ids
-- its rows name.
--
-- What the foreign keys also did, refusing to delete a body or an email that dispenses name, is not
-- needed: the service deletes neither (stored bodies are its record of what CMOP sent; emails its
-- record of what veterans were told).
alter table medication_dispense drop constraint medication_dispense_inbound_message_id_fkey;
alter table medication_dispense drop constraint medication_dispense_tracking_email_fk;

create function check_dispense_references() returns trigger
language plpgsql as $$
declare
  v_missing text;
begin
  select format('inbound message %s', d.id) into v_missing
    from (select distinct inbound_message_id as id from written_dispenses where inbound_message_id is not null) d
   where not exists (select 1 from inbound_message m where m.id = d.id)
   limit 1;
  if v_missing is null then
    select format('tracking email %s', d.id) into v_missing
      from (select distinct tracking_email_id as id from written_dispenses where tracking_email_id is not null) d
     where not exists (select 1 from tracking_email e where e.id = d.id)
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

create trigger medication_dispense_references_inserted
  after insert on medication_dispense
  referencing new table as written_dispenses
  for each statement execute function check_dispense_references();

create trigger medication_dispense_references_updated
  after update on medication_dispense
  referencing new table as written_dispenses
  for each statement execute function check_dispense_references();
