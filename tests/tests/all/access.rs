//! Access control end to end: identity's changes reaching the graph through Kafka, checks and
//! lookups over gRPC, who may write what, revisions across replicas, roles, and events.

use mailroom_access::identity_events::IdentityEvents;
use mailroom_platform::consumer::EventHandler;
use mailroom_platform::kafka::Topic;
use mailroom_proto::events::v1 as ev;
use mailroom_tests::access::{object, on_mailbox, request, user};
use mailroom_tests::{
    access_pb as apb, authed, identity_pb as pb, spawn_app_with_access, TestApp, TestOrg,
};
use std::time::Duration;
use tonic::Code;

mod grants;
mod graph;
mod paging;
mod replicas;
mod roles;
mod upgrade;

/// Company → Sales → East, and Other at the top. The CEO heads Company, `east_head` East,
/// `other_head` Other; `owner` and `peer` work in East. `owner` owns `mailbox`.
struct Org {
    org: TestOrg,
    east: pb::Department,
    other: pb::Department,
    ceo: pb::User,
    east_head: pb::User,
    other_head: pb::User,
    owner: pb::User,
    peer: pb::User,
    mailbox: String,
}

async fn org(app: &TestApp) -> Org {
    let org = app.create_org(0).await;
    let company = app.create_department(&org, "Company", "", "").await;
    let sales = app.create_department(&org, "Sales", &company.id, "").await;
    let east = app.create_department(&org, "East", &sales.id, "").await;
    let other = app.create_department(&org, "Other", "", "").await;
    let ceo = app.create_user(&org, "ceo", &company.id).await;
    let east_head = app.create_user(&org, "east.head", &east.id).await;
    let other_head = app.create_user(&org, "other.head", &other.id).await;
    let owner = app.create_user(&org, "owner", &east.id).await;
    let peer = app.create_user(&org, "peer", &east.id).await;
    app.set_head(&org, &company, &ceo.id).await;
    let east = app.set_head(&org, &east, &east_head.id).await;
    let other = app.set_head(&org, &other, &other_head.id).await;
    let mailbox = uuid::Uuid::new_v4().to_string();
    let service = app.service_token().await;
    app.write_when_known(&service, vec![on_mailbox(&mailbox, "owner", &owner.id)])
        .await;
    // The admin's own event may reach access after the others: tests act as the admin.
    app.eventually(&org.admin_id, "mailbox.view", &mailbox, true)
        .await;
    // Every user the tests act as or name is known to access before they do.
    for user in [&ceo, &east_head, &other_head, &owner, &peer] {
        app.until_known(&user.id).await;
    }
    // The heads' events come after the users' and may still be on their way when the last
    // user is known: tests that ask as the mailbox's owner's heads (unprompted by a revision)
    // wait for them here. Other's head sees nothing of it; tests asking as them wait themselves.
    for head in [&ceo, &east_head] {
        app.eventually(&head.id, "mailbox.view", &mailbox, true)
            .await;
    }
    Org {
        org,
        east,
        other,
        ceo,
        east_head,
        other_head,
        owner,
        peer,
        mailbox,
    }
}

/// The organisation's roles as `token` sees them, hidden ones included.
async fn list_roles(app: &TestApp, token: &str) -> Vec<apb::Role> {
    app.access()
        .list_roles(authed(
            token,
            apb::ListRolesRequest {
                show_hidden: true,
                page_size: 1_000,
                ..Default::default()
            },
        ))
        .await
        .expect("list roles")
        .into_inner()
        .roles
}

/// The role of this kind (a builtin) in the organisation `token` is in.
async fn builtin_role(app: &TestApp, token: &str, kind: apb::RoleKind) -> apb::Role {
    list_roles(app, token)
        .await
        .into_iter()
        .find(|r| r.kind == kind as i32)
        .unwrap_or_else(|| panic!("the organisation has no {kind:?} role"))
}

