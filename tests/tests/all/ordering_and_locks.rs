//! Ordering and locks (issue 21, item 5, and item 7's start-up check), against the real stack:
//! - the registry orders every sync-state change by the report's time, as it does the "last
//!   synced" columns: a failure report delivered late does not undo a repair or a newer sync,
//!   nor does one whose attempt began before the repair, however late the server refused;
//! - a slow mail server gets each invitation mail once, however long it takes to answer, with
//!   two replicas sending;
//! - a mail server that never finishes a send (a tarpit) holds an invitation mail only until
//!   the send's deadline: deferred, and sent once when the relay works again;
//! - an invitation being accepted holds no row lock while identity answers: an admin's revoke
//!   answers at once; an acceptance the invitee gives up on (the call dropped) releases its
//!   claim, so they can accept again at once;
//! - the sync refuses to start without a configured secret to sign its page tokens with.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mailroom_platform::kafka::{KafkaSettings, Topic};
use mailroom_proto::events::v1 as ev;
use mailroom_proto::invitations::v1 as ipb;
use mailroom_tests::{
    authed, mailboxes_pb as mpb, spawn_app_with_access, spawn_app_with_invitations,
    spawn_app_with_mailboxes, SmtpServer, TestApp, TestOrg,
};
use prost::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use tonic::Code;

// ---------------------------------------------------------------------------------------------
// The registry: sync reports in the order they happened.

fn server(var: &str) -> mpb::ServerSettings {
    let value = std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is set by .ci/test (the local Dovecot)"));
    let (host, port) = value.rsplit_once(':').expect("host:port");
    mpb::ServerSettings {
        host: host.to_owned(),
        port: port.parse().expect("port"),
        security: mpb::Security::None as i32,
        username: String::new(),
    }
}

/// Dovecot's bulk users' password (box01..box24@bulk.test).
const BULK_PASSWORD: &str = "bulk-pass";

async fn connect_bulk(app: &TestApp, org: &TestOrg, email: &str) -> mpb::Mailbox {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = app
            .mailboxes()
            .connect_mailbox(authed(
                &org.admin_token,
                mpb::ConnectMailboxRequest {
                    mailbox: Some(mpb::Mailbox {
                        email: email.into(),
                        owner_user_id: org.admin_id.clone(),
                        name: "Ordering".into(),
                        imap: Some(server("MAILROOM_IMAP_ADDR")),
                        smtp: Some(server("MAILROOM_SUBMISSION_ADDR")),
                        ..Default::default()
                    }),
                    password: BULK_PASSWORD.into(),
                    validate_only: false,
                },
            ))
            .await;
        match answer {
            Ok(m) => return m.into_inner(),
            // The registry or access control has not heard of the admin yet.
            Err(s)
                if matches!(s.code(), Code::NotFound | Code::Unavailable)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(s) => panic!("connect {email}: {s:?}"),
        }
    }
}

async fn mailbox(app: &TestApp, org: &TestOrg, id: &str) -> mpb::Mailbox {
    app.mailboxes()
        .get_mailbox(authed(
            &org.admin_token,
            mpb::GetMailboxRequest { id: id.into() },
        ))
        .await
        .expect("get mailbox")
        .into_inner()
}

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// What the sync service would report, as it would put it on the topic: made at `at`.
fn report(
    org: &str,
    mailbox: &str,
    at: DateTime<Utc>,
    payload: ev::envelope::Payload,
) -> ev::Envelope {
    let kind = match &payload {
        ev::envelope::Payload::MailboxSynced(_) => "mailroom.events.v1.MailboxSynced",
        _ => "mailroom.events.v1.MailboxSyncFailed",
    };
    ev::Envelope {
        id: uuid::Uuid::now_v7().to_string(),
        r#type: kind.into(),
        org_id: org.into(),
        aggregate_id: mailbox.into(),
        occurred_at: Some(timestamp(at)),
        payload: Some(payload),
        ..Default::default()
    }
}

