//! Access control end to end: identity's changes reaching the graph through Kafka, checks and
//! lookups over gRPC, who may write what, revisions across replicas, settings, and events.

use std::time::Duration;

use mailroom_access::identity_events::IdentityEvents;
use mailroom_platform::consumer::EventHandler;
use mailroom_platform::kafka::Topic;
use mailroom_proto::events::v1 as ev;
use mailroom_tests::access::{object, on_mailbox, request, user};
use mailroom_tests::{
    access_pb as apb, authed, identity_pb as pb, spawn_app_with_access, TestApp, TestOrg,
};
use tonic::Code;

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

#[tokio::test]
async fn supervision_follows_identity_and_a_move_re_parents_it() {
    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    app.eventually(&o.ceo.id, "mailbox.view", &o.mailbox, true)
        .await;
    assert!(app.can(&o.east_head.id, "mailbox.view", &o.mailbox).await);
    assert!(!app.can(&o.other_head.id, "mailbox.view", &o.mailbox).await);
    assert!(
        !app.can(&o.ceo.id, "mailbox.modify", &o.mailbox).await,
        "supervisors change nothing"
    );
    assert!(!app.can(&o.peer.id, "mailbox.view", &o.mailbox).await);

    // Move East under Other in identity: the CEO loses it, Other's head gains it.
    app.identity
        .clone()
        .update_department(authed(
            &o.org.admin_token,
            pb::UpdateDepartmentRequest {
                department: Some(pb::Department {
                    id: o.east.id.clone(),
                    parent_id: o.other.id.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["parent_id".into()],
                }),
            },
        ))
        .await
        .expect("move East");
    app.eventually(&o.other_head.id, "mailbox.view", &o.mailbox, true)
        .await;
    assert!(!app.can(&o.ceo.id, "mailbox.view", &o.mailbox).await);
    assert!(
        app.can(&o.east_head.id, "mailbox.view", &o.mailbox).await,
        "the direct head stays"
    );

    // Dismissing a user takes every permission away, even on their own mailbox.
    app.identity
        .clone()
        .dismiss_user(authed(
            &o.org.admin_token,
            pb::DismissUserRequest {
                id: o.owner.id.clone(),
            },
        ))
        .await
        .expect("dismiss");
    app.eventually(&o.owner.id, "mailbox.view", &o.mailbox, false)
        .await;
    assert!(!app.can(&o.owner.id, "mailbox.read_mail", &o.mailbox).await);
}

#[tokio::test]
async fn nobody_reads_mail_without_a_grant_and_a_grant_is_seen_at_its_revision() {
    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    app.eventually(&o.ceo.id, "mailbox.view", &o.mailbox, true)
        .await;
    let admin = &o.org.admin_id;
    assert!(app.can(admin, "mailbox.view", &o.mailbox).await);
    assert!(app.can(admin, "mailbox.modify", &o.mailbox).await);
    for who in [admin.as_str(), o.ceo.id.as_str(), o.east_head.id.as_str()] {
        assert!(
            !app.can(who, "mailbox.read_mail", &o.mailbox).await,
            "{who} reads without a grant"
        );
    }
    assert!(app.can(&o.owner.id, "mailbox.read_mail", &o.mailbox).await);

    // The admin grants the CEO read access; the check that passes the revision sees it.
    let written = app
        .access()
        .write_relationships(authed(
            &o.org.admin_token,
            apb::WriteRelationshipsRequest {
                relationships: vec![on_mailbox(&o.mailbox, "reader", &o.ceo.id)],
            },
        ))
        .await
        .expect("grant")
        .into_inner()
        .written_at
        .expect("revision");
    let service = app.service_token().await;
    let answer = app
        .check(
            &service,
            request(
                &o.ceo.id,
                "mailbox.read_mail",
                object("mailbox", &o.mailbox),
                Some(&written),
            ),
        )
        .await
        .expect("check");
    assert!(answer.allowed);
    assert!(
        !app.can(admin, "mailbox.read_mail", &o.mailbox).await,
        "the grant is the CEO's only"
    );

    // "Access by": owner and the reader, not the admin or the supervisors.
    let who = app
        .access()
        .lookup_subjects(authed(
            &service,
            apb::LookupSubjectsRequest {
                resource: object("mailbox", &o.mailbox),
                permission: "mailbox.read_mail".into(),
                subject_type: "user".into(),
                at_least_as_fresh_as: Some(written.clone()),
            },
        ))
        .await
        .expect("lookup subjects")
        .into_inner();
    let mut expected = vec![o.owner.id.clone(), o.ceo.id.clone()];
    expected.sort();
    assert_eq!(who.subject_ids, expected);

    // Revoked: gone at the delete's revision.
    let deleted = app
        .access()
        .delete_relationships(authed(
            &o.org.admin_token,
            apb::DeleteRelationshipsRequest {
                relationships: vec![on_mailbox(&o.mailbox, "reader", &o.ceo.id)],
            },
        ))
        .await
        .expect("revoke")
        .into_inner()
        .deleted_at
        .expect("revision");
    let answer = app
        .check(
            &service,
            request(
                &o.ceo.id,
                "mailbox.read_mail",
                object("mailbox", &o.mailbox),
                Some(&deleted),
            ),
        )
        .await
        .expect("check");
    assert!(!answer.allowed);
}

