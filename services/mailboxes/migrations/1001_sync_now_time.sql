-- When SyncMailboxNow last queued a sync of the mailbox ('-infinity': never). A repeat within
-- the configured interval queues nothing and answers with this time, so a flood of "sync now"
-- calls cannot become a flood of IMAP logins.
ALTER TABLE mailboxes ADD COLUMN sync_now_time TIMESTAMPTZ NOT NULL DEFAULT '-infinity';
