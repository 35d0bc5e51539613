//! Joining with a quick-registration link in the browser: the page names the organisation and
//! the domains it takes, another domain is refused on the form, the confirmation mail's link
//! finishes the registration signed in; with approval, the person waits until an admin
//! approves; a disabled link is the neutral dead-link page.

use std::time::Duration;

use mailroom_proto::invitations::v1 as ipb;
use mailroom_tests::browser::Browser;
use mailroom_tests::{authed, wait_for_mail, TestApp, TestOrg};

use super::invite::{mailed_link, wait_for_path, NEW_PASSWORD};
use super::{spawn_web, web_org};

async fn registration_link(
    app: &TestApp,
    org: &TestOrg,
    requires_approval: bool,
) -> ipb::RegistrationLink {
    app.invitations()
        .create_registration_link(authed(
            &org.admin_token,
            ipb::CreateRegistrationLinkRequest {
                allowed_domains: vec![org.domain.clone()],
                requires_approval,
                department_id: String::new(),
                valid_days: 7,
                max_uses: None,
            },
        ))
        .await
        .expect("the admin makes a registration link")
        .into_inner()
}

/// From the confirmation mail to `email`: the form, a password, signed in on `/`.
async fn confirm_from_mail(app: &TestApp, b: &Browser, email: &str, name: &str) {
    let raw = wait_for_mail(app, email, Duration::from_secs(30)).await;
    let link = mailed_link(&raw, &format!("{}/invite?token=", app.web_url()));
    b.goto_url(&link).await;
    b.wait_for_text("Finish your registration").await;
    b.screenshot("confirm-form").await;
    b.fill("New password", NEW_PASSWORD).await;
    b.fill("Repeat the new password", NEW_PASSWORD).await;
    b.click_button("Create my account").await;
    wait_for_path(b, "/").await;
    b.wait_for_text(&format!("Signed in as {name}")).await;
    b.screenshot("signed-in").await;
}

#[tokio::test]
async fn join_with_link_then_confirm_from_mail() {
    let app = spawn_web().await;
    let org = web_org(&app, 10).await;
    app.until_known(&org.admin_id).await;
    let link = registration_link(&app, &org, false).await;
    assert!(
        link.url
            .starts_with(&format!("{}/join?link=", app.web_url())),
        "the link opens the console: {}",
        link.url
    );

    let b = Browser::start().await;
    b.goto_url(&link.url).await;
    b.wait_for_text(&format!("Join Org {}", org.domain)).await;
    b.wait_for_text(&format!("accepts addresses at {} only", org.domain))
        .await;
    b.screenshot("join-form").await;
    b.axe().await;

    b.fill("Your work email", "someone@elsewhere.test").await;
    b.fill("First name", "Oleg").await;
    b.fill("Last name", "Outsider").await;
    b.click_button("Join").await;
    assert_eq!(
        b.text("[role=alert]").await,
        format!("This link accepts addresses at {} only.", org.domain),
        "another domain: the form again, with the service's reason"
    );
    assert_eq!(b.url().await.path(), "/join");
    b.screenshot("other-domain").await;

    let email = org.address("joiner");
    b.fill("Your work email", &email).await;
    b.fill("First name", "Jana").await;
    b.fill("Last name", "Joiner").await;
    b.click_button("Join").await;
    b.wait_for_text("Check your mail").await;
    b.screenshot("check-your-mail").await;

    confirm_from_mail(&app, &b, &email, "Jana Joiner").await;
    b.close().await;
}

#[tokio::test]
async fn join_waits_for_approval() {
    let app = spawn_web().await;
    let org = web_org(&app, 10).await;
    app.until_known(&org.admin_id).await;
    let link = registration_link(&app, &org, true).await;

    let b = Browser::start().await;
    b.goto_url(&link.url).await;
    b.wait_for_text("An administrator approves each registration")
        .await;
    let email = org.address("patient");
    b.fill("Your work email", &email).await;
    b.fill("First name", "Pavel").await;
    b.fill("Last name", "Patient").await;
    b.click_button("Join").await;
    b.wait_for_text("Waiting for an administrator's approval")
        .await;
    b.screenshot("waiting").await;

    let waiting = app
        .invitations()
        .list_invitations(authed(
            &org.admin_token,
            ipb::ListInvitationsRequest {
                filter: "state = AWAITING_APPROVAL".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("the admin lists registrations awaiting approval")
        .into_inner()
        .invitations;
    let registration = waiting
        .iter()
        .find(|i| i.email == email)
        .expect("the registration awaits approval");
    app.invitations()
        .approve_registration(authed(
            &org.admin_token,
            ipb::ApproveRegistrationRequest {
                invitation_id: registration.id.clone(),
            },
        ))
        .await
        .expect("the admin approves");
    confirm_from_mail(&app, &b, &email, "Pavel Patient").await;

    // A disabled link: the neutral page, naming nobody.
    app.invitations()
        .disable_registration_link(authed(
            &org.admin_token,
            ipb::DisableRegistrationLinkRequest {
                id: link.id.clone(),
            },
        ))
        .await
        .expect("the admin disables the link");
    b.goto_url(&link.url).await;
    b.wait_for_text("This link no longer works").await;
    assert!(!b.source().await.contains(&org.domain));
    b.screenshot("disabled-link").await;
    b.close().await;
}
