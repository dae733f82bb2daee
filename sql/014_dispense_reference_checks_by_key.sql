-- The statement-level reference check of sql/010, with each named id looked up by its primary key
-- whatever the planner believes about the tables' sizes.
--
-- As `not exists`, the check was planned as an anti-join, and a planner that underestimated
-- tracking_email (statistics older than the table's growth: a new deployment, a big first batch)
-- chose to hash every email ever created to check one grouping run's few thousand. A run's check
-- then grew with the table: 36 ms beside 5,000 emails, 150 ms beside 250,000 (1,000,000 pending
-- dispenses grouped from an empty tracking_email, one run's share of 2,500 emails), about a quarter
-- of the run. A scalar subquery is never turned into a join, so each distinct id is one probe of
-- the primary key, and the check follows the statement's own rows, not the history.
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
    select format('tracking email %s', d.id) into v_missing
      from (select distinct tracking_email_id as id from written_dispenses where tracking_email_id is not null) d
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
