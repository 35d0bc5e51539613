//! [`Writer`]: changes to one organisation inside the caller's transaction, each stored row
//! recorded as a [`Change`] and the lot recorded in the changelog under one revision at
//! [`Writer::finish`]. It refuses what must hold whatever any replica believes: a mailbox
//! belongs to one organisation, and read access needs an owner first. Every organisation
//! written to has its three default roles ([`Writer::begin`]); the role changes themselves
//! are in `roles.rs`.

use mailroom_types::{DepartmentId, MailboxId, OrgId, UserId};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{changelog, Change, Kind, Row};
use crate::error::{AccessError, Result};
use crate::model::Relationship;

/// Changes to one organisation inside the caller's transaction, recorded in the changelog
/// when [`Writer::finish`] is called.
pub struct Writer<'c> {
    pub(super) conn: &'c mut PgConnection,
    pub(super) org: OrgId,
    pub(super) changes: Vec<Change>,
    /// How many of `changes` [`Writer::begin`] made (the default roles): recorded, not
    /// published.
    implicit: usize,
}

impl<'c> Writer<'c> {
    /// Takes the changelog lock (held until the transaction ends), and gives the organisation
    /// its default roles if it has not got them yet: one indexed query the first time this
    /// process writes to it, none once it has seen them committed (built-in roles are never
    /// deleted).
    pub async fn begin(conn: &'c mut PgConnection, org: OrgId) -> Result<Writer<'c>> {
        changelog::lock_changelog(conn).await?;
        let mut w = Writer {
            conn,
            org,
            changes: Vec::new(),
            implicit: 0,
        };
        if !super::roles::defaults_known(org) {
            w.ensure_default_roles().await?;
        }
        w.implicit = w.changes.len();
        Ok(w)
    }

    /// How many changes [`Writer::begin`] made itself (the organisation's missing default
    /// roles and their assignments).
    pub fn implicit_changes(&self) -> usize {
        self.implicit
    }

    pub fn org(&self) -> OrgId {
        self.org
    }

    pub fn conn(&mut self) -> &mut PgConnection {
        self.conn
    }

    /// The changes made so far through this writer's calls: what an API call publishes.
    /// The default roles [`Writer::begin`] gave a new organisation are recorded in the
    /// changelog with them but not included, as changes mirrored from identity are not
    /// published either.
    pub fn changes(&self) -> &[Change] {
        &self.changes[self.implicit..]
    }

    /// Adds a relationship; `false` when it was already there. For an owner or a parent, the
    /// one it replaces is deleted (and recorded).
    pub async fn write(&mut self, rel: Relationship) -> Result<bool> {
        let row = Row::of(self.org, rel);
        if let Relationship::Owner(mailbox, _) | Relationship::Reader(mailbox, _) = rel {
            self.bind_mailbox(mailbox).await?;
        }
        if let Relationship::Assignee(role, _) = rel {
            self.check_assignable(role).await?;
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
        self.delete_row(Row::of(self.org, rel)).await
    }

    /// Binds a mailbox to this organisation on its first owner or reader; refuses one that is
    /// bound to another (the caller sees it as not found, as it would any mailbox not its own).
    async fn bind_mailbox(&mut self, mailbox: MailboxId) -> Result<()> {
        sqlx::query(
            "INSERT INTO mailboxes (mailbox_id, org_id) VALUES ($1, $2) ON CONFLICT (mailbox_id) DO NOTHING",
        )
        .bind(mailbox)
        .bind(self.org)
        .execute(&mut *self.conn)
        .await?;
        let (org,): (OrgId,) = sqlx::query_as("SELECT org_id FROM mailboxes WHERE mailbox_id = $1")
            .bind(mailbox)
            .fetch_one(&mut *self.conn)
            .await?;
        if org != self.org {
            return Err(AccessError::mailbox_not_found(mailbox));
        }
        Ok(())
    }

    pub(super) async fn delete_row(&mut self, row: Row) -> Result<bool> {
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

    /// Makes `user`'s department exactly `department` (or none).
    pub async fn set_department(
        &mut self,
        user: UserId,
        department: Option<DepartmentId>,
    ) -> Result<()> {
        self.replace(
            Kind::Member,
            user.into_uuid(),
            department.map(DepartmentId::into_uuid),
        )
        .await
    }

    /// Makes `department`'s parent exactly `parent` (or none: a top department).
    pub async fn set_parent(
        &mut self,
        department: DepartmentId,
        parent: Option<DepartmentId>,
    ) -> Result<()> {
        self.replace(
            Kind::Parent,
            department.into_uuid(),
            parent.map(DepartmentId::into_uuid),
        )
        .await
    }

    /// Makes `department`'s head exactly `head` (or nobody).
    pub async fn set_head(&mut self, department: DepartmentId, head: Option<UserId>) -> Result<()> {
        self.replace(
            Kind::Head,
            department.into_uuid(),
            head.map(UserId::into_uuid),
        )
        .await
    }

    /// Forgets a deleted department: its parent and head, and the departments and members
    /// under it lose their link to it, and the roles assigned to it (its members or its
    /// tree) are no longer.
    pub async fn delete_department(&mut self, department: DepartmentId) -> Result<()> {
        self.set_parent(department, None).await?;
        self.set_head(department, None).await?;
        for kind in [
            Kind::Parent,
            Kind::Member,
            Kind::AssigneeMembers,
            Kind::AssigneeTree,
        ] {
            self.delete_held_by(kind, department.into_uuid()).await?;
        }
        Ok(())
    }

    /// Forgets a disconnected mailbox's reader grants, then its owner: connected again later,
    /// it starts with no readers.
    pub async fn disconnect_mailbox(&mut self, mailbox: MailboxId) -> Result<()> {
        for kind in [Kind::Reader, Kind::Owner] {
            for row in self.rows(kind, Some(mailbox.into_uuid()), None).await? {
                self.delete_row(row).await?;
            }
        }
        Ok(())
    }

    /// The stored rows of `kind`, optionally only on `object` or only held by `subject`.
    pub(super) async fn rows(
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
    async fn replace(&mut self, kind: Kind, object: Uuid, subject: Option<Uuid>) -> Result<()> {
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
    async fn delete_held_by(&mut self, kind: Kind, subject: Uuid) -> Result<()> {
        for row in self.rows(kind, None, Some(subject)).await? {
            self.delete_row(row).await?;
        }
        Ok(())
    }

    /// Records a user of the organisation, active or not.
    pub async fn set_user(&mut self, user: UserId, active: bool) -> Result<bool> {
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

    /// Records the changes under a new revision and returns it; with no changes, returns the
    /// latest committed revision (which covers everything this transaction saw).
    pub async fn finish(self) -> Result<i64> {
        if self.changes.is_empty() {
            return changelog::latest(self.conn).await;
        }
        changelog::record(self.conn, self.org, &self.changes).await
    }
}
