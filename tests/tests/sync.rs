//! The sync service end to end with identity, access control and the registry, against the
//! real Dovecot, PostgreSQL, Redis and Kafka: a connected mailbox is synced and its counters
//! reach the registry's columns; only the owner (or someone granted) reads its mail; a wrong
//! password parks it and an update un-parks it; an active owner's mailbox is planned sooner
//! than a dormant one's and a heartbeat pulls the next sync in; a mailbox whose worker died
//! holding its lease is taken over.

use std::time::{Duration, Instant};

use mailroom_tests::mailstore::{append_samples, new_mail_user, server_messages, MailUser};
use mailroom_tests::{
    access, access_pb as apb, authed, mailboxes_pb as mpb, spawn_app_with_sync, sync_pb as spb,
    TestApp, TestOrg,
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
    let deadline = Instant::now() + Duration::from_secs(20);
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
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let got = app
            .mailboxes()
            .get_mailbox(authed(token, mpb::GetMailboxRequest { id: mailbox.into() }))
            .await
            .expect("get mailbox")
            .into_inner();
        if wanted(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "the registry never showed {what}: {got:?}"
        );
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
    let deadline = Instant::now() + Duration::from_secs(20);
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
    app.access()
        .write_relationships(authed(
            &org.admin_token,
            apb::WriteRelationshipsRequest {
                relationships: vec![access::on_mailbox(&mailbox.id, "reader", &org.admin_id)],
            },
        ))
        .await
        .expect("grant read access");
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
