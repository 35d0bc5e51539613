//! Relationships, users and roles in PostgreSQL, and the changelog that orders every change.
//! All of access control's SQL is here:
//!
//! - this file: the stored [`Kind`]s, [`Row`]s and [`Change`]s, and the reads (everything a
//!   replica loads, a page of the admin's relationship list, identity's invite flag);
//! - `writer.rs`: every change, through a [`Writer`];
//! - [`roles`]: the roles table: reading roles, and the [`Writer`]'s role changes;
//! - [`changelog`]: the lock, the ordered records replicas tail, and their pruning.
//!
//! Every change goes through a [`Writer`]: it takes one transaction-scoped advisory lock, so
//! writers run one at a time and their revisions commit in the order they were drawn. A
//! replica that has read revision N has therefore read every change up to N, which is what
//! makes a revision token a promise ("this check sees at least that write").
//!
//! A [`Row`] is the table's untyped form (`object` and `subject` are users, departments,
//! mailboxes or the organisation, by kind); [`Row::of`] and [`Row::relationship`] are where it
//! meets the typed [`Relationship`].

pub mod changelog;
pub mod roles;
mod writer;

use mailroom_types::{DepartmentId, MailboxId, OrgId, RoleId, UserId};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::Result;
use crate::legacy::Settings;
use crate::model::{Assignee, Relationship, RoleDef};

pub use roles::{all_roles, backfill_default_roles, org_roles, role, role_assignments, StoredRole};
pub use writer::Writer;

/// The stored relations. `object` is what the relation is on, `subject` who holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Admin,
    Head,
    Parent,
    Member,
    Owner,
    Reader,
    /// `role#assignee@user` (object: role, subject: user)
    Assignee,
    /// `role#assignee@department#member` (object: role, subject: department)
    AssigneeMembers,
    /// `role#assignee@department#all_members` (object: role, subject: department)
    AssigneeTree,
    /// `role#assignee@org#head` (object: role, subject: organisation)
    AssigneeHeads,
    /// `role#assignee@org#everyone_else` (object: role, subject: organisation)
    AssigneeEveryoneElse,
    /// `org#inviter@org#member`: identity lets everyone invite (object and subject: org)
    EveryoneInvites,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Admin => "admin",
            Kind::Head => "head",
            Kind::Parent => "parent",
            Kind::Member => "member",
            Kind::Owner => "owner",
            Kind::Reader => "reader",
            Kind::Assignee => "assignee",
            Kind::AssigneeMembers => "assignee_members",
            Kind::AssigneeTree => "assignee_tree",
            Kind::AssigneeHeads => "assignee_heads",
            Kind::AssigneeEveryoneElse => "assignee_everyone_else",
            Kind::EveryoneInvites => "everyone_invites",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "admin" => Kind::Admin,
            "head" => Kind::Head,
            "parent" => Kind::Parent,
            "member" => Kind::Member,
            "owner" => Kind::Owner,
            "reader" => Kind::Reader,
            "assignee" => Kind::Assignee,
            "assignee_members" => Kind::AssigneeMembers,
            "assignee_tree" => Kind::AssigneeTree,
            "assignee_heads" => Kind::AssigneeHeads,
            "assignee_everyone_else" => Kind::AssigneeEveryoneElse,
            "everyone_invites" => Kind::EveryoneInvites,
            _ => return None,
        })
    }

    /// The kind a relationship is stored as (every relationship is a row, identity's
    /// `org#inviter@org#member` too).
    pub fn of(rel: Relationship) -> Kind {
        match rel {
            Relationship::Admin(_) => Kind::Admin,
            Relationship::EveryoneInvites => Kind::EveryoneInvites,
            Relationship::Head(..) => Kind::Head,
            Relationship::Parent(..) => Kind::Parent,
            Relationship::Member(..) => Kind::Member,
            Relationship::Owner(..) => Kind::Owner,
            Relationship::Reader(..) => Kind::Reader,
            Relationship::Assignee(_, a) => match a {
                Assignee::User(_) => Kind::Assignee,
                Assignee::Members(_) => Kind::AssigneeMembers,
                Assignee::Tree(_) => Kind::AssigneeTree,
                Assignee::Heads => Kind::AssigneeHeads,
                Assignee::EveryoneElse => Kind::AssigneeEveryoneElse,
            },
        }
    }

    /// Role assignments: written by AssignRole/UnassignRole, not WriteRelationships.
    pub fn is_assignment(self) -> bool {
        matches!(
            self,
            Kind::Assignee
                | Kind::AssigneeMembers
                | Kind::AssigneeTree
                | Kind::AssigneeHeads
                | Kind::AssigneeEveryoneElse
        )
    }

    /// Relations mirrored from identity's events; the API cannot write them.
    pub fn from_identity(self) -> bool {
        matches!(
            self,
            Kind::Admin | Kind::Head | Kind::Parent | Kind::Member | Kind::EveryoneInvites
        )
    }

    /// Relations an object has at most one of (writing another replaces it).
    pub(crate) fn single(self) -> bool {
        matches!(self, Kind::Parent | Kind::Owner)
    }
}

