-- Invitations, quick-registration links and per-organisation mail templates.
--
-- An invitation's life: `admitting` (written before identity is asked for the INVITED user, so
-- a crash between the two is found and finished by the sweeper) → `pending` (or
-- `awaiting_approval` for a link that needs an admin) → `accepted`, `expired`, `revoked`,
-- `failed` (the mail was refused for good) or `rejected`.
CREATE TABLE invitations (
    id                   UUID PRIMARY KEY,
    org_id               UUID        NOT NULL,
    email                TEXT        NOT NULL,
    kind                 TEXT        NOT NULL CHECK (kind IN ('email', 'direct_registration', 'registration_link')),
    state                TEXT        NOT NULL CHECK (state IN ('admitting', 'pending', 'accepted', 'expired', 'revoked', 'failed', 'awaiting_approval', 'rejected')),
    delivery             TEXT        NOT NULL CHECK (delivery IN ('system_mail', 'own_mail_client')),
    delivery_state       TEXT        NOT NULL CHECK (delivery_state IN ('queued', 'sent', 'failed', 'not_sent')),
    inviter_user_id      UUID        NOT NULL,
    user_id              UUID        NOT NULL,
    department_id        UUID,
    registration_link_id UUID,
    message              TEXT        NOT NULL DEFAULT '',
    locale               TEXT        NOT NULL DEFAULT 'en',
    first_name           TEXT        NOT NULL DEFAULT '',
    last_name            TEXT        NOT NULL DEFAULT '',
    position             TEXT        NOT NULL DEFAULT '',
    -- What the mail and the registration page show, as it was when the invitation was made.
    organization_name    TEXT        NOT NULL DEFAULT '',
    inviter_name         TEXT        NOT NULL DEFAULT '',
    department_name      TEXT        NOT NULL DEFAULT '',
    -- SHA-256 of the link's 32 random bytes; replaced when the invitation is sent again.
    token_hash           BYTEA UNIQUE,
    failure_reason       TEXT        NOT NULL DEFAULT '',
    send_count           INT         NOT NULL DEFAULT 0,
    attempts             INT         NOT NULL DEFAULT 0,
    next_attempt_at      TIMESTAMPTZ,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at           TIMESTAMPTZ NOT NULL,
    accepted_at          TIMESTAMPTZ
);
-- One open invitation per address and organisation: the race between two inviters ends here.
CREATE UNIQUE INDEX invitations_open_address ON invitations (org_id, email)
    WHERE state IN ('admitting', 'pending', 'failed', 'awaiting_approval');
CREATE INDEX invitations_by_created ON invitations (org_id, created_at, id);
CREATE INDEX invitations_by_inviter ON invitations (org_id, inviter_user_id, created_at);
-- The delivery queue and the sweeper's work, small partial indexes.
CREATE INDEX invitations_due ON invitations (next_attempt_at) WHERE delivery_state = 'queued';
CREATE INDEX invitations_expiring ON invitations (expires_at)
    WHERE state IN ('pending', 'failed', 'awaiting_approval');
CREATE INDEX invitations_admitting ON invitations (created_at) WHERE state = 'admitting';

CREATE TABLE registration_links (
    id                 UUID PRIMARY KEY,
    org_id             UUID        NOT NULL,
    token_hash         BYTEA       NOT NULL UNIQUE,
    allowed_domains    TEXT[]      NOT NULL DEFAULT '{}',
    requires_approval  BOOLEAN     NOT NULL DEFAULT false,
    department_id      UUID,
    department_name    TEXT        NOT NULL DEFAULT '',
    organization_name  TEXT        NOT NULL DEFAULT '',
    created_by_user_id UUID        NOT NULL,
    created_by_name    TEXT        NOT NULL DEFAULT '',
    disabled           BOOLEAN     NOT NULL DEFAULT false,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at         TIMESTAMPTZ
);
CREATE INDEX registration_links_by_org ON registration_links (org_id, created_at, id);

-- An organisation's own wording of the invitation mail, per locale.
CREATE TABLE invitation_templates (
    org_id     UUID        NOT NULL,
    locale     TEXT        NOT NULL,
    subject    TEXT        NOT NULL,
    body       TEXT        NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, locale)
);
