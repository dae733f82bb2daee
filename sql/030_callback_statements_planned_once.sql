-- What a delivered callback costs Postgres, less by a fifth (0.56 to 0.45 ms of CPU a callback,
-- measured on its own, one event a statement; docs/benchmarks.md, History). Two statements that ran
-- once per callback were planned or parsed again on every run:
--
-- aal_detail named each package's carrier with the package_carrier aggregate, whose step and final
-- functions are SQL functions: an aggregate calls them through the function manager, which parses
-- and plans their bodies again for every execution of the query. It writes the same rule with the
-- built-in min(), as grouping does (src/grouping/repository.ts); test/grouping/grouping.test.ts holds
-- the email, the AAL detail and the aggregate (which the shadow comparison keeps) equal.
create or replace function aal_detail(p_email_id uuid) returns text
language plpgsql stable parallel safe as $$
begin
  return (
    select coalesce('Packages: ' || string_agg(p.carrier || ' ' || p.tracking_number || ' (Rx ending ' || p.rx_endings || ')',
                                               '; ' order by p.carrier, p.tracking_number),
                    'Packages: none listed')
      from (select coalesce(min(d.carrier) filter (where d.carrier <> 'UNK'), 'UNK') as carrier, d.tracking_number,
                   string_agg(distinct right(d.rx_number, 4), ', ' order by right(d.rx_number, 4)) as rx_endings
              from medication_dispense d
             where d.tracking_email_id = p_email_id and d.tracking_number <> ''
             group by d.tracking_number) p);
end
$$;

-- record_status_events answered with RETURN QUERY, a query over its outcome arrays that Postgres
-- planned anew on each call; it returns its rows one by one instead. Otherwise unchanged (sql/008).
create or replace function record_status_events(
  p_lock_namespace integer,
  p_events jsonb,
  p_source text,
  p_replay_delay_minutes integer,
  p_send_max_attempts integer,
  p_final_statuses text[],
  p_ranked_statuses text[],
  p_ranks integer[]
) returns table (event_index integer, outcome text, aal_event_created boolean, error_code text, error_message text)
language plpgsql as $$
declare
  v_count integer := jsonb_array_length(p_events);
  v_outcomes text[] := array_fill(null::text, array[v_count]);
  v_aal boolean[] := array_fill(false, array[v_count]);
  v_codes text[] := array_fill(null::text, array[v_count]);
  v_messages text[] := array_fill(null::text, array[v_count]);
  v_event record;
  v_outcome text;
  v_created boolean;
  v_code text;
  v_message text;
begin
  for v_event in
    select e.value, e.ordinality::integer as position
    from jsonb_array_elements(p_events) with ordinality e
    order by e.value->>'notification_id', e.ordinality
  loop
    begin
      select f.outcome, f.aal_event_created into v_outcome, v_created
      from record_status_event(
        p_lock_namespace => p_lock_namespace,
        p_notification_id => (v_event.value->>'notification_id')::uuid,
        p_status => v_event.value->>'status',
        p_status_reason => v_event.value->>'status_reason',
        p_reference => v_event.value->>'reference',
        p_notify_created_at => (v_event.value->>'created_at')::timestamptz,
        p_sent_at => (v_event.value->>'sent_at')::timestamptz,
        p_completed_at => (v_event.value->>'completed_at')::timestamptz,
        p_provider => v_event.value->>'provider',
        p_source => p_source,
        p_known => (v_event.value->>'known')::boolean,
        p_final => (v_event.value->>'final')::boolean,
        p_rank => (v_event.value->>'rank')::integer,
        p_email_state => v_event.value->>'email_state',
        p_email_reason => v_event.value->>'email_reason',
        p_replay_delay_minutes => p_replay_delay_minutes,
        p_send_max_attempts => p_send_max_attempts,
        p_final_statuses => p_final_statuses,
        p_ranked_statuses => p_ranked_statuses,
        p_ranks => p_ranks) f;
      v_outcomes[v_event.position] := v_outcome;
      v_aal[v_event.position] := v_created;
    exception when others then
      get stacked diagnostics v_code = returned_sqlstate, v_message = message_text;
      v_outcomes[v_event.position] := 'failed';
      v_codes[v_event.position] := v_code;
      v_messages[v_event.position] := v_message;
    end;
  end loop;
  -- Row by row: a query over the outcome arrays would be planned again on every call (the arrays
  -- are its parameters), for one row a callback.
  for i in 1 .. v_count loop
    event_index := i;
    outcome := v_outcomes[i];
    aal_event_created := v_aal[i];
    error_code := v_codes[i];
    error_message := v_messages[i];
    return next;
  end loop;
end
$$;
