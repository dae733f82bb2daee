-- Failed AAL events, counted at every metrics scrape (rx_rows, an alert): an index of them alone, so
-- that the count reads the failures, not every event ever posted.
create index aal_event_failed on aal_event (created_at) where state = 'failed';
