//! Relationships, users and settings in PostgreSQL, and the changelog that orders every change.
//!
//! Every change goes through a [`Writer`]: it takes one transaction-scoped advisory lock, so
//! writers run one at a time and their revisions commit in the order they were drawn. A
//! replica that has read revision N has therefore read every change up to N, which is what
//! makes a revision token a promise ("this check sees at least that write").

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{AccessError, Result};
use crate::model::{Audience, ReadAccessGrants, Relationship, Settings};

/// The advisory lock every writer holds until it commits.
const CHANGELOG_LOCK: i64 = 0x6d61_696c_6163_6c01;
/// The channel a writer notifies on commit; replicas listen on it.
pub const CHANGELOG_CHANNEL: &str = "access_changelog";

/// The stored relations. `object` is what the relation is on, `subject` who holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Admin,
    MailboxManager,
    Inviter,
    Head,
    Parent,
    Member,
    Owner,
    Reader,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Admin => "admin",
            Kind::MailboxManager => "mailbox_manager",
            Kind::Inviter => "inviter",
            Kind::Head => "head",
            Kind::Parent => "parent",
            Kind::Member => "member",
            Kind::Owner => "owner",
            Kind::Reader => "reader",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "admin" => Kind::Admin,
            "mailbox_manager" => Kind::MailboxManager,
            "inviter" => Kind::Inviter,
            "head" => Kind::Head,
            "parent" => Kind::Parent,
            "member" => Kind::Member,
            "owner" => Kind::Owner,
            "reader" => Kind::Reader,
            _ => return None,
        })
    }

    /// Relations mirrored from identity's events; the API cannot write them.
    pub fn from_identity(self) -> bool {
        matches!(self, Kind::Admin | Kind::Head | Kind::Parent | Kind::Member)
    }

    /// Relations an object has at most one of (writing another replaces it).
    fn single(self) -> bool {
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
    /// The row of a relationship in `org`; `None` for the invite setting seen as a
    /// relationship (`org#inviter@org#member`), which lives in [`Settings`].
    pub fn of(org: Uuid, rel: Relationship) -> Option<Row> {
        let (kind, object, subject) = match rel {
            Relationship::Admin(u) => (Kind::Admin, org, u),
            Relationship::MailboxManager(u) => (Kind::MailboxManager, org, u),
            Relationship::Inviter(u) => (Kind::Inviter, org, u),
            Relationship::EveryoneInvites => return None,
            Relationship::Head(d, u) => (Kind::Head, d, u),
            Relationship::Parent(c, p) => (Kind::Parent, c, p),
            Relationship::Member(u, d) => (Kind::Member, u, d),
            Relationship::Owner(m, u) => (Kind::Owner, m, u),
            Relationship::Reader(m, u) => (Kind::Reader, m, u),
        };
        Some(Row {
            kind,
            object,
            subject,
        })
    }

    pub fn relationship(self) -> Relationship {
        let Row {
            kind,
            object,
            subject,
        } = self;
        match kind {
            Kind::Admin => Relationship::Admin(subject),
            Kind::MailboxManager => Relationship::MailboxManager(subject),
            Kind::Inviter => Relationship::Inviter(subject),
            Kind::Head => Relationship::Head(object, subject),
            Kind::Parent => Relationship::Parent(object, subject),
            Kind::Member => Relationship::Member(object, subject),
            Kind::Owner => Relationship::Owner(object, subject),
            Kind::Reader => Relationship::Reader(object, subject),
        }
    }
}

/// One entry of a changelog record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    Write(Row),
    Delete(Row),
    User { user: Uuid, active: bool },
    Settings(Settings),
}

pub fn audience_name(a: Audience) -> &'static str {
    match a {
        Audience::Admins => "admins",
        Audience::AdminsAndManagers => "admins_and_managers",
        Audience::AdminsManagersAndSupervisors => "admins_managers_and_supervisors",
        Audience::Everyone => "everyone",
    }
}

