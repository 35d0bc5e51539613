-- One-time links to choose a new password: mailed to the user (asked for by themselves, or by an
-- admin who never sees the link). Only the SHA-256 of the token is kept; a link is spent on use,
-- and expires.
CREATE TABLE password_resets (
    token_hash   BYTEA PRIMARY KEY,
    user_id      UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    requested_by TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL,
    used_at      TIMESTAMPTZ
);
CREATE INDEX password_resets_user ON password_resets (user_id);
