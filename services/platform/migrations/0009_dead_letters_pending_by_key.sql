-- no-transaction
-- The dead letters still waiting, by consumer and key: what a consumer looks up for every
-- record (is its key held?), what a replay walks in order, and what the gauge counts. Built
-- without blocking writes to the table.
CREATE INDEX CONCURRENTLY IF NOT EXISTS dead_letters_pending_by_key
    ON dead_letters (consumer, record_key, id)
    WHERE replayed_at IS NULL AND discarded_at IS NULL;