/// Role permissions at these scopes (view the list, connect, change, grant read), with
/// neither invite nor configure.
fn scopes(
    view: apb::Scope,
    connect: apb::Scope,
    modify: apb::Scope,
    grant_read: apb::Scope,
) -> apb::RolePermissions {
    apb::RolePermissions {
        view_mailbox_list: view as i32,
        connect_mailboxes: connect as i32,
        modify_mailboxes: modify as i32,
        grant_read_access: grant_read as i32,
        invite: false,
        manage_permissions: false,
    }
}

/// A new custom role made by `token`.
async fn create_role(
    app: &TestApp,
    token: &str,
    name: &str,
    permissions: apb::RolePermissions,
) -> Result<apb::Role, tonic::Status> {
    app.access()
        .create_role(authed(
            token,
            apb::CreateRoleRequest {
                role: Some(apb::Role {
                    display_name: name.into(),
                    permissions: Some(permissions),
                    ..Default::default()
                }),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// A role's subject: `user:<id>`, or `<type>:<id>#<relation>`.
fn subject(kind: &str, id: &str, relation: &str) -> Option<apb::SubjectRef> {
    Some(apb::SubjectRef {
        object: object(kind, id),
        relation: relation.into(),
    })
}

/// `token` assigns the role to the subject.
async fn assign(
    app: &TestApp,
    token: &str,
    role_id: &str,
    to: Option<apb::SubjectRef>,
) -> Result<apb::RoleAssignment, tonic::Status> {
    app.access()
        .assign_role(authed(
            token,
            apb::AssignRoleRequest {
                role_id: role_id.into(),
                subject: to,
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// `token` changes the role's fields named in `paths` to those of `role`.
async fn update_role(
    app: &TestApp,
    token: &str,
    role: apb::Role,
    paths: &[&str],
) -> Result<apb::Role, tonic::Status> {
    app.access()
        .update_role(authed(
            token,
            apb::UpdateRoleRequest {
                role: Some(role),
                update_mask: Some(prost_types::FieldMask {
                    paths: paths.iter().map(|p| (*p).to_owned()).collect(),
                }),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// The organisation's admin stops owners sharing read access: Supervisor and Manager lose
/// "grant read access", so only admins grant it now. The revision of the last change.
async fn only_admins_grant_read_access(app: &TestApp, o: &Org) -> apb::Revision {
    let mut last = None;
    for kind in [apb::RoleKind::Supervisor, apb::RoleKind::Manager] {
        let mut role = builtin_role(app, &o.org.admin_token, kind).await;
        if let Some(p) = role.permissions.as_mut() {
            p.grant_read_access = apb::Scope::None as i32;
        }
        last = update_role(
            app,
            &o.org.admin_token,
            role,
            &["permissions.grant_read_access"],
        )
        .await
        .expect("only admins grant read access")
        .written_at;
    }
    last.expect("a revision")
}

async fn token(app: &TestApp, o: &Org, local: &str) -> String {
    app.login(&o.org.address(local))
        .await
        .expect("login")
        .access_token
}

/// A pool on access's schema in the test app's database, for driving the store directly.
async fn access_pool(app: &TestApp) -> sqlx::PgPool {
    mailroom_platform::db::connect(
        &secrecy::SecretString::from(app.database_url().to_owned()),
        mailroom_access::SCHEMA,
        2,
    )
    .await
    .expect("access pool")
}

/// Access operations over a replica loaded from the tables now and never tailing: it learns
/// of a later change only when a call brings it up to date.
async fn loaded_access(app: &TestApp) -> mailroom_access::Access {
    use mailroom_access::replica::{Replica, Tailing};
    let pool = access_pool(app).await;
    let replica = Replica::load(
        pool.clone(),
        Duration::from_secs(2),
        Duration::from_secs(86_400),
        Tailing {
            poll: Duration::from_secs(3_600),
            notifications: false,
        },
    )
    .await
    .expect("replica loads");
    mailroom_access::Access::new(pool, std::sync::Arc::new(replica))
}
