-- An acceptance under way (issue 21): set under the row's lock, for a moment, before identity is
-- asked to make the invitee ACTIVE (and, for a registration through a link, to admit them), and
-- cleared when identity's answer is recorded. No row lock or connection is held while identity
-- answers; meanwhile a revoke is refused, expiry waits, a second acceptance is told to wait, and
-- a link with a maximum of uses counts the registration being confirmed. A claim left by a
-- replica that died runs out by itself.
ALTER TABLE invitations ADD COLUMN accepting_until TIMESTAMPTZ;
