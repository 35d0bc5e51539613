-- no-transaction
-- Dead letters an operator asked to replay, looked for by each consumer (built concurrently).
CREATE INDEX CONCURRENTLY IF NOT EXISTS dead_letters_to_replay ON dead_letters (consumer, id)
    WHERE replay_requested_at IS NOT NULL AND replayed_at IS NULL;
