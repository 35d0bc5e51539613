-- When the mailbox's login settings (password, IMAP server) last changed (NULL: never since
-- it was connected): a failure of a sync that read the older settings is not held against the
-- newer ones (it would park a mailbox whose password was just fixed).
ALTER TABLE schedule ADD COLUMN settings_changed_at TIMESTAMPTZ;
