-- The cut-over hold: packages shipped near the cut-over instant T wait, as `held_for_cutover`,
-- until MHV's export shows whether MHV emailed them, because this service's shipped-at (HL7 MSH-7,
-- the message time) and MHV's own shipped date can put one package on different sides of T.

alter table medication_dispense drop constraint medication_dispense_state_check;
-- A wider list than before: every stored row already passes it, and VALIDATE reads the table under
-- a lock that lets ingest and grouping go on.
alter table medication_dispense add constraint medication_dispense_state_check
  check (state in ('pending', 'grouped', 'cancelled', 'unprocessable', 'excluded', 'held_for_cutover')) not valid;
alter table medication_dispense validate constraint medication_dispense_state_check;

-- Every dispense the cut-over set aside, held or excluded, by its package (tracking number), and what
-- was decided for it. medication_dispense has no index on its state or tracking number (either would
-- cost grouping its heap-only updates, sql/019): this table is how held packages and their fills are
-- found, counted and decided.
create table cutover_dispense (
  dispense_id bigint primary key,
  -- Upper-cased, as MHV's export is matched.
  tracking_number text not null,
  set_aside text not null check (set_aside in ('held', 'excluded')),
  set_aside_at timestamptz not null default now(),
  -- emailed_by_mhv: MHV's export lists the package, so the fill stays MHV's (excluded);
  -- released: MHV did not email the package, so this service does.
  decision text check (decision in ('emailed_by_mhv', 'released')),
  decided_at timestamptz
);
create index cutover_dispense_tracking_number on cutover_dispense (tracking_number);
create index cutover_dispense_held on cutover_dispense (set_aside_at) where set_aside = 'held' and decision is null;

-- Where the cut-over puts a pending dispense: 'excluded' (MHV's), 'held' (until MHV's export is
-- compared; '..._with_package' when its package, not its own shipped-at, decides), or null (this
-- service's). A package (tracking number) goes one way as a whole:
-- - once decided, every fill follows the decision;
-- - while it is held, every fill is held with it;
-- - a fill whose shipped-at says "this service's" while a fill of its package was excluded is held:
--   the package's fills disagree, so MHV's export decides the package, the excluded fill with it;
-- - otherwise the fill's times decide (p_first and p_last: its earliest and latest of dispensed-at
--   and shipped-at, src/grouping/repository.ts says why both): both before p_exclude_before (T minus
--   the hold) and it is MHV's, both from p_hold_until (T plus the hold) on and it is this service's,
--   anything else is held.
-- Callers ask only for fills whose earliest time is before T plus twice the hold: later fills are
-- this service's. Fills of one package set aside by one statement do not see each other here; the
-- caller holds a package whose fills it places differently (src/grouping/repository.ts).
create function cutover_set_aside(p_tracking_number text, p_first timestamptz, p_last timestamptz,
                                  p_exclude_before timestamptz, p_hold_until timestamptz) returns text
language sql stable as $$
  select case
           when bool_or(c.decision = 'released') then null
           when bool_or(c.decision = 'emailed_by_mhv') then 'excluded_with_package'
           when bool_or(c.set_aside = 'held' and c.decision is null) then 'held_with_package'
           when p_first >= p_hold_until then case when bool_or(c.set_aside = 'excluded') then 'held_with_package' end
           when p_last < p_exclude_before then 'excluded'
           else 'held'
         end
    from cutover_dispense c
   where c.tracking_number = upper(p_tracking_number)
$$;
