//! Issue 22's sync defects, found by using the sync as its people do, each checked against the
//! real Dovecot (the truth) through the registry and the sync's gRPC API: folders named with
//! quotes and backslashes are synced and counted; non-ASCII folder names are shown and found
//! as people write them; INBOX has no case; every filter condition must hold; a message whose
//! folder was deleted on the server is NOT_FOUND, not "retry"; a just-connected mailbox has a
//! PENDING status at once; a mailbox over its limit fails as LIMIT.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use mailroom_mail::imap::names::encode_utf7;
use mailroom_proto::events::v1 as ev;
use mailroom_tests::mailstore::{append_samples, new_mail_user, Imap, MailUser};
use mailroom_tests::{authed, mailboxes_pb as mpb, sync_pb as spb, TestApp, TestOrg};
use prost::Message as _;
use tonic::Code;

const ACME: &str = r#"Client "ACME" (2026)"#;
const BACKSLASH: &str = r"Scans\2026";
const WORK: &str = "Работа";
const TOM: &str = "Tom & Jerry";

fn server(var: &str, username: &str) -> mpb::ServerSettings {
    let value = std::env::var(var).unwrap_or_else(|_| panic!("{var} is set by .ci/test"));
    let (host, port) = value.rsplit_once(':').expect("host:port");
    mpb::ServerSettings {
        host: host.to_owned(),
        port: port.parse().expect("port"),
        security: mpb::Security::None as i32,
        username: username.into(),
    }
}

