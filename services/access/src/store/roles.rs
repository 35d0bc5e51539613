//! The roles table: each organisation's roles (three built in, up to [`MAX_CUSTOM_ROLES`]
//! custom), read with [`all_roles`], [`role`], [`org_roles`] and [`role_assignments`], and
//! changed through a [`Writer`]: [`Writer::create_role`], [`Writer::update_role`],
//! [`Writer::delete_role`] and [`Writer::ensure_default_roles`].
//!
//! What must hold whatever a replica believes is decided here, in SQL under the changelog
//! lock: a name is unique in its organisation (case-insensitively), an etag names the current
//! version, an organisation has at most [`MAX_CUSTOM_ROLES`] custom roles, and the built-in
//! roles are never deleted (nor is Administrator changed). Each change is recorded as a
//! [`Change`], so the changelog orders it and replicas apply it. Assignments are rows of
//! `relationships` (kinds `assignee…`), written through [`Writer::write`] like any other.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

use chrono::{DateTime, Utc};
use mailroom_types::{OrgId, RoleId};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{changelog, Change, Kind, Row, Writer};
use crate::error::{AccessError, Result};
use crate::model::{Builtin, Grants, Relationship, RoleDef, Scope};

/// The most custom roles an organisation may have.
pub const MAX_CUSTOM_ROLES: i64 = 100;
/// The longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// The kinds of the assignment rows, as stored.
const ASSIGNMENT_KINDS: [Kind; 5] = [
    Kind::Assignee,
    Kind::AssigneeMembers,
    Kind::AssigneeTree,
    Kind::AssigneeHeads,
    Kind::AssigneeEveryoneElse,
];

fn assignment_kinds() -> Vec<&'static str> {
    ASSIGNMENT_KINDS.iter().map(|k| k.as_str()).collect()
}

/// The organisations this process has seen with their three built-in roles committed, so
/// [`Writer::begin`] looks for them once per organisation, not on every write under the
/// changelog lock. Built-in roles are never deleted, so an organisation once in here stays
/// right; it is keyed by organisation id alone, which is random (a test that starts on a
/// fresh database uses new organisations). Only roles made by an earlier transaction count,
/// never this one's, which may still roll back.
static HAVE_DEFAULTS: LazyLock<Mutex<HashSet<OrgId>>> = LazyLock::new(Default::default);

/// Whether `org` is known to have its built-in roles (see [`HAVE_DEFAULTS`]).
pub(super) fn defaults_known(org: OrgId) -> bool {
    HAVE_DEFAULTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&org)
}

fn remember_defaults(org: OrgId) {
    HAVE_DEFAULTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(org);
}

/// Gives every organisation access knows of (users, relationships or identity's invite flag)
/// that lacks any of its built-in roles the missing ones, with their default assignments,
/// each organisation under its own changelog revision so replicas apply them; returns how
/// many organisations were given roles. Run once at start: an organisation an older pod
/// first wrote to during a rolling upgrade (after migration 1002) has no roles until then,
/// and its non-admins hold nothing. The organisations are looked for without the changelog
/// lock (a scan of the tables); each is then given its roles under it, checked again there.
pub async fn backfill_default_roles(pool: &PgPool) -> Result<usize> {
    let candidates: Vec<(OrgId,)> = sqlx::query_as(
        "SELECT o.org_id FROM (SELECT org_id FROM users UNION SELECT org_id FROM relationships \
                               UNION SELECT org_id FROM identity_invite_flags) o \
         WHERE (SELECT count(*) FROM roles ro \
                WHERE ro.org_id = o.org_id AND ro.builtin IS NOT NULL) < 3",
    )
    .fetch_all(pool)
    .await?;
    if candidates.is_empty() {
        return Ok(0);
    }
    let mut tx = changelog::begin_locked(pool).await?;
    let mut given = 0;
    for (org,) in candidates {
        let w = Writer::begin(&mut tx, org).await?;
        if w.implicit_changes() > 0 {
            given += 1;
        }
        w.finish().await?;
    }
    tx.commit().await?;
    Ok(given)
}

