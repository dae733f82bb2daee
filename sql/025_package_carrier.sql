-- The rules that name a package and describe a delivered email in the AAL, each defined once here
-- and used by every statement that needs it.
--
-- package_carrier: the carrier of a package is the one its fills name. Fills of one package can come
-- in different messages, one of them without a carrier (UNK), which must not hide the carrier's name
-- and tracking link; of two named carriers the first in sort order is taken, so every statement
-- names a package alike. The shadow comparison (src/shadow/repository.ts) uses it; grouping
-- (src/grouping/repository.ts) and, since sql/030, the AAL detail write the same rule with the
-- built-in min() on their hot paths, and test/grouping/grouping.test.ts holds the three equal.
create function package_carrier_step(chosen text, carrier text) returns text
language sql immutable parallel safe as $$
  select case when carrier is null or carrier = 'UNK' then chosen
              when chosen is null or carrier < chosen then carrier
              else chosen end
$$;

create function package_carrier_final(chosen text) returns text
language sql immutable parallel safe as $$
  select coalesce(chosen, 'UNK')
$$;

create aggregate package_carrier(text) (
  sfunc = package_carrier_step,
  stype = text,
  finalfunc = package_carrier_final,
  combinefunc = package_carrier_step,
  parallel = safe
);

-- aal_detail: what the AAL event of a delivered email says. It names packages by carrier and
-- tracking number and prescriptions by the last four digits of the Rx number only: no drug names
-- and no full Rx numbers in an audit log. Each package is listed once, under its carrier.
create function aal_detail(p_email_id uuid) returns text
language sql stable parallel safe as $$
  select coalesce('Packages: ' || string_agg(p.carrier || ' ' || p.tracking_number || ' (Rx ending ' || p.rx_endings || ')',
                                             '; ' order by p.carrier, p.tracking_number),
                  'Packages: none listed')
    from (select package_carrier(d.carrier) as carrier, d.tracking_number,
                 string_agg(distinct right(d.rx_number, 4), ', ' order by right(d.rx_number, 4)) as rx_endings
            from medication_dispense d
           where d.tracking_email_id = p_email_id and d.tracking_number <> ''
           group by d.tracking_number) p
$$;

-- The effects of a status event as sql/012_aal_event_late_delivery_and_carrier.sql defines them,
-- with the AAL detail taken from aal_detail.
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
  -- however often or late `delivered` arrives.
  if p_email_state = 'delivered' then
    insert into aal_event (tracking_email_id, notification_id, mhv_correlation_id, completion_time, detail_value, state, last_error)
    select t.id, e.notification_id, c.correlation_id,
           coalesce(e.completed_at, e.received_at),
           aal_detail(t.id),
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
