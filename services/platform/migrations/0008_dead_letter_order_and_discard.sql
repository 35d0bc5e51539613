-- Dead letters keep the order of their key (issue 21, review 1 #3 and #8):
-- - `held_behind`: a record set aside only because an earlier record of the same key waits in
--   `dead_letters` (that one's id); a replay applies the letters of a key in id order, and a
--   held one follows the letter before it without an operator's request.
-- - `discarded_at`: an operator decided a dead letter will never be applied; it no longer holds
--   its key, and is pruned by age like a replayed one. A letter neither replayed nor discarded
--   is never pruned.
-- - `replay_forced`: the operator asked to replay a letter older than the consumer's
--   `processed_events` retention anyway.
-- Nullable columns, or a constant default: a catalogue change, no table rewrite. The lock is
-- not queued for behind a long transaction for more than a moment.
SET LOCAL lock_timeout = '5s';
ALTER TABLE dead_letters
    ADD COLUMN held_behind  BIGINT,
    ADD COLUMN discarded_at TIMESTAMPTZ,
    ADD COLUMN replay_forced BOOLEAN NOT NULL DEFAULT false;
