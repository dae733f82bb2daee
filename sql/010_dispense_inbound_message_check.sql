-- medication_dispense.inbound_message_id names the stored body a dispense came from. As a foreign key
-- Postgres checked it row by row, each check a lookup and a share lock on the same inbound_message
-- row: 3.5 ms of backend CPU for a 1,000-dispense body (15.2 against 11.8 ms for the whole insert,
-- measured one after the other), while all 1,000 name one body. The same guarantee for the writes the
-- service makes is kept by a check per statement on the distinct ids it wrote, and, for the rare
-- update that changes the id (a corrected resend), a check of that row.
--
-- What the foreign key also did, refusing to delete a body that dispenses name, is not needed: the
-- service never deletes a stored body (they are its record of what CMOP sent).
alter table medication_dispense drop constraint medication_dispense_inbound_message_id_fkey;

create function check_dispense_inbound_messages() returns trigger
language plpgsql as $$
declare
  v_missing bigint;
begin
  select d.inbound_message_id into v_missing
    from (select distinct inbound_message_id from written_dispenses where inbound_message_id is not null) d
   where not exists (select 1 from inbound_message m where m.id = d.inbound_message_id)
   limit 1;
  if found then
    raise foreign_key_violation using
      message = format('medication_dispense names inbound message %s, which is not stored', v_missing),
      table = 'medication_dispense', column = 'inbound_message_id';
  end if;
  return null;
end
$$;

create trigger medication_dispense_inbound_message_inserted
  after insert on medication_dispense
  referencing new table as written_dispenses
  for each statement execute function check_dispense_inbound_messages();

create function check_dispense_inbound_message() returns trigger
language plpgsql as $$
begin
  if new.inbound_message_id is not null and not exists (select 1 from inbound_message m where m.id = new.inbound_message_id) then
    raise foreign_key_violation using
      message = format('medication_dispense names inbound message %s, which is not stored', new.inbound_message_id),
      table = 'medication_dispense', column = 'inbound_message_id';
  end if;
  return new;
end
$$;

-- Only updates that name the column: grouping's updates of thousands of dispenses do not pay for it.
create trigger medication_dispense_inbound_message_updated
  before update of inbound_message_id on medication_dispense
  for each row execute function check_dispense_inbound_message();
