-- Two indexes that led with the column a unique key of the same table leads with, so that the key
-- serves every lookup they served (each finds a handful of rows, sorted after):
-- - a notification's status events are looked up by notification id, and the dedup key is
--   (notification_id, status, completed_at). VA Notify's ids are random, so the second index cost
--   each callback an entry on a random page: beside 60 days of national volume, a full-page image
--   in the WAL after nearly every checkpoint, and 231 MB of disk;
-- - an email's notifications are looked up by tracking_email_id, and (tracking_email_id, attempt)
--   is unique: the second index was one more entry per send and per status change.
drop index notification_status_event_notification;
drop index notification_tracking_email;
