-- The statement triggers on medication_dispense look up each written row's references and its
-- removed event key by primary key. A trigger function's queries are planned once per connection
-- and the plan kept: planned while a table was known to be empty (removed_dispense_key vacuumed
-- before retention's first run) the lookup was a sequential scan, kept while retention filled the
-- table, and each ingest statement then ran for minutes on its CPU. With sequential scans off inside
-- these functions every lookup is an index probe, whatever the table held when it was planned.
alter function check_removed_dispense_keys() set enable_seqscan = off;
alter function check_dispense_references() set enable_seqscan = off;
