-- Recording the delivery-status events of several callbacks that arrived together in one statement,
-- so one transaction and one commit's flush serve them all (src/status/status-event-batcher.ts).
-- Each event still runs record_status_event (sql/006_record_status_event.sql) unchanged, inside a
-- block of its own: an event that fails is rolled back alone and reported as failed, so only its
-- callback answers 5xx (and is retried by VA Notify) while the others commit.
--
-- Locks. Every event takes its notification's advisory lock and keeps it until the batch commits.
-- The events are taken in notification-id order, so two batches take their advisory locks in one
-- order and cannot wait for each other's advisory locks in a cycle. Row locks are another matter:
-- the notifications of two attempts of one email share that email's row (and its AAL outbox row),
-- so two batches, or a batch and the sender's transaction (which holds the email row it marked sent
-- when applyPendingStatusEvents takes the new notification's lock), can in rare interleavings wait
-- for each other. Postgres detects such a cycle after deadlock_timeout and raises 40P01 in one of
-- the waiting statements: in a batch that is one event's block, rolled back alone and reported as
-- failed (its callback answers 5xx and VA Notify retries it); in the sender it fails the
-- transaction storing the id, like any database error there (the email stays leased, and its
-- notification is found by reference once the lease expires, pending events applied then).
-- Either way the events already committed stay, and the refused one is retried.
--
-- The events come as one jsonb array of objects (the caller's arguments to record_status_event,
-- timestamps as text): arrays of mixed nulls are awkward to pass as typed parameters, and the
-- text-to-type conversions then happen inside each event's block, so a value Postgres refuses fails
-- that event only. Results are returned one row per event, in input order (event_index from 1).
create function record_status_events(
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
  return query
    select i, v_outcomes[i], v_aal[i], v_codes[i], v_messages[i]
    from generate_series(1, v_count) i
    order by i;
end
$$;