/// A role as stored, with when it was made and last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRole {
    pub org: OrgId,
    pub def: RoleDef,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    /// How many assignments it has; for Administrator, how many active org admins hold it.
    pub assignment_count: i64,
}

/// The columns every read selects, in [`RoleRow`]'s order (`ro` is `roles`).
macro_rules! columns {
    () => {
        "ro.role_id, ro.org_id, ro.builtin, ro.display_name, ro.hidden, \
         ro.view_mailbox_list, ro.connect_mailboxes, ro.modify_mailboxes, ro.grant_read_access, \
         ro.invite, ro.manage_permissions, ro.version, ro.create_time, ro.update_time"
    };
}
const COLUMNS: &str = columns!();

/// [`COLUMNS`] and the assignment count ($1: the assignment kinds), in [`CountedRow`]'s order.
const COLUMNS_AND_COUNT: &str = concat!(
    columns!(),
    ", CASE WHEN ro.builtin = 'administrator' THEN \
       (SELECT count(*) FROM relationships a JOIN users u ON u.user_id = a.subject_id AND u.active \
        WHERE a.org_id = ro.org_id AND a.kind = 'admin') \
     ELSE (SELECT count(*) FROM relationships a \
        WHERE a.org_id = ro.org_id AND a.kind = ANY($1) AND a.object_id = ro.role_id) END"
);

type RoleRow = (
    RoleId,
    OrgId,
    Option<String>,
    String,
    bool,
    String,
    String,
    String,
    String,
    bool,
    bool,
    i64,
    DateTime<Utc>,
    DateTime<Utc>,
);

type CountedRow = (
    RoleId,
    OrgId,
    Option<String>,
    String,
    bool,
    String,
    String,
    String,
    String,
    bool,
    bool,
    i64,
    DateTime<Utc>,
    DateTime<Utc>,
    i64,
);

fn scope(column: &str, s: &str) -> Result<Scope> {
    Scope::parse(s).ok_or_else(|| {
        AccessError::Internal(format!("a stored role has an unknown {column} scope `{s}`"))
    })
}

fn from_row(row: RoleRow) -> Result<StoredRole> {
    let (id, org, builtin, name, hidden, view, connect, modify, grant_read, invite, manage) = (
        row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9, row.10,
    );
    let builtin = match builtin {
        None => None,
        Some(b) => Some(Builtin::parse(&b).ok_or_else(|| {
            AccessError::Internal(format!("role {id} is of an unknown built-in kind `{b}`"))
        })?),
    };
    Ok(StoredRole {
        org,
        def: RoleDef {
            id,
            builtin,
            name,
            hidden,
            grants: Grants {
                view_mailbox_list: scope("view_mailbox_list", &view)?,
                connect_mailboxes: scope("connect_mailboxes", &connect)?,
                modify_mailboxes: scope("modify_mailboxes", &modify)?,
                grant_read_access: scope("grant_read_access", &grant_read)?,
                invite,
                manage_permissions: manage,
            },
            version: row.11,
        },
        create_time: row.12,
        update_time: row.13,
        assignment_count: 0,
    })
}

fn from_counted(row: CountedRow) -> Result<StoredRole> {
    let count = row.14;
    let mut role = from_row((
        row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9, row.10, row.11,
        row.12, row.13,
    ))?;
    role.assignment_count = count;
    Ok(role)
}

/// Every organisation's roles (for loading a replica). A role this build cannot read (a
/// scope or kind a newer build wrote) is skipped and logged, as an unknown row is.
pub async fn all_roles(conn: &mut PgConnection) -> Result<Vec<(OrgId, RoleDef)>> {
    let rows: Vec<RoleRow> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM roles ro"))
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| match from_row(row) {
            Ok(role) => Some((role.org, role.def)),
            Err(err) => {
                tracing::warn!(%err, "unreadable role in the table; skipped");
                None
            }
        })
        .collect())
}

