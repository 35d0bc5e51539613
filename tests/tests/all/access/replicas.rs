//! Replicas and revisions, the access topic, replayed and unreadable records.

use super::*;

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
        // (The default roles' assignments, made with the first event, aside.)
        "SELECT kind, subject_id FROM relationships WHERE org_id = $1 AND kind NOT LIKE 'assignee%' ORDER BY kind",
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
