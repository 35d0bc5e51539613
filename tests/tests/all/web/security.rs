//! The console's defences as an attacker meets them: cross-site form posts, the headers of
//! every page, the session cookie, no token in any page, and the limit on anonymous posts.

use std::net::SocketAddr;

use mailroom_tests::browser::Browser;
use mailroom_tests::{TestApp, PASSWORD};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{cookie_pair, http, spawn_web, web_org, Reply};

/// Serves `html` to every request on a loopback port of its own (another origin than the
/// console's); returns its base URL.
async fn serve_foreign_page(html: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr: SocketAddr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let html = html.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

/// A page that posts a form to `action` as soon as it loads (the attacker's own page: its
/// inline script is not under the console's CSP).
fn auto_post(action: &str, fields: &[(&str, &str)]) -> String {
    let inputs: String = fields
        .iter()
        .map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{v}\">"))
        .collect();
    format!(
        "<!doctype html><html><body><h1>Win a prize</h1><form method=\"post\" action=\"{action}\">{inputs}</form><script>document.forms[0].submit()</script></body></html>"
    )
}

#[tokio::test]
async fn cross_site_form_post_is_refused() {
    let app = spawn_web().await;
    let org = web_org(&app, 10).await;
    let web = app.web_url().to_owned();
    let b = Browser::start().await;
    b.sign_in(&app, &org.admin_email, PASSWORD).await;
    b.wait_for_text("Signed in as Ada Admin").await;

    // Same host, another port: the same *site*, so the browser sends the SameSite=Lax cookies
    // with the post; only the console's own checks (Sec-Fetch-Site, Origin, the token) stop it.
    let sign_out = serve_foreign_page(auto_post(
        &format!("{web}/sign-out"),
        &[("_csrf", "guessed")],
    ))
    .await;
    b.goto_url(&sign_out).await;
    b.wait_for_text("This form expired").await;
    assert_eq!(b.url().await.path(), "/sign-out");
    b.screenshot("sign-out-refused").await;

    let lang = serve_foreign_page(auto_post(
        &format!("{web}/session/lang"),
        &[("lang", "ru"), ("next", "/")],
    ))
    .await;
    b.goto_url(&lang).await;
    b.wait_for_text("This form expired").await;
    b.screenshot("lang-refused").await;

    // The session still works, in English.
    b.goto(&app, "/").await;
    b.wait_for_text("Signed in as Ada Admin").await;
    assert_eq!(b.url().await.path(), "/");

    // Even with the right cookies and token, a post whose Origin is another site is refused.
    let (cookies, page) = http_sign_in(&app, &org.admin_email).await;
    let token = page.hidden("_csrf").expect("the page has a CSRF token");
    let body = format!("_csrf={}&lang=ru&next=%2F", urlencode(&token));
    let foreign = http(
        "POST",
        &format!("{web}/session/lang"),
        &[("cookie", &cookies), ("origin", "http://evil.test")],
        Some(&body),
    )
    .await;
    assert_eq!(foreign.status, 403, "a foreign Origin is refused");
    assert!(foreign.body.contains("This form expired"));
    let own = http(
        "POST",
        &format!("{web}/session/lang"),
        &[("cookie", &cookies), ("origin", &web)],
        Some(&body),
    )
    .await;
    assert_eq!(
        own.status, 303,
        "the same post from the console itself is accepted"
    );
    b.close().await;
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Signs in over plain HTTP: the sign-in page (CSRF cookie and token), then the post. Returns
/// the `Cookie` header to send from then on and the start page the session sees.
async fn http_sign_in(app: &TestApp, email: &str) -> (String, Reply) {
    let web = app.web_url();
    let (csrf_cookie, token) = csrf_of_sign_in_page(app).await;
    let body = format!(
        "_csrf={}&email={}&password={}&next=%2F&org=",
        urlencode(&token),
        urlencode(email),
        urlencode(PASSWORD)
    );
    let posted = http(
        "POST",
        &format!("{web}/sign-in"),
        &[("cookie", &csrf_cookie)],
        Some(&body),
    )
    .await;
    assert_eq!(posted.status, 303, "signing in over HTTP: {}", posted.body);
    let session = posted
        .set_cookie("mr_session")
        .expect("signing in sets the session cookie");
    let cookies = format!("{csrf_cookie}; {}", cookie_pair(&session));
    let home = http("GET", &format!("{web}/"), &[("cookie", &cookies)], None).await;
    assert_eq!(home.status, 200, "the start page as the new session");
    (cookies, home)
}

/// The CSRF cookie (`mr_csrf=…`) and form token of a fresh visit to `/sign-in`.
async fn csrf_of_sign_in_page(app: &TestApp) -> (String, String) {
    let page = http("GET", &format!("{}/sign-in", app.web_url()), &[], None).await;
    assert_eq!(page.status, 200);
    let csrf_cookie = cookie_pair(
        &page
            .set_cookie("mr_csrf")
            .expect("a first visit gets a CSRF cookie"),
    );
    let token = page.hidden("_csrf").expect("the sign-in form has a token");
    (csrf_cookie, token)
}

fn assert_page_headers(reply: &Reply, what: &str) {
    let csp = reply
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy"));
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{what}: CSP allows inline code: {csp}"
    );
    assert!(csp.contains("script-src 'self'"), "{what}: CSP {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: CSP {csp}");
    assert_eq!(reply.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(
        reply.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    if reply
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html"))
    {
        assert_eq!(
            reply.header("cache-control"),
            Some("no-store"),
            "{what}: HTML is not cached"
        );
    }
}

#[tokio::test]
async fn csp_and_frame_headers_on_every_page() {
    let app = spawn_web().await;
    let org = web_org(&app, 10).await;
    let web = app.web_url().to_owned();

    for path in ["/sign-in", "/reset-password/request", "/", "/no-such-page"] {
        let reply = http("GET", &format!("{web}{path}"), &[], None).await;
        assert_page_headers(&reply, &format!("GET {path} ({})", reply.status));
    }
    let sign_in = http("GET", &format!("{web}/sign-in"), &[], None).await;
    assert!(sign_in
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));

    let (cookies, home) = http_sign_in(&app, &org.admin_email).await;
    assert_page_headers(&home, "the start page signed in");
    for path in ["/mailboxes", "/people", "/account", "/no-such-page"] {
        let reply = http(
            "GET",
            &format!("{web}{path}"),
            &[("cookie", &cookies)],
            None,
        )
        .await;
        assert_page_headers(&reply, &format!("GET {path} signed in ({})", reply.status));
    }
    // A refused post is a page with the same headers.
    let refused = http(
        "POST",
        &format!("{web}/sign-out"),
        &[("cookie", &cookies)],
        Some(""),
    )
    .await;
    assert_eq!(refused.status, 403);
    assert_page_headers(&refused, "a refused post");
}

#[tokio::test]
async fn session_cookie_is_httponly_samesite() {
    let app = spawn_web().await;
    let org = web_org(&app, 10).await;
    let web = app.web_url().to_owned();
    let (csrf_cookie, token) = csrf_of_sign_in_page(&app).await;
    let body = format!(
        "_csrf={}&email={}&password={}&next=%2F&org=",
        urlencode(&token),
        urlencode(&org.admin_email),
        urlencode(PASSWORD)
    );
    let posted = http(
        "POST",
        &format!("{web}/sign-in"),
        &[("cookie", &csrf_cookie)],
        Some(&body),
    )
    .await;
    assert_eq!(posted.status, 303);
    let session = posted
        .set_cookie("mr_session")
        .expect("signing in sets the session cookie");
    let attrs: Vec<String> = session
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    assert!(attrs.iter().any(|a| a == "httponly"), "HttpOnly: {session}");
    assert!(
        attrs.iter().any(|a| a == "samesite=lax"),
        "SameSite=Lax: {session}"
    );
    assert!(attrs.iter().any(|a| a == "path=/"), "Path=/: {session}");
    assert!(
        !attrs.iter().any(|a| a == "secure"),
        "no Secure on plain-http loopback (the browser would drop it): {session}"
    );
    let value = cookie_pair(&session);
    assert!(
        !value.contains("eyJ"),
        "the cookie is an opaque id, not a token: {value}"
    );
}

#[tokio::test]
async fn no_token_in_html() {
    let app = spawn_web().await;
    let org = web_org(&app, 10).await;
    let b = Browser::start().await;
    b.sign_in(&app, &org.admin_email, PASSWORD).await;
    b.wait_for_text("Ada Admin").await;
    for path in ["/", "/mailboxes", "/people", "/account", "/invitations"] {
        b.goto(&app, path).await;
        let source = b.source().await;
        assert!(!source.contains("eyJ"), "{path} holds something like a JWT");
        assert!(
            !source.contains(&org.admin_token),
            "{path} holds the admin's access token"
        );
    }
    // Nor does page JavaScript see any cookie of the session.
    let cookies = b
        .client()
        .execute("return document.cookie", vec![])
        .await
        .expect("document.cookie");
    let cookies = cookies.as_str().unwrap_or_default().to_owned();
    assert!(
        !cookies.contains("mr_session"),
        "document.cookie: {cookies}"
    );
    assert!(!cookies.contains("eyJ"), "document.cookie: {cookies}");
    b.screenshot("home").await;
    b.close().await;
}

#[tokio::test]
async fn anonymous_posts_are_rate_limited() {
    // The default limit, 30 per address and minute, counted for a network of this test's own
    // (the console trusts loopback as its proxy here and reads x-forwarded-for).
    let app = mailroom_tests::spawn_app_with(mailroom_tests::AppOptions {
        with_web: true,
        web: Some(|config| {
            config.anonymous_posts_per_minute = 30;
            config.trusted_proxies = vec!["127.0.0.1/32".into()];
        }),
        ..mailroom_tests::AppOptions::default()
    })
    .await;
    let web = app.web_url().to_owned();
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let client = format!("198.18.{}.{}", bytes[0], bytes[1].max(1));
    let (csrf_cookie, token) = csrf_of_sign_in_page(&app).await;
    let body = format!(
        "_csrf={}&email=nobody%40example.test&password=wrong&next=%2F&org=",
        urlencode(&token)
    );
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..31 {
        let reply = http(
            "POST",
            &format!("{web}/sign-in"),
            &[("cookie", &csrf_cookie), ("x-forwarded-for", &client)],
            Some(&body),
        )
        .await;
        statuses.push(reply.status);
        last = Some(reply);
    }
    assert!(
        statuses[..30].iter().all(|s| *s == 401),
        "the first 30 attempts are answered (wrong password): {statuses:?}"
    );
    let last = last.expect("31 posts");
    assert_eq!(
        last.status, 429,
        "the 31st within the minute is refused: {statuses:?}"
    );
    assert!(
        last.body.contains("Too many attempts"),
        "a page a person can read: {}",
        last.body
    );
    assert!(last
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
    assert_page_headers(&last, "the 429 page");

    // Another address is not held back.
    let other = http(
        "POST",
        &format!("{web}/sign-in"),
        &[
            ("cookie", &csrf_cookie),
            (
                "x-forwarded-for",
                &format!("198.19.{}.{}", bytes[2], bytes[3].max(1)),
            ),
        ],
        Some(&body),
    )
    .await;
    assert_ne!(other.status, 429);
}
