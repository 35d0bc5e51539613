-- no-transaction
-- Overdue mailboxes by tier (the workers' autoscaling signal): per tier, a range scan over
-- when each was last synced (or connected), whatever its `next_due` (built concurrently).
CREATE INDEX CONCURRENTLY IF NOT EXISTS schedule_freshness
    ON schedule (tier, (COALESCE(last_sync, connected_at)))
    WHERE NOT parked AND failures = 0;
