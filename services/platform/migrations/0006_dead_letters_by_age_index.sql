-- no-transaction
-- Dead letters are pruned by age, per consumer (built concurrently).
CREATE INDEX CONCURRENTLY IF NOT EXISTS dead_letters_by_age ON dead_letters (consumer, received_at);
