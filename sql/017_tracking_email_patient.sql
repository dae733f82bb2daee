-- "Did this veteran get their email?": an operator finds a veteran's emails by ICN
-- (POST /v1/tracking-emails/search), newest first, off this index instead of every email ever sent.
-- Grouping writes one more index entry per email (a quarter of an entry per dispense).
create index tracking_email_patient on tracking_email (patient_icn, created_at);
