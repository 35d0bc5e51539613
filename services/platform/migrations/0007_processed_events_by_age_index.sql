-- no-transaction
-- Applied event ids are pruned by age, per consumer: the table holds every event a consumer
-- ever applied, so the index is built concurrently (consumers go on inserting meanwhile).
CREATE INDEX CONCURRENTLY IF NOT EXISTS processed_events_by_age ON processed_events (consumer, processed_at);
