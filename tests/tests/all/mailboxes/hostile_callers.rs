//! The registry against callers who mean harm (issue 20): an admin who points an employee's
//! mailbox at a server of theirs to receive her stored password, an organisation connecting
//! more mailboxes than it may (all at once, to race the count), a caller flooding "sync now",
//! and caller text that error messages would echo whole.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use mailroom_tests::recording_listener::{RecordingListener, Speaks};
use mailroom_tests::{spawn_app_with, AppOptions};
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use super::*;

/// A recording listener on 127.0.0.2 at `port` (a mail server's port on 127.0.0.1), so a
/// mailbox moved to it differs from its real server in the host alone; on another port if
/// that one is taken.
async fn trap(speaks: Speaks, port: u16) -> RecordingListener {
    let other_loopback = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    match RecordingListener::start_on(speaks, SocketAddr::new(other_loopback, port)).await {
        Ok(listener) => listener,
        Err(_) => RecordingListener::start_on(speaks, SocketAddr::new(other_loopback, 0))
            .await
            .expect("bind 127.0.0.2"),
    }
}

fn update(
    id: &str,
    paths: &[&str],
    imap: Option<mpb::ServerSettings>,
    smtp: Option<mpb::ServerSettings>,
    password: &str,
) -> mpb::UpdateMailboxRequest {
    mpb::UpdateMailboxRequest {
        mailbox: Some(mpb::Mailbox {
            id: id.into(),
            imap,
            smtp,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
        password: password.into(),
    }
}

#[tokio::test]
async fn moving_a_server_without_the_password_sends_the_stored_one_nowhere() {
    let app = spawn_app_with_mailboxes().await;
    let org = app.create_org(0).await;
    let employee = app.create_user(&org, "employee", "").await;
    let employee_token = sign_in(&app, &employee).await;
    let mailbox = connect_when_known(&app, &employee_token, &bulk(7), "").await;
    until_listable(&app, &org.admin_token).await;

    let imap_trap = trap(Speaks::Imap, imap().port as u16).await;
    let smtp_trap = trap(Speaks::Smtp, smtp().port as u16).await;
    let at_trap = |mut settings: mpb::ServerSettings, trap: &RecordingListener| {
        settings.host = trap.addr.ip().to_string();
        settings.port = i32::from(trap.port());
        settings
    };

    // The admin moves only the IMAP host, then only the SMTP host, to a server of theirs.
    let attempts = [
        (
            "imap",
            update(
                &mailbox.id,
                &["imap"],
                Some(at_trap(imap(), &imap_trap)),
                None,
                "",
            ),
        ),
        (
            "smtp",
            update(
                &mailbox.id,
                &["smtp"],
                None,
                Some(at_trap(smtp(), &smtp_trap)),
                "",
            ),
        ),
    ];
    for (field, request) in attempts {
        let refused = app
            .mailboxes()
            .update_mailbox(authed(&org.admin_token, request))
            .await
            .expect_err("moving a server without the password is refused");
        assert!(
            matches!(
                refused.code(),
                Code::InvalidArgument | Code::FailedPrecondition
            ),
            "{field}: {refused:?}"
        );
        assert!(
            refused
                .message()
                .contains("give the mailbox password again to change the server"),
            "{field}: {}",
            refused.message()
        );
        assert!(!refused.message().contains(BULK_PASSWORD));
    }
    for (name, trap) in [("IMAP", &imap_trap), ("SMTP", &smtp_trap)] {
        assert!(
            !trap.holds_secret(BULK_PASSWORD),
            "the {name} listener received the stored password: {:?}",
            String::from_utf8_lossy(&trap.recorded())
        );
        assert_eq!(trap.connections(), 0, "nothing dialled the {name} listener");
    }

    // The port, the security and the username are where the password goes too.
    let mut other_port = imap();
    other_port.port = if other_port.port == 2143 { 2144 } else { 2143 };
    let mut other_user = smtp();
    other_user.username = format!("someone-else@{}", org.domain);
    let mut other_security = imap();
    other_security.security = mpb::Security::Starttls as i32;
    for request in [
        update(&mailbox.id, &["imap"], Some(other_port), None, ""),
        update(&mailbox.id, &["smtp"], None, Some(other_user), ""),
        update(&mailbox.id, &["imap"], Some(other_security), None, ""),
    ] {
        let refused = app
            .mailboxes()
            .update_mailbox(authed(&org.admin_token, request))
            .await
            .expect_err("a moved server without the password is refused");
        assert!(
            refused
                .message()
                .contains("give the mailbox password again"),
            "{refused:?}"
        );
    }

    // Nothing moved.
    let kept = app
        .mailboxes()
        .get_mailbox(authed(
            &org.admin_token,
            mpb::GetMailboxRequest {
                id: mailbox.id.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner();
    for (kept, was) in [(kept.imap, imap()), (kept.smtp, smtp())] {
        let kept = kept.expect("server settings");
        assert_eq!(
            (kept.host, kept.port, kept.security, kept.username),
            (was.host, was.port, was.security, bulk(7))
        );
    }

    // With a password given, that password (and only it) is what the new server is checked
    // with: the listener does record a login (so its silence above means something), and the
    // stored password is still not in it. (The unchanged SMTP server refuses the made-up
    // password, so nothing is saved either.)
    let typed = "typed-by-the-admin";
    let refused = app
        .mailboxes()
        .update_mailbox(authed(
            &org.admin_token,
            update(
                &mailbox.id,
                &["imap", "password"],
                Some(at_trap(imap(), &imap_trap)),
                None,
                typed,
            ),
        ))
        .await
        .expect_err("the real SMTP server refuses a made-up password");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("SMTP login failed"),
        "{refused:?}"
    );
    assert!(
        imap_trap.holds_secret(typed),
        "the listener records a login it is given: {:?}",
        String::from_utf8_lossy(&imap_trap.recorded())
    );
    assert!(!imap_trap.holds_secret(BULK_PASSWORD));

    // Settings as stored may be re-checked without the password: it goes back only to the
    // servers it was checked with.
    app.mailboxes()
        .update_mailbox(authed(
            &org.admin_token,
            update(
                &mailbox.id,
                &["imap", "smtp"],
                Some(imap()),
                Some(smtp()),
                "",
            ),
        ))
        .await
        .expect("the stored servers are checked again with the stored password");
}

/// The app with a registry of its own configured by `tweak` (identity and access as usual),
/// and the token that stops that registry.
async fn app_with_registry(
    tweak: impl FnOnce(&mut mailroom_mailboxes::MailboxesConfig),
) -> (TestApp, CancellationToken) {
    let mut app = spawn_app_with(AppOptions {
        with_access: true,
        ..AppOptions::default()
    })
    .await;
    let stop = CancellationToken::new();
    let access = app.access_endpoint.clone().expect("access runs");
    let (client, endpoint) = app
        .launch_mailboxes_with(&access, app.sealing_keys.clone(), stop.clone(), tweak)
        .await;
    app.mailboxes = Some(client);
    app.mailboxes_endpoint = Some(endpoint);
    (app, stop)
}

#[tokio::test]
async fn an_organisation_connects_no_more_mailboxes_than_its_limit_even_all_at_once() {
    const LIMIT: u64 = 3;
    let (app, stop) = app_with_registry(|c| c.max_mailboxes_per_org = LIMIT).await;
    let org = app.create_org(0).await;
    connect_when_known(&app, &org.admin_token, &bulk(1), "").await;

    // Six more at once, each item its own task: they race for the two places left. (That the
    // count holds however they interleave is `services/mailboxes/tests/org_limit.rs`'s.)
    let items: Vec<mpb::MailboxCredentials> = (2..=7)
        .map(|n| mpb::MailboxCredentials {
            email: bulk(n),
            password: BULK_PASSWORD.into(),
            ..Default::default()
        })
        .collect();
    let answer = app
        .mailboxes()
        .connect_mailboxes(authed(
            &org.admin_token,
            mpb::ConnectMailboxesRequest {
                mailboxes: items,
                imap: Some(imap()),
                smtp: Some(smtp()),
                validate_only: false,
            },
        ))
        .await
        .expect("bulk connect answers per item")
        .into_inner();
    let connected = answer
        .results
        .iter()
        .filter(|r| r.mailbox.is_some())
        .count();
    assert_eq!(connected, 2, "{:#?}", answer.results);
    for refused in answer.results.iter().filter(|r| r.mailbox.is_none()) {
        assert!(
            refused.error.contains("at most 3") && refused.error.contains("max_mailboxes_per_org"),
            "{}",
            refused.error
        );
    }
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM mailboxes.mailboxes WHERE org_id = $1::uuid")
            .bind(&org.id)
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(stored, LIMIT as i64);

    // One more alone: RESOURCE_EXHAUSTED naming the limit, before any login is tried.
    let refused = connect(&app, &org.admin_token, &bulk(8), "")
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("max_mailboxes_per_org"),
        "{}",
        refused.message()
    );

    // Another organisation is not affected.
    let other = app.create_org(0).await;
    connect_when_known(&app, &other.admin_token, &bulk(8), "").await;
    stop.cancel();
}

#[tokio::test]
async fn concurrent_bulk_connects_share_the_process_login_slots() {
    const SLOTS: usize = 2;
    let (app, stop) = app_with_registry(|c| c.login_concurrency = SLOTS).await;
    let org = app.create_org(0).await;
    connect_when_known(&app, &org.admin_token, &bulk(11), "").await;
    // An IMAP server that keeps each login waiting: how many it holds at once is how many
    // checks the registry runs at once.
    let slow = RecordingListener::start_holding(
        Speaks::Imap,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Duration::from_millis(400),
    )
    .await
    .expect("bind loopback");
    let mut slow_imap = imap();
    slow_imap.port = i32::from(slow.port());
    let request = |first: u32| {
        authed(
            &org.admin_token,
            mpb::ConnectMailboxesRequest {
                mailboxes: (first..first + 3)
                    .map(|n| mpb::MailboxCredentials {
                        email: bulk(n),
                        password: BULK_PASSWORD.into(),
                        ..Default::default()
                    })
                    .collect(),
                imap: Some(slow_imap.clone()),
                smtp: Some(smtp()),
                validate_only: true,
            },
        )
    };
    let (mut one, mut two) = (app.mailboxes(), app.mailboxes());
    let (a, b) = tokio::join!(
        one.connect_mailboxes(request(12)),
        two.connect_mailboxes(request(15))
    );
    for answer in [a, b] {
        let results = answer.expect("bulk connect").into_inner().results;
        assert!(results.iter().all(|r| r.mailbox.is_some()), "{results:#?}");
    }
    assert_eq!(slow.connections(), 6);
    assert!(
        slow.most_held() <= SLOTS,
        "{} logins at once from two requests; the process allows {SLOTS}",
        slow.most_held()
    );
    stop.cancel();
}

/// The `SyncRequested` records the registry's outbox holds for `mailbox` on the sync requests
/// topic, by reason.
async fn sync_requests(app: &TestApp, mailbox: &str, reason: &str) -> usize {
    let payloads: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT payload FROM mailboxes.outbox WHERE topic = $1 AND record_key = $2",
    )
    .bind(Topic::SyncRequests.default_name())
    .bind(mailbox)
    .fetch_all(&app.pool)
    .await
    .expect("read the registry's outbox");
    payloads
        .iter()
        .filter_map(|p| ev::Envelope::decode(p.as_slice()).ok())
        .filter(|e| {
            matches!(&e.payload, Some(ev::envelope::Payload::SyncRequested(r)) if r.reason == reason)
        })
        .count()
}

#[tokio::test]
async fn a_flood_of_sync_now_queues_one_sync_and_is_refused_beyond_the_rate() {
    const PER_MINUTE: u32 = 5;
    let (app, stop) = app_with_registry(|c| c.sync_now_per_minute = PER_MINUTE).await;
    let org = app.create_org(0).await;
    let mailbox = connect_when_known(&app, &org.admin_token, &bulk(9), "").await;
    until_listable(&app, &org.admin_token).await;

    let calls = (0..50).map(|_| {
        let client = app.mailboxes();
        let request = authed(
            &org.admin_token,
            mpb::SyncMailboxNowRequest {
                id: mailbox.id.clone(),
            },
        );
        async move {
            let mut client = client;
            client.sync_mailbox_now(request).await
        }
    });
    let answers = futures::future::join_all(calls).await;
    let mut queued_times = Vec::new();
    let mut exhausted = 0;
    for answer in answers {
        match answer {
            Ok(ok) => queued_times.push(ok.into_inner().queued_time.expect("a queued time")),
            Err(s) if s.code() == Code::ResourceExhausted => {
                assert!(
                    s.message().contains("sync requests") && s.message().contains("try again in"),
                    "{}",
                    s.message()
                );
                exhausted += 1;
            }
            Err(s) => panic!("sync now: {s:?}"),
        }
    }
    assert_eq!(
        queued_times.len(),
        PER_MINUTE as usize,
        "answered within the rate"
    );
    assert_eq!(exhausted, 50 - PER_MINUTE as usize);
    // Those let through all name the one sync queued.
    assert!(
        queued_times.windows(2).all(|w| w[0] == w[1]),
        "{queued_times:?}"
    );
    assert_eq!(
        sync_requests(&app, &mailbox.id, "sync_now").await,
        1,
        "fifty calls queued one sync"
    );
    stop.cancel();
}

#[tokio::test]
async fn caller_text_in_errors_is_bounded_and_escaped() {
    let app = spawn_app_with_mailboxes().await;
    let org = app.create_org(0).await;
    let mailbox = connect_when_known(&app, &org.admin_token, &bulk(10), "").await;
    until_listable(&app, &org.admin_token).await;
    let long = "x".repeat(4_000);
    for filter in [
        format!(r#"owner_user_id = "{long}""#),
        format!(r#"sync_state = "{long}""#),
        format!(r#"disk_mb > "{long}""#),
        format!(r#"last_sync_time < "{long}""#),
    ] {
        let refused = list(
            &app,
            &org.admin_token,
            mpb::ListMailboxesRequest {
                filter: filter.clone(),
                ..Default::default()
            },
        )
        .await
        .expect_err("a bad value is refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(
            refused.message().len() < 600 && refused.message().contains('…'),
            "{}: a {}-byte message",
            &filter[..20],
            refused.message().len()
        );
    }
    let refused = list(
        &app,
        &org.admin_token,
        mpb::ListMailboxesRequest {
            read_mask: Some(prost_types::FieldMask {
                paths: vec![long.clone()],
            }),
            ..Default::default()
        },
    )
    .await
    .expect_err("an unknown column");
    assert!(refused.message().len() < 600, "{}", refused.message().len());

    let odd_id = format!("\u{1b}[31m{long}");
    let refused = app
        .mailboxes()
        .get_mailbox(authed(
            &org.admin_token,
            mpb::GetMailboxRequest { id: odd_id.clone() },
        ))
        .await
        .expect_err("no such mailbox");
    assert_eq!(refused.code(), Code::NotFound);
    assert!(
        refused.message().len() < 200 && !refused.message().contains('\u{1b}'),
        "{:?}",
        refused.message()
    );
    let refused = app
        .mailboxes()
        .update_mailbox(authed(
            &org.admin_token,
            update(&mailbox.id, &[&odd_id], None, None, ""),
        ))
        .await
        .expect_err("an unknown path");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().len() < 400 && !refused.message().contains('\u{1b}'),
        "{:?}",
        refused.message()
    );
}
