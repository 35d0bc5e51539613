//! A mailbox password goes to the mail server and nowhere else: not into a response, an event,
//! a log line (captured here at TRACE, every crate's, `log` records included) or the database
//! in plain text; and rotating the sealing key keeps every mailbox usable.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use mailroom_tests::{authed, mailboxes_pb as mpb, spawn_app_with_mailboxes};
use prost::Message as _;
use tokio_util::sync::CancellationToken;

/// Dovecot's password for box01..box24@bulk.test.
const SECRET: &str = "bulk-pass";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The forms a password could leak in: as is, base64 (SMTP AUTH PLAIN/LOGIN), hex.
fn leaks(haystack: &[u8]) -> Vec<&'static str> {
    let plain = SECRET.as_bytes().to_vec();
    let b64 = base64::engine::general_purpose::STANDARD
        .encode(SECRET)
        .into_bytes();
    let hex = hex_of(SECRET).into_bytes();
    let mut found = Vec::new();
    for (name, needle) in [("plain", plain), ("base64", b64), ("hex", hex)] {
        if haystack
            .windows(needle.len())
            .any(|w| w == needle.as_slice())
        {
            found.push(name);
        }
    }
    found
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn server(var: &str) -> mpb::ServerSettings {
    let value = std::env::var(var).expect("set by .ci/test");
    let (host, port) = value.rsplit_once(':').unwrap();
    mpb::ServerSettings {
        host: host.into(),
        port: port.parse().unwrap(),
        security: mpb::Security::None as i32,
        username: String::new(),
    }
}