#[tokio::test]
async fn a_write_through_one_replica_is_seen_by_another_at_its_revision() {
    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    app.eventually(&o.ceo.id, "mailbox.view", &o.mailbox, true)
        .await;
    let stop = tokio_util::sync::CancellationToken::new();
    // The second replica hears of writes only when asked at a revision: no notifications, and
    // a poll too slow to matter here. What it answers comes from honouring the revision.
    let (mut second, _) = app
        .start_access_replica_with(stop.clone(), |c| {
            c.changelog_notifications = false;
            c.changelog_poll_ms = 3_600_000;
        })
        .await;
    let service = app.service_token().await;
    for round in 0..5 {
        let mailbox = uuid::Uuid::new_v4().to_string();
        let written = app
            .write_when_known(&service, vec![on_mailbox(&mailbox, "owner", &o.peer.id)])
            .await;
        // Asked on the other replica, at the write's revision: seen on the first try.
        let answer = second
            .check(authed(
                &service,
                request(
                    &o.peer.id,
                    "mailbox.modify",
                    object("mailbox", &mailbox),
                    Some(&written),
                ),
            ))
            .await
            .expect("check on the second replica")
            .into_inner();
        assert!(
            answer.allowed,
            "round {round}: the second replica missed the write"
        );
    }
    // A revision nobody has written yet is refused, not waited for forever.
    let err = second
        .check(authed(
            &service,
            request(
                &o.peer.id,
                "mailbox.view",
                object("mailbox", &o.mailbox),
                Some(&apb::Revision {
                    token: "r99999999".into(),
                }),
            ),
        ))
        .await
        .expect_err("a future revision");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = second
        .check(authed(
            &service,
            request(
                &o.peer.id,
                "mailbox.view",
                object("mailbox", &o.mailbox),
                Some(&apb::Revision {
                    token: "yesterday".into(),
                }),
            ),
        ))
        .await
        .expect_err("garbage revision");
    assert_eq!(err.code(), Code::InvalidArgument);
    stop.cancel();
}