/// One stored row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Row {
    pub kind: Kind,
    pub object: Uuid,
    pub subject: Uuid,
}

impl Row {
    /// The row of a relationship in `org`. Rows naming the organisation itself (assignments
    /// to heads or to everyone else, `org#inviter@org#member`) hold its id as the subject.
    pub fn of(org: OrgId, rel: Relationship) -> Row {
        let (kind, object, subject) = match rel {
            Relationship::Admin(u) => (Kind::Admin, org.into_uuid(), u.into_uuid()),
            Relationship::EveryoneInvites => {
                (Kind::EveryoneInvites, org.into_uuid(), org.into_uuid())
            }
            Relationship::Head(d, u) => (Kind::Head, d.into_uuid(), u.into_uuid()),
            Relationship::Parent(c, p) => (Kind::Parent, c.into_uuid(), p.into_uuid()),
            Relationship::Member(u, d) => (Kind::Member, u.into_uuid(), d.into_uuid()),
            Relationship::Owner(m, u) => (Kind::Owner, m.into_uuid(), u.into_uuid()),
            Relationship::Reader(m, u) => (Kind::Reader, m.into_uuid(), u.into_uuid()),
            Relationship::Assignee(r, a) => {
                let r = r.into_uuid();
                match a {
                    Assignee::User(u) => (Kind::Assignee, r, u.into_uuid()),
                    Assignee::Members(d) => (Kind::AssigneeMembers, r, d.into_uuid()),
                    Assignee::Tree(d) => (Kind::AssigneeTree, r, d.into_uuid()),
                    Assignee::Heads => (Kind::AssigneeHeads, r, org.into_uuid()),
                    Assignee::EveryoneElse => (Kind::AssigneeEveryoneElse, r, org.into_uuid()),
                }
            }
        };
        Row {
            kind,
            object,
            subject,
        }
    }

    /// The relationship this row stores, its ids typed by its kind.
    pub fn relationship(self) -> Relationship {
        let Row {
            kind,
            object,
            subject,
        } = self;
        match kind {
            Kind::Admin => Relationship::Admin(UserId::from_uuid(subject)),
            Kind::Head => {
                Relationship::Head(DepartmentId::from_uuid(object), UserId::from_uuid(subject))
            }
            Kind::Parent => Relationship::Parent(
                DepartmentId::from_uuid(object),
                DepartmentId::from_uuid(subject),
            ),
            Kind::Member => {
                Relationship::Member(UserId::from_uuid(object), DepartmentId::from_uuid(subject))
            }
            Kind::Owner => {
                Relationship::Owner(MailboxId::from_uuid(object), UserId::from_uuid(subject))
            }
            Kind::Reader => {
                Relationship::Reader(MailboxId::from_uuid(object), UserId::from_uuid(subject))
            }
            Kind::Assignee => Relationship::Assignee(
                RoleId::from_uuid(object),
                Assignee::User(UserId::from_uuid(subject)),
            ),
            Kind::AssigneeMembers => Relationship::Assignee(
                RoleId::from_uuid(object),
                Assignee::Members(DepartmentId::from_uuid(subject)),
            ),
            Kind::AssigneeTree => Relationship::Assignee(
                RoleId::from_uuid(object),
                Assignee::Tree(DepartmentId::from_uuid(subject)),
            ),
            Kind::AssigneeHeads => {
                Relationship::Assignee(RoleId::from_uuid(object), Assignee::Heads)
            }
            Kind::AssigneeEveryoneElse => {
                Relationship::Assignee(RoleId::from_uuid(object), Assignee::EveryoneElse)
            }
            Kind::EveryoneInvites => Relationship::EveryoneInvites,
        }
    }
}

