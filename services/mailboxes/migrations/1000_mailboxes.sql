-- The mailbox registry's tables (schema `mailboxes`). Versions from 1000; below are the
-- platform's.

-- The users of every organisation as identity's events last described them: the owner
-- column, its filter and sort, and whether an owner may receive a mailbox.
CREATE TABLE users (
    user_id      UUID PRIMARY KEY,
    org_id       UUID    NOT NULL,
    first_name   TEXT    NOT NULL DEFAULT '',
    last_name    TEXT    NOT NULL DEFAULT '',
    dismissed    BOOLEAN NOT NULL DEFAULT false,
    -- Active (may own a new mailbox): not dismissed and not merely invited.
    active       BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX users_org ON users (org_id);

-- One connected mailbox. The password is sealed (AES-256-GCM, platform::sealed) and bound to
-- the row's id; `password_key` names the key that sealed it, so a rotation finds what it has
-- left to re-seal. The owner's name is copied in from `users` (kept current by identity's
-- events) so the list filters and sorts on it through an index, without a join.
CREATE TABLE mailboxes (
    id               UUID PRIMARY KEY,
    org_id           UUID        NOT NULL,
    owner_user_id    UUID        NOT NULL,
    email            TEXT        NOT NULL,
    name             TEXT        NOT NULL DEFAULT '',
    sender_name      TEXT        NOT NULL DEFAULT '',
    imap_host        TEXT        NOT NULL,
    imap_port        INTEGER     NOT NULL,
    imap_security    TEXT        NOT NULL,
    imap_username    TEXT        NOT NULL,
    smtp_host        TEXT        NOT NULL,
    smtp_port        INTEGER     NOT NULL,
    smtp_security    TEXT        NOT NULL,
    smtp_username    TEXT        NOT NULL,
    password_sealed  BYTEA       NOT NULL,
    password_key     TEXT        NOT NULL,
    in_crm           BOOLEAN     NOT NULL DEFAULT false,
    crm_queue        UUID[]      NOT NULL DEFAULT '{}',
    sync_state       TEXT        NOT NULL DEFAULT 'pending',
    sync_error       TEXT        NOT NULL DEFAULT '',
    -- '-infinity' until the first sync: sorts as the longest ago, matches "not synced for N
    -- days", and keeps the sort column NOT NULL for keyset paging.
    last_sync_time   TIMESTAMPTZ NOT NULL DEFAULT '-infinity',
    unread_count     BIGINT      NOT NULL DEFAULT 0,
    message_count    BIGINT      NOT NULL DEFAULT 0,
    disk_bytes       BIGINT      NOT NULL DEFAULT 0,
    owner_first_name TEXT        NOT NULL DEFAULT '',
    owner_last_name  TEXT        NOT NULL DEFAULT '',
    owner_dismissed  BOOLEAN     NOT NULL DEFAULT false,
    create_time      TIMESTAMPTZ NOT NULL DEFAULT now(),
    update_time      TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Case-folded sort keys (the list sorts people's names as people expect).
    email_key        TEXT GENERATED ALWAYS AS (lower(email)) STORED,
    name_key         TEXT GENERATED ALWAYS AS (lower(name)) STORED,
    sender_name_key  TEXT GENERATED ALWAYS AS (lower(sender_name)) STORED,
    owner_key        TEXT GENERATED ALWAYS AS (lower(owner_last_name || ' ' || owner_first_name)) STORED,
    -- An address is connected once per organisation.
    UNIQUE (org_id, email_key)
);

-- One index per sortable column, ending in id: a sorted page is a keyset range scan.
CREATE INDEX mailboxes_owner        ON mailboxes (org_id, owner_user_id);
CREATE INDEX mailboxes_by_email     ON mailboxes (org_id, email_key, id);
CREATE INDEX mailboxes_by_name      ON mailboxes (org_id, name_key, id);
CREATE INDEX mailboxes_by_sender    ON mailboxes (org_id, sender_name_key, id);
CREATE INDEX mailboxes_by_owner     ON mailboxes (org_id, owner_key, id);
CREATE INDEX mailboxes_by_last_sync ON mailboxes (org_id, last_sync_time, id);
CREATE INDEX mailboxes_by_disk      ON mailboxes (org_id, disk_bytes, id);
CREATE INDEX mailboxes_by_unread    ON mailboxes (org_id, unread_count, id);
CREATE INDEX mailboxes_by_messages  ON mailboxes (org_id, message_count, id);
CREATE INDEX mailboxes_by_state     ON mailboxes (org_id, sync_state, id);
CREATE INDEX mailboxes_by_created   ON mailboxes (org_id, create_time, id);
CREATE INDEX mailboxes_crm_queue    ON mailboxes USING gin (crm_queue);
CREATE INDEX mailboxes_password_key ON mailboxes (password_key);

-- Substring filters (`email : "acme"`) use trigram indexes where pg_trgm can be installed
-- (it is a trusted extension: the database owner may); without it they scan, correctly.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    EXECUTE 'CREATE INDEX mailboxes_email_trgm ON mailboxes USING gin (email_key gin_trgm_ops)';
    EXECUTE 'CREATE INDEX mailboxes_name_trgm ON mailboxes USING gin (name_key gin_trgm_ops)';
    EXECUTE 'CREATE INDEX mailboxes_sender_trgm ON mailboxes USING gin (sender_name_key gin_trgm_ops)';
    EXECUTE 'CREATE INDEX mailboxes_owner_trgm ON mailboxes USING gin (owner_key gin_trgm_ops)';
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_trgm is not available (%); substring filters will scan', SQLERRM;
END
$$;

-- The list view each user chose: columns, filter, order and page size.
CREATE TABLE list_views (
    user_id     UUID PRIMARY KEY,
    org_id      UUID        NOT NULL,
    columns     TEXT[]      NOT NULL,
    filter      TEXT        NOT NULL DEFAULT '',
    order_by    TEXT        NOT NULL DEFAULT '',
    page_size   INTEGER     NOT NULL DEFAULT 0,
    update_time TIMESTAMPTZ NOT NULL DEFAULT now()
);