#[tokio::test]
async fn who_may_write_and_ask_what() {
    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    app.eventually(&o.ceo.id, "mailbox.view", &o.mailbox, true)
        .await;
    let peer = token(&app, &o, "peer").await;
    let owner = token(&app, &o, "owner").await;
    let ceo = token(&app, &o, "ceo").await;
    let write = |token: String, rel: apb::Relationship| {
        let mut access = app.access();
        async move {
            access
                .write_relationships(authed(
                    &token,
                    apb::WriteRelationshipsRequest {
                        relationships: vec![rel],
                    },
                ))
                .await
        }
    };

    // A peer cannot grant themselves read access; a supervisor cannot either.
    let err = write(peer.clone(), on_mailbox(&o.mailbox, "reader", &o.peer.id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = write(ceo.clone(), on_mailbox(&o.mailbox, "reader", &o.ceo.id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // The owner shares read access to their own mailbox.
    write(owner.clone(), on_mailbox(&o.mailbox, "reader", &o.peer.id))
        .await
        .expect("owner shares");
    // Users never set ownership; identity's relations are identity's.
    let err = write(
        o.org.admin_token.clone(),
        on_mailbox(&o.mailbox, "owner", &o.peer.id),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let head = apb::Relationship {
        resource: object("department", &o.east.id),
        relation: "head".into(),
        subject: user(&o.peer.id),
    };
    let err = write(o.org.admin_token.clone(), head).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("identity"), "{}", err.message());
    // A relation access does not know is refused with the ones it does.
    let err = write(
        o.org.admin_token.clone(),
        on_mailbox(&o.mailbox, "writer", &o.peer.id),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("mailbox#reader@user"),
        "{}",
        err.message()
    );

    // The organisation stops owners sharing: now only admins grant.
    only_admins_grant_read_access(&app, &o).await;
    let err = write(owner.clone(), on_mailbox(&o.mailbox, "reader", &o.ceo.id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = app
        .access()
        .update_permission_settings(authed(
            &peer,
            apb::UpdatePermissionSettingsRequest {
                settings: Some(apb::PermissionSettings::default()),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A user asks about themselves; about others only as an admin.
    let err = app
        .check(
            &peer,
            request(
                &o.ceo.id,
                "mailbox.view",
                object("mailbox", &o.mailbox),
                None,
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let mine = app
        .check(
            &peer,
            request(
                &o.peer.id,
                "mailbox.read_mail",
                object("mailbox", &o.mailbox),
                None,
            ),
        )
        .await
        .expect("own check");
    assert!(mine.allowed, "the owner shared read access with the peer");
    assert!(
        app.check(
            &o.org.admin_token,
            request(
                &o.ceo.id,
                "mailbox.view",
                object("mailbox", &o.mailbox),
                None
            )
        )
        .await
        .expect("admin asks")
        .allowed
    );

    // Another organisation's admin sees none of it.
    let stranger = app.create_org(0).await;
    let err = app
        .check(
            &stranger.admin_token,
            request(
                &o.ceo.id,
                "mailbox.view",
                object("mailbox", &o.mailbox),
                None,
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = app
        .access()
        .write_relationships(authed(
            &stranger.admin_token,
            apb::WriteRelationshipsRequest {
                relationships: vec![on_mailbox(&o.mailbox, "reader", &stranger.admin_id)],
            },
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::NotFound | Code::FailedPrecondition),
        "{err:?}"
    );
}

#[tokio::test]
async fn explanations_lookups_and_settings_over_grpc() {
    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    app.eventually(&o.ceo.id, "mailbox.view", &o.mailbox, true)
        .await;
    let service = app.service_token().await;

    let mut why = request(
        &o.ceo.id,
        "mailbox.view",
        object("mailbox", &o.mailbox),
        None,
    );
    why.explain = true;
    let answer = app.check(&service, why.clone()).await.expect("explain");
    assert!(answer.allowed);
    assert_eq!(answer.reason, "supervises the owner");
    let relations: Vec<&str> = answer.path.iter().map(|r| r.relation.as_str()).collect();
    assert_eq!(
        relations,
        ["owner", "member", "parent", "parent", "head"],
        "{:?}",
        answer.path
    );
    why.permission = "mailbox.read_mail".into();
    let answer = app.check(&service, why).await.expect("explain a denial");
    assert!(!answer.allowed);
    assert!(answer.reason.contains("reader grant"), "{}", answer.reason);

    // Five more mailboxes for the peer; the CEO's list pages through all six.
    let mut all = vec![o.mailbox.clone()];
    let mut last = None;
    for _ in 0..5 {
        let m = uuid::Uuid::new_v4().to_string();
        last = Some(
            app.write_when_known(&service, vec![on_mailbox(&m, "owner", &o.peer.id)])
                .await,
        );
        all.push(m);
    }
    all.sort();
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .access()
            .lookup_resources(authed(
                &service,
                apb::LookupResourcesRequest {
                    subject: user(&o.ceo.id),
                    permission: "mailbox.view".into(),
                    resource_type: "mailbox".into(),
                    page_size: 4,
                    page_token: page_token.clone(),
                    at_least_as_fresh_as: last.clone(),
                },
            ))
            .await
            .expect("lookup resources")
            .into_inner();
        assert!(page.resource_ids.len() <= 4);
        seen.extend(page.resource_ids);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, all, "every page in order, nothing twice");

    // Supervisors lose the list when the organisation narrows it.
    let updated = app
        .access()
        .update_permission_settings(authed(
            &o.org.admin_token,
            apb::UpdatePermissionSettingsRequest {
                settings: Some(apb::PermissionSettings {
                    view_mailbox_list: apb::Audience::AdminsAndManagers as i32,
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("narrow the list")
        .into_inner();
    assert_eq!(
        updated.view_mailbox_list,
        apb::Audience::AdminsAndManagers as i32
    );
    assert_eq!(
        updated.modify_mailboxes,
        apb::Audience::AdminsAndManagers as i32,
        "unspecified fields keep their value"
    );
    assert!(!app.can(&o.ceo.id, "mailbox.view", &o.mailbox).await);
    assert!(app.can(&o.org.admin_id, "mailbox.view", &o.mailbox).await);

    // Delegating "manage mailboxes" gives view and modify, never mail.
    let org_ref = object("org", &o.org.id);
    app.access()
        .write_relationships(authed(
            &o.org.admin_token,
            apb::WriteRelationshipsRequest {
                relationships: vec![apb::Relationship {
                    resource: org_ref.clone(),
                    relation: "mailbox_manager".into(),
                    subject: user(&o.ceo.id),
                }],
            },
        ))
        .await
        .expect("delegate");
    assert!(app.can(&o.ceo.id, "mailbox.modify", &o.mailbox).await);
    assert!(!app.can(&o.ceo.id, "mailbox.read_mail", &o.mailbox).await);

    // identity's "everyone may invite" flag (on by default) is the invite audience.
    let invite = |id: &str| request(id, "org.invite", org_ref.clone(), None);
    assert!(
        app.check(&service, invite(&o.peer.id))
            .await
            .expect("check")
            .allowed
    );
    app.identity
        .clone()
        .update_organization(authed(
            &o.org.admin_token,
            pb::UpdateOrganizationRequest {
                organization: Some(pb::Organization {
                    id: o.org.id.clone(),
                    settings: Some(pb::OrganizationSettings {
                        allow_everyone_to_invite: false,
                    }),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["settings.allow_everyone_to_invite".into()],
                }),
            },
        ))
        .await
        .expect("stop everyone inviting");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app
        .check(&service, invite(&o.peer.id))
        .await
        .expect("check")
        .allowed
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the invite flag did not reach access"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        app.check(&service, invite(&o.org.admin_id))
            .await
            .expect("check")
            .allowed
    );
}

#[tokio::test]
async fn every_write_is_an_event_on_the_access_topic() {
    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    let written = app
        .write_when_known(
            &o.org.admin_token,
            vec![on_mailbox(&o.mailbox, "reader", &o.peer.id)],
        )
        .await;
    let mailbox = o.mailbox.clone();
    let event = app
        .wait_for_event(Topic::AccessEvents, Duration::from_secs(30), |e| {
            match &e.payload {
                Some(ev::envelope::Payload::RelationshipsWritten(w)) => w
                    .relationships
                    .iter()
                    .any(|r| r.resource_id == mailbox && r.relation == "reader"),
                _ => false,
            }
        })
        .await
        .expect("RelationshipsWritten on mailroom.access.events");
    assert_eq!(event.org_id, o.org.id);
    assert_eq!(event.r#type, "mailroom.events.v1.RelationshipsWritten");
    let Some(ev::envelope::Payload::RelationshipsWritten(w)) = event.payload else {
        unreachable!()
    };
    assert_eq!(w.revision, written.token);
    assert_eq!(w.relationships[0].subject_id, o.peer.id);
    assert_eq!(
        event.actor.and_then(|a| a.kind),
        Some(ev::actor::Kind::UserId(o.org.admin_id.clone()))
    );
}

#[tokio::test]
async fn a_replayed_identity_event_changes_nothing() {
    let app = spawn_app_with_access().await;
    let pool = access_pool(&app).await;
    let org = uuid::Uuid::new_v4();
    let (user_id, department) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let envelope = |dept: &str| ev::Envelope {
        id: uuid::Uuid::now_v7().to_string(),
        r#type: "mailroom.events.v1.UserUpdated".into(),
        org_id: org.to_string(),
        aggregate_id: user_id.to_string(),
        payload: Some(ev::envelope::Payload::UserUpdated(ev::UserUpdated {
            user: Some(ev::UserSnapshot {
                id: user_id.to_string(),
                state: ev::UserStateSnapshot::Active as i32,
                department_id: dept.into(),
                admin: true,
                ..Default::default()
            }),
            changed_fields: vec!["department_id".into()],
            previous_department_id: String::new(),
        })),
        ..Default::default()
    };
    let revisions = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM changelog WHERE org_id = $1")
            .bind(org)
            .fetch_one(&pool)
            .await
            .expect("count")
    };
    let first = envelope(&department.to_string());
    for _ in 0..3 {
        let mut tx = pool.begin().await.expect("tx");
        IdentityEvents
            .handle(&mut tx, &first)
            .await
            .expect("handle");
        tx.commit().await.expect("commit");
    }
    assert_eq!(
        revisions(pool.clone()).await,
        1,
        "the replays recorded nothing"
    );
    let rows: Vec<(String, uuid::Uuid)> = sqlx::query_as(
        "SELECT kind, subject_id FROM relationships WHERE org_id = $1 ORDER BY kind",
    )
    .bind(org)
    .fetch_all(&pool)
    .await
    .expect("rows");
    assert_eq!(
        rows,
        vec![
            ("admin".to_owned(), user_id),
            ("member".to_owned(), department)
        ]
    );
    // The user leaves their department: the membership goes, once.
    let moved = envelope("");
    for _ in 0..2 {
        let mut tx = pool.begin().await.expect("tx");
        IdentityEvents
            .handle(&mut tx, &moved)
            .await
            .expect("handle");
        tx.commit().await.expect("commit");
    }
    assert_eq!(revisions(pool.clone()).await, 2);
    // Garbage in an event is an error for the consumer to retry and dead-letter, not a panic.
    let mut bad = envelope("not-a-uuid");
    bad.org_id = "also-not".into();
    let mut tx = pool.begin().await.expect("tx");
    assert!(IdentityEvents.handle(&mut tx, &bad).await.is_err());
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

#[tokio::test]
async fn a_mailbox_belongs_to_one_organisation_and_read_access_needs_its_owner() {
    use mailroom_access::error::AccessError;
    use mailroom_access::store::Writer;
    use mailroom_access::Relationship;
    use mailroom_platform::types::{MailboxId, OrgId, UserId};

    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    app.eventually(&o.ceo.id, "mailbox.view", &o.mailbox, true)
        .await;
    let service = app.service_token().await;
    let write = |rel: apb::Relationship| {
        let mut access = app.access();
        let service = service.clone();
        async move {
            access
                .write_relationships(authed(
                    &service,
                    apb::WriteRelationshipsRequest {
                        relationships: vec![rel],
                    },
                ))
                .await
        }
    };

    // Read access to a mailbox nobody owns yet is refused: it would bind the mailbox to
    // whichever organisation wrote first. It is answered as a mailbox that is not there.
    let unowned = uuid::Uuid::new_v4().to_string();
    let unowned_err = write(on_mailbox(&unowned, "reader", &o.ceo.id))
        .await
        .unwrap_err();
    assert_eq!(unowned_err.code(), Code::NotFound, "{unowned_err:?}");
    assert!(
        unowned_err.message().starts_with("relationships[0]: "),
        "{}",
        unowned_err.message()
    );

    // Another organisation cannot take the mailbox, through the API or past it.
    let stranger = app.create_org(0).await;
    for relation in ["owner", "reader"] {
        // Until access hears of the stranger from identity it answers UNAVAILABLE; then,
        // not found.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let err = loop {
            let err = write(on_mailbox(&o.mailbox, relation, &stranger.admin_id))
                .await
                .unwrap_err();
            if err.code() != Code::Unavailable || std::time::Instant::now() > deadline {
                break err;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(err.code(), Code::NotFound, "{relation}: {err:?}");
        // Exactly the answer for a mailbox that does not exist.
        assert_eq!(
            err.message().replace(&o.mailbox, "<mailbox>"),
            unowned_err.message().replace(&unowned, "<mailbox>"),
            "{relation}"
        );
    }
    let pool = access_pool(&app).await;
    let mailbox: MailboxId = o.mailbox.parse().expect("uuid");
    let stranger_org: OrgId = stranger.id.parse().expect("uuid");
    let stranger_admin: UserId = stranger.admin_id.parse().expect("uuid");
    for rel in [
        Relationship::Owner(mailbox, stranger_admin),
        Relationship::Reader(mailbox, stranger_admin),
    ] {
        let mut tx = pool.begin().await.expect("tx");
        let mut w = Writer::begin(&mut tx, stranger_org).await.expect("writer");
        let refused = w.write(rel).await;
        assert!(
            matches!(refused, Err(AccessError::NotFound(_))),
            "{rel:?}: {refused:?}"
        );
    }
    let asked = app
        .check(
            &service,
            request(
                &stranger.admin_id,
                "mailbox.view",
                object("mailbox", &o.mailbox),
                None,
            ),
        )
        .await
        .expect("check");
    assert!(!asked.allowed, "another organisation's admin sees nothing");

    // Even a row that names the mailbox from another organisation (left from before writers
    // checked) grants nothing there: a replica takes the mailbox's organisation from its
    // binding, and a check refuses a mailbox outside the user's organisation.
    sqlx::query(
        "INSERT INTO relationships (org_id, kind, object_id, subject_id) VALUES ($1, 'owner', $2, $3)",
    )
    .bind(stranger_org)
    .bind(mailbox)
    .bind(stranger_admin)
    .execute(&pool)
    .await
    .expect("a stray row");
    let fresh = loaded_access(&app).await;
    let service_principal = mailroom_platform::auth::Principal::Service {
        name: "test".into(),
    };
    for permission in ["mailbox.view", "mailbox.read_mail"] {
        let asked = fresh
            .check(
                &service_principal,
                request(
                    &stranger.admin_id,
                    permission,
                    object("mailbox", &o.mailbox),
                    None,
                ),
            )
            .await
            .expect("check");
        assert!(!asked.allowed, "{permission} through a stray row");
    }
    let owner_still = fresh
        .check(
            &service_principal,
            request(
                &o.owner.id,
                "mailbox.modify",
                object("mailbox", &o.mailbox),
                None,
            ),
        )
        .await
        .expect("check");
    assert!(owner_still.allowed, "the real owner keeps the mailbox");
}

#[tokio::test]
async fn only_a_change_of_identitys_invite_flag_moves_the_invite_audience() {
    use mailroom_access::store::{self, Writer};
    use mailroom_access::Audience;

    let app = spawn_app_with_access().await;
    let pool = access_pool(&app).await;
    let org = mailroom_platform::types::OrgId::new();
    let handle = |payload: ev::envelope::Payload| {
        let pool = pool.clone();
        async move {
            let event = ev::Envelope {
                id: uuid::Uuid::now_v7().to_string(),
                r#type: mailroom_platform::outbox::payload_type(&payload).into(),
                org_id: org.to_string(),
                aggregate_id: org.to_string(),
                payload: Some(payload),
                ..Default::default()
            };
            let mut tx = pool.begin().await.expect("tx");
            IdentityEvents
                .handle(&mut tx, &event)
                .await
                .expect("handle");
            tx.commit().await.expect("commit");
        }
    };
    let updated = |name: &str, everyone: bool| {
        ev::envelope::Payload::OrganizationUpdated(ev::OrganizationUpdated {
            display_name: name.into(),
            allow_everyone_to_invite: everyone,
            ..Default::default()
        })
    };
    let invite = || {
        let pool = pool.clone();
        async move {
            let mut conn = pool.acquire().await.expect("conn");
            store::settings(&mut conn, org)
                .await
                .expect("settings")
                .0
                .invite
        }
    };

    handle(ev::envelope::Payload::OrganizationCreated(
        ev::OrganizationCreated {
            display_name: "Acme".into(),
            allow_everyone_to_invite: true,
            ..Default::default()
        },
    ))
    .await;
    assert_eq!(invite().await, Audience::Everyone);

    // An admin narrows the audience through access's settings; a rename in identity keeps it.
    let mut tx = pool.begin().await.expect("tx");
    let mut w = Writer::begin(&mut tx, org).await.expect("writer");
    let (mut settings, _) = store::settings(w.conn(), org).await.expect("settings");
    settings.invite = Audience::AdminsAndManagers;
    w.set_settings(settings).await.expect("set");
    w.finish().await.expect("finish");
    tx.commit().await.expect("commit");
    handle(updated("Acme Ltd", true)).await;
    assert_eq!(invite().await, Audience::AdminsAndManagers, "a rename");

    // Turning the flag off leaves a narrower audience as it is; on opens it to everyone;
    // off again closes it to admins.
    handle(updated("Acme Ltd", false)).await;
    assert_eq!(invite().await, Audience::AdminsAndManagers);
    handle(updated("Acme Ltd", true)).await;
    assert_eq!(invite().await, Audience::Everyone);
    handle(updated("Acme Ltd", false)).await;
    assert_eq!(invite().await, Audience::Admins);
    handle(updated("Acme Group", false)).await;
    assert_eq!(invite().await, Audience::Admins);
}

#[tokio::test]
async fn an_admin_lists_relationships_page_by_page() {
    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    app.eventually(&o.ceo.id, "mailbox.view", &o.mailbox, true)
        .await;
    let list = |token: String, filter: apb::Relationship, page_size: i32, page_token: String| {
        let mut access = app.access();
        async move {
            access
                .list_relationships(authed(
                    &token,
                    apb::ListRelationshipsRequest {
                        filter: Some(filter),
                        page_size,
                        page_token,
                        org_id: String::new(),
                    },
                ))
                .await
                .map(|r| r.into_inner())
        }
    };
    let admin = o.org.admin_token.clone();
    // identity's events reach access in no fixed order across users and departments: wait
    // until every relationship the fixture makes there is listed, so the list holds still
    // while it is paged.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let everything = loop {
        let everything = list(admin.clone(), Default::default(), 1_000, String::new())
            .await
            .expect("list");
        let has = |relation: &str, subject: &str| {
            everything
                .relationships
                .iter()
                .any(|r| r.relation == relation && r.subject == user(subject))
        };
        let people = [&o.ceo, &o.east_head, &o.other_head, &o.owner, &o.peer];
        // The organisation's own event (everyone may invite, by default) included.
        let everyone_invites = everything.relationships.first().is_some_and(|r| {
            r.relation == "inviter" && r.subject.as_ref().is_some_and(|s| s.relation == "member")
        });
        let settled = everyone_invites
            && has("admin", &o.org.admin_id)
            && [&o.ceo, &o.east_head, &o.other_head]
                .iter()
                .all(|u| has("head", &u.id))
            && people.iter().all(|u| {
                everything
                    .relationships
                    .iter()
                    .any(|r| r.relation == "member" && r.resource == object("user", &u.id))
            })
            && everything
                .relationships
                .iter()
                .filter(|r| r.relation == "parent")
                .count()
                == 2;
        if settled {
            break everything;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "identity's changes did not reach access"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(everything.next_page_token.is_empty());
    let key = |r: &apb::Relationship| format!("{r:?}");
    // identity lets everyone invite by default: the setting heads the list as a relationship.
    let first = &everything.relationships[0];
    assert_eq!(first.relation, "inviter");
    assert_eq!(
        first.subject.as_ref().map(|s| s.relation.as_str()),
        Some("member")
    );
    assert!(everything
        .relationships
        .contains(&on_mailbox(&o.mailbox, "owner", &o.owner.id)));
    assert!(everything.relationships.iter().any(|r| r.relation == "head"
        && r.subject == user(&o.east_head.id)
        && r.resource == object("department", &o.east.id)));

    // Pages of two, the setting taking a place on the first: the same relationships, in order.
    let mut paged = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = list(admin.clone(), Default::default(), 2, page_token)
            .await
            .expect("page");
        assert!(page.relationships.len() <= 2, "{page:?}");
        paged.extend(page.relationships);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(
        paged.iter().map(key).collect::<Vec<_>>(),
        everything.relationships.iter().map(key).collect::<Vec<_>>()
    );

    // A filter narrows it; only admins list.
    let owners = list(
        admin.clone(),
        apb::Relationship {
            relation: "owner".into(),
            ..Default::default()
        },
        10,
        String::new(),
    )
    .await
    .expect("owners");
    assert_eq!(
        owners.relationships,
        vec![on_mailbox(&o.mailbox, "owner", &o.owner.id)]
    );
    let err = list(
        token(&app, &o, "peer").await,
        Default::default(),
        10,
        String::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_replica_that_has_not_heard_of_a_change_still_authorises_writes_on_it() {
    use mailroom_access::error::AccessError;
    use mailroom_platform::auth::Principal;

    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    app.eventually(&o.ceo.id, "mailbox.view", &o.mailbox, true)
        .await;
    // A replica loaded now and never tailing: it hears of later changes only if a write
    // brings it up to date.
    let stale = loaded_access(&app).await;
    // Through the running replica, the organisation stops owners sharing their mailboxes.
    only_admins_grant_read_access(&app, &o).await;
    // The owner tries to share through the stale replica: refused on the current settings.
    let owner = Principal::User {
        user_id: o.owner.id.parse().expect("uuid"),
        org_id: o.org.id.parse().expect("uuid"),
        admin: false,
    };
    let refused = stale
        .write_relationships(
            &owner,
            apb::WriteRelationshipsRequest {
                relationships: vec![on_mailbox(&o.mailbox, "reader", &o.ceo.id)],
            },
        )
        .await;
    assert!(
        matches!(refused, Err(AccessError::PermissionDenied(_))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_changelog_record_a_replica_cannot_read_is_skipped_not_a_stall() {
    let app = spawn_app_with_access().await;
    let o = org(&app).await;
    app.eventually(&o.ceo.id, "mailbox.view", &o.mailbox, true)
        .await;
    let behind = loaded_access(&app).await;
    // A record this build cannot read (from a newer build, say), in revision order.
    let pool = access_pool(&app).await;
    let mut tx = pool.begin().await.expect("tx");
    mailroom_access::store::changelog::lock_changelog(&mut tx)
        .await
        .expect("lock");
    sqlx::query(
        "INSERT INTO changelog (revision, org_id, changes) \
         VALUES (nextval('revisions'), $1, '[{\"op\": \"teleport\"}]')",
    )
    .bind(o.org.id.parse::<uuid::Uuid>().expect("uuid"))
    .execute(&mut *tx)
    .await
    .expect("an unreadable record");
    tx.commit().await.expect("commit");
    // A change after it still reaches the replica that was behind both.
    let service = app.service_token().await;
    let granted = app
        .write_when_known(&service, vec![on_mailbox(&o.mailbox, "reader", &o.peer.id)])
        .await;
    let asked = behind
        .check(
            &mailroom_platform::auth::Principal::Service {
                name: "test".into(),
            },
            request(
                &o.peer.id,
                "mailbox.read_mail",
                object("mailbox", &o.mailbox),
                Some(&granted),
            ),
        )
        .await
        .expect("the replica gets past the unreadable record");
    assert!(asked.allowed);
}
