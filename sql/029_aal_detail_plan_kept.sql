-- aal_detail as PL/pgSQL, its body unchanged. A SQL function that cannot be inlined is planned
-- again for every execution of the statement that calls it, and a callback's insert of its AAL
-- event is one such execution: planning the detail's query cost more than the rest of the insert
-- (0.19 ms against 0.09 ms a callback, measured). PL/pgSQL keeps the plan for the session.
create or replace function aal_detail(p_email_id uuid) returns text
language plpgsql stable parallel safe as $$
begin
  return (
    select coalesce('Packages: ' || string_agg(p.carrier || ' ' || p.tracking_number || ' (Rx ending ' || p.rx_endings || ')',
                                               '; ' order by p.carrier, p.tracking_number),
                    'Packages: none listed')
      from (select package_carrier(d.carrier) as carrier, d.tracking_number,
                   string_agg(distinct right(d.rx_number, 4), ', ' order by right(d.rx_number, 4)) as rx_endings
              from medication_dispense d
             where d.tracking_email_id = p_email_id and d.tracking_number <> ''
             group by d.tracking_number) p);
end
$$;
