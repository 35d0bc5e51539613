//! The sync service end to end with identity, access control and the registry, against the
//! real Dovecot, PostgreSQL, Redis and Kafka: a connected mailbox is synced and its counters
//! reach the registry's columns; only the owner (or someone granted) reads its mail; a wrong
//! password parks it and an update un-parks it; an active owner's mailbox is planned sooner
//! than a dormant one's and a heartbeat pulls the next sync in; a mailbox whose worker died
//! holding its lease is taken over.

use std::time::{Duration, Instant};

use mailroom_tests::mailstore::{append_samples, new_mail_user, server_messages, MailUser};
use mailroom_tests::{
    access, authed, mailboxes_pb as mpb, spawn_app_with_sync, sync_pb as spb, TestApp, TestOrg,
};
use tonic::Code;

fn addr(var: &str) -> (String, i32) {
    let value = std::env::var(var).unwrap_or_else(|_| panic!("{var} is set by .ci/test"));
    let (host, port) = value.rsplit_once(':').expect("host:port");
    (host.to_owned(), port.parse().expect("port"))
}

fn server(var: &str, username: &str) -> mpb::ServerSettings {
    let (host, port) = addr(var);
    mpb::ServerSettings {
        host,
        port,
        security: mpb::Security::None as i32,
        username: username.into(),
    }
}

/// Connects `user`'s Dovecot mailbox for `owner`, retrying while the registry has not heard
/// of a just-made owner.
async fn connect(app: &TestApp, org: &TestOrg, owner: &str, user: &MailUser) -> mpb::Mailbox {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let request = mpb::ConnectMailboxRequest {
            mailbox: Some(mpb::Mailbox {
                email: user.username.clone(),
                owner_user_id: owner.into(),
                name: "Work".into(),
                sender_name: "Tester".into(),
                imap: Some(server("MAILROOM_IMAP_ADDR", &user.username)),
                smtp: Some(server("MAILROOM_SUBMISSION_ADDR", &user.username)),
                ..Default::default()
            }),
            password: user.password.clone(),
            validate_only: false,
        };
        match app
            .mailboxes()
            .connect_mailbox(authed(&org.admin_token, request))
            .await
        {
            Ok(m) => return m.into_inner(),
            Err(s)
                if matches!(s.code(), Code::NotFound | Code::Unavailable)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(s) => panic!("connect {}: {s:?}", user.username),
        }
    }
}

