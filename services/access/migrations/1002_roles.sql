-- Roles (issue 23): each organisation's named sets of scoped permissions, assigned to people
-- and departments. The assignments, and identity's "everyone may invite", are rows of
-- `relationships` (kinds assignee, assignee_members, assignee_tree, assignee_heads,
-- assignee_everyone_else: role → user, department or organisation; everyone_invites:
-- organisation → itself), so the writer, the changelog and the replicas treat them like any
-- other row. Then every organisation's four audiences become roles with the same effect.
--
-- `settings` and the legacy `mailbox_manager`/`inviter` rows stay, unused (this build skips
-- those kinds quietly), so that after a rollback the older build still finds them.
--
-- First the changelog lock (`store/changelog.rs`, CHANGELOG_LOCK = 0x6d61_696c_6163_6c01),
-- held until this migration commits: a write by a pod still running the older build waits
-- for it instead of committing a grant between the reads below and the commit, where it
-- would be lost.
SELECT pg_advisory_xact_lock(7881696737086368769);

CREATE TABLE roles (
    role_id            UUID        PRIMARY KEY,
    org_id             UUID        NOT NULL,
    -- NULL for a custom role.
    builtin            TEXT        CHECK (builtin IN ('administrator', 'supervisor', 'manager')),
    display_name       TEXT        NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 100),
    hidden             BOOLEAN     NOT NULL DEFAULT false,
    view_mailbox_list  TEXT        NOT NULL
        CHECK (view_mailbox_list IN ('none', 'own', 'subordinates', 'department', 'all')),
    connect_mailboxes  TEXT        NOT NULL
        CHECK (connect_mailboxes IN ('none', 'own', 'subordinates', 'department', 'all')),
    modify_mailboxes   TEXT        NOT NULL
        CHECK (modify_mailboxes IN ('none', 'own', 'subordinates', 'department', 'all')),
    grant_read_access  TEXT        NOT NULL
        CHECK (grant_read_access IN ('none', 'own', 'subordinates', 'department', 'all')),
    invite             BOOLEAN     NOT NULL,
    manage_permissions BOOLEAN     NOT NULL,
    -- Bumped by each change: the API's etag.
    version            BIGINT      NOT NULL DEFAULT 1,
    create_time        TIMESTAMPTZ NOT NULL DEFAULT now(),
    update_time        TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- One of each built-in role per organisation.
CREATE UNIQUE INDEX roles_builtin ON roles (org_id, builtin) WHERE builtin IS NOT NULL;
-- Names are unique in an organisation, whatever their case; also the index by organisation.
CREATE UNIQUE INDEX roles_name ON roles (org_id, lower(display_name));

