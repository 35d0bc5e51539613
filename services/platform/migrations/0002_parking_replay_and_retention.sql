-- An outbox row the broker refuses for good is parked after a number of attempts, so the rest
-- of the stream goes on; an operator inspects it and asks for it to be tried again.
ALTER TABLE outbox ADD COLUMN parked_at TIMESTAMPTZ;
CREATE INDEX outbox_ready ON outbox (seq) WHERE published_at IS NULL AND parked_at IS NULL;
CREATE INDEX outbox_parked ON outbox (seq) WHERE parked_at IS NOT NULL AND published_at IS NULL;

-- A dead letter an operator asked to replay is applied again by its consumer, which stamps the
-- outcome: `replayed_at` when applied, or `replay_error` (and the request cleared) when not.
ALTER TABLE dead_letters
    ADD COLUMN replay_requested_at TIMESTAMPTZ,
    ADD COLUMN replayed_at         TIMESTAMPTZ,
    ADD COLUMN replay_error        TEXT;
CREATE INDEX dead_letters_to_replay ON dead_letters (consumer, id)
    WHERE replay_requested_at IS NOT NULL AND replayed_at IS NULL;

-- Both tables are pruned by age.
CREATE INDEX dead_letters_by_age ON dead_letters (received_at);
CREATE INDEX processed_events_by_age ON processed_events (processed_at);
