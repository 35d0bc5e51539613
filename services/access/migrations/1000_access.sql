-- Access control's tables (schema `access`). Versions from 1000; below are the platform's.

-- The users access knows of, from identity's events. Only active users hold permissions.
CREATE TABLE users (
    user_id UUID PRIMARY KEY,
    org_id  UUID    NOT NULL,
    active  BOOLEAN NOT NULL
);
CREATE INDEX users_org ON users (org_id);

-- Stored relationships, one row each: `kind` names the relation; `object_id` is what it is on
-- (org, department, user or mailbox) and `subject_id` who or what holds it:
--   admin, mailbox_manager, inviter: org → user      head: department → user
--   parent: department → parent department            member: user → department
--   owner, reader: mailbox → user
-- admin, head, parent and member are mirrored from identity's events; the API writes the rest.
CREATE TABLE relationships (
    org_id     UUID NOT NULL,
    kind       TEXT NOT NULL,
    object_id  UUID NOT NULL,
    subject_id UUID NOT NULL,
    PRIMARY KEY (org_id, kind, object_id, subject_id)
);
CREATE INDEX relationships_subject ON relationships (org_id, subject_id);

CREATE TABLE settings (
    org_id             UUID PRIMARY KEY,
    view_mailbox_list  TEXT        NOT NULL,
    modify_mailboxes   TEXT        NOT NULL,
    invite             TEXT        NOT NULL,
    read_access_grants TEXT        NOT NULL,
    update_time        TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every change, in revision order. Writers take one transaction-scoped advisory lock before
-- drawing a revision, so revisions commit in order and a reader that has seen revision N has
-- seen everything before it. Replicas tail this to keep their in-memory graphs current.
CREATE SEQUENCE revisions;
CREATE TABLE changelog (
    revision    BIGINT PRIMARY KEY,
    org_id      UUID        NOT NULL,
    changes     JSONB       NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- How far the changelog has been pruned: a replica behind this reloads from the tables.
CREATE TABLE changelog_horizon (
    singleton     BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_through BIGINT NOT NULL
);
INSERT INTO changelog_horizon (pruned_through) VALUES (0);
