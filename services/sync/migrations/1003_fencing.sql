-- Fencing: the generation (fencing token) of the newest holder of each mailbox's lease, from
-- the Redis counter the lease's acquisition increments. A holder claims its generation once,
-- before it reads the mailbox's state, and every transaction that writes the mailbox's
-- folders, index or feed locks this row and checks it still names that generation: once a
-- newer holder has claimed, an older one's writes are refused (it stopped renewing in time, a
-- pause, a Redis failover) and it stops. Kept when a mailbox is forgotten, so a late writer
-- cannot bring a disconnected mailbox back.
CREATE TABLE mailbox_fences (
    mailbox_id UUID        PRIMARY KEY,
    generation BIGINT      NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The generation of the holder that last wrote the folder's checkpoint (`last_uid` or the
-- STATUS figures): a write from an older generation is refused here too.
ALTER TABLE folders ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
