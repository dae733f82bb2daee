-- Retention (src/retention/): raw bodies emptied once every dispense they carried is final, and whole
-- histories of final emails removed after RECORD_RETENTION_DAYS, with the event keys of the emailed
-- dispenses kept longer so that a CMOP resend of one is still recognised.

-- When retention emptied the body (set to ''): an operator can tell an emptied body from an empty one.
alter table inbound_message add column body_removed_at timestamptz;
-- The bodies retention has yet to look at, oldest first; an emptied body leaves the index, so the
-- job reads the bodies still to empty and not every body ever received.
create index inbound_message_body_kept on inbound_message (received_at, id) where body_removed_at is null;

-- A body's dispenses, for "is every dispense it carried final?" and for removing the dispenses no
-- email names (cancelled, excluded) with their body. Ingest appends to its right edge (ids grow).
create index medication_dispense_inbound_message on medication_dispense (inbound_message_id);

-- The event key of a removed dispense that had been grouped into an email, kept after its history is
-- gone: ingest refuses a new copy of such an event as already received. Only a hash of the key is
-- kept (station, Rx number, fill, tracking number): nothing that names the veteran or the drug.
create table removed_dispense_key (
  key_hash uuid primary key,
  removed_at timestamptz not null default now()
);
-- Purged oldest first after DISPENSE_KEY_RETENTION_DAYS.
create index removed_dispense_key_removed_at on removed_dispense_key (removed_at);

create function dispense_key_hash(station_number text, rx_number text, fill_number integer, tracking_number text) returns uuid
language sql immutable parallel safe as $$
  select md5(station_number || chr(31) || rx_number || chr(31) || fill_number::text || chr(31) || tracking_number)::uuid
$$;

-- After every insert statement: a written dispense whose key was removed is refused as the unique key
-- refuses a stored one (the same error and constraint name), so that ingest's first, plain insert
-- falls back to the statement that resolves conflicts, which leaves such events out. Each key is one
-- probe of the primary key (a scalar subquery is never planned as a join over the whole table).
create function check_removed_dispense_keys() returns trigger
language plpgsql as $$
begin
  if exists (
    select 1 from written_dispenses w
     where (select true from removed_dispense_key k
             where k.key_hash = dispense_key_hash(w.station_number, w.rx_number, w.fill_number, w.tracking_number)) is not null) then
    raise unique_violation using
      message = 'medication_dispense: an event whose history was removed was received again',
      constraint = 'medication_dispense_event_key',
      table = 'medication_dispense';
  end if;
  return null;
end
$$;

create trigger medication_dispense_removed_keys_inserted
  after insert on medication_dispense
  referencing new table as written_dispenses
  for each statement execute function check_removed_dispense_keys();
