//! The open tab as an activity signal (design §4.8): a signed-in page that is visible posts
//! heartbeats, and the owner's mailbox moves to the active tier; `/activity` answers a
//! request without a session with a bare 401 (the script then goes to the sign-in page).

use std::time::{Duration, Instant};

use mailroom_tests::browser::Browser;
use mailroom_tests::{authed, sync_pb as spb, TestApp, PASSWORD};

use super::mail::owner_with_mailbox;
use super::{cookie_pair, http, spawn_web, web_org};

async fn tier(app: &TestApp, token: &str, mailbox: &str) -> Option<spb::ActivityTier> {
    app.sync()
        .get_sync_status(authed(
            token,
            spb::GetSyncStatusRequest {
                mailbox_id: mailbox.into(),
            },
        ))
        .await
        .ok()
        .map(|s| s.into_inner().tier())
}

#[tokio::test]
async fn visible_tab_makes_the_owner_active() {
    let app = spawn_web().await;
    let org = web_org(&app, 10).await;
    let (_rita, rita_email, mailbox, _mail_user) = owner_with_mailbox(&app, &org, "rita").await;
    let token = app
        .login(&rita_email)
        .await
        .expect("rita signs in")
        .access_token;
    let before = tier(&app, &token, &mailbox).await;
    assert_ne!(
        before,
        Some(spb::ActivityTier::Active),
        "nobody has had the console open yet"
    );

    let b = Browser::start().await;
    b.sign_in(&app, &rita_email, PASSWORD).await;
    b.goto(&app, "/").await;
    let visible = b
        .client()
        .execute("return document.visibilityState;", vec![])
        .await
        .expect("visibility");
    assert_eq!(visible.as_str(), Some("visible"));
    b.screenshot("open-tab").await;

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut now = before;
    while now != Some(spb::ActivityTier::Active) {
        assert!(
            Instant::now() < deadline,
            "the owner never became active with the tab open (tier {now:?})"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        now = tier(&app, &token, &mailbox).await;
    }
    b.close().await;
}

#[tokio::test]
async fn a_heartbeat_without_a_session_is_a_bare_401() {
    let app = spawn_web().await;
    let page = http("GET", &format!("{}/sign-in", app.web_url()), &[], None).await;
    let csrf_cookie = page
        .set_cookie("mr_csrf")
        .map(|c| cookie_pair(&c))
        .expect("the sign-in page sets the CSRF cookie");
    let token = page.hidden("_csrf").expect("the form's token");
    let reply = http(
        "POST",
        &format!("{}/activity", app.web_url()),
        &[("cookie", &csrf_cookie), ("x-csrf-token", &token)],
        None,
    )
    .await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(
        reply.body.is_empty(),
        "a bare status, not a page: {}",
        reply.body
    );
}