/// One role, whichever its organisation (the caller checks it is theirs).
pub async fn role(conn: &mut PgConnection, id: RoleId) -> Result<Option<StoredRole>> {
    let row: Option<CountedRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS_AND_COUNT} FROM roles ro WHERE ro.role_id = $2"
    ))
    .bind(assignment_kinds())
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.map(from_counted).transpose()
}

/// An organisation's roles: the built-in ones first (Administrator, Supervisor, Manager),
/// then the custom ones by name (case-insensitively), then id.
pub async fn org_roles(conn: &mut PgConnection, org: OrgId) -> Result<Vec<StoredRole>> {
    let rows: Vec<CountedRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS_AND_COUNT} FROM roles ro WHERE ro.org_id = $2 \
         ORDER BY CASE ro.builtin WHEN 'administrator' THEN 0 WHEN 'supervisor' THEN 1 \
                  WHEN 'manager' THEN 2 ELSE 3 END, lower(ro.display_name), ro.role_id"
    ))
    .bind(assignment_kinds())
    .bind(org)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(from_counted).collect()
}

/// A role's assignments (`role#assignee@…`), by kind then subject.
pub async fn role_assignments(
    conn: &mut PgConnection,
    org: OrgId,
    role: RoleId,
) -> Result<Vec<Relationship>> {
    Ok(assignment_rows(conn, org, role)
        .await?
        .into_iter()
        .map(Row::relationship)
        .collect())
}

async fn assignment_rows(conn: &mut PgConnection, org: OrgId, role: RoleId) -> Result<Vec<Row>> {
    let rows: Vec<(String, Uuid, Uuid)> = sqlx::query_as(
        "SELECT kind, object_id, subject_id FROM relationships \
         WHERE org_id = $1 AND kind = ANY($2) AND object_id = $3 \
         ORDER BY kind, subject_id",
    )
    .bind(org)
    .bind(assignment_kinds())
    .bind(role)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(kind, object, subject)| {
            Some(Row {
                kind: Kind::parse(&kind)?,
                object,
                subject,
            })
        })
        .collect())
}