-- The upgrade: each organisation's audiences become roles with the same effect, so nothing
-- changes for anyone. An audience's level: admins 0, + mailbox managers 1, + supervisors 2
-- (also any other text, as the old code read it), everyone 3; an organisation without a
-- settings row had the defaults (list: supervisors, change: managers, invite: admins, owners
-- grant read access).
--
-- Every non-admin had "base": their own mailboxes listed, connected (connecting for others
-- was changing mailboxes) and changed, or every mailbox where the audience was everyone, and
-- read grants on their own mailbox unless only admins granted them. Each role below includes
-- base, so a user holding any of them loses nothing by leaving "everyone else":
--   Manager (everyone else)  = base
--   Supervisor (heads)       = base + subordinates' mailboxes at level 2, inviting at level 2
--   Mailbox managers (users) = base + every mailbox at level >= 1, inviting at levels 1 and 2
--   Inviters (users)         = base + inviting
-- and their union reproduces every combination (a head who is a manager and an inviter).
-- Listing includes what may be changed, so the listing level is the larger of the two.
-- Inviting at level 3 is the everyone_invites row (identity's flag), never a role's.
-- Administrator (the org admins) holds everything. `legacy::roles_for` is the same mapping.
WITH orgs AS (
    SELECT org_id FROM users
    UNION SELECT org_id FROM settings
    UNION SELECT org_id FROM relationships
    UNION SELECT org_id FROM identity_invite_flags
), levels AS (
    SELECT o.org_id,
        CASE coalesce(s.view_mailbox_list, 'admins_managers_and_supervisors')
            WHEN 'admins' THEN 0 WHEN 'admins_and_managers' THEN 1 WHEN 'everyone' THEN 3
            ELSE 2 END AS list_level,
        CASE coalesce(s.modify_mailboxes, 'admins_and_managers')
            WHEN 'admins' THEN 0 WHEN 'admins_and_managers' THEN 1 WHEN 'everyone' THEN 3
            ELSE 2 END AS m,
        CASE coalesce(s.invite, 'admins')
            WHEN 'admins' THEN 0 WHEN 'admins_and_managers' THEN 1 WHEN 'everyone' THEN 3
            ELSE 2 END AS i,
        CASE WHEN s.read_access_grants = 'admins' THEN 'none' ELSE 'own' END AS gr,
        EXISTS (SELECT 1 FROM relationships r
                WHERE r.org_id = o.org_id AND r.kind = 'mailbox_manager') AS has_mm,
        EXISTS (SELECT 1 FROM relationships r
                WHERE r.org_id = o.org_id AND r.kind = 'inviter') AS has_inv
    FROM orgs o
    LEFT JOIN settings s USING (org_id)
), legacy AS (
    SELECT org_id, greatest(list_level, m) AS v, m, i, gr, has_mm, has_inv FROM levels
)
INSERT INTO roles (role_id, org_id, builtin, display_name, view_mailbox_list, connect_mailboxes,
                   modify_mailboxes, grant_read_access, invite, manage_permissions)
SELECT gen_random_uuid(), org_id, 'administrator', 'Administrator',
       'all', 'all', 'all', 'all', true, true
FROM legacy
UNION ALL
SELECT gen_random_uuid(), org_id, 'supervisor', 'Supervisor',
       CASE v WHEN 3 THEN 'all' WHEN 2 THEN 'subordinates' ELSE 'own' END,
       CASE m WHEN 3 THEN 'all' WHEN 2 THEN 'subordinates' ELSE 'own' END,
       CASE m WHEN 3 THEN 'all' WHEN 2 THEN 'subordinates' ELSE 'own' END,
       gr, i = 2, false
FROM legacy
UNION ALL
SELECT gen_random_uuid(), org_id, 'manager', 'Manager',
       CASE WHEN v = 3 THEN 'all' ELSE 'own' END,
       CASE WHEN m = 3 THEN 'all' ELSE 'own' END,
       CASE WHEN m = 3 THEN 'all' ELSE 'own' END,
       gr, false, false
FROM legacy
UNION ALL
SELECT gen_random_uuid(), org_id, NULL, 'Mailbox managers',
       CASE WHEN v >= 1 THEN 'all' ELSE 'own' END,
       CASE WHEN m >= 1 THEN 'all' ELSE 'own' END,
       CASE WHEN m >= 1 THEN 'all' ELSE 'own' END,
       gr, i IN (1, 2), false
FROM legacy WHERE has_mm
UNION ALL
SELECT gen_random_uuid(), org_id, NULL, 'Inviters',
       CASE WHEN v = 3 THEN 'all' ELSE 'own' END,
       CASE WHEN m = 3 THEN 'all' ELSE 'own' END,
       CASE WHEN m = 3 THEN 'all' ELSE 'own' END,
       gr, true, false
FROM legacy WHERE has_inv;

-- The default assignments (Supervisor to heads, Manager to everyone else), each mailbox
-- manager and inviter assigned their role, and the everyone_invites row where everyone invited.
INSERT INTO relationships (org_id, kind, object_id, subject_id)
SELECT org_id, 'assignee_heads', role_id, org_id FROM roles WHERE builtin = 'supervisor'
UNION ALL
SELECT org_id, 'assignee_everyone_else', role_id, org_id FROM roles WHERE builtin = 'manager'
UNION ALL
SELECT r.org_id, 'assignee', ro.role_id, r.subject_id
FROM relationships r
JOIN roles ro ON ro.org_id = r.org_id AND ro.builtin IS NULL
    AND ro.display_name = CASE r.kind WHEN 'mailbox_manager' THEN 'Mailbox managers'
                                      ELSE 'Inviters' END
WHERE r.kind IN ('mailbox_manager', 'inviter')
UNION ALL
SELECT org_id, 'everyone_invites', org_id, org_id FROM settings WHERE invite = 'everyone'
ON CONFLICT DO NOTHING;

-- The `mailbox_manager` and `inviter` rows are kept: the older build reads them after a
-- rollback (role edits made since are not in them).
