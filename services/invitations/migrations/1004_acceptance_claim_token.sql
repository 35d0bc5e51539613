-- The acceptance claim's owner (issue 21, review finding 13): each acceptance claims the
-- invitation with a token of its own, and releases the claim only where the token is still its
-- own, so an acceptance whose claim ran out cannot clear a later acceptance's live claim. A
-- nullable column without a default: no rewrite of the table.
ALTER TABLE invitations ADD COLUMN accepting_token UUID;