/// Connects `user`'s Dovecot mailbox for the organisation's admin (who, as its owner, reads
/// its mail).
async fn connect(app: &TestApp, org: &TestOrg, user: &MailUser) -> mpb::Mailbox {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let request = mpb::ConnectMailboxRequest {
            mailbox: Some(mpb::Mailbox {
                email: user.username.clone(),
                owner_user_id: org.admin_id.clone(),
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

/// The registry's row once the mailbox's first sync has reached it.
async fn first_sync(app: &TestApp, org: &TestOrg, mailbox: &str) -> mpb::Mailbox {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = app
            .mailboxes()
            .get_mailbox(authed(
                &org.admin_token,
                mpb::GetMailboxRequest { id: mailbox.into() },
            ))
            .await;
        match got {
            Ok(got) => {
                let got = got.into_inner();
                if got.last_sync_time.is_some() || got.sync_state == mpb::SyncState::Error as i32 {
                    return got;
                }
                assert!(Instant::now() < deadline, "never synced: {got:?}");
            }
            Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {}
            Err(s) => panic!("get mailbox: {s:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A fresh Dovecot user with `folders` made and filled (`(name, first sample, last sample)`),
/// connected and synced once.
struct Synced {
    app: TestApp,
    org: TestOrg,
    imap: Imap,
    mailbox: mpb::Mailbox,
}

async fn synced_mailbox(folders: &[(&str, usize, usize)]) -> Synced {
    let app = mailroom_tests::spawn_app_with_sync().await;
    let org = app.create_org(20).await;
    app.until_known(&org.admin_id).await;
    let user = new_mail_user();
    let mut imap = user.session().await;
    for (name, from, to) in folders {
        if *name != "INBOX" {
            imap.create(name).await.expect("CREATE");
        }
        append_samples(&mut imap, name, *from, *to, &user.username).await;
    }
    let connected = connect(&app, &org, &user).await;
    let mailbox = first_sync(&app, &org, &connected.id).await;
    Synced {
        app,
        org,
        imap,
        mailbox,
    }
}

/// Samples `from..to` that [`append_samples`] leaves unseen.
fn unseen(from: usize, to: usize) -> i64 {
    (from..to).filter(|n| n % 3 != 0).count() as i64
}

impl Synced {
    async fn list(&self, filter: &str) -> Result<Vec<spb::MessageSummary>, tonic::Status> {
        self.app
            .sync()
            .list_messages(authed(
                &self.org.admin_token,
                spb::ListMessagesRequest {
                    mailbox_id: self.mailbox.id.clone(),
                    page_size: 500,
                    filter: filter.into(),
                    ..Default::default()
                },
            ))
            .await
            .map(|r| r.into_inner().messages)
    }

    async fn listed(&self, filter: &str) -> Vec<spb::MessageSummary> {
        self.list(filter)
            .await
            .unwrap_or_else(|s| panic!("list `{filter}`: {s:?}"))
    }

    async fn body(&self, folder: &str, uid: u32) -> Result<Vec<u8>, tonic::Status> {
        self.app
            .sync()
            .get_message_body(authed(
                &self.org.admin_token,
                spb::GetMessageBodyRequest {
                    mailbox_id: self.mailbox.id.clone(),
                    folder: folder.into(),
                    uid,
                },
            ))
            .await
            .map(|r| r.into_inner().raw)
    }

    async fn status(&self) -> spb::SyncStatus {
        status(&self.app, &self.org.admin_token, &self.mailbox.id)
            .await
            .expect("status")
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

fn folders_of(messages: &[spb::MessageSummary]) -> BTreeSet<String> {
    messages.iter().map(|m| m.folder.clone()).collect()
}

// Item 8: `Client "ACME" (2026)` was stored with its escapes, could not be opened, and was
// skipped without a word: its mail was missing and the counts short.
#[tokio::test]
async fn folders_named_with_quotes_and_backslashes_are_synced_counted_and_read() {
    let s = synced_mailbox(&[("INBOX", 0, 4), (ACME, 10, 13), (BACKSLASH, 20, 22)]).await;
    assert_eq!(
        (s.mailbox.message_count, s.mailbox.unread_count),
        (9, unseen(0, 4) + unseen(10, 13) + unseen(20, 22)),
        "every folder's mail is counted: {:?}",
        s.mailbox
    );
    assert!(s.mailbox.sync_error.is_empty(), "{}", s.mailbox.sync_error);

    let acme = s.listed(r#"folder = 'Client "ACME" (2026)'"#).await;
    assert_eq!(acme.len(), 3, "{acme:?}");
    assert_eq!(folders_of(&acme), BTreeSet::from([ACME.to_owned()]));
    let scans = s.listed(r#"folder = "Scans\\2026""#).await;
    assert_eq!(folders_of(&scans), BTreeSet::from([BACKSLASH.to_owned()]));
    assert_eq!(scans.len(), 2);

    // Read from the server under the name it has there.
    for m in [&acme[0], &scans[0]] {
        let raw = s.body(&m.folder, m.uid).await.expect("the body");
        assert!(
            String::from_utf8_lossy(&raw).contains(&m.message_id),
            "{}",
            m.folder
        );
    }
    let st = s.status().await;
    let names: BTreeSet<&str> = st.folders.iter().map(|f| f.name.as_str()).collect();
    assert!(
        names.contains(ACME) && names.contains(BACKSLASH),
        "{names:?}"
    );
    assert!(st.last_error.is_empty(), "{}", st.last_error);
}

// Item 9: names were stored and shown in modified UTF-7 (`&BCAEMAQxBD4EQgQw-`), and a filter
// on "Работа" found nothing.
#[tokio::test]
async fn non_ascii_folder_names_are_shown_and_found_as_people_write_them() {
    let (work, tom) = (encode_utf7(WORK), encode_utf7(TOM));
    assert_eq!(
        (work.as_str(), tom.as_str()),
        ("&BCAEMAQxBD4EQgQw-", "Tom &- Jerry")
    );
    let s = synced_mailbox(&[("INBOX", 0, 2), (&work, 10, 13), (&tom, 20, 22)]).await;
    assert_eq!(s.mailbox.message_count, 7, "{:?}", s.mailbox);

    let found = s.listed(r#"folder = "Работа""#).await;
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(folders_of(&found), BTreeSet::from([WORK.to_owned()]));
    assert_eq!(s.listed(r#"folder = "Tom & Jerry""#).await.len(), 2);
    // The server's spelling still finds the folder.
    assert_eq!(s.listed(&format!("folder = \"{work}\"")).await.len(), 3);
    assert_eq!(
        folders_of(&s.listed("").await),
        BTreeSet::from(["INBOX".to_owned(), WORK.to_owned(), TOM.to_owned()])
    );

    // Read by the name people see.
    let raw = s.body(WORK, found[0].uid).await.expect("the body");
    assert!(String::from_utf8_lossy(&raw).contains(&found[0].message_id));
    let st = s.status().await;
    let shown = st
        .folders
        .iter()
        .find(|f| f.name == WORK)
        .unwrap_or_else(|| panic!("no `{WORK}` in {st:?}"));
    assert_eq!(
        (shown.imap_name.as_str(), shown.messages),
        (work.as_str(), 3)
    );
}

// Item 10: `folder = "inbox"` listed nothing and reading from "inbox" failed.
#[tokio::test]
async fn inbox_is_inbox_in_any_case() {
    let s = synced_mailbox(&[("INBOX", 0, 3)]).await;
    for spelling in ["inbox", "Inbox", "INBOX"] {
        let listed = s.listed(&format!("folder = \"{spelling}\"")).await;
        assert_eq!(listed.len(), 3, "`{spelling}`");
        assert_eq!(folders_of(&listed), BTreeSet::from(["INBOX".to_owned()]));
        let raw = s
            .body(spelling, listed[0].uid)
            .await
            .unwrap_or_else(|e| panic!("read from `{spelling}`: {e:?}"));
        assert!(String::from_utf8_lossy(&raw).contains(&listed[0].message_id));
    }
}

// Item 11: `folder = "INBOX" AND folder = "Archive"` returned Archive's mail (the last
// condition won), and `unseen = true AND unseen = false` returned mail.
#[tokio::test]
async fn every_condition_of_a_filter_must_hold() {
    let s = synced_mailbox(&[("INBOX", 0, 6), ("Archive", 10, 13)]).await;
    for filter in [
        r#"folder = "INBOX" AND folder = "Archive""#,
        r#"folder = "Archive" AND folder = "INBOX""#,
        r#"folder = "Archive" AND folder = "No such folder""#,
        "unseen = true AND unseen = false",
        r#"unseen = false AND folder = "INBOX" AND unseen = true"#,
    ] {
        let listed = s.listed(filter).await;
        assert!(
            listed.is_empty(),
            "`{filter}` matched {:?}",
            listed
                .iter()
                .map(|m| (&m.folder, m.uid))
                .collect::<Vec<_>>()
        );
    }
    // The same folder twice is one condition; `unseen = false` is seen mail only.
    assert_eq!(
        s.listed(r#"folder = "INBOX" AND folder = "inbox""#)
            .await
            .len(),
        6
    );
    let seen = s.listed("unseen = false").await;
    assert_eq!(seen.len() as i64, 9 - unseen(0, 6) - unseen(10, 13));
    assert!(seen.iter().all(|m| m.flags.iter().any(|f| f == "\\Seen")));
    let archive_unseen = s.listed(r#"unseen = true AND folder = "Archive""#).await;
    assert_eq!(archive_unseen.len() as i64, unseen(10, 13));
}

// Item 12: a message whose folder was deleted on the server answered UNAVAILABLE "retry with
// back-off" with Dovecot's raw text; retrying never helps.
#[tokio::test]
async fn a_message_whose_folder_was_deleted_on_the_server_is_not_found() {
    let mut s = synced_mailbox(&[("INBOX", 0, 3), ("Old Projects", 10, 12)]).await;
    let old = s.listed(r#"folder = "Old Projects""#).await;
    assert_eq!(old.len(), 2);
    let inbox = s.listed(r#"folder = "INBOX""#).await;
    s.imap.delete("Old Projects").await.expect("DELETE");

    for attempt in 0..2 {
        let err = s
            .body("Old Projects", old[0].uid)
            .await
            .expect_err("the folder is gone");
        assert_eq!(err.code(), Code::NotFound, "attempt {attempt}: {err:?}");
        let said = err.message();
        assert!(
            said.contains("Old Projects") && said.contains("no longer on the mail server"),
            "{said}"
        );
        for debug in ["code:", "info:", "Some(", "retry", "doesn't exist"] {
            assert!(!said.contains(debug), "`{debug}` in: {said}");
        }
    }

    // A message expunged on the server, in a folder that is still there: NOT_FOUND too.
    s.imap.select("INBOX").await.expect("SELECT");
    s.imap
        .uid_store(inbox[0].uid.to_string(), "+FLAGS (\\Deleted)")
        .await
        .expect("STORE")
        .collect::<Vec<_>>()
        .await;
    s.imap
        .expunge()
        .await
        .expect("EXPUNGE")
        .collect::<Vec<_>>()
        .await;
    let err = s
        .body("INBOX", inbox[0].uid)
        .await
        .expect_err("the message is gone");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // Asked for by the reads, the next sync drops what the server no longer has.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = s.status().await;
        let gone = !st.folders.iter().any(|f| f.name == "Old Projects");
        let inbox = st.folders.iter().find(|f| f.name == "INBOX");
        if gone && inbox.is_some_and(|f| f.messages == 2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the index kept up nothing: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// Item 13: GetSyncStatus answered NOT_FOUND for a moment after ConnectMailbox succeeded.
#[tokio::test]
async fn a_just_connected_mailbox_has_a_pending_status_at_once() {
    let app = mailroom_tests::spawn_app_with_sync().await;
    let org = app.create_org(20).await;
    let other = app.create_org(5).await;
    let user = new_mail_user();
    let mut imap = user.session().await;
    append_samples(&mut imap, "INBOX", 0, 3, &user.username).await;
    // (Access control follows identity's events: it must know the admin to answer for them.)
    app.until_known(&org.admin_id).await;
    let mailbox = connect(&app, &org, &user).await;

    let first = status(&app, &org.admin_token, &mailbox.id)
        .await
        .expect("a connected mailbox has a status at once");
    assert_eq!(first.state, spb::SyncState::Pending as i32, "{first:?}");
    assert!(first.last_sync_time.is_none() && first.last_error.is_empty());
    // Another organisation still cannot tell it exists.
    let unknown_id = uuid::Uuid::new_v4().to_string();
    let foreign = status(&app, &other.admin_token, &mailbox.id)
        .await
        .expect_err("foreign");
    let unknown = status(&app, &other.admin_token, &unknown_id)
        .await
        .expect_err("unknown");
    assert_eq!(
        (foreign.code(), unknown.code()),
        (Code::NotFound, Code::NotFound)
    );
    assert_eq!(
        foreign.message().replace(&mailbox.id, "ID"),
        unknown.message().replace(&unknown_id, "ID")
    );

    // Never NOT_FOUND on the way to its first sync, which ends OK.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let st = status(&app, &org.admin_token, &mailbox.id)
            .await
            .expect("a status all along");
        if st.state == spb::SyncState::Ok as i32 {
            assert!(st.last_sync_time.is_some(), "{st:?}");
            assert_eq!(st.folders.iter().map(|f| f.messages).sum::<i64>(), 3);
            break;
        }
        assert_eq!(st.state, spb::SyncState::Pending as i32, "{st:?}");
        assert!(Instant::now() < deadline, "never synced: {st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = imap.logout().await;
}

/// The MailboxSyncFailed events the sync wrote for `mailbox`.
async fn failures(app: &TestApp, mailbox: &str) -> Vec<ev::MailboxSyncFailed> {
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as(
        "SELECT payload FROM sync.outbox WHERE record_key = $1 \
         AND headers->>'event-type' = 'mailroom.events.v1.MailboxSyncFailed' ORDER BY seq",
    )
    .bind(mailbox)
    .fetch_all(&app.pool)
    .await
    .expect("read the sync outbox");
    rows.into_iter()
        .filter_map(
            |(payload,)| match ev::Envelope::decode(payload.as_slice()).ok()?.payload? {
                ev::envelope::Payload::MailboxSyncFailed(failed) => Some(failed),
                _ => None,
            },
        )
        .collect()
}

// The failure kinds gained `limit`, but it went out as PROTOCOL.
#[tokio::test]
async fn a_mailbox_over_its_limit_fails_as_limit() {
    let mut app = mailroom_tests::spawn_app_with_mailboxes().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop_on_return = stop.clone().drop_guard();
    let sync = app
        .start_sync(stop, |c| c.max_messages_per_mailbox = 2)
        .await;
    app.sync = Some(sync);
    let org = app.create_org(20).await;
    let user = new_mail_user();
    let mut imap = user.session().await;
    append_samples(&mut imap, "INBOX", 0, 5, &user.username).await;
    let mailbox = connect(&app, &org, &user).await;

    let deadline = Instant::now() + Duration::from_secs(90);
    let failed = loop {
        if let Some(failed) = failures(&app, &mailbox.id).await.into_iter().next() {
            break failed;
        }
        assert!(Instant::now() < deadline, "the sync never failed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        ev::SyncFailureKind::try_from(failed.kind),
        Ok(ev::SyncFailureKind::Limit),
        "{failed:?}"
    );
    assert!(
        failed
            .message
            .contains("MAILROOM_SYNC__MAX_MESSAGES_PER_MAILBOX"),
        "{}",
        failed.message
    );
    assert!(!failed.parked);
    let st = status(&app, &org.admin_token, &mailbox.id)
        .await
        .expect("status");
    assert_eq!(st.state, spb::SyncState::Error as i32, "{st:?}");
    let _ = imap.logout().await;
}
