-- When the sync state last changed (issue 21): the time of the report that set it (a sync's end,
-- a failure's), or of the edit that un-parked the mailbox. A report from before it — a failure
-- delivered late, one from an attempt made before the owner repaired the password — changes
-- the state no more than an older sync moves `last_sync_time` back. '-infinity': never reported.
ALTER TABLE mailboxes ADD COLUMN sync_state_time TIMESTAMPTZ NOT NULL DEFAULT '-infinity';
UPDATE mailboxes SET sync_state_time = last_sync_time;
