-- The sync service's tables (schema `sync`). Versions from 1000; below are the platform's.

-- Every mailbox the registry has, as its events describe it, with when it is next due.
-- `next_due` is set by the worker that finished a sync (from the owner's tier, or a back-off
-- after a failure), pulled in by a heartbeat that raises the tier, and pushed out by the
-- scheduler when it hands the work out (so a request lost on the way is issued again once
-- the scheduler's `request_timeout` has passed).
CREATE TABLE schedule (
    mailbox_id       UUID        PRIMARY KEY,
    org_id           UUID        NOT NULL,
    owner_user_id    UUID        NOT NULL,
    in_crm           BOOLEAN     NOT NULL DEFAULT false,
    next_due         TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_sync        TIMESTAMPTZ,
    last_duration_ms BIGINT      NOT NULL DEFAULT 0,
    last_error       TEXT        NOT NULL DEFAULT '',
    last_error_kind  TEXT        NOT NULL DEFAULT '',
    failures         INTEGER     NOT NULL DEFAULT 0,
    -- An authentication failure parks the mailbox until its password or server changes.
    parked           BOOLEAN     NOT NULL DEFAULT false,
    -- The owner's tier when the next sync was planned: 1 active, 2 recent, 3 idle, 4 dormant.
    tier             SMALLINT    NOT NULL DEFAULT 4
);
-- The scheduler's tick reads only what is due: a range scan at the front of this index, so
-- its cost follows the due work, not the number of mailboxes.
CREATE INDEX schedule_due ON schedule (next_due) WHERE NOT parked;
CREATE INDEX schedule_owner ON schedule (owner_user_id);

-- One IMAP folder of a mailbox and its checkpoint, committed with the rows it covers.
CREATE TABLE folders (
    id             SERIAL  PRIMARY KEY,
    mailbox_id     UUID    NOT NULL,
    name           TEXT    NOT NULL,
    -- trash, junk, sent, drafts, or '' (unread counts leave the first four out).
    special_use    TEXT    NOT NULL DEFAULT '',
    uid_validity   BIGINT  NOT NULL DEFAULT 0,
    -- UIDNEXT, MESSAGES, UNSEEN and HIGHESTMODSEQ as the last STATUS said: the no-change
    -- path compares a fresh STATUS with these.
    uid_next       BIGINT  NOT NULL DEFAULT 0,
    highest_modseq BIGINT  NOT NULL DEFAULT 0,
    messages       BIGINT  NOT NULL DEFAULT 0,
    unseen         BIGINT  NOT NULL DEFAULT 0,
    -- The highest UID indexed: new mail is fetched from last_uid + 1.
    last_uid       BIGINT  NOT NULL DEFAULT 0,
    UNIQUE (mailbox_id, name)
);

-- The message index: Mailroom's largest table (hundreds of millions of rows in a large
-- organisation), hash-partitioned by mailbox so each partition and its indexes stay a
-- manageable size and one mailbox's rows are together. Rows are lean:
-- - `uid` holds the IMAP UID minus 2^31, so the full unsigned 32-bit range fits an INTEGER
--   and keeps its order;
-- - `flags` is a bitmask of the system flags (1 Seen, 2 Answered, 4 Flagged, 8 Deleted,
--   16 Draft); other keywords go in `keywords`, space-separated, NULL when there are none;
-- - `envelope` is a small protobuf (subject, from, to, message id), never read by SQL.
CREATE TABLE messages (
    mailbox_id    UUID        NOT NULL,
    folder_id     INTEGER     NOT NULL,
    uid           INTEGER     NOT NULL,
    flags         SMALLINT    NOT NULL,
    size          INTEGER     NOT NULL,
    internal_date TIMESTAMPTZ NOT NULL,
    keywords      TEXT,
    envelope      BYTEA       NOT NULL,
    PRIMARY KEY (mailbox_id, folder_id, uid)
) PARTITION BY HASH (mailbox_id);

DO $$
BEGIN
    FOR i IN 0..15 LOOP
        EXECUTE format(
            'CREATE TABLE messages_p%s PARTITION OF messages FOR VALUES WITH (MODULUS 16, REMAINDER %s)',
            i, i);
    END LOOP;
END
$$;

-- A folder's messages newest first (ListMessages' default order), a keyset range scan.
CREATE INDEX messages_by_date ON messages (mailbox_id, folder_id, internal_date, uid);
