-- The AAL posting pause. When MHV's API gateway refuses our credentials (403: a bad, expired or
-- rotated x-api-key or appToken) no event is at fault: the AAL worker stops posting on every
-- instance until paused_until, hands its claims back without charging an attempt, and the first run
-- after that probes with whatever credentials are configured then.
-- Its own table rather than a row of rate_budget: rate_budget's pause is VA Notify's, and
-- rx_sending_paused (and the cutover runbook) read any paused row there as "VA Notify refused our key".
-- At most one row, written by an upsert, so nothing depends on a seeded row being present.
create table aal_pause (
  singleton boolean primary key default true check (singleton),
  paused_until timestamptz not null,
  pause_reason text not null,
  paused_at timestamptz not null default now()
);
