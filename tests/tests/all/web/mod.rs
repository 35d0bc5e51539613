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
use mailroom_tests::{spawn_app_with, AppOptions, TestApp};

/// Identity, access, mailboxes, sync, invitations and the console.
pub async fn spawn_web() -> TestApp {
    spawn_app_with(AppOptions {
        with_web: true,
        ..AppOptions::default()
    })
    .await
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