/// A display name's own faults: empty, too long, or with control characters.
fn check_name(name: &str) -> Result<()> {
    let chars = name.chars().count();
    if chars == 0 || name.trim().is_empty() {
        return Err(AccessError::InvalidArgument(
            "a role needs a display name".into(),
        ));
    }
    if chars > MAX_NAME_CHARS {
        return Err(AccessError::InvalidArgument(format!(
            "a role's display name is at most {MAX_NAME_CHARS} characters, not {chars}"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(AccessError::InvalidArgument(
            "a role's display name cannot contain control characters (line breaks, tabs)".into(),
        ));
    }
    Ok(())
}

/// The etag a version is shown as.
fn etag(version: i64) -> String {
    version.to_string()
}

fn stale(expected: i64, current: i64) -> AccessError {
    AccessError::Aborted(format!(
        "the role changed since you read it (etag \"{}\", now \"{}\"); read it again and retry",
        etag(expected),
        etag(current)
    ))
}

fn not_found(id: RoleId) -> AccessError {
    AccessError::NotFound(format!(
        "role `{id}` was not found in your organisation (ListRoles shows its roles)"
    ))
}

impl Writer<'_> {
    /// The organisation's role `id` as stored, locked until the transaction ends.
    async fn locked_role(&mut self, id: RoleId) -> Result<StoredRole> {
        let row: Option<RoleRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM roles ro WHERE ro.role_id = $1 AND ro.org_id = $2 FOR UPDATE"
        ))
        .bind(id)
        .bind(self.org)
        .fetch_optional(&mut *self.conn)
        .await?;
        row.map(from_row).transpose()?.ok_or_else(|| not_found(id))
    }

    /// Refuses an assignment of a role this organisation does not have (NOT_FOUND), or of
    /// Administrator, which is identity's admin flag (FAILED_PRECONDITION).
    pub(super) async fn check_assignable(&mut self, id: RoleId) -> Result<()> {
        let builtin: Option<(Option<String>,)> =
            sqlx::query_as("SELECT builtin FROM roles WHERE role_id = $1 AND org_id = $2")
                .bind(id)
                .bind(self.org)
                .fetch_optional(&mut *self.conn)
                .await?;
        match builtin {
            None => Err(not_found(id)),
            Some((Some(b),)) if b == Builtin::Administrator.as_str() => {
                Err(AccessError::FailedPrecondition(
                    "the Administrator role is held by exactly the org admins and cannot be assigned; make someone an admin in identity (SetAdmin)".into(),
                ))
            }
            Some(_) => Ok(()),
        }
    }

    /// Refuses `name` when another role of the organisation (not `except`) has it, whatever
    /// its case.
    async fn check_name_free(&mut self, name: &str, except: Option<RoleId>) -> Result<()> {
        let taken: Option<(RoleId, String)> = sqlx::query_as(
            "SELECT role_id, display_name FROM roles \
             WHERE org_id = $1 AND lower(display_name) = lower($2) \
               AND ($3::uuid IS NULL OR role_id <> $3)",
        )
        .bind(self.org)
        .bind(name)
        .bind(except)
        .fetch_optional(&mut *self.conn)
        .await?;
        match taken {
            Some((id, existing)) => Err(AccessError::AlreadyExists(format!(
                "your organisation already has a role named \u{201c}{existing}\u{201d} (role `{id}`); names are unique whatever their case: choose another"
            ))),
            None => Ok(()),
        }
    }

    /// Adds a custom role (made by CreateRole, or CloneRole from `cloned_from`) at version 1;
    /// returns it as stored. Refuses a name the organisation has (ALREADY_EXISTS) and a role
    /// beyond the [`MAX_CUSTOM_ROLES`]th (FAILED_PRECONDITION).
    pub async fn create_role(
        &mut self,
        def: &RoleDef,
        cloned_from: Option<RoleId>,
    ) -> Result<RoleDef> {
        if def.builtin.is_some() {
            return Err(AccessError::FailedPrecondition(
                "the built-in roles come with the organisation; create a custom role instead"
                    .into(),
            ));
        }
        check_name(&def.name)?;
        self.check_name_free(&def.name, None).await?;
        let (custom,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM roles WHERE org_id = $1 AND builtin IS NULL")
                .bind(self.org)
                .fetch_one(&mut *self.conn)
                .await?;
        if custom >= MAX_CUSTOM_ROLES {
            return Err(AccessError::FailedPrecondition(format!(
                "your organisation has {custom} custom roles, the most it may have ({MAX_CUSTOM_ROLES}); delete one it no longer needs first"
            )));
        }
        let role = RoleDef {
            version: 1,
            ..def.clone()
        };
        self.insert_role(&role).await?;
        self.changes.push(Change::RoleCreated {
            role: role.clone(),
            cloned_from,
        });
        Ok(role)
    }

    async fn insert_role(&mut self, role: &RoleDef) -> Result<bool> {
        let g = role.grants;
        Ok(sqlx::query(
            "INSERT INTO roles (role_id, org_id, builtin, display_name, hidden, view_mailbox_list, \
               connect_mailboxes, modify_mailboxes, grant_read_access, invite, manage_permissions, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING",
        )
        .bind(role.id)
        .bind(self.org)
        .bind(role.builtin.map(Builtin::as_str))
        .bind(&role.name)
        .bind(role.hidden)
        .bind(g.view_mailbox_list.as_str())
        .bind(g.connect_mailboxes.as_str())
        .bind(g.modify_mailboxes.as_str())
        .bind(g.grant_read_access.as_str())
        .bind(g.invite)
        .bind(g.manage_permissions)
        .bind(role.version)
        .execute(&mut *self.conn)
        .await?
        .rows_affected()
            == 1)
    }

    /// Stores `def`'s name, visibility and grants for the role `def.id` at the next version
    /// (its kind stays as stored), when `expected_version` (the caller's etag, if any) is the
    /// current one; returns the role as stored now. `paths` (the update mask's) go into the
    /// recorded change. Nothing changes, and nothing is recorded, when `def` is what is stored.
    /// Refuses an unknown role (NOT_FOUND), a stale etag (ABORTED), a taken name
    /// (ALREADY_EXISTS) and any change to Administrator (FAILED_PRECONDITION).
    pub async fn update_role(
        &mut self,
        def: &RoleDef,
        expected_version: Option<i64>,
        paths: Vec<String>,
    ) -> Result<RoleDef> {
        let current = self.locked_role(def.id).await?.def;
        if let Some(expected) = expected_version {
            if expected != current.version {
                return Err(stale(expected, current.version));
            }
        }
        if (&def.name, def.hidden, def.grants) == (&current.name, current.hidden, current.grants) {
            return Ok(current);
        }
        if current.builtin == Some(Builtin::Administrator) {
            return Err(AccessError::FailedPrecondition(
                "the Administrator role is every org admin's, with every permission, and cannot be changed; make an admin in identity (SetAdmin) or create a custom role".into(),
            ));
        }
        check_name(&def.name)?;
        if def.name != current.name {
            self.check_name_free(&def.name, Some(def.id)).await?;
        }
        let g = def.grants;
        let version: Option<(i64,)> = sqlx::query_as(
            "UPDATE roles SET display_name = $3, hidden = $4, view_mailbox_list = $5, \
               connect_mailboxes = $6, modify_mailboxes = $7, grant_read_access = $8, \
               invite = $9, manage_permissions = $10, version = version + 1, update_time = now() \
             WHERE role_id = $1 AND org_id = $2 AND version = $11 RETURNING version",
        )
        .bind(def.id)
        .bind(self.org)
        .bind(&def.name)
        .bind(def.hidden)
        .bind(g.view_mailbox_list.as_str())
        .bind(g.connect_mailboxes.as_str())
        .bind(g.modify_mailboxes.as_str())
        .bind(g.grant_read_access.as_str())
        .bind(g.invite)
        .bind(g.manage_permissions)
        .bind(current.version)
        .fetch_optional(&mut *self.conn)
        .await?;
        // The row is locked, so the version read is still the one stored.
        let Some((version,)) = version else {
            return Err(AccessError::Internal(format!(
                "role {} changed while locked",
                def.id
            )));
        };
        let role = RoleDef {
            id: def.id,
            builtin: current.builtin,
            name: def.name.clone(),
            hidden: def.hidden,
            grants: def.grants,
            version,
        };
        self.changes.push(Change::RoleUpdated {
            role: role.clone(),
            paths,
        });
        Ok(role)
    }

    /// Deletes a custom role when `expected_version` (the caller's etag, if any) is current:
    /// its assignments first (each recorded as a `Delete`), then the role (`RoleDeleted`).
    /// Returns the assignments removed. Refuses an unknown role (NOT_FOUND), a stale etag
    /// (ABORTED) and a built-in role (FAILED_PRECONDITION).
    pub async fn delete_role(
        &mut self,
        id: RoleId,
        expected_version: Option<i64>,
    ) -> Result<Vec<Relationship>> {
        let current = self.locked_role(id).await?.def;
        if let Some(expected) = expected_version {
            if expected != current.version {
                return Err(stale(expected, current.version));
            }
        }
        if let Some(builtin) = current.builtin {
            return Err(AccessError::FailedPrecondition(match builtin {
                Builtin::Administrator => "the Administrator role is every org admin's and cannot be deleted".to_string(),
                _ => format!(
                    "the built-in role \u{201c}{}\u{201d} cannot be deleted; unassign it (UnassignRole) or change its permissions instead",
                    current.name
                ),
            }));
        }
        let org = self.org;
        // One statement however many there are (this runs under the changelog lock).
        let gone: Vec<(String, Uuid, Uuid)> = sqlx::query_as(
            "DELETE FROM relationships WHERE org_id = $1 AND kind = ANY($2) AND object_id = $3 \
             RETURNING kind, object_id, subject_id",
        )
        .bind(org)
        .bind(assignment_kinds())
        .bind(id)
        .fetch_all(&mut *self.conn)
        .await?;
        let mut rows: Vec<Row> = gone
            .into_iter()
            .filter_map(|(kind, object, subject)| {
                Some(Row {
                    kind: Kind::parse(&kind)?,
                    object,
                    subject,
                })
            })
            .collect();
        rows.sort_by(|a, b| (a.kind.as_str(), a.subject).cmp(&(b.kind.as_str(), b.subject)));
        self.changes
            .extend(rows.iter().copied().map(Change::Delete));
        let removed = rows.into_iter().map(Row::relationship).collect();
        sqlx::query("DELETE FROM roles WHERE role_id = $1 AND org_id = $2")
            .bind(id)
            .bind(org)
            .execute(&mut *self.conn)
            .await?;
        self.changes.push(Change::RoleDeleted {
            role: id,
            name: current.name,
        });
        Ok(removed)
    }

    /// Gives the organisation whichever of its three built-in roles it lacks, with their
    /// default grants and assignments (Supervisor to heads, Manager to everyone else), each
    /// recorded; returns those made. Idempotent, and one indexed query when nothing is
    /// missing. A built-in role's default name taken by a custom role gets " (built-in)".
    pub async fn ensure_default_roles(&mut self) -> Result<Vec<RoleDef>> {
        // With each, whether it was made before this transaction began (and so is committed:
        // a row made by this one has `now()`, its start, as its creation time).
        let present: Vec<(String, bool)> = sqlx::query_as(
            "SELECT builtin, create_time < now() FROM roles WHERE org_id = $1 AND builtin IS NOT NULL",
        )
        .bind(self.org)
        .fetch_all(&mut *self.conn)
        .await?;
        let missing: Vec<Builtin> = [
            Builtin::Administrator,
            Builtin::Supervisor,
            Builtin::Manager,
        ]
        .into_iter()
        .filter(|b| !present.iter().any(|(p, _)| p == b.as_str()))
        .collect();
        if missing.is_empty() && present.iter().all(|(_, committed)| *committed) {
            remember_defaults(self.org);
        }
        let mut made = Vec::new();
        for builtin in missing {
            let mut name = builtin.default_name().to_string();
            let taken: Option<(String,)> = sqlx::query_as(
                "SELECT display_name FROM roles WHERE org_id = $1 AND lower(display_name) = lower($2)",
            )
            .bind(self.org)
            .bind(&name)
            .fetch_optional(&mut *self.conn)
            .await?;
            if taken.is_some() {
                name = format!("{name} (built-in)");
            }
            let role = RoleDef {
                id: RoleId::new(),
                builtin: Some(builtin),
                name,
                hidden: false,
                grants: builtin.default_grants(),
                version: 1,
            };
            if !self.insert_role(&role).await? {
                continue;
            }
            self.changes.push(Change::RoleCreated {
                role: role.clone(),
                cloned_from: None,
            });
            let assignee = match builtin {
                Builtin::Administrator => None,
                Builtin::Supervisor => Some(crate::model::Assignee::Heads),
                Builtin::Manager => Some(crate::model::Assignee::EveryoneElse),
            };
            if let Some(assignee) = assignee {
                self.write(Relationship::Assignee(role.id, assignee))
                    .await?;
            }
            made.push(role);
        }
        Ok(made)
    }
}