/// Waits until the registry shows `mailbox` as `wanted` says.
async fn registry_until(
    app: &TestApp,
    token: &str,
    mailbox: &str,
    what: &str,
    wanted: impl Fn(&mpb::Mailbox) -> bool,
) -> mpb::Mailbox {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = app
            .mailboxes()
            .get_mailbox(authed(token, mpb::GetMailboxRequest { id: mailbox.into() }))
            .await;
        match got {
            Ok(got) => {
                let got = got.into_inner();
                if wanted(&got) {
                    return got;
                }
                assert!(
                    Instant::now() < deadline,
                    "the registry never showed {what}: {got:?}"
                );
            }
            // Access control has not heard of a just-made account yet.
            Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {}
            Err(s) => panic!("get mailbox: {s:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn status(
    app: &TestApp,
    token: &str,
    mailbox: &str,
) -> Result<spb::SyncStatus, tonic::Status> {
    app.sync()
        .get_sync_status(authed(
            token,
            spb::GetSyncStatusRequest {
                mailbox_id: mailbox.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn list(
    app: &TestApp,
    token: &str,
    req: spb::ListMessagesRequest,
) -> Result<spb::ListMessagesResponse, tonic::Status> {
    app.sync()
        .list_messages(authed(token, req))
        .await
        .map(|r| r.into_inner())
}

/// Access checks for a just-made user or mailbox wait until access control has heard of it.
async fn list_when_known(
    app: &TestApp,
    token: &str,
    req: spb::ListMessagesRequest,
) -> Result<spb::ListMessagesResponse, tonic::Status> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match list(app, token, req.clone()).await {
            Err(s)
                if matches!(
                    s.code(),
                    Code::NotFound | Code::PermissionDenied | Code::Unavailable
                ) && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => return other,
        }
    }
}

fn secs(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref().map(|t| t.seconds).unwrap_or(0)
}

fn nanos(t: &Option<prost_types::Timestamp>) -> i128 {
    t.as_ref()
        .map(|t| i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos))
        .unwrap_or(0)
}

#[tokio::test]
async fn a_connected_mailbox_is_synced_its_counters_reach_the_registry_and_only_readers_read_it() {
    let app = spawn_app_with_sync().await;
    let org = app.create_org(50).await;
    let ann = app.create_user(&org, "ann", "").await;
    let ann_token = app
        .login(&ann.login_email)
        .await
        .expect("ann signs in")
        .access_token;
    let user = new_mail_user();
    let mut imap = user.session().await;
    append_samples(&mut imap, "INBOX", 0, 45, &user.username).await;
    append_samples(&mut imap, "Sent", 100, 105, &user.username).await;

    let mailbox = connect(&app, &org, &ann.id, &user).await;
    let synced = registry_until(&app, &org.admin_token, &mailbox.id, "the first sync", |m| {
        m.message_count == 50 && m.sync_state == mpb::SyncState::Ok as i32
    })
    .await;
    // Unread: INBOX's unseen (every third sample is seen); Sent's do not count.
    let inbox_unseen = (0..45).filter(|n| n % 3 != 0).count() as i64;
    assert_eq!(synced.unread_count, inbox_unseen);
    assert!(synced.disk_mb > 0.0);
    assert!(secs(&synced.last_sync_time) > 0);

    // The owner reads the list, newest first, in pages, subjects decoded.
    let first = list_when_known(
        &app,
        &ann_token,
        spb::ListMessagesRequest {
            mailbox_id: mailbox.id.clone(),
            page_size: 20,
            filter: "folder = \"INBOX\"".into(),
            ..Default::default()
        },
    )
    .await
    .expect("the owner lists");
    assert_eq!(first.messages.len(), 20);
    assert!(!first.next_page_token.is_empty());
    let newest = &first.messages[0];
    assert_eq!(newest.subject, mailroom_sync::demo::subject(44));
    assert_eq!(newest.from.len(), 1);
    let mut all = first.messages.clone();
    let mut token = first.next_page_token.clone();
    while !token.is_empty() {
        let page = list(
            &app,
            &ann_token,
            spb::ListMessagesRequest {
                mailbox_id: mailbox.id.clone(),
                page_size: 20,
                filter: "folder = \"INBOX\"".into(),
                page_token: token.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("next page");
        all.extend(page.messages);
        token = page.next_page_token;
    }
    let mut uids: Vec<u32> = all.iter().map(|m| m.uid).collect();
    uids.sort();
    assert_eq!(
        uids,
        (1..=45).collect::<Vec<u32>>(),
        "pages overlap or miss messages"
    );
    let unseen = list(
        &app,
        &ann_token,
        spb::ListMessagesRequest {
            mailbox_id: mailbox.id.clone(),
            page_size: 500,
            filter: "unseen = true AND folder = \"INBOX\"".into(),
            ..Default::default()
        },
    )
    .await
    .expect("unseen");
    assert_eq!(unseen.messages.len() as i64, inbox_unseen);
    // A token moved to another filter is refused.
    let moved = list(
        &app,
        &ann_token,
        spb::ListMessagesRequest {
            mailbox_id: mailbox.id.clone(),
            page_size: 20,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        },
    )
    .await
    .expect_err("a token of another query");
    assert_eq!(moved.code(), Code::InvalidArgument);

    // The body comes from the server.
    let body = app
        .sync()
        .get_message_body(authed(
            &ann_token,
            spb::GetMessageBodyRequest {
                mailbox_id: mailbox.id.clone(),
                folder: "INBOX".into(),
                uid: newest.uid,
            },
        ))
        .await
        .expect("the owner reads the body")
        .into_inner();
    assert!(String::from_utf8_lossy(&body.raw).contains(&newest.message_id));

    // The admin sees the status but reads nothing without a grant.
    let admin_status = status(&app, &org.admin_token, &mailbox.id)
        .await
        .expect("admin views status");
    assert_eq!(
        admin_status.folders.iter().map(|f| f.messages).sum::<i64>(),
        50
    );
    let denied = list(
        &app,
        &org.admin_token,
        spb::ListMessagesRequest {
            mailbox_id: mailbox.id.clone(),
            ..Default::default()
        },
    )
    .await
    .expect_err("admins do not read mail without a grant");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains("mailbox.read_mail"),
        "{}",
        denied.message()
    );
    let denied = app
        .sync()
        .get_message_body(authed(
            &org.admin_token,
            spb::GetMessageBodyRequest {
                mailbox_id: mailbox.id.clone(),
                folder: "INBOX".into(),
                uid: newest.uid,
            },
        ))
        .await
        .expect_err("nor bodies");
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Granted, the admin reads.
    app.write_when_known(
        &org.admin_token,
        vec![access::on_mailbox(&mailbox.id, "reader", &org.admin_id)],
    )
    .await;
    let read = list_when_known(
        &app,
        &org.admin_token,
        spb::ListMessagesRequest {
            mailbox_id: mailbox.id.clone(),
            page_size: 5,
            ..Default::default()
        },
    )
    .await
    .expect("a granted admin reads");
    assert_eq!(read.messages.len(), 5);

    // Another organisation cannot tell the mailbox exists.
    let other = app.create_org(5).await;
    let unknown_id = uuid::Uuid::new_v4().to_string();
    let foreign = status(&app, &other.admin_token, &mailbox.id)
        .await
        .expect_err("foreign");
    let unknown = status(&app, &other.admin_token, &unknown_id)
        .await
        .expect_err("unknown");
    assert_eq!(foreign.code(), Code::NotFound);
    assert_eq!(foreign.code(), unknown.code());
    assert_eq!(
        foreign.message().replace(&mailbox.id, "ID"),
        unknown.message().replace(&unknown_id, "ID")
    );

    // New mail on the server reaches the registry after "sync now".
    append_samples(&mut imap, "INBOX", 45, 48, &user.username).await;
    app.mailboxes()
        .sync_mailbox_now(authed(
            &ann_token,
            mpb::SyncMailboxNowRequest {
                id: mailbox.id.clone(),
            },
        ))
        .await
        .expect("sync now");
    registry_until(&app, &org.admin_token, &mailbox.id, "the new mail", |m| {
        m.message_count == 53
    })
    .await;
    assert_eq!(server_messages(&mut imap).await.len(), 53);
    let _ = imap.logout().await;
}

/// How many events of `event_type` the sync service wrote for `mailbox`.
async fn sync_events(app: &TestApp, mailbox: &str, event_type: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM sync.outbox WHERE record_key = $1 AND headers->>'event-type' = $2",
    )
    .bind(mailbox)
    .bind(event_type)
    .fetch_one(&app.pool)
    .await
    .expect("read the sync outbox");
    n
}

#[tokio::test]
async fn a_wrong_password_parks_the_mailbox_once_and_an_update_unparks_it() {
    let app = spawn_app_with_sync().await;
    let org = app.create_org(50).await;
    let mut user = new_mail_user();
    let mut imap = user.session().await;
    append_samples(&mut imap, "INBOX", 0, 10, &user.username).await;
    let _ = imap.logout().await;
    let mailbox = connect(&app, &org, &org.admin_id, &user).await;
    registry_until(&app, &org.admin_token, &mailbox.id, "the first sync", |m| {
        m.message_count == 10
    })
    .await;

    // The password changes on the server; the registry still has the old one.
    let old_password = user.password.clone();
    user.set_server_password("changed-on-the-server").await;
    let sync_now = || async {
        app.mailboxes()
            .sync_mailbox_now(authed(
                &org.admin_token,
                mpb::SyncMailboxNowRequest {
                    id: mailbox.id.clone(),
                },
            ))
            .await
            .expect("sync now");
    };
    sync_now().await;
    let parked = registry_until(&app, &org.admin_token, &mailbox.id, "AUTH_FAILED", |m| {
        m.sync_state == mpb::SyncState::AuthFailed as i32
    })
    .await;
    assert!(
        parked.sync_error.contains("update the mailbox's password"),
        "{}",
        parked.sync_error
    );
    assert!(!parked.sync_error.contains(&old_password));
    let st = status(&app, &org.admin_token, &mailbox.id)
        .await
        .expect("status");
    assert!(
        st.next_sync_time.is_none(),
        "a parked mailbox is not planned: {st:?}"
    );
    assert!(st.last_error.starts_with("parked"), "{}", st.last_error);

    // Asked again, the registry says why not; the sync neither retries nor reports again.
    let refused = app
        .mailboxes()
        .sync_mailbox_now(authed(
            &org.admin_token,
            mpb::SyncMailboxNowRequest {
                id: mailbox.id.clone(),
            },
        ))
        .await
        .expect_err("a parked mailbox is not synced on request");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("parked"),
        "{}",
        refused.message()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sync_events(&app, &mailbox.id, "mailroom.events.v1.MailboxSyncFailed").await,
        1,
        "a parked mailbox's failure is reported once"
    );

    // The admin updates the password: the registry checks it, the sync un-parks and syncs.
    app.mailboxes()
        .update_mailbox(authed(
            &org.admin_token,
            mpb::UpdateMailboxRequest {
                mailbox: Some(mpb::Mailbox {
                    id: mailbox.id.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["password".into()],
                }),
                password: user.password.clone(),
            },
        ))
        .await
        .expect("update the password");
    let back = registry_until(&app, &org.admin_token, &mailbox.id, "OK again", |m| {
        m.sync_state == mpb::SyncState::Ok as i32
    })
    .await;
    assert_eq!(back.message_count, 10);
    let st = status(&app, &org.admin_token, &mailbox.id)
        .await
        .expect("status");
    assert!(
        st.next_sync_time.is_some() && st.last_error.is_empty(),
        "{st:?}"
    );
}

#[tokio::test]
async fn an_active_owner_is_planned_sooner_than_a_dormant_one_and_a_heartbeat_pulls_the_sync_in() {
    let app = spawn_app_with_sync().await;
    let org = app.create_org(50).await;
    let ann = app.create_user(&org, "ann", "").await;
    let bob = app.create_user(&org, "bob", "").await;
    let ann_token = app.login(&ann.login_email).await.expect("ann").access_token;
    let (ann_box, bob_box) = (new_mail_user(), new_mail_user());
    for u in [&ann_box, &bob_box] {
        let mut imap = u.session().await;
        append_samples(&mut imap, "INBOX", 0, 3, &u.username).await;
        let _ = imap.logout().await;
    }
    let ann_mailbox = connect(&app, &org, &ann.id, &ann_box).await;
    let bob_mailbox = connect(&app, &org, &bob.id, &bob_box).await;
    for m in [&ann_mailbox, &bob_mailbox] {
        registry_until(&app, &org.admin_token, &m.id, "the first sync", |x| {
            x.message_count == 3
        })
        .await;
    }
    let planned = |st: &spb::SyncStatus| secs(&st.next_sync_time) - secs(&st.last_sync_time);
    // Waits for a status of `mailbox` that `wanted` accepts (syncs already asked for, such
    // as the registry's at connect and the scheduler's first, finish meanwhile).
    let until =
        |mailbox: String, what: &'static str, wanted: Box<dyn Fn(&spb::SyncStatus) -> bool>| {
            let app = &app;
            let org = &org;
            async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let st = status(app, &org.admin_token, &mailbox)
                        .await
                        .expect("status");
                    if wanted(&st) {
                        return st;
                    }
                    assert!(Instant::now() < deadline, "never {what}: {st:?}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
    let day = |st: &spb::SyncStatus| (86_390..=86_410).contains(&planned(st));
    let ann_before = until(
        ann_mailbox.id.clone(),
        "planned a day out",
        Box::new(move |st| day(st)),
    )
    .await;
    let bob_status = until(
        bob_mailbox.id.clone(),
        "planned a day out",
        Box::new(move |st| day(st)),
    )
    .await;
    // Neither owner has been seen: both dormant, planned a day out.
    assert_eq!(bob_status.tier, spb::ActivityTier::Dormant as i32);
    let dormant = planned(&bob_status);

    // Ann opens a tab: her mailbox is due at once and, once synced, planned a minute out.
    let beat = app
        .sync()
        .record_activity(authed(
            &ann_token,
            spb::RecordActivityRequest {
                client: spb::ClientKind::WebTab as i32,
            },
        ))
        .await
        .expect("heartbeat")
        .into_inner();
    assert_eq!(beat.tier, spb::ActivityTier::Active as i32);
    // Pulled in from a day out to now (the scheduler may already have handed it out, which
    // holds it for the request timeout, 5 s here, or the sync may even be done).
    let before = nanos(&ann_before.last_sync_time);
    let pulled = status(&app, &org.admin_token, &ann_mailbox.id)
        .await
        .expect("status");
    let now = secs(&Some(prost_types::Timestamp::from(
        std::time::SystemTime::now(),
    )));
    assert!(
        secs(&pulled.next_sync_time) <= now + 6 || nanos(&pulled.last_sync_time) > before,
        "the heartbeat did not pull the next sync in: {pulled:?}"
    );
    let ann_after = until(
        ann_mailbox.id.clone(),
        "synced again and planned a minute out",
        Box::new(move |st| nanos(&st.last_sync_time) > before && planned(st) > 0),
    )
    .await;
    assert_eq!(ann_after.tier, spb::ActivityTier::Active as i32);
    let active = planned(&ann_after);
    assert!((50..=70).contains(&active), "active plan {active} s");
    assert!(
        active * 100 < dormant,
        "active {active} s vs dormant {dormant} s"
    );
    // Bob was left alone.
    let bob_now = status(&app, &org.admin_token, &bob_mailbox.id)
        .await
        .expect("status");
    assert_eq!(bob_now.tier, spb::ActivityTier::Dormant as i32);
    assert!(day(&bob_now), "{bob_now:?}");

    // Heartbeats come from people, for a known client.
    let service = app.service_token().await;
    let err = app
        .sync()
        .record_activity(authed(
            &service,
            spb::RecordActivityRequest {
                client: spb::ClientKind::WebTab as i32,
            },
        ))
        .await
        .expect_err("a service is not a person");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = app
        .sync()
        .record_activity(authed(&ann_token, spb::RecordActivityRequest { client: 0 }))
        .await
        .expect_err("the client is required");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_mailbox_whose_worker_died_holding_its_lease_is_taken_over() {
    let app = spawn_app_with_sync().await;
    let org = app.create_org(50).await;
    let user = new_mail_user();
    let mut imap = user.session().await;
    append_samples(&mut imap, "INBOX", 0, 5, &user.username).await;
    let mailbox = connect(&app, &org, &org.admin_id, &user).await;
    registry_until(&app, &org.admin_token, &mailbox.id, "the first sync", |m| {
        m.message_count == 5
    })
    .await;

    // A worker takes the lease and dies: it never renews or returns it.
    let redis =
        mailroom_platform::redis::connect(&secrecy::SecretString::from(app.env.redis_url.clone()))
            .await
            .expect("redis");
    let dead = mailroom_sync::lease::Leases::new(
        redis.clone(),
        "mailroom:sync:lease",
        "dead-worker",
        Duration::from_secs(3),
    );
    // (Once the live worker has finished the syncs asked for at connect.)
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dead.try_acquire(&mailbox.id).await.expect("lease") {
        assert!(
            Instant::now() < deadline,
            "the live worker never returned the lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    append_samples(&mut imap, "INBOX", 5, 9, &user.username).await;
    let asked = Instant::now();
    app.mailboxes()
        .sync_mailbox_now(authed(
            &org.admin_token,
            mpb::SyncMailboxNowRequest {
                id: mailbox.id.clone(),
            },
        ))
        .await
        .expect("sync now");
    registry_until(
        &app,
        &org.admin_token,
        &mailbox.id,
        "the new mail after the takeover",
        |m| m.message_count == 9,
    )
    .await;
    // Not before the dead worker's lease ran out.
    assert!(
        asked.elapsed() >= Duration::from_millis(2_500),
        "synced while the lease was held ({:?})",
        asked.elapsed()
    );
    let live = mailroom_sync::lease::Leases::new(
        redis,
        "mailroom:sync:lease",
        "observer",
        Duration::from_secs(3),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while live.holder_of(&mailbox.id).await.expect("holder").is_some() {
        assert!(Instant::now() < deadline, "the lease was not returned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = imap.logout().await;
}

#[tokio::test]
async fn an_active_owners_new_mail_is_indexed_within_seconds_through_idle() {
    let app = spawn_app_with_sync().await;
    let org = app.create_org(50).await;
    let ann = app.create_user(&org, "ann", "").await;
    let ann_token = app.login(&ann.login_email).await.expect("ann").access_token;
    let user = new_mail_user();
    let mut imap = user.session().await;
    append_samples(&mut imap, "INBOX", 0, 3, &user.username).await;
    let mailbox = connect(&app, &org, &ann.id, &user).await;
    registry_until(&app, &org.admin_token, &mailbox.id, "the first sync", |m| {
        m.message_count == 3
    })
    .await;

    // Ann opens a tab: once her mailbox is planned as active, a worker holds it in IDLE.
    app.sync()
        .record_activity(authed(
            &ann_token,
            spb::RecordActivityRequest {
                client: spb::ClientKind::DesktopApp as i32,
            },
        ))
        .await
        .expect("heartbeat");
    let redis =
        mailroom_platform::redis::connect(&secrecy::SecretString::from(app.env.redis_url.clone()))
            .await
            .expect("redis");
    let idle = mailroom_sync::lease::Leases::new(
        redis,
        "mailroom:sync:idle",
        "observer",
        Duration::from_secs(3),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while idle.holder_of(&mailbox.id).await.expect("holder").is_none() {
        assert!(
            Instant::now() < deadline,
            "no worker took the mailbox's IDLE lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The sync the heartbeat pulled in is done (the next is a minute away) and IDLE is on.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = status(&app, &org.admin_token, &mailbox.id)
            .await
            .expect("status");
        if secs(&st.next_sync_time) - secs(&st.last_sync_time) >= 50 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the active plan never settled: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let delivered = Instant::now();
    append_samples(&mut imap, "INBOX", 3, 4, &user.username).await;
    registry_until(
        &app,
        &org.admin_token,
        &mailbox.id,
        "the new message",
        |m| m.message_count == 4,
    )
    .await;
    let took = delivered.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "new mail took {took:?} to reach the index (IDLE should make it seconds)"
    );
    let _ = imap.logout().await;
}
