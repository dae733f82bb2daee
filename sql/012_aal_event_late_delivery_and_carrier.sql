-- The effects of a status event (sql/006_record_status_event.sql), changed in two ways. The
-- callers (record_status_event, record_status_events in sql/008, apply_pending_status_event) are
-- unchanged and reach this function by name.
--
-- 1. A `delivered` report writes the email's AAL event also when it is stale. VA Notify guarantees
--    no order: a `delivered` callback answered 5xx is retried, and the hard bounce that followed it
--    can be recorded first. The bounce then stays the notification's status (a later completion),
--    and the delivery used to write nothing more, while in the other order the delivery had
--    written its AAL event before the bounce arrived. Whether the email was delivered, and so its
--    one AAL event, must not depend on which callback came first. Everything else a
--    stale event does is unchanged: it is news of the notification, and moves neither its status
--    nor the email's state.
-- 2. The AAL detail lists each package once, under the carrier any of its fills names. Fills of
--    one package can come in different messages, one without a carrier (UNK): grouped by carrier
--    as well, such a package was listed twice. The carrier is chosen as the grouping statement
--    chooses it for the email (src/grouping/repository.ts), so the two name a package alike.
create or replace function apply_status_event_effects(
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
  v_applied boolean;
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
  v_applied := found;
  if not v_applied then
    update notification set last_event_at = now() where id = p_notification_id;
  end if;

  -- The tracking email shows the final status of its latest send: a late event about an earlier
  -- attempt (replayed since) changes that notification only. An email that is queued or being sent
  -- belongs to the sender, and a shadowed one was never sent, so neither is touched. A temporary
  -- failure is not retried by VA Notify: the sweep replays the email once next_attempt_at passes,
  -- until the email has used all its attempts. A stale event leaves the email as the newer one set it.
  if v_applied and p_email_state is not null then
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

  -- The AAL outbox row, written with the delivery it reports, stale or not: the email was delivered
  -- whatever was recorded first. The unique tracking_email_id makes it exactly one per email,
  -- however often or late `delivered` arrives. The detail names packages by carrier and tracking
  -- number and prescriptions by the last four digits of the Rx number only: no drug names and no
  -- full Rx numbers in an audit log.
  if p_email_state = 'delivered' then
    insert into aal_event (tracking_email_id, notification_id, mhv_correlation_id, completion_time, detail_value, state, last_error)
    select t.id, e.notification_id, c.correlation_id,
           coalesce(e.completed_at, e.received_at),
           (select coalesce('Packages: ' || string_agg(p.carrier || ' ' || p.tracking_number || ' (Rx ending ' || p.rx_endings || ')',
                                                       '; ' order by p.carrier, p.tracking_number),
                            'Packages: none listed')
              from (select coalesce(min(d.carrier) filter (where d.carrier <> 'UNK'), 'UNK') as carrier, d.tracking_number,
                           string_agg(distinct right(d.rx_number, 4), ', ' order by right(d.rx_number, 4)) as rx_endings
                      from medication_dispense d
                     where d.tracking_email_id = t.id and d.tracking_number <> ''
                     group by d.tracking_number) p),
           case when c.correlation_id is null then 'unpostable' else 'pending' end,
           case when c.correlation_id is null then 'no MHV correlation id' end
    from tracking_email t
    join notification_status_event e on e.id = p_event_id
    cross join lateral (select nullif(trim(t.mhv_correlation_id), '') as correlation_id) c
    where t.id = p_email_id
    on conflict (tracking_email_id) do nothing;
    aal_event_created := found;
  end if;

  outcome := case when v_applied then 'applied' else 'stale' end;
end
$$;
