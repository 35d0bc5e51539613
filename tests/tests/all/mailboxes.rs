//! The mailbox registry end to end, against the real Dovecot (IMAP) and its submission service
//! (SMTP AUTH): connecting one and many, what each failure says, who sees and changes what, the
//! list's filters, sorts and pages, list views, sync requests, transfers and ownership reaching
//! access control; and callers who mean harm ([`hostile_callers`]).

use mailroom_platform::kafka::Topic;
use mailroom_proto::events::v1 as ev;
use mailroom_tests::{
    access_pb as apb, authed, identity_pb as pb, mailboxes_pb as mpb, spawn_app_with_mailboxes,
    TestApp, TestOrg,
};
use std::time::{Duration, Instant};
use tonic::Code;

mod connect;
mod destinations;
mod found_by_use;
mod hostile_callers;
mod lifecycle;
mod list;

/// Dovecot's users for these tests: box01..box24@bulk.test, all with this password.
const BULK_PASSWORD: &str = "bulk-pass";

fn addr(var: &str) -> (String, i32) {
    let value = std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is set by .ci/test (the local Dovecot)"));
    let (host, port) = value.rsplit_once(':').expect("host:port");
    (host.to_owned(), port.parse().expect("port"))
}

fn imap() -> mpb::ServerSettings {
    let (host, port) = addr("MAILROOM_IMAP_ADDR");
    mpb::ServerSettings {
        host,
        port,
        security: mpb::Security::None as i32,
        username: String::new(),
    }
}

fn smtp() -> mpb::ServerSettings {
    let (host, port) = addr("MAILROOM_SUBMISSION_ADDR");
    mpb::ServerSettings {
        host,
        port,
        security: mpb::Security::None as i32,
        username: String::new(),
    }
}

fn bulk(n: u32) -> String {
    format!("box{n:02}@bulk.test")
}

fn connect_request(email: &str, owner: &str, password: &str) -> mpb::ConnectMailboxRequest {
    mpb::ConnectMailboxRequest {
        mailbox: Some(mpb::Mailbox {
            email: email.into(),
            owner_user_id: owner.into(),
            name: "Work mailbox".into(),
            sender_name: "Tester".into(),
            imap: Some(imap()),
            smtp: Some(smtp()),
            ..Default::default()
        }),
        password: password.into(),
        validate_only: false,
    }
}

async fn connect(
    app: &TestApp,
    token: &str,
    email: &str,
    owner: &str,
) -> Result<mpb::Mailbox, tonic::Status> {
    app.mailboxes()
        .connect_mailbox(authed(token, connect_request(email, owner, BULK_PASSWORD)))
        .await
        .map(|r| r.into_inner())
}

/// Connects, retrying while the registry has not yet heard of a just-created owner.
async fn connect_when_known(app: &TestApp, token: &str, email: &str, owner: &str) -> mpb::Mailbox {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match connect(app, token, email, owner).await {
            Ok(m) => return m,
            // The registry or access control has not heard of a user just made.
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

async fn list(
    app: &TestApp,
    token: &str,
    req: mpb::ListMailboxesRequest,
) -> Result<mpb::ListMailboxesResponse, tonic::Status> {
    app.mailboxes()
        .list_mailboxes(authed(token, req))
        .await
        .map(|r| r.into_inner())
}

async fn try_emails_seen(app: &TestApp, token: &str) -> Result<Vec<String>, tonic::Status> {
    let mut emails: Vec<String> = list(
        app,
        token,
        mpb::ListMailboxesRequest {
            page_size: 500,
            read_mask: Some(prost_types::FieldMask {
                paths: vec!["email".into()],
            }),
            ..Default::default()
        },
    )
    .await?
    .mailboxes
    .into_iter()
    .map(|m| m.email)
    .collect();
    emails.sort();
    Ok(emails)
}

/// The caller's list, once access control has heard of them (UNAVAILABLE until then).
async fn emails_seen(app: &TestApp, token: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match try_emails_seen(app, token).await {
            Ok(seen) => return seen,
            Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(s) => panic!("list: {s:?}"),
        }
    }
}

/// Waits until access control knows the caller (their list answers rather than UNAVAILABLE).
async fn until_listable(app: &TestApp, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match try_emails_seen(app, token).await {
            Ok(_) => return,
            Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(s) => panic!("list: {s:?}"),
        }
    }
}

async fn sign_in(app: &TestApp, user: &pb::User) -> String {
    app.login(&user.login_email)
        .await
        .expect("user signs in")
        .access_token
}
