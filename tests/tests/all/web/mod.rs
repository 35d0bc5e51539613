//! The web console in a real browser (headless Chromium over WebDriver, `tests/src/browser.rs`)
//! and over plain HTTP where headers and cookies matter. One module per part of the console;
//! shared helpers here.

mod access;
mod activity;
mod auth;
mod home;
mod i18n;
mod invitations;
mod invite;
mod join;
mod mail;
mod mailboxes;
mod people;
mod security;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mailroom_tests::{authed, mailboxes_pb as mpb, spawn_app_with, AppOptions, TestApp, TestOrg};
use std::time::{Duration, Instant};
use tonic::Code;

/// Identity, access, mailboxes, sync, invitations and the console.
pub async fn spawn_web() -> TestApp {
    spawn_app_with(AppOptions {
        with_web: true,
        ..AppOptions::default()
    })
    .await
}

/// A new organisation whose admin access control already knows: a page opened at once then
/// finds the admin's rights (on a loaded machine the events take a moment to arrive).
pub async fn web_org(app: &TestApp, seat_limit: i32) -> TestOrg {
    let org = app.create_org(seat_limit).await;
    app.until_known(&org.admin_id).await;
    org
}

/// The local Dovecot's `var` (`MAILROOM_IMAP_ADDR`, `MAILROOM_SUBMISSION_ADDR`, set by
/// .ci/stack.sh) as server settings without TLS, logging in as `username`.
pub fn dovecot_server(var: &str, username: &str) -> mpb::ServerSettings {
    let value = std::env::var(var).unwrap_or_else(|_| panic!("{var} is set by .ci/stack.sh"));
    let (host, port) = value.rsplit_once(':').expect("host:port");
    mpb::ServerSettings {
        host: host.to_owned(),
        port: port.parse().expect("port"),
        security: mpb::Security::None as i32,
        username: username.into(),
    }
}

/// Connects `mailbox` (its Dovecot IMAP and submission filled in, logging in as `login`
/// with `password`) as the org's admin. Retries for up to a minute while the registry has not
/// heard of a just-made owner, and for the first ten seconds while Dovecot refuses the login
/// (it re-reads its passwd-file about once a second, so a user added a moment ago can be
/// refused once).
pub async fn connect_test_mailbox(
    app: &TestApp,
    org: &TestOrg,
    mailbox: mpb::Mailbox,
    login: &str,
    password: &str,
) -> mpb::Mailbox {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(60);
    let login_deadline = start + Duration::from_secs(10);
    let mailbox = mpb::Mailbox {
        imap: Some(dovecot_server("MAILROOM_IMAP_ADDR", login)),
        smtp: Some(dovecot_server("MAILROOM_SUBMISSION_ADDR", login)),
        ..mailbox
    };
    loop {
        let request = mpb::ConnectMailboxRequest {
            mailbox: Some(mailbox.clone()),
            password: password.into(),
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
            Err(s)
                if s.code() == Code::FailedPrecondition
                    && s.message().contains("AUTHENTICATIONFAILED")
                    && Instant::now() < login_deadline =>
            {
                tokio::time::sleep(Duration::from_millis(300)).await
            }
            Err(s) => panic!("connect {}: {s:?}", mailbox.email),
        }
    }
}

/// A response read whole.
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Reply {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every `Set-Cookie` value.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }

    /// The `Set-Cookie` line of cookie `name`.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.set_cookies()
            .into_iter()
            .find(|c| c.starts_with(&format!("{name}=")))
    }

    /// The value of hidden field `name` in the body (`name="…" value="…"`).
    pub fn hidden(&self, name: &str) -> Option<String> {
        let at = self.body.find(&format!("name=\"{name}\""))?;
        let rest = &self.body[at..];
        let value = rest.find("value=\"")? + "value=\"".len();
        let end = rest[value..].find('"')?;
        Some(rest[value..value + end].to_owned())
    }
}

/// One HTTP/1.1 request, as a plain client (no browser): `headers` as given, `body` form
/// urlencoded when present.
pub async fn http(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = hyper::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if body.is_some() {
        request = request.header("content-type", "application/x-www-form-urlencoded");
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .unwrap_or_else(|e| panic!("bad request to {url}: {e}"));
    let response = client
        .request(request)
        .await
        .unwrap_or_else(|e| panic!("{method} {url} failed: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("reading {url}: {e}"))
        .to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// `name=value` of a `Set-Cookie` line (its attributes dropped).
pub fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or("").trim().to_owned()
}