/// One entry of a changelog record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    Write(Row),
    Delete(Row),
    User {
        user: UserId,
        active: bool,
    },
    /// Legacy (before roles): decoded so old records still read, then ignored.
    Settings(Settings),
    /// A role was made (by CreateRole, CloneRole, or as an organisation's default).
    RoleCreated {
        role: RoleDef,
        cloned_from: Option<RoleId>,
    },
    /// A role's name, visibility or grants changed (`paths`: the update mask's paths).
    RoleUpdated {
        role: RoleDef,
        paths: Vec<String>,
    },
    /// A role was deleted (its assignments are deleted by `Delete` entries before this one).
    RoleDeleted {
        role: RoleId,
        name: String,
    },
}

/// Every user access has heard of: (user, organisation, active).
pub async fn all_users(conn: &mut PgConnection) -> Result<Vec<(UserId, OrgId, bool)>> {
    Ok(sqlx::query_as("SELECT user_id, org_id, active FROM users")
        .fetch_all(conn)
        .await?)
}

/// Where each mailbox belongs: the binding writers check.
pub async fn all_mailboxes(conn: &mut PgConnection) -> Result<Vec<(MailboxId, OrgId)>> {
    Ok(sqlx::query_as("SELECT mailbox_id, org_id FROM mailboxes")
        .fetch_all(conn)
        .await?)
}

/// The relationship kinds from before roles (`org#mailbox_manager@user`, `org#inviter@user`).
/// Migration 1002 turned them into role assignments but keeps the rows, which the older build
/// reads after a rollback (and writes while it still runs during a rolling upgrade); this
/// build passes over them, in the table and in changelog records, without a word.
pub const LEGACY_KINDS: [&str; 2] = ["mailbox_manager", "inviter"];

/// Every stored relationship, with its organisation. Rows of the [`LEGACY_KINDS`] are passed
/// over quietly; rows of any other kind this build does not know (a newer build's) are
/// skipped too, with one warning for the lot, as an unreadable changelog record is.
pub async fn all_rows(conn: &mut PgConnection) -> Result<Vec<(OrgId, Row)>> {
    let rows: Vec<(OrgId, String, Uuid, Uuid)> =
        sqlx::query_as("SELECT org_id, kind, object_id, subject_id FROM relationships")
            .fetch_all(conn)
            .await?;
    let (mut legacy, mut unknown) = (0usize, std::collections::BTreeMap::<String, usize>::new());
    let rows = rows
        .into_iter()
        .filter_map(|(org, kind, object, subject)| {
            let Some(parsed) = Kind::parse(&kind) else {
                if LEGACY_KINDS.contains(&kind.as_str()) {
                    legacy += 1;
                } else {
                    *unknown.entry(kind).or_default() += 1;
                }
                return None;
            };
            Some((
                org,
                Row {
                    kind: parsed,
                    object,
                    subject,
                },
            ))
        })
        .collect();
    if legacy > 0 {
        tracing::debug!(
            rows = legacy,
            "legacy mailbox_manager/inviter rows (kept for a rollback) passed over"
        );
    }
    if !unknown.is_empty() {
        tracing::warn!(
            kinds = ?unknown,
            "relationship rows of kinds this build does not know (a newer build's?) skipped"
        );
    }
    Ok(rows)
}

/// A place in the relationship list: the last row a page showed, as (kind, object, subject).
pub type ListPosition = (String, Uuid, Uuid);

