-- Grouping and sending: one tracking email per veteran per grouping, one notification per send.

create table tracking_email (
  id uuid primary key default gen_random_uuid(),   -- also the VA Notify `reference`
  patient_icn text not null,
  mhv_correlation_id text,
  personalisation jsonb not null,
  package_count integer not null,
  prescription_count integer not null,
  state text not null default 'queued'
    check (state in ('queued', 'sending', 'sent', 'delivered', 'permanent_failure', 'temporary_failure',
                     'failed', 'expired', 'shadowed')),
  state_reason text,
  attempts integer not null default 0,              -- sends started, replays included
  next_attempt_at timestamptz not null default now(),
  lease_until timestamptz,
  leased_by text,
  last_error text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index tracking_email_due on tracking_email (next_attempt_at) where state = 'queued';
create index tracking_email_leased on tracking_email (lease_until) where state = 'sending';
create index tracking_email_replay on tracking_email (next_attempt_at) where state = 'temporary_failure';
create index tracking_email_state on tracking_email (state, created_at);

alter table medication_dispense
  add constraint medication_dispense_tracking_email_fk foreign key (tracking_email_id) references tracking_email (id);

create table notification (
  id uuid primary key,                              -- VA Notify's notification id
  tracking_email_id uuid not null references tracking_email (id),
  attempt integer not null,
  status text not null default 'created',
  status_reason text,
  -- The event that set the current status, for ordering late and duplicate events.
  status_completed_at timestamptz,
  status_received_at timestamptz not null default now(),
  sent_at timestamptz,
  completed_at timestamptz,
  last_event_at timestamptz not null default now(), -- last time we heard anything of it
  poll_count integer not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (tracking_email_id, attempt)
);
create index notification_tracking_email on notification (tracking_email_id);
create index notification_open on notification (last_event_at)
  where status in ('created', 'sending', 'pending', 'sent');

-- VA Notify's per-service rate limit is shared by every instance, so its budget lives here:
-- a token bucket refilled continuously, and a pause set when VA Notify rejects our credentials.
create table rate_budget (
  name text primary key,
  tokens double precision not null,
  refilled_at timestamptz not null default now(),
  paused_until timestamptz,
  pause_reason text
);
insert into rate_budget (name, tokens) values ('va-notify', 0);
