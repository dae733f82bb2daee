-- Recording and applying one delivery-status event in one statement. Each step used to be its own
-- round trip (BEGIN, lock, insert, touch, mark applied, status, email, AAL, COMMIT): at callback
-- rates the socket writes and the waits between them cost more than the SQL. The steps, their
-- order and their guards are the same; only where they run has changed.
--
-- What a status means (known, final, progress rank, the state the email follows to) stays in
-- src/status/notification-status.ts: the caller passes it in, with the lists of final statuses and
-- ranks that order the notification's current status, so that no status table is written twice.

-- The effects of one stored event on a stored notification, once the event is marked applied:
-- the notification's status moves forward only, the tracking email follows its latest attempt, and
-- the first delivery of an email writes its AAL event. Shared by the two functions below.
-- Every event counts as news of the notification (last_event_at: the fallback poll only asks about
-- silent ones). It is set by the status update when there is one, so that an applied event writes
-- the notification row once (touching last_event_at, an indexed column, writes a whole new row
-- version with its index entries).
create function apply_status_event_effects(
  p_event_id bigint,
  p_notification_id uuid,
  p_email_id uuid,
  p_attempt integer,
  p_status text,                 -- normalised
  p_known boolean,
  p_final boolean,
  p_rank integer,                -- progress rank of p_status
  p_email_state text,            -- the state the email follows to; null for a non-final status
  p_email_reason text,
  p_replay_delay_minutes integer,
  p_send_max_attempts integer,
  p_final_statuses text[],       -- every final status
  p_ranked_statuses text[],      -- every known status, and beside it ...
  p_ranks integer[],             -- ... its progress rank
  out outcome text,
  out aal_event_created boolean
) language plpgsql as $$
declare
  v_temporary boolean := p_email_state = 'temporary_failure';
begin
  aal_event_created := false;
  if not p_known then
    update notification set last_event_at = now() where id = p_notification_id;
    outcome := 'unrecognised';
    return;
  end if;

  -- Status only moves forward. Events are ordered by (final, completed_at, progress, receipt): a
  -- final status always ends a non-final one and is never replaced by one; between two finals or
  -- two non-finals the later completion wins, so a late `sending` never overwrites `delivered`
  -- while a bounce (`permanent-failure` after `delivered`) is still recorded.
  update notification n set
    status = p_status,
    status_reason = e.status_reason,
    status_completed_at = e.completed_at,
    status_received_at = e.received_at,
    sent_at = coalesce(e.sent_at, n.sent_at),
    completed_at = case when p_final then coalesce(e.completed_at, e.received_at) else n.completed_at end,
    last_event_at = now(),
    updated_at = now()
  from notification_status_event e
  where e.id = p_event_id and n.id = e.notification_id
    and (p_final, coalesce(e.completed_at, '-infinity'), p_rank, e.received_at)
      > (n.status = any(p_final_statuses),
         coalesce(n.status_completed_at, '-infinity'),
         p_ranks[array_position(p_ranked_statuses, n.status)],
         n.status_received_at);
  if not found then
    update notification set last_event_at = now() where id = p_notification_id;
    outcome := 'stale';
    return;
  end if;

  -- The tracking email shows the final status of its latest send: a late event about an earlier
  -- attempt (replayed since) changes that notification only. An email that is queued or being sent
  -- belongs to the sender, and a shadowed one was never sent, so neither is touched. A temporary
  -- failure is not retried by VA Notify: the sweep replays the email once next_attempt_at passes,
  -- until the email has used all its attempts.
  if p_email_state is not null then
    update tracking_email t set
      state = case when v_temporary and t.attempts >= p_send_max_attempts then 'failed' else p_email_state end,
      state_reason = p_email_reason,
      next_attempt_at = case when v_temporary and t.attempts < p_send_max_attempts
                             then now() + make_interval(mins => p_replay_delay_minutes)
                             else t.next_attempt_at end,
      updated_at = now()
    where t.id = p_email_id
      and t.state in ('sent', 'delivered', 'permanent_failure', 'temporary_failure', 'failed', 'expired')
      and p_attempt = (select max(n.attempt) from notification n where n.tracking_email_id = t.id);
  end if;

  -- The AAL outbox row, written with the delivery it reports. The unique tracking_email_id makes it
  -- exactly one per email, however often or late `delivered` arrives. The detail names packages by
  -- carrier and tracking number and prescriptions by the last four digits of the Rx number only:
  -- no drug names and no full Rx numbers in an audit log.
  if p_email_state = 'delivered' then
    insert into aal_event (tracking_email_id, notification_id, mhv_correlation_id, completion_time, detail_value, state, last_error)
    select t.id, e.notification_id, c.correlation_id,
           coalesce(e.completed_at, e.received_at),
           (select coalesce('Packages: ' || string_agg(p.package, '; ' order by p.carrier, p.tracking_number), 'Packages: none listed')
              from (select d.carrier, d.tracking_number,
                           d.carrier || ' ' || d.tracking_number || ' (Rx ending '
                             || string_agg(distinct right(d.rx_number, 4), ', ' order by right(d.rx_number, 4)) || ')' as package
                      from medication_dispense d
                     where d.tracking_email_id = t.id and d.tracking_number <> ''
                     group by d.carrier, d.tracking_number) p),
           case when c.correlation_id is null then 'unpostable' else 'pending' end,
           case when c.correlation_id is null then 'no MHV correlation id' end
    from tracking_email t
    join notification_status_event e on e.id = p_event_id
    cross join lateral (select nullif(trim(t.mhv_correlation_id), '') as correlation_id) c
    where t.id = p_email_id
    on conflict (tracking_email_id) do nothing;
    aal_event_created := found;
  end if;

  outcome := 'applied';