#[tokio::test]
async fn passwords_reach_only_the_mail_server_and_survive_a_key_rotation() {
    let captured = Captured::default();
    let writer = captured.clone();
    // Everything at TRACE, with only the platform's own guard against credential-bearing
    // targets (what every service's logging installs).
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_env_filter(mailroom_platform::telemetry::with_secret_guards(
            tracing_subscriber::EnvFilter::new("trace"),
        ))
        .with_ansi(false)
        .try_init()
        .expect("the capturing subscriber is the process's first");

    let app = spawn_app_with_mailboxes().await;
    let org = app.create_org(0).await;
    let request = |n: u32| mpb::ConnectMailboxRequest {
        mailbox: Some(mpb::Mailbox {
            email: format!("box{n:02}@bulk.test"),
            imap: Some(server("MAILROOM_IMAP_ADDR")),
            smtp: Some(server("MAILROOM_SUBMISSION_ADDR")),
            ..Default::default()
        }),
        password: SECRET.into(),
        validate_only: false,
    };
    let mut responses: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        match app
            .mailboxes()
            .connect_mailbox(authed(&org.admin_token, request(1)))
            .await
        {
            Ok(m) => break m.into_inner(),
            Err(s) if Instant::now() < deadline => {
                responses.push(format!("{s:?}"));
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(s) => panic!("connect: {s:?}"),
        }
    };
    responses.push(format!("{first:?}"));
    let second = app
        .mailboxes()
        .connect_mailbox(authed(&org.admin_token, request(2)))
        .await
        .expect("second mailbox")
        .into_inner();
    // A wrong password's refusal quotes the server, never the password.
    let mut wrong = request(3);
    wrong.password = format!("{SECRET}-wrong");
    let refusal = app
        .mailboxes()
        .connect_mailbox(authed(&org.admin_token, wrong))
        .await
        .unwrap_err();
    responses.push(format!("{refusal:?}"));
    for id in [&first.id, &second.id] {
        // Access control hears of the admin from identity's events a moment after sign-in.
        let deadline = Instant::now() + Duration::from_secs(20);
        let got = loop {
            match app
                .mailboxes()
                .get_mailbox(authed(
                    &org.admin_token,
                    mpb::GetMailboxRequest { id: id.clone() },
                ))
                .await
            {
                Ok(got) => break got.into_inner(),
                Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(s) => panic!("get: {s:?}"),
            }
        };
        responses.push(format!("{got:?}"));
    }
    let listed = app
        .mailboxes()
        .list_mailboxes(authed(
            &org.admin_token,
            mpb::ListMailboxesRequest {
                read_mask: Some(prost_types::FieldMask {
                    paths: [
                        "employee",
                        "email",
                        "name",
                        "sender_name",
                        "imap",
                        "smtp",
                        "crm",
                        "sync_state",
                        "disk_mb",
                        "access_by",
                        "create_time",
                    ]
                    .map(String::from)
                    .to_vec(),
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    responses.push(format!("{:?}", listed.into_inner()));
    assert!(
        leaks(responses.join("\n").as_bytes()).is_empty(),
        "a response carries the password"
    );

    // The database holds it sealed only.
    let rows: Vec<String> = sqlx::query_scalar("SELECT m::text FROM mailboxes.mailboxes m")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        leaks(rows.join("\n").as_bytes()).is_empty(),
        "a row holds the password in the clear"
    );
    let sealed: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT password_sealed FROM mailboxes.mailboxes")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert!(sealed
        .iter()
        .all(|s| leaks(s).is_empty() && s.len() > SECRET.len() + 16));

    // No event carries it: every record of this organisation on the registry's topics, read
    // back from the broker, until the last one it published (the second mailbox's sync request).
    let seen = std::sync::atomic::AtomicUsize::new(0);
    for (topic, last) in [
        (
            mailroom_platform::kafka::Topic::MailboxesEvents,
            "mailroom.events.v1.SyncRequested",
        ),
        (
            mailroom_platform::kafka::Topic::SyncRequests,
            "mailroom.events.v1.SyncRequested",
        ),
    ] {
        let found = app
            .wait_for_event(topic, Duration::from_secs(30), |e| {
                if e.org_id != org.id {
                    return false;
                }
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                assert!(
                    leaks(&e.encode_to_vec()).is_empty(),
                    "event {} carries the password",
                    e.r#type
                );
                e.r#type == last && e.aggregate_id == second.id
            })
            .await;
        assert!(found.is_some(), "the registry's events reached {topic:?}");
    }
    assert!(
        seen.into_inner() >= 2,
        "the records of this organisation were read"
    );

    // Rotation: a replica with a new key first re-seals everything while the old one runs…
    let old_key = app.sealing_keys[0].clone();
    let new_key = mailroom_platform::sealed::SealingKeys::generate("k2");
    let stop = CancellationToken::new();
    let (_, access_endpoint) = app.start_access_replica(stop.clone()).await;
    let rotated = app
        .start_mailboxes(
            &access_endpoint,
            vec![new_key.clone(), old_key],
            stop.clone(),
        )
        .await;
    let service = app.service_token().await;
    let admin_refused = rotated
        .clone()
        .reseal_credentials(authed(
            &org.admin_token,
            mpb::ResealCredentialsRequest { batch_size: 1 },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        admin_refused.code(),
        tonic::Code::PermissionDenied,
        "an org admin is not the operator"
    );
    let step = rotated
        .clone()
        .reseal_credentials(authed(
            &service,
            mpb::ResealCredentialsRequest { batch_size: 1 },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (step.resealed, step.remaining, step.key_id.as_str()),
        (1, 1, "k2")
    );
    let step = rotated
        .clone()
        .reseal_credentials(authed(
            &service,
            mpb::ResealCredentialsRequest { batch_size: 100 },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((step.resealed, step.remaining), (1, 0));
    let keys: Vec<String> = sqlx::query_scalar("SELECT password_key FROM mailboxes.mailboxes")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(keys, vec!["k2", "k2"]);
    stop.cancel();

    // …then one with the new key alone opens every password: a changed server re-checks the
    // login with the stored password, which only works if it opens.
    let stop = CancellationToken::new();
    let (_, access_endpoint) = app.start_access_replica(stop.clone()).await;
    let only_new = app
        .start_mailboxes(&access_endpoint, vec![new_key], stop.clone())
        .await;
    for id in [&first.id, &second.id] {
        let mut smtp = server("MAILROOM_SUBMISSION_ADDR");
        smtp.username = String::new();
        let updated = only_new
            .clone()
            .update_mailbox(authed(
                &org.admin_token,
                mpb::UpdateMailboxRequest {
                    mailbox: Some(mpb::Mailbox {
                        id: id.clone(),
                        smtp: Some(smtp),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["smtp".into()],
                    }),
                    password: String::new(),
                },
            ))
            .await
            .unwrap_or_else(|s| panic!("mailbox {id} after rotation: {s:?}"));
        assert_eq!(updated.into_inner().id, *id);
    }
    stop.cancel();

    let logs = captured.0.lock().unwrap().clone();
    assert!(
        logs.len() > 10_000,
        "the capture saw the services' logs ({} bytes)",
        logs.len()
    );
    assert!(
        String::from_utf8_lossy(&logs).contains("mailbox connected"),
        "the registry's own log lines were captured"
    );
    let text = String::from_utf8_lossy(&logs);
    let offending: Vec<String> = text
        .lines()
        .filter(|l| !leaks(l.as_bytes()).is_empty())
        .map(|l| l.replace(SECRET, "<PASSWORD>").chars().take(300).collect())
        .collect();
    assert!(
        offending.is_empty(),
        "log lines carry the password ({:?}): {offending:#?}",
        leaks(&logs)
    );
}
