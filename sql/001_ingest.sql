-- Ingest: every request body is kept before it is parsed, and every dispense it carried is a row.

create table inbound_message (
  id bigint generated always as identity primary key,
  received_at timestamptz not null default now(),
  source text not null default 'http',           -- 'http' today; an event-bus consumer later
  content_type text not null,
  -- The body exactly as received, except that SSN values are masked: the service never stores an SSN.
  body text not null,
  outcome text not null default 'received'
    check (outcome in ('received', 'accepted', 'partial', 'rejected')),
  message_count integer not null default 0,
  error text,
  processed_at timestamptz
);
create index inbound_message_received_at on inbound_message (received_at);

create table medication_dispense (
  id bigint generated always as identity primary key,
  station_number text not null,
  rx_number text not null,
  fill_number integer not null,
  -- '' when CMOP sent none (a cancelled fill); part of the identity of a dispense event.
  tracking_number text not null default '',
  carrier text not null default 'UNK',
  drug_name text,
  ndc text,
  quantity numeric,
  dispensed_at timestamptz,
  shipped_at timestamptz,
  patient_icn text,
  mhv_correlation_id text,
  message_control_id text,
  state text not null default 'pending'
    check (state in ('pending', 'grouped', 'cancelled', 'unprocessable', 'excluded')),
  state_reason text,
  inbound_message_id bigint references inbound_message (id),
  tracking_email_id uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint medication_dispense_event_key unique (station_number, rx_number, fill_number, tracking_number)
);
-- Grouping reads only pending rows: this index keeps its cost proportional to pending work,
-- however much grouped history the table holds.
create index medication_dispense_pending on medication_dispense (patient_icn, created_at) where state = 'pending';
create index medication_dispense_tracking_email on medication_dispense (tracking_email_id) where tracking_email_id is not null;