end
$$;

-- One status event as VA Notify reported it (a callback or a poll): recorded, de-duplicated, and
-- applied when its notification is stored. Called as a statement of its own, it is one transaction.
create function record_status_event(
  p_lock_namespace integer,
  p_notification_id uuid,
  p_status text,                 -- normalised (or as received, when not a known status)
  p_status_reason text,
  p_reference text,
  p_notify_created_at timestamptz,
  p_sent_at timestamptz,
  p_completed_at timestamptz,
  p_provider text,
  p_source text,
  p_known boolean,
  p_final boolean,
  p_rank integer,
  p_email_state text,
  p_email_reason text,
  p_replay_delay_minutes integer,
  p_send_max_attempts integer,
  p_final_statuses text[],
  p_ranked_statuses text[],
  p_ranks integer[],
  out outcome text,
  out aal_event_created boolean
) language plpgsql as $$
declare
  v_email_id uuid;
  v_attempt integer;
  v_stored boolean;
  v_event_id bigint;
begin
  -- Recording an event and storing a notification id both take this lock: without it, a callback
  -- that commits while the sender's transaction is open would see no notification, and the sender
  -- would see no event, and the event would never be applied. The function is volatile, so each
  -- statement after the lock reads what the sender committed before it was granted.
  perform pg_advisory_xact_lock(p_lock_namespace, hashtext(p_notification_id::text));

  select tracking_email_id, attempt into v_email_id, v_attempt
  from notification where id = p_notification_id;
  v_stored := found;

  -- The unique key (notification_id, status, completed_at) makes a redelivered callback, or a poll
  -- that reads what a callback already said, a no-op. An event for a stored notification is
  -- applied now (unrecognised ones too: they are looked at, never acted on); any other waits for
  -- the sender to store its notification (applied_at null).
  insert into notification_status_event
    (notification_id, status, status_reason, reference, notify_created_at, sent_at, completed_at, provider, source, applied_at)
  values (p_notification_id, p_status, p_status_reason, p_reference, p_notify_created_at, p_sent_at, p_completed_at,
          p_provider, p_source, case when v_stored then now() end)
  on conflict on constraint notification_status_event_dedup do nothing
  returning id into v_event_id;

  aal_event_created := false;
  if v_event_id is null then
    -- A duplicate is news of the notification too.
    update notification set last_event_at = now() where id = p_notification_id;
    outcome := 'duplicate';
  elsif not v_stored then
    outcome := 'pending_notification';
  else
    select f.outcome, f.aal_event_created into outcome, aal_event_created
    from apply_status_event_effects(v_event_id, p_notification_id, v_email_id, v_attempt, p_status, p_known, p_final, p_rank,
                                    p_email_state, p_email_reason, p_replay_delay_minutes, p_send_max_attempts,
                                    p_final_statuses, p_ranked_statuses, p_ranks) f;
  end if;
end
$$;

-- One event that arrived before its notification id was stored, applied by the transaction that
-- stores the id (which holds the notification's lock already).
create function apply_pending_status_event(
  p_event_id bigint,
  p_status text,
  p_known boolean,
  p_final boolean,
  p_rank integer,
  p_email_state text,
  p_email_reason text,
  p_replay_delay_minutes integer,
  p_send_max_attempts integer,
  p_final_statuses text[],
  p_ranked_statuses text[],
  p_ranks integer[],
  out outcome text,
  out aal_event_created boolean
) language plpgsql as $$
declare
  v_notification_id uuid;
  v_email_id uuid;
  v_attempt integer;
begin
  aal_event_created := false;
  select n.id, n.tracking_email_id, n.attempt into v_notification_id, v_email_id, v_attempt
  from notification n join notification_status_event e on n.id = e.notification_id
  where e.id = p_event_id;
  if not found then
    outcome := 'pending_notification';
    return;
  end if;
  update notification_status_event set applied_at = now() where id = p_event_id;
  select f.outcome, f.aal_event_created into outcome, aal_event_created
  from apply_status_event_effects(p_event_id, v_notification_id, v_email_id, v_attempt, p_status, p_known, p_final, p_rank,
                                  p_email_state, p_email_reason, p_replay_delay_minutes, p_send_max_attempts,
                                  p_final_statuses, p_ranked_statuses, p_ranks) f;
end
$$;
