-- no-transaction
-- The relay's next rows: unpublished and not parked. Built concurrently (writes go on), one
-- statement per migration (PostgreSQL runs several in one call as one transaction block).
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_ready ON outbox (seq)
    WHERE published_at IS NULL AND parked_at IS NULL;
