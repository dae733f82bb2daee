-- Grouping takes ready patients oldest first. This index lets a run read only the oldest pending
-- dispenses (and their patients, without visiting the table) instead of every pending dispense, so
-- that working through a backlog costs each run its batch, not the whole backlog.
create index medication_dispense_pending_age on medication_dispense (created_at, patient_icn)
  where state = 'pending' and patient_icn is not null;
