-- Delivery status (callbacks and polls) and the AAL outbox.

create table notification_status_event (
  id bigint generated always as identity primary key,
  notification_id uuid not null,                   -- no foreign key: a callback may beat the sender's commit
  status text not null,
  status_reason text,
  reference text,
  notify_created_at timestamptz,
  sent_at timestamptz,
  completed_at timestamptz,
  provider text,
  source text not null check (source in ('callback', 'poll')),
  received_at timestamptz not null default now(),
  applied_at timestamptz,                          -- null until matched to a stored notification
  constraint notification_status_event_dedup unique nulls not distinct (notification_id, status, completed_at)
);
create index notification_status_event_notification on notification_status_event (notification_id, received_at);
create index notification_status_event_unapplied on notification_status_event (notification_id) where applied_at is null;

create table aal_event (
  id bigint generated always as identity primary key,
  tracking_email_id uuid not null unique references tracking_email (id),   -- one AAL event per email
  notification_id uuid not null,
  mhv_correlation_id text,
  completion_time timestamptz not null,            -- VA Notify's completed_at
  detail_value text not null,
  state text not null default 'pending'
    check (state in ('pending', 'posting', 'posted', 'failed', 'unpostable')),
  attempts integer not null default 0,
  next_attempt_at timestamptz not null default now(),
  lease_until timestamptz,
  last_error text,
  posted_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index aal_event_due on aal_event (next_attempt_at) where state = 'pending';
create index aal_event_leased on aal_event (lease_until) where state = 'posting';
