-- Tracking email ids in time order: the UUID version 7 layout (RFC 9562), 48 bits of milliseconds
-- since the epoch, then random bits. Grouping inserts each run's ids into tracking_email's primary key
-- and medication_dispense_tracking_email, and checks every grouped dispense's foreign key against
-- the first. Random (version 4) ids land on random leaf pages of indexes that grow with every email
-- ever sent, so a run touched (and, after a checkpoint, wrote whole to the WAL) a page per id;
-- time-ordered ids land on the few rightmost pages.
--
-- One expression without FROM, so that Postgres inlines it instead of calling a SQL function per id:
-- a random version 4 uuid with its first six bytes replaced by the time and its version nibble by 7
-- (the variant bits are already those of version 7).
create function time_ordered_uuid() returns uuid
language sql volatile parallel safe as $$
  select encode(
    overlay(uuid_send(gen_random_uuid())
            placing substring(int8send(floor(extract(epoch from clock_timestamp()) * 1000)::bigint) from 3)
                    || set_byte('\x00'::bytea, 0, 112 + floor(random() * 16)::int)
            from 1 for 7),
    'hex')::uuid
$$;
