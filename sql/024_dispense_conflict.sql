-- A re-sent dispense event (same station, Rx number, fill and tracking number) that names another
-- veteran or another carrier than the stored one: the stored dispense is left as it is (it may be
-- in an email already), and the resend is kept here for an operator, rather than dropped as a
-- duplicate. Its sender is told (HL7 AE, JSON `conflicts`).
create table medication_dispense_conflict (
  id bigint generated always as identity primary key,
  dispense_id bigint not null references medication_dispense (id),
  inbound_message_id bigint not null references inbound_message (id),
  sent_patient_icn text,
  sent_carrier text not null,
  sent_message_control_id text,
  received_at timestamptz not null default now()
);
create index medication_dispense_conflict_dispense on medication_dispense_conflict (dispense_id);
