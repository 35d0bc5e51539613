//! Signing in and out through the pages, the sentence a wrong password gets, and axe on the
//! first pages everyone sees.

use mailroom_tests::browser::{Browser, BrowserOptions};
use mailroom_tests::PASSWORD;

use super::{spawn_web, web_org};

#[tokio::test]
async fn sign_in_lands_on_home_and_sign_out_returns_to_sign_in() {
    let app = spawn_web().await;
    let org = web_org(&app, 10).await;
    let b = Browser::start().await;

    b.goto(&app, "/").await;
    assert!(
        b.url().await.path().starts_with("/sign-in"),
        "an anonymous visit to / goes to the sign-in page, not {}",
        b.url().await
    );
    b.screenshot("sign-in").await;

    b.sign_in(&app, &org.admin_email, PASSWORD).await;
    assert_eq!(
        b.url().await.path(),
        "/",
        "signed in, the person lands on the start page"
    );
    b.wait_for_text("Signed in as Ada Admin").await;
    b.screenshot("home").await;

    b.click_button("Sign out").await;
    b.wait_for("form[action='/sign-in']").await;
    assert!(b.url().await.path().starts_with("/sign-in"));
    b.screenshot("signed-out").await;

    b.goto(&app, "/").await;
    assert!(
        b.url().await.path().starts_with("/sign-in"),
        "after signing out, / sends to the sign-in page again, not {}",
        b.url().await
    );
    assert!(!b.body_text().await.contains("Ada Admin"));
    b.close().await;
}

#[tokio::test]
async fn wrong_password_says_so_without_saying_which() {
    let app = spawn_web().await;
    let org = web_org(&app, 10).await;
    let b = Browser::start().await;

    b.goto(&app, "/sign-in").await;
    b.fill("Login email", &org.admin_email).await;
    b.fill("Password", "not the password").await;
    b.click_button("Sign in").await;
    let wrong_password = b.text("[role=alert]").await;
    assert!(b.url().await.path().starts_with("/sign-in"));
    b.screenshot("wrong-password").await;

    b.goto(&app, "/sign-in").await;
    b.fill("Login email", &org.address("nobody")).await;
    b.fill("Password", "not the password").await;
    b.click_button("Sign in").await;
    let unknown_address = b.text("[role=alert]").await;
    b.screenshot("unknown-address").await;

    assert_eq!(wrong_password, "The address or the password is wrong.");
    assert_eq!(
        wrong_password, unknown_address,
        "a wrong password and an unknown address read the same"
    );
    b.close().await;
}

#[tokio::test]
async fn axe_on_public_and_home_pages() {
    let app = spawn_web().await;
    let org = web_org(&app, 10).await;
    let b = Browser::start().await;

    b.goto(&app, "/sign-in").await;
    b.wait_for("form[action='/sign-in']").await;
    b.screenshot("sign-in").await;
    b.axe().await;

    b.goto(&app, "/reset-password/request").await;
    b.screenshot("reset-request").await;
    b.axe().await;

    b.sign_in(&app, &org.admin_email, PASSWORD).await;
    b.wait_for_text("Ada Admin").await;
    b.screenshot("home").await;
    b.axe().await;
    b.close().await;
}

#[tokio::test]
async fn sign_in_and_out_without_javascript() {
    let app = spawn_web().await;
    let org = web_org(&app, 10).await;
    let b = Browser::start_with(BrowserOptions {
        javascript: false,
        ..BrowserOptions::default()
    })
    .await;
    b.goto(&app, "/sign-in").await;
    b.fill("Login email", &org.admin_email).await;
    b.fill("Password", PASSWORD).await;
    b.click_button("Sign in").await;
    b.wait_for_text("Signed in as Ada Admin").await;
    assert_eq!(b.url().await.path(), "/");
    b.screenshot("home-no-js").await;
    b.click_button("Sign out").await;
    b.wait_for("form[action='/sign-in']").await;
    b.close().await;
}

/// The harness's own check: axe, as injected, does find what it should.
#[tokio::test]
async fn axe_finds_an_unlabelled_field_and_an_image_without_alt() {
    let b = Browser::start().await;
    b.goto_url("data:text/html,<!doctype html><title>t</title><main><img src='x.png'><input id='q'></main>")
        .await;
    let found = b.axe_violations().await;
    let ids: Vec<&str> = found.iter().map(|(id, _)| id.as_str()).collect();
    assert!(ids.contains(&"image-alt"), "axe found {found:?}");
    assert!(ids.contains(&"label"), "axe found {found:?}");
    b.close().await;
}
