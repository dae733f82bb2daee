-- Operators resend an email that did not reach its veteran, and retry an AAL event that failed
-- (POST /v1/tracking-emails/resend, POST /v1/aal-events/retry), instead of editing rows by hand.

-- A resend is a new tracking email: a copy of the failed one's recipient and text with its own id,
-- so VA Notify gets a new reference (an orphan lookup can never take the old send for the new one),
-- the new email gets a full budget of attempts, and the old one keeps its history. The dispenses move
-- to the new email, so that its AAL event and its view list them. At most one resend of an email: a
-- repeated request answers the resend that exists. The operator's reason is kept on the copy
-- (state_reason is the sender's, and is cleared once the email is sent).
--
-- The old email ends in its own state, `resent`, which nothing moves it out of: a late status event
-- about its last send changes only that notification (the status SQL of sql/006 moves emails in
-- sent, delivered and the failure states only), and the sweep never replays it, so it cannot be
-- sent beside its copy. Its state_reason still says why it had failed.
-- No foreign key and a partial index, so that grouping's inserts (every email, none of them a resend)
-- pay for neither: a foreign key queues a trigger event per inserted row even when the column is null
-- (sql/010 says the same of the dispenses). Only resendTrackingEmails writes the column, naming an
-- email it has just read and locked, and nothing deletes emails.
alter table tracking_email add column resent_from uuid;
alter table tracking_email add column resend_reason text;
alter table tracking_email drop constraint tracking_email_state_check,
  add constraint tracking_email_state_check
    check (state in ('queued', 'sending', 'sent', 'delivered', 'permanent_failure', 'temporary_failure',
                     'failed', 'expired', 'shadowed', 'resent'));
create unique index tracking_email_resent_from on tracking_email (resent_from) where resent_from is not null;

-- An AAL event's attempts are also its claims' fencing token, so a retry cannot set them back to
-- zero: a worker still holding an old claim could then match a new one. The retry records how many
-- were spent before it, and the attempt limit counts from there.
alter table aal_event add column attempts_before_retry integer not null default 0;

-- The operator's list of emails whose AAL event needs attention (GET /v1/tracking-emails?aalState=):
-- few rows, read by this index instead of every AAL event ever posted.
create index aal_event_needs_attention on aal_event (state) where state in ('failed', 'unpostable');
