//! Access control end to end: identity's changes reaching the graph through Kafka, checks and
//! lookups over gRPC, who may write what, revisions across replicas, settings, and events.

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
mod replicas;

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

/// The organisation's admin stops owners sharing read access: only admins grant it now.
async fn only_admins_grant_read_access(app: &TestApp, o: &Org) {
    app.access()
        .update_permission_settings(authed(
            &o.org.admin_token,
            apb::UpdatePermissionSettingsRequest {
                settings: Some(apb::PermissionSettings {
                    read_access_grants: apb::ReadAccessGrants::Admins as i32,
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("only admins grant read access");
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