/// One page of an organisation's stored relationships in (kind, object, subject) order: rows
/// of `kinds`, on `object` and held by `subject` when given, after `after`; at most `limit`.
pub async fn relationship_page(
    conn: &mut PgConnection,
    org: OrgId,
    kinds: &[Kind],
    object: Option<Uuid>,
    subject: Option<Uuid>,
    after: Option<&ListPosition>,
    limit: i64,
) -> Result<Vec<Row>> {
    let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    let rows: Vec<(String, Uuid, Uuid)> = sqlx::query_as(
        "SELECT kind, object_id, subject_id FROM relationships \
         WHERE org_id = $1 AND kind = ANY($2) \
           AND ($3::uuid IS NULL OR object_id = $3) AND ($4::uuid IS NULL OR subject_id = $4) \
           AND ($5::text IS NULL OR (kind, object_id, subject_id) > ($5, $6, $7)) \
         ORDER BY kind, object_id, subject_id LIMIT $8",
    )
    .bind(org)
    .bind(&kinds)
    .bind(object)
    .bind(subject)
    .bind(after.map(|a| a.0.as_str()))
    .bind(after.map(|a| a.1))
    .bind(after.map(|a| a.2))
    .bind(limit)
    .fetch_all(conn)
    .await?;
    // Only the kinds asked for come back, and each of those parses.
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

/// identity's "everyone may invite" flag as last recorded for `org` (`None`: never).
pub async fn invite_flag(conn: &mut PgConnection, org: OrgId) -> Result<Option<bool>> {
    Ok(
        sqlx::query_scalar("SELECT everyone FROM identity_invite_flags WHERE org_id = $1")
            .bind(org)
            .fetch_optional(conn)
            .await?,
    )
}

/// Records identity's invite flag for `org`.
pub async fn record_invite_flag(conn: &mut PgConnection, org: OrgId, everyone: bool) -> Result<()> {
    sqlx::query(
        "INSERT INTO identity_invite_flags (org_id, everyone) VALUES ($1, $2) \
         ON CONFLICT (org_id) DO UPDATE SET everyone = EXCLUDED.everyone",
    )
    .bind(org)
    .bind(everyone)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_relationship_round_trips_through_its_row() {
        let org = OrgId::new();
        let (user, department, other_department, mailbox, role) = (
            UserId::new(),
            DepartmentId::new(),
            DepartmentId::new(),
            MailboxId::new(),
            RoleId::new(),
        );
        for rel in [
            Relationship::Admin(user),
            Relationship::Head(department, user),
            Relationship::Parent(department, other_department),
            Relationship::Member(user, department),
            Relationship::Owner(mailbox, user),
            Relationship::Reader(mailbox, user),
            Relationship::EveryoneInvites,
            Relationship::Assignee(role, Assignee::User(user)),
            Relationship::Assignee(role, Assignee::Members(department)),
            Relationship::Assignee(role, Assignee::Tree(department)),
            Relationship::Assignee(role, Assignee::Heads),
            Relationship::Assignee(role, Assignee::EveryoneElse),
        ] {
            let row = Row::of(org, rel);
            assert_eq!(Kind::parse(row.kind.as_str()), Some(row.kind));
            assert_eq!(Kind::of(rel), row.kind);
            assert_eq!(row.relationship(), rel);
        }
        let everyone = Row::of(org, Relationship::EveryoneInvites);
        assert_eq!(
            (everyone.object, everyone.subject),
            (org.into_uuid(), org.into_uuid())
        );
        assert_eq!(
            Row::of(org, Relationship::Assignee(role, Assignee::Heads)).subject,
            org.into_uuid()
        );
    }

    #[test]
    fn changes_are_stored_as_readable_json() {
        let row = Row {
            kind: Kind::Reader,
            object: Uuid::nil(),
            subject: Uuid::nil(),
        };
        let json = serde_json::to_value(vec![Change::Write(row)]).unwrap();
        assert_eq!(json[0]["op"], "write");
        assert_eq!(json[0]["kind"], "reader");
        let back: Vec<Change> = serde_json::from_value(json).unwrap();
        assert_eq!(back, vec![Change::Write(row)]);
    }
}
