-- Records from the VA Enterprise Event Bus (Kafka) are kept like HTTP bodies, with where they came
-- from: topic, partition and offset. The unique index makes a redelivered record (a consumer that
-- stopped before committing its offset, or a rebalance) store nothing new.
alter table inbound_message
  add column event_topic text,
  add column event_partition integer,
  add column event_offset bigint,
  add constraint inbound_message_event_position check (
    (event_topic is null) = (event_partition is null) and (event_topic is null) = (event_offset is null));
create unique index inbound_message_event_record on inbound_message (event_topic, event_partition, event_offset)
  where event_topic is not null;
