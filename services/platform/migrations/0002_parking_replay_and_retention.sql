-- Columns only: each ALTER takes an ACCESS EXCLUSIVE lock, held to the end of this migration's
-- transaction, so nothing slow runs here (the indexes come after, built concurrently, one per
-- migration: 0003 to 0007). A lock not granted within 5 s (a long transaction on the table)
-- fails the migration, and the next start tries again, rather than queueing every write of
-- the service behind the waiting ALTER.
SET LOCAL lock_timeout = '5s';

-- An outbox row the broker refuses for good is parked after a number of attempts, so the rest
-- of the stream goes on; an operator inspects it and asks for it to be tried again.
ALTER TABLE outbox ADD COLUMN parked_at TIMESTAMPTZ;

-- A dead letter an operator asked to replay is applied again by its consumer, which stamps the
-- outcome: `replayed_at` when applied, or `replay_error` (and the request cleared) when not.
ALTER TABLE dead_letters
    ADD COLUMN replay_requested_at TIMESTAMPTZ,
    ADD COLUMN replayed_at         TIMESTAMPTZ,
    ADD COLUMN replay_error        TEXT;
