-- no-transaction
-- Parked rows, for `mailroom ctl events parked` and the parked gauge (built concurrently).
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_parked ON outbox (seq)
    WHERE parked_at IS NOT NULL AND published_at IS NULL;
