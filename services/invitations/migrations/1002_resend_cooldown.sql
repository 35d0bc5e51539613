-- When Mailroom last queued this invitation's mail again (resend, approval) or handed it to the
-- relay (each attempt arms a fresh link): ResendInvitation waits `resend_cooldown_secs` from
-- then (issue 22, item 17). NULL: never mailed by Mailroom.
ALTER TABLE invitations ADD COLUMN mailed_at TIMESTAMPTZ;
UPDATE invitations SET mailed_at = updated_at WHERE delivery_state = 'sent';

-- An invitee's invitations: identity's events about a user, and who holds an address.
CREATE INDEX invitations_by_invitee ON invitations (org_id, user_id);