fn parse_audience(s: &str) -> Audience {
    match s {
        "admins" => Audience::Admins,
        "admins_and_managers" => Audience::AdminsAndManagers,
        "everyone" => Audience::Everyone,
        _ => Audience::AdminsManagersAndSupervisors,
    }
}

fn grants_name(g: ReadAccessGrants) -> &'static str {
    match g {
        ReadAccessGrants::Admins => "admins",
        ReadAccessGrants::AdminsAndOwners => "admins_and_owners",
    }
}

fn parse_grants(s: &str) -> ReadAccessGrants {
    match s {
        "admins" => ReadAccessGrants::Admins,
        _ => ReadAccessGrants::AdminsAndOwners,
    }
}

type SettingsRow = (
    String,
    String,
    String,
    String,
    chrono::DateTime<chrono::Utc>,
);

fn settings_from(row: SettingsRow) -> (Settings, chrono::DateTime<chrono::Utc>) {
    (
        Settings {
            view_mailbox_list: parse_audience(&row.0),
            modify_mailboxes: parse_audience(&row.1),
            invite: parse_audience(&row.2),
            read_access_grants: parse_grants(&row.3),
        },
        row.4,
    )
}

/// An organisation's settings and when they last changed (`None`: never, the defaults).
pub async fn settings(
    conn: &mut PgConnection,
    org: Uuid,
) -> Result<(Settings, Option<chrono::DateTime<chrono::Utc>>)> {
    let row: Option<SettingsRow> = sqlx::query_as(
        "SELECT view_mailbox_list, modify_mailboxes, invite, read_access_grants, update_time \
         FROM settings WHERE org_id = $1",
    )
    .bind(org)
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        Some(row) => {
            let (s, at) = settings_from(row);
            (s, Some(at))
        }
        None => (Settings::default(), None),
    })
}

/// Every organisation's stored settings (for loading a replica).
pub async fn all_settings(conn: &mut PgConnection) -> Result<Vec<(Uuid, Settings)>> {
    let rows: Vec<(Uuid, String, String, String, String, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as(
            "SELECT org_id, view_mailbox_list, modify_mailboxes, invite, read_access_grants, update_time \
             FROM settings",
        )
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(org, a, b, c, d, e)| (org, settings_from((a, b, c, d, e)).0))
        .collect())
}

/// Takes the changelog lock in the caller's transaction, until it ends: no other change can
/// commit meanwhile. Taking it again in the same transaction is a no-op.
pub async fn lock_changelog(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHANGELOG_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// Changes to one organisation inside the caller's transaction, recorded in the changelog
/// when [`Writer::finish`] is called.
pub struct Writer<'c> {
    conn: &'c mut PgConnection,
    org: Uuid,
    changes: Vec<Change>,
}

