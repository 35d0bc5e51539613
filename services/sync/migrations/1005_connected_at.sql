-- When the mailbox entered the schedule (connected): a mailbox never synced is overdue once
-- its tier's interval has passed since then (`mailroom_sync_overdue_mailboxes`). Rows from
-- before this column count from when it was added.
--
-- A column with a constant default: no rewrite, but ALTER takes an ACCESS EXCLUSIVE lock. A lock
-- not granted within 5 s (a long transaction on the table) fails the migration, and the next
-- run tries again, rather than queueing every write of the schedule behind the waiting ALTER.
SET LOCAL lock_timeout = '5s';

ALTER TABLE schedule ADD COLUMN connected_at TIMESTAMPTZ NOT NULL DEFAULT now();
