-- A mailbox belongs to exactly one organisation: the one its first owner or reader was
-- written in. Writers check it, so a grant can never name another organisation's mailbox,
-- even when two writes race through two replicas.
CREATE TABLE mailboxes (
    mailbox_id UUID PRIMARY KEY,
    org_id     UUID NOT NULL
);
INSERT INTO mailboxes (mailbox_id, org_id)
SELECT DISTINCT ON (object_id) object_id, org_id
FROM relationships
WHERE kind IN ('owner', 'reader')
ORDER BY object_id, (kind = 'owner') DESC
ON CONFLICT DO NOTHING;

-- identity's "everyone may invite" flag as last mirrored. The invite audience follows the
-- flag only when the flag changes, so an OrganizationUpdated for a rename does not undo an
-- audience chosen through access's own settings.
CREATE TABLE identity_invite_flags (
    org_id   UUID PRIMARY KEY,
    everyone BOOLEAN NOT NULL
);
INSERT INTO identity_invite_flags (org_id, everyone)
SELECT org_id, invite = 'everyone' FROM settings;