fn synced(mailbox: &str, at: DateTime<Utc>, messages: i64) -> ev::envelope::Payload {
    ev::envelope::Payload::MailboxSynced(ev::MailboxSynced {
        mailbox_id: mailbox.into(),
        message_count: messages,
        unread_count: 1,
        disk_bytes: 4096,
        duration_ms: 10,
        new_messages: 0,
        synced_at: Some(timestamp(at)),
    })
}

fn login_refused(mailbox: &str) -> ev::envelope::Payload {
    login_refused_began(mailbox, None)
}

/// A refusal from an attempt that began (read the login) at `began`.
fn login_refused_began(mailbox: &str, began: Option<DateTime<Utc>>) -> ev::envelope::Payload {
    ev::envelope::Payload::MailboxSyncFailed(ev::MailboxSyncFailed {
        mailbox_id: mailbox.into(),
        kind: ev::SyncFailureKind::AuthFailed as i32,
        message: "the server refused the login".into(),
        parked: true,
        failures: 1,
        attempt_started_at: began.map(timestamp),
    })
}

/// Puts `event` on the app's sync events topic (keyed by mailbox, as the sync does) and waits
/// until the registry has applied it.
async fn deliver(app: &TestApp, producer: &FutureProducer, event: ev::Envelope) {
    let topic = app.topics.name(Topic::SyncEvents);
    let payload = event.encode_to_vec();
    producer
        .send(
            FutureRecord::to(&topic)
                .key(&event.aggregate_id)
                .payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .expect("produce");
    let id: uuid::Uuid = event.id.parse().expect("uuid");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let applied: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM mailboxes.processed_events WHERE event_id = $1",
        )
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .expect("processed events");
        if applied == 1 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the registry did not take {} within 30 s",
            event.r#type
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_late_failure_report_neither_undoes_a_repair_nor_a_newer_sync() {
    let app = spawn_app_with_mailboxes().await;
    let org = app.create_org(0).await;
    let kafka = KafkaSettings::from_config(app.platform());
    kafka
        .ensure_topics(&[Topic::SyncEvents])
        .await
        .expect("sync events topic");
    let producer: FutureProducer = kafka.producer().expect("producer");
    let m = connect_bulk(&app, &org, "box05@bulk.test").await;
    let state = |m: &mpb::Mailbox| mpb::SyncState::try_from(m.sync_state).unwrap_or_default();

    // The login is refused: parked.
    let refused_at = Utc::now();
    deliver(
        &app,
        &producer,
        report(&org.id, &m.id, refused_at, login_refused(&m.id)),
    )
    .await;
    assert_eq!(
        state(&mailbox(&app, &org, &m.id).await),
        mpb::SyncState::AuthFailed
    );

    // The owner gives the password again: repaired, waiting for its sync.
    let before_repair = Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.mailboxes()
        .update_mailbox(authed(
            &org.admin_token,
            mpb::UpdateMailboxRequest {
                mailbox: Some(mpb::Mailbox {
                    id: m.id.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["password".into()],
                }),
                password: BULK_PASSWORD.into(),
            },
        ))
        .await
        .expect("repair the password");
    assert_eq!(
        state(&mailbox(&app, &org, &m.id).await),
        mpb::SyncState::Pending
    );

    // A refusal from an attempt made before the repair, delivered only now: still repaired.
    deliver(
        &app,
        &producer,
        report(&org.id, &m.id, before_repair, login_refused(&m.id)),
    )
    .await;
    assert_eq!(
        state(&mailbox(&app, &org, &m.id).await),
        mpb::SyncState::Pending,
        "a failure from before the repair parked the repaired mailbox again"
    );
    // An attempt that read the old password before the repair, refused by a server that took
    // its time: reported after the repair, still of the settings the repair replaced.
    let reported_late = Utc::now();
    deliver(
        &app,
        &producer,
        report(
            &org.id,
            &m.id,
            reported_late,
            login_refused_began(&m.id, Some(before_repair)),
        ),
    )
    .await;
    assert_eq!(
        state(&mailbox(&app, &org, &m.id).await),
        mpb::SyncState::Pending,
        "a slow refusal of an attempt begun before the repair parked the repaired mailbox again"
    );

    // It syncs.
    let synced_at = Utc::now();
    deliver(
        &app,
        &producer,
        report(&org.id, &m.id, synced_at, synced(&m.id, synced_at, 7)),
    )
    .await;
    let now = mailbox(&app, &org, &m.id).await;
    assert_eq!((state(&now), now.message_count), (mpb::SyncState::Ok, 7));

    // A failure older than that sync, delivered after it: the mailbox stays OK.
    let older = synced_at - chrono::Duration::seconds(30);
    deliver(
        &app,
        &producer,
        report(&org.id, &m.id, older, login_refused(&m.id)),
    )
    .await;
    let now = mailbox(&app, &org, &m.id).await;
    assert_eq!(
        (state(&now), now.sync_error.as_str(), now.message_count),
        (mpb::SyncState::Ok, "", 7),
        "a failure older than the last sync changed the mailbox"
    );

    // A newer failure still counts, and an older success does not clear it.
    let failed_at = Utc::now();
    deliver(
        &app,
        &producer,
        report(&org.id, &m.id, failed_at, login_refused(&m.id)),
    )
    .await;
    assert_eq!(
        state(&mailbox(&app, &org, &m.id).await),
        mpb::SyncState::AuthFailed
    );
    let stale_success = failed_at - chrono::Duration::seconds(5);
    deliver(
        &app,
        &producer,
        report(
            &org.id,
            &m.id,
            stale_success,
            synced(&m.id, stale_success, 9),
        ),
    )
    .await;
    assert_eq!(
        state(&mailbox(&app, &org, &m.id).await),
        mpb::SyncState::AuthFailed,
        "a success older than the failure un-parked the mailbox"
    );
}

// ---------------------------------------------------------------------------------------------
// Invitations: one mail per invitation, and no row lock across a call to identity.

/// How long the slow server takes to answer each mail's DATA (it keeps the mail at once).
const SLOW_SECS: u64 = 6;

async fn invitation(client: &Client, org: &TestOrg, id: &str) -> ipb::Invitation {
    client
        .clone()
        .get_invitation(authed(
            &org.admin_token,
            ipb::GetInvitationRequest { id: id.into() },
        ))
        .await
        .expect("get invitation")
        .into_inner()
}

type Client = ipb::invitation_service_client::InvitationServiceClient<tonic::transport::Channel>;

/// The link token in an invitation mail (quoted-printable soft breaks undone).
fn mailed_token(raw: &str) -> String {
    let message = mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .expect("the mail parses");
    let body = message.body_text(0).expect("a text body");
    let marker = "https://mailroom.test/invite?token=";
    let start = body.find(marker).expect("the mail carries a link") + marker.len();
    body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mail_server_slower_than_the_lease_gets_each_invitation_once() {
    let app = spawn_app_with_access().await;
    let slow = SmtpServer::start();
    let stop = CancellationToken::new();
    // Two replicas sending, each one mail at a time, both to the slow server; a lease far
    // shorter than the server's answer.
    let tweak = |c: &mut mailroom_invitations::InvitationsConfig| {
        c.smtp.host = "127.0.0.1".into();
        c.smtp.port = slow.port;
        c.smtp.timeout_ms = 30_000;
        c.delivery_lease_ms = 2_000;
        c.delivery_concurrency = 1;
    };
    let first = app.start_invitations(stop.clone(), tweak).await;
    let _second = app.start_invitations(stop.clone(), tweak).await;
    let org = app.create_org(0).await;
    app.until_known(&org.admin_id).await;
    let addresses: Vec<String> = (1..=3)
        .map(|n| org.address(&format!("slow{SLOW_SECS}-invitee{n}")))
        .collect();
    let answer = first
        .clone()
        .create_invitations(authed(
            &org.admin_token,
            ipb::CreateInvitationsRequest {
                emails: addresses.join(", "),
                delivery: ipb::DeliveryMethod::SystemMail as i32,
                ..Default::default()
            },
        ))
        .await
        .expect("invite")
        .into_inner();
    assert_eq!(answer.invitations.len(), 3, "{:?}", answer.rejected);

    let deadline = Instant::now() + Duration::from_secs(90);
    for i in &answer.invitations {
        loop {
            let now = invitation(&first, &org, &i.id).await;
            if now.delivery_state == ipb::DeliveryState::Sent as i32 {
                break;
            }
            assert!(Instant::now() < deadline, "not sent: {now:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // Anything sent twice would have reached the server by now (it keeps a mail before it
    // answers); a lease running out meanwhile would have let the other replica send again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mails = slow.messages();
    for address in &addresses {
        let to_them: Vec<&String> = mails
            .iter()
            .filter(|m| {
                m.lines().any(|l| {
                    l.to_ascii_lowercase().starts_with("to:") && l.contains(address.as_str())
                })
            })
            .collect();
        assert_eq!(
            to_them.len(),
            1,
            "{address} got {} invitation mails from a server that took {SLOW_SECS} s to answer each",
            to_them.len()
        );
        // And the link in the one mail works.
        let token = mailed_token(to_them[0]);
        first
            .clone()
            .preview_invitation(ipb::PreviewInvitationRequest {
                token: token.clone(),
            })
            .await
            .unwrap_or_else(|s| panic!("the link mailed to {address} does not work: {s:?}"));
    }
    let sent: Vec<i32> = {
        let mut out = Vec::new();
        for i in &answer.invitations {
            out.push(invitation(&first, &org, &i.id).await.send_count);
        }
        out
    };
    assert_eq!(sent, [1, 1, 1], "send counts");
    stop.cancel();
}

/// A hostile mail server on a port of its own: it greets and takes every command at once, but
/// answers the end of a message only with a "still working" line every second, for ever (each
/// line in time for any per-command timeout). Stopped (every connection closed) on drop.
struct Tarpit {
    port: u16,
    tasks: tokio::task::JoinSet<()>,
}

impl Tarpit {
    async fn start() -> Self {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the tarpit");
        let port = listener.local_addr().expect("tarpit address").port();
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    if write.write_all(b"220 tarpit.test ESMTP\r\n").await.is_err() {
                        return;
                    }
                    let mut in_data = false;
                    while let Ok(Some(line)) = lines.next_line().await {
                        let answer: &[u8] = if in_data {
                            if line != "." {
                                continue;
                            }
                            loop {
                                if write.write_all(b"250-still checking\r\n").await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        } else {
                            let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                            match verb.as_str() {
                                "EHLO" | "HELO" => b"250 tarpit.test\r\n",
                                "DATA" => {
                                    in_data = true;
                                    b"354 go ahead\r\n"
                                }
                                "QUIT" => return,
                                _ => b"250 ok\r\n",
                            }
                        };
                        if write.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { port, tasks }
    }
}

impl Drop for Tarpit {
    fn drop(&mut self) {
        // The accept loop owns the listener and its connections: aborting it closes them all.
        self.tasks.abort_all();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tarpit_holds_an_invitation_mail_only_until_its_deadline_and_it_is_sent_once_later() {
    let app = spawn_app_with_access().await;
    let tarpit = Tarpit::start().await;
    let port = tarpit.port;
    let stop = CancellationToken::new();
    let deadline_ms = 3_000;
    let client = app
        .start_invitations(stop.clone(), |c| {
            c.smtp.host = "127.0.0.1".into();
            c.smtp.port = port;
            c.smtp.timeout_ms = 2_000;
            c.delivery_lease_ms = 1_500;
            c.delivery_send_deadline_ms = deadline_ms;
            c.delivery_retry_ms = 6_000;
            c.delivery_attempts = 5;
            c.delivery_concurrency = 1;
        })
        .await;
    let org = app.create_org(0).await;
    app.until_known(&org.admin_id).await;
    let address = org.address("tarpitted-ann");
    let started = Instant::now();
    let answer = client
        .clone()
        .create_invitations(authed(
            &org.admin_token,
            ipb::CreateInvitationsRequest {
                emails: address.clone(),
                delivery: ipb::DeliveryMethod::SystemMail as i32,
                ..Default::default()
            },
        ))
        .await
        .expect("invite")
        .into_inner();
    let id = answer.invitations[0].id.clone();

    // The send is cut off at its deadline and deferred, saying the mail may have gone out.
    let deferred = loop {
        let now = invitation(&client, &org, &id).await;
        if now.failure_reason.contains("may have gone out") {
            break now;
        }
        assert!(
            started.elapsed() < Duration::from_millis(deadline_ms + 4_000),
            "the tarpit still holds the invitation's mail after {:?} (deadline {deadline_ms} ms): {now:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        deferred.delivery_state,
        ipb::DeliveryState::Queued as i32,
        "deferred, to be tried again: {deferred:?}"
    );
    assert!(
        deferred.failure_reason.contains("trying again"),
        "{deferred:?}"
    );
    // Its claim is no longer renewed: the row waits for its retry, not for a lease.
    let due_in: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM next_attempt_at - now())::float8 FROM invitations.invitations WHERE id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .expect("next attempt");
    assert!(
        due_in > 2.0,
        "the row is due again in {due_in} s: still renewed as a claim"
    );

    // The relay is fixed (a real server on the same port): the mail goes out once.
    drop(tarpit);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let good = SmtpServer::start_on(port);
    let until = Instant::now() + Duration::from_secs(40);
    let sent = loop {
        let now = invitation(&client, &org, &id).await;
        if now.delivery_state == ipb::DeliveryState::Sent as i32 {
            break now;
        }
        assert!(
            Instant::now() < until,
            "not sent after the tarpit left: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(sent.send_count, 1, "{sent:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mails: Vec<String> = good
        .messages()
        .into_iter()
        .filter(|m| m.contains(address.as_str()))
        .collect();
    assert_eq!(
        mails.len(),
        1,
        "{address} got {} mails from the good server",
        mails.len()
    );
    client
        .clone()
        .preview_invitation(ipb::PreviewInvitationRequest {
            token: mailed_token(&mails[0]),
        })
        .await
        .expect("the link in the mail works");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acceptance_the_invitee_gives_up_on_does_not_hold_the_invitation() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(0).await;
    app.until_known(&org.admin_id).await;
    let client = app.invitations();
    let answer = client
        .clone()
        .create_invitations(authed(
            &org.admin_token,
            ipb::CreateInvitationsRequest {
                emails: org.address("omar"),
                delivery: ipb::DeliveryMethod::OwnMailClient as i32,
                ..Default::default()
            },
        ))
        .await
        .expect("invite")
        .into_inner();
    let invited = answer.invitations[0].clone();
    let composed = answer.composed.expect("a composed message");
    let token = token_in_mailto(&composed.mailto_links[0]);
    let accept = |client: Client, token: String| async move {
        client
            .clone()
            .accept_invitation(ipb::AcceptInvitationRequest {
                token,
                first_name: "Omar".into(),
                last_name: "Newhire".into(),
                password: "a-new-employee-password".into(),
            })
            .await
    };

    // Identity is slow (the invitee's user row is held), and the invitee closes the window
    // after a second: the call is dropped while the acceptance waits on identity.
    let mut held = app.pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM identity.users WHERE id = $1::uuid FOR UPDATE")
        .bind(&invited.user_id)
        .execute(&mut *held)
        .await
        .expect("lock the invitee's user at identity");
    let gave_up = tokio::time::timeout(
        Duration::from_secs(1),
        accept(client.clone(), token.clone()),
    )
    .await;
    assert!(
        gave_up.is_err(),
        "the acceptance did not wait for identity: {gave_up:?}"
    );
    // Its claim is gone (and the cancellation reached identity: nothing was activated).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let claimed: Option<bool> = sqlx::query_scalar(
        "SELECT accepting_until > now() FROM invitations.invitations WHERE id = $1::uuid",
    )
    .bind(&invited.id)
    .fetch_one(&app.pool)
    .await
    .expect("claim");
    assert_ne!(
        claimed,
        Some(true),
        "the acceptance the invitee gave up on still claims the invitation"
    );
    held.rollback().await.expect("release");

    // They open the link again at once: it works, rather than "being accepted in another
    // window" until the abandoned acceptance's claim runs out.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let accepted = accept(client.clone(), token.clone())
        .await
        .expect("the invitee accepts again at once")
        .into_inner();
    assert_eq!(accepted.user_id, invited.user_id);
    let after = invitation(&client, &org, &invited.id).await;
    assert_eq!(after.state, ipb::InvitationState::Accepted as i32);
}

/// The personal link token in an own-mail-client invitation's `mailto:` URL.
fn token_in_mailto(url: &str) -> String {
    let start = url
        .find("token%3D")
        .map(|at| at + "token%3D".len())
        .or_else(|| url.find("token=").map(|at| at + "token=".len()))
        .expect("the mailto link carries the invitation link");
    url[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acceptance_waiting_on_identity_holds_no_lock_an_admin_waits_for() {
    let app = spawn_app_with_invitations().await;
    let org = app.create_org(0).await;
    app.until_known(&org.admin_id).await;
    let client = app.invitations();
    let answer = client
        .clone()
        .create_invitations(authed(
            &org.admin_token,
            ipb::CreateInvitationsRequest {
                emails: org.address("nia"),
                delivery: ipb::DeliveryMethod::OwnMailClient as i32,
                ..Default::default()
            },
        ))
        .await
        .expect("invite")
        .into_inner();
    let invited = answer.invitations[0].clone();
    let composed = answer.composed.expect("a composed message");
    let token = token_in_mailto(&composed.mailto_links[0]);

    // Identity is slow to answer: the invitee's user row is held by someone else.
    let mut held = app.pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM identity.users WHERE id = $1::uuid FOR UPDATE")
        .bind(&invited.user_id)
        .execute(&mut *held)
        .await
        .expect("lock the invitee's user at identity");
    let accepting = {
        let client = client.clone();
        let token = token.clone();
        tokio::spawn(async move {
            client
                .clone()
                .accept_invitation(ipb::AcceptInvitationRequest {
                    token,
                    first_name: "Nia".into(),
                    last_name: "Newhire".into(),
                    password: "a-new-employee-password".into(),
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !accepting.is_finished(),
        "the acceptance did not wait for identity"
    );

    // The admin revokes meanwhile: answered at once (the acceptance is under way, so it is
    // refused), not after identity answers the acceptance.
    let started = Instant::now();
    let revoked = tokio::time::timeout(
        Duration::from_secs(3),
        client.clone().revoke_invitation(authed(
            &org.admin_token,
            ipb::RevokeInvitationRequest {
                id: invited.id.clone(),
            },
        )),
    )
    .await;
    let Ok(revoked) = revoked else {
        panic!("revoking waited {:?} for an acceptance that waits on identity: the row stays locked across the call", started.elapsed());
    };
    let refused = revoked.expect_err("an invitation being accepted is not revoked under it");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("being accepted"), "{refused:?}");

    held.rollback().await.expect("release");
    let accepted = accepting
        .await
        .expect("task")
        .expect("the acceptance goes through once identity answers")
        .into_inner();
    assert_eq!(accepted.user_id, invited.user_id);
    let after = invitation(&client, &org, &invited.id).await;
    assert_eq!(after.state, ipb::InvitationState::Accepted as i32);
    // Spent: the link does not work twice.
    let again = client
        .clone()
        .accept_invitation(ipb::AcceptInvitationRequest {
            token,
            first_name: "Nia".into(),
            last_name: "Newhire".into(),
            password: "a-new-employee-password".into(),
        })
        .await
        .expect_err("a spent link");
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
}

// ---------------------------------------------------------------------------------------------
// Page tokens: keyed by configured secrets only.

#[tokio::test]
async fn the_sync_refuses_to_start_without_a_secret_for_its_page_tokens() {
    let app = spawn_app_with_mailboxes().await;
    let mut config = app.sync_config();
    config.service_client_secret = SecretString::default();
    let started = mailroom_sync::start(app.platform(), config).await;
    let Err(refused) = started else {
        panic!("the sync started with no configured secret to sign page tokens with: each replica would refuse the others' tokens");
    };
    let said = format!("{refused:#}");
    assert!(
        said.contains("MAILROOM_SYNC__SERVICE_CLIENT_SECRET"),
        "the refusal names the setting: {said}"
    );
}
