//! What identity emits, always through the outbox in the caller's transaction (so an event
//! leaves exactly when its change commits): the identity events on
//! `mailroom.identity.events`, each keyed by the user, department or organisation it is about
//! and carrying its snapshot as it is after the change; and the `SessionsRevoked` records on
//! `mailroom.revocations` (`revocation` decides when).

use std::fmt;

use mailroom_platform::auth::Principal;
use mailroom_platform::kafka::Topic;
use mailroom_platform::outbox::{self, EventActor};
use mailroom_platform::proto::events::v1 as ev;
use mailroom_platform::types::{OrgId, UserId};
use sqlx::PgConnection;

use crate::domain::UserState;
use crate::error::Result;
use crate::store::{DepartmentRow, UserRow};
use ev::envelope::Payload;

/// Writes an identity event about `aggregate` (a user, department or organisation), done by
/// the caller.
pub async fn emit(
    conn: &mut PgConnection,
    org_id: OrgId,
    aggregate: impl fmt::Display,
    principal: &Principal,
    payload: Payload,
) -> Result<()> {
    emit_as(conn, org_id, aggregate, &EventActor::of(principal), payload).await
}

/// The same, done by `actor` (the system, for what identity does on its own).
pub async fn emit_as(
    conn: &mut PgConnection,
    org_id: OrgId,
    aggregate: impl fmt::Display,
    actor: &EventActor,
    payload: Payload,
) -> Result<()> {
    outbox::enqueue(
        conn,
        Topic::IdentityEvents,
        org_id,
        &aggregate.to_string(),
        actor,
        payload,
    )
    .await?;
    Ok(())
}

/// Writes an event about `user`, made by `event` from their snapshot.
pub async fn emit_user(
    conn: &mut PgConnection,
    principal: &Principal,
    user: &UserRow,
    event: impl FnOnce(Option<ev::UserSnapshot>) -> Payload,
) -> Result<()> {
    let payload = event(Some(user_snapshot(user)));
    emit(conn, user.org_id, user.id, principal, payload).await
}

/// Writes an event about `department`, made by `event` from its snapshot.
pub async fn emit_department(
    conn: &mut PgConnection,
    principal: &Principal,
    department: &DepartmentRow,
    event: impl FnOnce(Option<ev::DepartmentSnapshot>) -> Payload,
) -> Result<()> {
    let payload = event(Some(department_snapshot(department)));
    emit(conn, department.org_id, department.id, principal, payload).await
}

/// Writes the record that makes every service refuse `user_id`'s access tokens issued before
/// `not_before_ms`.
pub async fn emit_sessions_revoked(
    conn: &mut PgConnection,
    org_id: OrgId,
    user_id: UserId,
    principal: &Principal,
    reason: ev::RevocationReason,
    not_before_ms: i64,
) -> Result<()> {
    outbox::enqueue(
        conn,
        Topic::Revocations,
        org_id,
        &user_id.to_string(),
        &EventActor::of(principal),
        Payload::SessionsRevoked(ev::SessionsRevoked {
            subject: user_id.to_string(),
            not_before_unix_ms: not_before_ms,
            reason: reason as i32,
        }),
    )
    .await?;
    Ok(())
}

pub fn user_snapshot(user: &UserRow) -> ev::UserSnapshot {
    ev::UserSnapshot {
        id: user.id.to_string(),
        state: match user.state() {
            UserState::Invited => ev::UserStateSnapshot::Invited,
            UserState::Active => ev::UserStateSnapshot::Active,
            UserState::Dismissed => ev::UserStateSnapshot::Dismissed,
        } as i32,
        login_email: user.login_email.clone(),
        contact_email: user.contact_email.clone(),
        first_name: user.first_name.clone(),
        last_name: user.last_name.clone(),
        position: user.position.clone(),
        department_id: id_or_empty(user.department_id),
        admin: user.is_admin,
    }
}

pub fn department_snapshot(d: &DepartmentRow) -> ev::DepartmentSnapshot {
    ev::DepartmentSnapshot {
        id: d.id.to_string(),
        name: d.name.clone(),
        parent_id: id_or_empty(d.parent_id),
        head_user_id: id_or_empty(d.head_user_id),
    }
}

/// An optional id as the wire carries it: empty for none.
pub fn id_or_empty(id: Option<impl fmt::Display>) -> String {
    id.map(|id| id.to_string()).unwrap_or_default()
}
