-- When the mailbox entered the schedule (connected): a mailbox never synced is overdue once
-- its tier's interval has passed since then (`mailroom_sync_overdue_mailboxes`). Rows from
-- before this column count from when it was added.
ALTER TABLE schedule ADD COLUMN connected_at TIMESTAMPTZ NOT NULL DEFAULT now();
