-- The addresses of connected mailboxes, mirrored from the mailbox registry's events, so
-- "where is this address used" answers "mailbox of Z" too. The registry owns mailboxes; this
-- is a read model, kept by `mailbox_events`.
CREATE TABLE mailbox_addresses (
    mailbox_id    UUID PRIMARY KEY,
    org_id        UUID NOT NULL,
    address       TEXT NOT NULL,
    owner_user_id UUID NOT NULL
);
CREATE INDEX mailbox_addresses_by_address ON mailbox_addresses (org_id, address);
