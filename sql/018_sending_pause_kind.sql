-- Why sending is paused, as a kind the code reads, beside the reason text people read. The sweep's
-- status polls and orphan lookups are GETs: VA Notify's rate and daily send limits and the sends an
-- outage left unanswered say nothing about them, so the sweep keeps asking during those pauses (the
-- shared budget still paces it). Refused credentials (401/403) and a wrong VA_NOTIFY_BASE_URL (404 on
-- the send endpoint) would fail every GET too, and a 404 there would read as "VA Notify no longer has
-- this notification": during those pauses the sweep asks VA Notify nothing.
alter table rate_budget add column pause_kind text
  check (pause_kind in ('credentials', 'no_endpoint', 'rate_limit', 'daily_limit', 'unavailable'));

-- A pause written before this migration has its reason only: the sender's outage pauses and VA
-- Notify's 429 messages are recognisable; any other came from a 401, 403 or 404, which stop the
-- sweep alike and end within SEND_PAUSE_SECONDS, so they are taken as the credentials'.
update rate_budget
   set pause_kind = case
         when pause_reason like 'VA Notify unavailable:%' then 'unavailable'
         when pause_reason like 'Exceeded send limits%' then 'daily_limit'
         when pause_reason like 'Exceeded rate limit%' then 'rate_limit'
         else 'credentials'
       end
 where pause_reason is not null;

-- Written and cleared together, so that a pause's kind is never missing nor left from another.
alter table rate_budget add constraint rate_budget_pause_kind_with_reason
  check ((pause_kind is null) = (pause_reason is null));
