-- Identity's tables (schema `identity`). Versions from 1000; below are the platform's.

CREATE TABLE organizations (
    id                       UUID PRIMARY KEY,
    display_name             TEXT        NOT NULL,
    seat_limit               INT         NOT NULL DEFAULT 0 CHECK (seat_limit >= 0),
    allow_everyone_to_invite BOOLEAN     NOT NULL DEFAULT true,
    created_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at               TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE departments (
    id           UUID PRIMARY KEY,
    org_id       UUID        NOT NULL REFERENCES organizations (id),
    name         TEXT        NOT NULL,
    parent_id    UUID,
    head_user_id UUID,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (org_id, id),
    FOREIGN KEY (org_id, parent_id) REFERENCES departments (org_id, id),
    CHECK (parent_id IS DISTINCT FROM id)
);
CREATE INDEX departments_parent ON departments (org_id, parent_id);

-- Who holds an address in an organisation: at most one user, as login, contact or both. A
-- dismissed user keeps their rows; only TransferEmailAddress removes them.
CREATE TABLE address_claims (
    org_id     UUID        NOT NULL,
    address    TEXT        NOT NULL,
    user_id    UUID        NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, address),
    UNIQUE (org_id, address, user_id)
);
CREATE INDEX address_claims_user ON address_claims (user_id);

CREATE TABLE users (
    id            UUID PRIMARY KEY,
    org_id        UUID        NOT NULL REFERENCES organizations (id),
    state         TEXT        NOT NULL CHECK (state IN ('invited', 'active', 'dismissed')),
    login_email   TEXT        NOT NULL,
    contact_email TEXT        NOT NULL,
    first_name    TEXT        NOT NULL DEFAULT '',
    last_name     TEXT        NOT NULL DEFAULT '',
    position      TEXT        NOT NULL DEFAULT '',
    department_id UUID,
    is_admin      BOOLEAN     NOT NULL DEFAULT false,
    password_hash TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    dismissed_at  TIMESTAMPTZ,
    UNIQUE (org_id, id),
    FOREIGN KEY (org_id, department_id) REFERENCES departments (org_id, id),
    -- Every address a user shows is one they hold a claim on.
    FOREIGN KEY (org_id, login_email, id) REFERENCES address_claims (org_id, address, user_id)
        DEFERRABLE INITIALLY DEFERRED,
    FOREIGN KEY (org_id, contact_email, id) REFERENCES address_claims (org_id, address, user_id)
        DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX users_by_last_name ON users (org_id, last_name, id);
CREATE INDEX users_by_created ON users (org_id, created_at, id);
CREATE INDEX users_by_department ON users (org_id, department_id);
CREATE INDEX users_by_login ON users (login_email);

ALTER TABLE departments
    ADD FOREIGN KEY (org_id, head_user_id) REFERENCES users (org_id, id);

CREATE TABLE refresh_tokens (
    id          UUID PRIMARY KEY,
    family_id   UUID        NOT NULL,
    user_id     UUID        NOT NULL REFERENCES users (id),
    token_hash  BYTEA       NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    spent_at    TIMESTAMPTZ,
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE login_email_changes (
    user_id     UUID PRIMARY KEY REFERENCES users (id),
    new_address TEXT        NOT NULL,
    code_hash   BYTEA       NOT NULL,
    attempts    INT         NOT NULL DEFAULT 0,
    expires_at  TIMESTAMPTZ NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The audit trail of TransferEmailAddress.
CREATE TABLE address_transfers (
    id             UUID PRIMARY KEY,
    org_id         UUID        NOT NULL,
    address        TEXT        NOT NULL,
    from_user_id   UUID        NOT NULL,
    to_user_id     UUID,
    as_kind        TEXT        NOT NULL,
    tombstone      TEXT        NOT NULL,
    actor          TEXT        NOT NULL,
    transferred_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX address_transfers_by_address ON address_transfers (org_id, address);
