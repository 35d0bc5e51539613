-- A mailbox belongs to exactly one organisation: the one its first owner was written in (read
-- access needs an owner first). Writers check it under the changelog lock, so a grant can
-- never name another organisation's mailbox, even when two writes race through two replicas,
-- and replicas take a mailbox's organisation from here.
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
-- audience chosen through access's own settings. Not filled from `settings`: access's own
-- audience says nothing of identity's flag, and guessing it would undo an audience at the
-- next rename. An organisation without a row has its flag recorded on identity's next event.
CREATE TABLE identity_invite_flags (
    org_id   UUID PRIMARY KEY,
    everyone BOOLEAN NOT NULL
);
