//! Passwords in the browser: a forgotten one reset from the mailed link, and a change on the
//! account page that ends every session, the other browser's too.

use std::time::{Duration, Instant};

use mailroom_tests::browser::Browser;
use mailroom_tests::{wait_for_mail, PASSWORD};

use super::invite::{mailed_link, wait_for_path, NEW_PASSWORD};
use super::{spawn_web, web_org};

#[tokio::test]
async fn password_reset_from_the_mailed_link() {
    let app = spawn_web().await;
    let org = web_org(&app, 10).await;
    let user = app.create_user(&org, "forgetful", "").await;

    let b = Browser::start().await;
    b.goto(&app, "/sign-in").await;
    b.click_link("Forgot your password?").await;
    b.wait_for_text("Reset your password").await;
    b.fill("Login email", &user.login_email).await;
    b.screenshot("request").await;
    b.click_button("Send the link").await;
    b.wait_for_text(
        "If this address signs in here, a link to choose a new password is on its way.",
    )
    .await;
    b.screenshot("sent").await;

    // An unknown address reads the same.
    b.goto(&app, "/reset-password/request").await;
    b.fill("Login email", &org.address("nobody")).await;
    b.click_button("Send the link").await;
    b.wait_for_text(
        "If this address signs in here, a link to choose a new password is on its way.",
    )
    .await;

    let raw = wait_for_mail(&app, &user.login_email, Duration::from_secs(30)).await;
    let link = mailed_link(&raw, &format!("{}/reset-password?token=", app.web_url()));
    b.goto_url(&link).await;
    b.wait_for_text("Choose a new password").await;
    b.wait_for_text("From 8 to 256 characters").await;
    b.axe().await;
    b.fill("New password", "short").await;
    b.fill("Repeat the new password", "short").await;
    b.click_button("Set the password").await;
    b.wait_for_text("The password must be from 8 to 256 characters long.")
        .await;
    b.screenshot("too-short").await;

    b.fill("New password", NEW_PASSWORD).await;
    b.fill("Repeat the new password", NEW_PASSWORD).await;
    b.click_button("Set the password").await;
    wait_for_path(&b, "/sign-in").await;
    b.wait_for_text("Your new password is set").await;
    b.screenshot("reset-done").await;

    // The old password no longer works; the new one does.
    b.fill("Login email", &user.login_email).await;
    b.fill("Password", PASSWORD).await;
    b.click_button("Sign in").await;
    b.wait_for_text("The address or the password is wrong.")
        .await;
    b.sign_in(&app, &user.login_email, NEW_PASSWORD).await;
    wait_for_path(&b, "/").await;

    // The link is spent.
    b.goto_url(&link).await;
    b.wait_for_text("Choose a new password").await;
    b.fill("New password", "yet another passphrase").await;
    b.fill("Repeat the new password", "yet another passphrase")
        .await;
    b.click_button("Set the password").await;
    b.wait_for_text("This link no longer works").await;
    b.wait_for_text("Ask for a new one.").await;
    b.screenshot("spent-link").await;
    b.close().await;
}

#[tokio::test]
async fn change_password_ends_the_session() {
    let app = spawn_web().await;
    let org = web_org(&app, 10).await;
    let user = app.create_user(&org, "careful", "").await;

    let b = Browser::start().await;
    let other = Browser::start().await;
    b.sign_in(&app, &user.login_email, PASSWORD).await;
    wait_for_path(&b, "/").await;
    other.sign_in(&app, &user.login_email, PASSWORD).await;
    wait_for_path(&other, "/").await;

    b.goto(&app, "/account").await;
    b.wait_for_text("My account").await;
    b.wait_for_text(&user.login_email).await;
    b.screenshot("account").await;
    b.axe().await;

    b.fill("Current password", "not my password").await;
    b.fill("New password", NEW_PASSWORD).await;
    b.fill("Repeat the new password", NEW_PASSWORD).await;
    b.click_button("Change the password").await;
    b.wait_for_text("The current password is wrong.").await;
    b.screenshot("wrong-current").await;

    b.fill("Current password", PASSWORD).await;
    b.fill("New password", NEW_PASSWORD).await;
    b.fill("Repeat the new password", NEW_PASSWORD).await;
    b.click_button("Change the password").await;
    wait_for_path(&b, "/sign-in").await;
    b.wait_for_text("Your password is changed").await;
    b.screenshot("changed").await;

    // This browser's session is gone…
    b.goto(&app, "/account").await;
    wait_for_path(&b, "/sign-in").await;

    // …and the other one's ends at its next page (identity refuses its token within ~1 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        other.goto(&app, "/account").await;
        if other.url().await.path() == "/sign-in" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the other browser is still signed in after the password change"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    other.wait_for_text("Your session ended").await;
    other.screenshot("other-browser-ended").await;

    b.sign_in(&app, &user.login_email, NEW_PASSWORD).await;
    wait_for_path(&b, "/").await;
    b.close().await;
    other.close().await;
}
