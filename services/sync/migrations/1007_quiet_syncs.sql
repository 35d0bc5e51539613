-- Syncs of a folder since every one of its flags was last read whose STATUS showed no change.
-- Without CONDSTORE a change of a flag other than \Seen moves no STATUS figure, so every Nth
-- such sync reads every flag all the same (MAILROOM_SYNC__FLAG_PASS_EVERY); with CONDSTORE
-- the folder's HIGHESTMODSEQ (already kept) shows every change and this stays 0.
--
-- A column with a constant default: no rewrite, but ALTER takes an ACCESS EXCLUSIVE lock. A lock
-- not granted within 5 s fails the migration, and the next run tries again.
SET LOCAL lock_timeout = '5s';

ALTER TABLE folders ADD COLUMN quiet_syncs INTEGER NOT NULL DEFAULT 0;
