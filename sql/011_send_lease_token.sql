-- Each send claim gets its own token. A sender renews its lease right before every request to VA
-- Notify, and records outcomes, only while the email still carries its claim's token: an email that
-- another sender (or the sweep) has since claimed as an orphan is never sent a second time, or
-- handed back, by the sender that lost it. `leased_by` still names the instance, for operators.
alter table tracking_email add column lease_token uuid;