impl<'c> Writer<'c> {
    /// Takes the changelog lock (held until the transaction ends).
    pub async fn begin(conn: &'c mut PgConnection, org: Uuid) -> Result<Writer<'c>> {
        lock_changelog(conn).await?;
        Ok(Writer {
            conn,
            org,
            changes: Vec::new(),
        })
    }

    pub fn org(&self) -> Uuid {
        self.org
    }

    pub fn conn(&mut self) -> &mut PgConnection {
        self.conn
    }

    /// The changes made so far.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// Adds a relationship; `false` when it was already there. For an owner or a parent, the
    /// one it replaces is deleted (and recorded).
    pub async fn write(&mut self, rel: Relationship) -> Result<bool> {
        let Some(row) = Row::of(self.org, rel) else {
            let (mut s, _) = settings(self.conn, self.org).await?;
            s.invite = Audience::Everyone;
            return self.set_settings(s).await;
        };
        if matches!(row.kind, Kind::Owner | Kind::Reader) {
            self.bind_mailbox(row.object).await?;
        }
        if row.kind == Kind::Reader
            && self
                .rows(Kind::Owner, Some(row.object), None)
                .await?
                .is_empty()
        {
            // Unknown here, or another organisation's: the same answer either way.
            return Err(AccessError::mailbox_not_found(row.object));
        }
        if row.kind.single() {
            for old in self.rows(row.kind, Some(row.object), None).await? {
                if old != row {
                    self.delete_row(old).await?;
                }
            }
        }
        let inserted = sqlx::query(
            "INSERT INTO relationships (org_id, kind, object_id, subject_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(self.org)
        .bind(row.kind.as_str())
        .bind(row.object)
        .bind(row.subject)
        .execute(&mut *self.conn)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            self.changes.push(Change::Write(row));
        }
        Ok(inserted)
    }

    /// Removes a relationship; `false` when it was not there.
    pub async fn delete(&mut self, rel: Relationship) -> Result<bool> {
        match Row::of(self.org, rel) {
            Some(row) => self.delete_row(row).await,
            None => {
                let (mut s, _) = settings(self.conn, self.org).await?;
                if s.invite != Audience::Everyone {
                    return Ok(false);
                }
                s.invite = Audience::Admins;
                self.set_settings(s).await
            }
        }
    }

    /// Binds a mailbox to this organisation on its first owner or reader; refuses one that is
    /// bound to another (the caller sees it as not found, as it would any mailbox not its own).
    async fn bind_mailbox(&mut self, mailbox: Uuid) -> Result<()> {
        sqlx::query(
            "INSERT INTO mailboxes (mailbox_id, org_id) VALUES ($1, $2) ON CONFLICT (mailbox_id) DO NOTHING",
        )
        .bind(mailbox)
        .bind(self.org)
        .execute(&mut *self.conn)
        .await?;
        let (org,): (Uuid,) = sqlx::query_as("SELECT org_id FROM mailboxes WHERE mailbox_id = $1")
            .bind(mailbox)
            .fetch_one(&mut *self.conn)
            .await?;
        if org != self.org {
            return Err(AccessError::mailbox_not_found(mailbox));
        }
        Ok(())
    }

    async fn delete_row(&mut self, row: Row) -> Result<bool> {
        let deleted = sqlx::query(
            "DELETE FROM relationships WHERE org_id = $1 AND kind = $2 AND object_id = $3 AND subject_id = $4",
        )
        .bind(self.org)
        .bind(row.kind.as_str())
        .bind(row.object)
        .bind(row.subject)
        .execute(&mut *self.conn)
        .await?
        .rows_affected()
            == 1;
        if deleted {
            self.changes.push(Change::Delete(row));
        }
        Ok(deleted)
    }

    /// The stored rows of `kind`, optionally only on `object` or only held by `subject`.
    pub async fn rows(
        &mut self,
        kind: Kind,
        object: Option<Uuid>,
        subject: Option<Uuid>,
    ) -> Result<Vec<Row>> {
        let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT object_id, subject_id FROM relationships \
             WHERE org_id = $1 AND kind = $2 \
               AND ($3::uuid IS NULL OR object_id = $3) AND ($4::uuid IS NULL OR subject_id = $4)",
        )
        .bind(self.org)
        .bind(kind.as_str())
        .bind(object)
        .bind(subject)
        .fetch_all(&mut *self.conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(object, subject)| Row {
                kind,
                object,
                subject,
            })
            .collect())
    }

    /// Makes the rows of `kind` on `object` exactly `subject` (or none).
    pub async fn replace(&mut self, kind: Kind, object: Uuid, subject: Option<Uuid>) -> Result<()> {
        for old in self.rows(kind, Some(object), None).await? {
            if Some(old.subject) != subject {
                self.delete_row(old).await?;
            }
        }
        if let Some(subject) = subject {
            self.write(
                Row {
                    kind,
                    object,
                    subject,
                }
                .relationship(),
            )
            .await?;
        }
        Ok(())
    }

    /// Deletes every row of `kind` held by `subject`.
    pub async fn delete_held_by(&mut self, kind: Kind, subject: Uuid) -> Result<()> {
        for row in self.rows(kind, None, Some(subject)).await? {
            self.delete_row(row).await?;
        }
        Ok(())
    }

    /// Records a user of the organisation, active or not.
    pub async fn set_user(&mut self, user: Uuid, active: bool) -> Result<bool> {
        let changed = sqlx::query(
            "INSERT INTO users (user_id, org_id, active) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET active = EXCLUDED.active \
             WHERE users.active IS DISTINCT FROM EXCLUDED.active AND users.org_id = EXCLUDED.org_id",
        )
        .bind(user)
        .bind(self.org)
        .bind(active)
        .execute(&mut *self.conn)
        .await?
        .rows_affected()
            == 1;
        if changed {
            self.changes.push(Change::User { user, active });
        }
        Ok(changed)
    }

    /// Stores the organisation's settings; `false` when they were already so.
    pub async fn set_settings(&mut self, new: Settings) -> Result<bool> {
        let (old, at) = settings(self.conn, self.org).await?;
        if old == new && at.is_some() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO settings (org_id, view_mailbox_list, modify_mailboxes, invite, read_access_grants, update_time) \
             VALUES ($1, $2, $3, $4, $5, now()) \
             ON CONFLICT (org_id) DO UPDATE SET view_mailbox_list = EXCLUDED.view_mailbox_list, \
               modify_mailboxes = EXCLUDED.modify_mailboxes, invite = EXCLUDED.invite, \
               read_access_grants = EXCLUDED.read_access_grants, update_time = now()",
        )
        .bind(self.org)
        .bind(audience_name(new.view_mailbox_list))
        .bind(audience_name(new.modify_mailboxes))
        .bind(audience_name(new.invite))
        .bind(grants_name(new.read_access_grants))
        .execute(&mut *self.conn)
        .await?;
        if old != new {
            self.changes.push(Change::Settings(new));
        }
        Ok(old != new)
    }

    /// Records the changes under a new revision and returns it; with no changes, returns the
    /// latest committed revision (which covers everything this transaction saw).
    pub async fn finish(self) -> Result<i64> {
        if self.changes.is_empty() {
            let (latest,): (Option<i64>,) = sqlx::query_as("SELECT max(revision) FROM changelog")
                .fetch_one(&mut *self.conn)
                .await?;
            return Ok(latest.unwrap_or(0));
        }
        let (revision,): (i64,) = sqlx::query_as("SELECT nextval('revisions')")
            .fetch_one(&mut *self.conn)
            .await?;
        let changes = serde_json::to_value(&self.changes)
            .map_err(|e| AccessError::Internal(e.to_string()))?;
        sqlx::query("INSERT INTO changelog (revision, org_id, changes) VALUES ($1, $2, $3)")
            .bind(revision)
            .bind(self.org)
            .bind(changes)
            .execute(&mut *self.conn)
            .await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGELOG_CHANNEL)
            .bind(revision.to_string())
            .execute(&mut *self.conn)
            .await?;
        Ok(revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_relationship_round_trips_through_its_row() {
        let (org, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        for rel in [
            Relationship::Admin(a),
            Relationship::MailboxManager(a),
            Relationship::Inviter(a),
            Relationship::Head(a, b),
            Relationship::Parent(a, b),
            Relationship::Member(a, b),
            Relationship::Owner(a, b),
            Relationship::Reader(a, b),
        ] {
            let row = Row::of(org, rel).expect("stored as a row");
            assert_eq!(Kind::parse(row.kind.as_str()), Some(row.kind));
            assert_eq!(row.relationship(), rel);
        }
        assert_eq!(Row::of(org, Relationship::EveryoneInvites), None);
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
