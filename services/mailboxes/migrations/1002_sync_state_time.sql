-- When the sync state last changed (issue 21): the time of the report that set it (a sync's end,
-- a failure's), or of the edit that un-parked the mailbox. A report from before it — a failure
-- delivered late, one from an attempt made before the owner repaired the password — changes
-- the state no more than an older sync moves `last_sync_time` back. '-infinity': not set since
-- this column came; the queries then take `last_sync_time` for it
-- (`GREATEST(sync_state_time, last_sync_time)`), so no row is rewritten here: adding a column
-- with a constant default changes only the catalog, and the lock it takes is brief.
SET LOCAL lock_timeout = '5s';
ALTER TABLE mailboxes ADD COLUMN sync_state_time TIMESTAMPTZ NOT NULL DEFAULT '-infinity';
