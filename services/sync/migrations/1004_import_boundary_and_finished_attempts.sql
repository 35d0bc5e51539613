-- The first UID of a folder that is news for the CRM's feed: the folder's UIDNEXT when it was
-- first seen or its UIDVALIDITY changed. What was there then is the folder's import and is
-- never fed, even when a later run finishes an import that was cut off; what came after is
-- fed, once. 0: not known (folders from before this column, or a server that gives no
-- UIDNEXT): then a run that starts with none of the folder's messages indexed feeds nothing.
ALTER TABLE folders ADD COLUMN feed_from_uid BIGINT NOT NULL DEFAULT 0;

-- When the mailbox's last sync attempt finished, with a success or a failure recorded (by the
-- worker's clock, as `last_started_at`): a request is answered by an attempt that began after
-- it only if that attempt finished; one whose worker died answers nothing.
ALTER TABLE schedule ADD COLUMN last_finished_at TIMESTAMPTZ;
