-- An operator finds a veteran's emails by ICN (POST /v1/tracking-emails/search). Keyed by ICN first,
-- that index put each new email's entry on a random page among every kept email's: the first write
-- to a page after a checkpoint puts the whole page in the WAL (a full-page image), and beside 60
-- days of national volume, grouping a day's 25,000 emails wrote some 16,000 of them (126 MB of WAL,
-- and the grouping a third slower than on an empty database). Keyed first by the email's UTC day, a
-- day's entries fill pages of their own, the few a checkpoint cycle touches; a lookup by ICN probes
-- the index once for each day that has emails (findVeteranEmails).
drop index tracking_email_patient;
create index tracking_email_patient_by_day on tracking_email (((created_at at time zone 'UTC')::date), patient_icn);
