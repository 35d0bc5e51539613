//! The invitee's journey in the browser: the invitation mail's link opens the console, the
//! person chooses their name and password and lands signed in; a dead link (revoked, used,
//! unknown) is one neutral page that names no organisation.

use std::time::{Duration, Instant};

use mailroom_proto::invitations::v1 as ipb;
use mailroom_tests::browser::Browser;
use mailroom_tests::{authed, wait_for_mail, TestApp, TestOrg};

use super::{http, spawn_web, web_org};

pub(super) const NEW_PASSWORD: &str = "a long new passphrase";

/// The first link in a mail (its text part, quoted-printable undone) that starts with
/// `prefix`, e.g. `{web_url}/invite?token=`.
pub(super) fn mailed_link(raw: &str, prefix: &str) -> String {
    let message = mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .expect("the mail parses");
    let text = message.body_text(0).expect("the mail has a text part");
    let start = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no link starting {prefix} in the mail:\n{text}"));
    text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && !matches!(c, '>' | '"' | ')'))
        .collect()
}

/// Waits (≤ 10 s) until the browser is at `path` (without the query).
pub(super) async fn wait_for_path(b: &Browser, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = b.url().await;
        if now.path() == path {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "the browser did not reach {path} within 10 s; it is at {now}; the page reads:\n{}",
                b.body_text().await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Invites `email` by Mailroom's mail as the org's admin.
async fn invite(app: &TestApp, org: &TestOrg, email: &str) -> ipb::Invitation {
    app.invitations()
        .create_invitations(authed(
            &org.admin_token,
            ipb::CreateInvitationsRequest {
                emails: email.into(),
                department_id: String::new(),
                message: "Welcome aboard!".into(),
                delivery: ipb::DeliveryMethod::SystemMail as i32,
                locale: "en".into(),
            },
        ))
        .await
        .expect("the admin invites")
        .into_inner()
        .invitations
        .into_iter()
        .next()
        .expect("one invitation made")
}

/// The invitation link mailed to `email`.
async fn invitation_link(app: &TestApp, email: &str) -> String {
    let raw = wait_for_mail(app, email, Duration::from_secs(30)).await;
    mailed_link(&raw, &format!("{}/invite?token=", app.web_url()))
}

#[tokio::test]
async fn invite_mail_link_set_password_signed_in() {
    let app = spawn_web().await;
    let org = web_org(&app, 10).await;
    app.until_known(&org.admin_id).await;
    let email = org.address("nina");
    invite(&app, &org, &email).await;
    let link = invitation_link(&app, &email).await;

    let b = Browser::start().await;
    b.goto_url(&link).await;
    b.wait_for_text("Join your colleagues").await;
    let page = b.body_text().await;
    assert!(
        page.contains(&format!("Org {}", org.domain)),
        "the organisation is named:\n{page}"
    );
    assert!(
        page.contains("Invited by Ada Admin"),
        "the inviter is named:\n{page}"
    );
    assert!(
        page.contains("From 8 to 256 characters"),
        "the password rule is shown:\n{page}"
    );
    let shown = b.find("#email").await.prop("value").await.ok().flatten();
    assert_eq!(
        shown.as_deref(),
        Some(email.as_str()),
        "the address is shown, read-only"
    );
    b.screenshot("invitation").await;
    b.axe().await;

    b.fill("First name", "Nina").await;
    b.fill("Last name", "Newman").await;
    b.fill("New password", NEW_PASSWORD).await;
    b.fill("Repeat the new password", "a different passphrase")
        .await;
    b.click_button("Create my account").await;
    b.wait_for_text("The two passwords differ").await;
    assert_eq!(b.url().await.path(), "/invite");
    b.screenshot("passwords-differ").await;

    b.fill("New password", NEW_PASSWORD).await;
    b.fill("Repeat the new password", NEW_PASSWORD).await;
    b.click_button("Create my account").await;
    wait_for_path(&b, "/").await;
    b.wait_for_text("Signed in as Nina Newman").await;
    b.screenshot("signed-in").await;

    // The link is spent: the neutral page, not the form.
    b.goto_url(&link).await;
    b.wait_for_text("This link no longer works").await;
    assert!(!b.source().await.contains(&org.domain));
    b.screenshot("used-link").await;
    b.close().await;
}

#[tokio::test]
async fn dead_links_show_one_neutral_page() {
    let app = spawn_web().await;
    let org = web_org(&app, 10).await;
    app.until_known(&org.admin_id).await;
    let email = org.address("revoked");
    let invitation = invite(&app, &org, &email).await;
    let revoked_link = invitation_link(&app, &email).await;
    app.invitations()
        .revoke_invitation(authed(
            &org.admin_token,
            ipb::RevokeInvitationRequest {
                id: invitation.id.clone(),
            },
        ))
        .await
        .expect("the admin revokes");
    let unknown_link = format!(
        "{}/invite?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        app.web_url()
    );

    let revoked = http("GET", &revoked_link, &[], None).await;
    let unknown = http("GET", &unknown_link, &[], None).await;
    let missing = http("GET", &format!("{}/invite", app.web_url()), &[], None).await;
    for (what, reply) in [
        ("revoked", &revoked),
        ("unknown", &unknown),
        ("no token", &missing),
    ] {
        assert_eq!(reply.status, 410, "a {what} link answers 410 Gone");
        assert!(
            reply
                .body
                .contains("Ask the person who invited you for a new one"),
            "a {what} link says what to do:\n{}",
            reply.body
        );
        assert!(
            !reply.body.contains(&org.domain) && !reply.body.contains("Ada Admin"),
            "a {what} link names neither the organisation nor the inviter"
        );
    }
    let main = |body: &str| {
        let start = body.find("<main").unwrap_or(0);
        let end = body.find("</main>").unwrap_or(body.len());
        body[start..end].to_owned()
    };
    assert_eq!(
        main(&revoked.body),
        main(&unknown.body),
        "a revoked and an unknown link read the same"
    );

    let b = Browser::start().await;
    b.goto_url(&revoked_link).await;
    b.wait_for_text("This link no longer works").await;
    assert!(
        !b.exists("input[type=password]").await,
        "no form on a dead link"
    );
    b.screenshot("revoked").await;
    b.goto_url(&unknown_link).await;
    b.wait_for_text("This link no longer works").await;
    b.screenshot("unknown").await;
    b.axe().await;
    b.close().await;
}
