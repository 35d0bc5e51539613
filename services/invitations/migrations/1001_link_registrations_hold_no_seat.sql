-- Registrations through a link hold no seat and make no user until the address's owner
-- confirms them (issue 20, item 9); links may have a maximum number of uses.

-- Whether identity holds this invitation's INVITED user (and with it a seat and the address).
-- Every invitation made so far was admitted when it was made; a registration through a link
-- is admitted only when its address is confirmed.
ALTER TABLE invitations ADD COLUMN invitee_admitted BOOLEAN NOT NULL DEFAULT true;
-- When the registrant last asked for the confirmation mail (registering, or registering again):
-- the mail is sent again at most once per `registration_resend_interval_secs`.
ALTER TABLE invitations ADD COLUMN confirmation_requested_at TIMESTAMPTZ;

-- People who may join through the link (registrations confirmed); NULL: no limit.
ALTER TABLE registration_links ADD COLUMN max_uses INT CHECK (max_uses IS NULL OR max_uses > 0);

-- A registration through a link no longer takes the address's one open invitation in the
-- organisation: a link posted publicly must not keep an admin from inviting that address.
-- Identity's address claim, made when the address is confirmed, decides between them.
DROP INDEX invitations_open_address;
CREATE UNIQUE INDEX invitations_open_address ON invitations (org_id, email)
    WHERE state IN ('admitting', 'pending', 'failed', 'awaiting_approval')
      AND kind <> 'registration_link';
-- One open registration per address and link: registering again finds it.
CREATE UNIQUE INDEX invitations_open_link_address ON invitations (registration_link_id, email)
    WHERE kind = 'registration_link'
      AND state IN ('admitting', 'pending', 'failed', 'awaiting_approval');
-- A link's registrations and uses are counted through this.
CREATE INDEX invitations_by_link ON invitations (registration_link_id, state)
    WHERE registration_link_id IS NOT NULL;
