-- When the last sync attempt of the mailbox began (by the worker's clock): a request made
-- before it is already answered by it, so duplicate requests ("sync now" pressed 200 times,
-- a scheduler request behind a person's) cost no login.
ALTER TABLE schedule ADD COLUMN last_started_at TIMESTAMPTZ;
-- The organisation's limit on indexed messages sums its mailboxes' checkpoints.
CREATE INDEX schedule_org ON schedule (org_id);
