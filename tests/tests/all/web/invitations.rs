//! Inviting people through the console (the inviter's side): by email with Mailroom's mail
//! and with one's own mail client, the invitations list's Resend/Revoke/Remove, the seats
//! shown and enforced, the organisation's "allow everyone to invite" setting, and
//! quick-registration links.

use std::time::{Duration, Instant};

use fantoccini::Locator;
use mailroom_tests::browser::Browser;
use mailroom_tests::{access, mails_to, wait_for_mail, TestApp, TestOrg, PASSWORD};

use super::{spawn_web, web_org};

/// Polls until access control says whether `user_id` may invite people into `org`
/// (`org.invite`, which follows the organisation's setting).
async fn until_can_invite(app: &TestApp, org: &TestOrg, user_id: &str, expected: bool) {
    let service = app.service_token().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = app
            .check(
                &service,
                access::request(user_id, "org.invite", access::object("org", &org.id), None),
            )
            .await
            .map(|a| a.allowed)
            .unwrap_or(!expected);
        if answer == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "org.invite of {user_id} did not become {expected} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An organisation whose admin access control already knows (so the console shows them
/// the Invite items), and a browser signed in as that admin.
async fn admin_signed_in(app: &TestApp, seats: i32) -> (TestOrg, Browser) {
    let org = web_org(app, seats).await;
    until_can_invite(app, &org, &org.admin_id, true).await;
    let b = Browser::start().await;
    b.sign_in(app, &org.admin_email, PASSWORD).await;
    (org, b)
}

/// Clicks the button reading `button` in the table row that mentions `row_text`.
async fn click_in_row(b: &Browser, row_text: &str, button: &str) {
    let xpath = format!(
        "//tr[td[contains(normalize-space(.), '{row_text}')]]//button[normalize-space(.)='{button}']"
    );
    let found = b
        .client()
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath(&xpath))
        .await
        .unwrap_or_else(|e| panic!("no {button:?} button in the row of {row_text}: {e}"));
    found
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click {button:?} in the row of {row_text}: {e}"));
}

/// The visible text of the table row mentioning `row_text`.
async fn row_of(b: &Browser, row_text: &str) -> String {
    let xpath = format!("//tr[td[contains(normalize-space(.), '{row_text}')]]");
    match b.client().find(Locator::XPath(&xpath)).await {
        Ok(row) => row.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[tokio::test]
async fn admin_invites_by_email_and_sees_it_pending() {
    let app = spawn_web().await;
    let (org, b) = admin_signed_in(&app, 10).await;
    app.create_department(&org, "Sales", "", "").await;
    let invitee = org.address("nia.new");

    b.goto(&app, "/").await;
    b.click_link("Invite people").await;
    b.wait_for("form[action='/people/invite']").await;
    assert_eq!(b.text("h1").await, "Invite people");
    assert_eq!(b.text("#seats").await, "1 of 10 seats used, 9 left");
    b.fill(
        "Email addresses",
        &format!("{invitee}, not-an-address;{}", org.admin_email),
    )
    .await;
    b.select("Department", "Sales").await;
    b.fill("Your message (optional)", "Welcome to the Sales team!")
        .await;
    b.screenshot("invite-form").await;
    b.axe().await;
    b.click_button("Invite").await;

    b.wait_for_text("The invitation is on its way.").await;
    assert!(b.text("#invited").await.contains(&invitee));
    let rejected = b.text("#rejected").await;
    assert!(
        rejected.contains("not-an-address") && rejected.contains(&org.admin_email),
        "each address not invited is listed with why: {rejected}"
    );
    assert!(
        rejected.contains("Already in the organisation"),
        "{rejected}"
    );
    b.screenshot("invite-result").await;
    b.axe().await;

    b.click_link("See the invitations").await;
    b.wait_for("table#invitations").await;
    let row = row_of(&b, &invitee).await;
    assert!(
        row.contains("Pending"),
        "the new invitation is pending: {row}"
    );
    assert!(row.contains("Sales"), "its department is shown: {row}");
    assert!(row.contains("Ada Admin"), "its inviter is shown: {row}");
    b.screenshot("list-pending").await;
    b.axe().await;

    let mail = wait_for_mail(&app, &invitee, Duration::from_secs(30)).await;
    assert!(
        mail.contains("Welcome to the Sales team!"),
        "the inviter's words are in the mail"
    );
    assert!(
        mail.contains(&format!("{}/invite?token=", app.web_url())),
        "the mailed link opens this console"
    );
    b.close().await;
}

#[tokio::test]
async fn own_mail_client_shows_mailto_links() {
    let app = spawn_web().await;
    let (org, b) = admin_signed_in(&app, 10).await;
    let (first, second) = (org.address("olga"), org.address("omar"));

    b.goto(&app, "/people/invite").await;
    b.fill("Email addresses", &format!("{first}\n{second}"))
        .await;
    b.select("Language of the mail", "Русский").await;
    b.check("I send them from my own mail client").await;
    b.click_button("Invite").await;

    b.wait_for_text("2 invitations are ready.").await;
    let mailtos = b
        .client()
        .find_all(Locator::Css("#composed a.mailto"))
        .await
        .expect("the mailto links");
    assert_eq!(mailtos.len(), 2, "one mail per person");
    for (link, address) in mailtos.iter().zip([&first, &second]) {
        let href = link.attr("href").await.ok().flatten().unwrap_or_default();
        assert!(
            href.starts_with(&format!("mailto:{address}?")) && href.contains("subject="),
            "a composed mailto: for {address}: {href}"
        );
    }
    let links = b.texts("#composed code.invitation-link").await;
    assert_eq!(links.len(), 2);
    for link in &links {
        assert!(
            link.starts_with(&format!("{}/invite?token=", app.web_url())),
            "each person's link is shown to copy: {link}"
        );
    }
    assert!(
        b.body_text().await.contains("приглашает вас"),
        "the composed text is in the chosen language"
    );
    b.screenshot("own-mail-client").await;
    b.axe().await;

    b.goto(&app, "/invitations").await;
    assert!(row_of(&b, &first).await.contains("Pending"));
    b.close().await;
}

#[tokio::test]
async fn resend_and_revoke_from_the_list() {
    let app = spawn_web().await;
    let (org, b) = admin_signed_in(&app, 10).await;
    let (keep, drop) = (org.address("rita"), org.address("rob"));

    // Composed for the admin's own mail client: Mailroom has mailed nothing yet, so the
    // first Resend mails at once (a mailed invitation waits out a cooldown).
    b.goto(&app, "/people/invite").await;
    b.fill("Email addresses", &format!("{keep} {drop}")).await;
    b.check("I send them from my own mail client").await;
    b.click_button("Invite").await;
    b.wait_for_text("2 invitations are ready.").await;
    assert!(mails_to(&app, &keep).is_empty());

    b.goto(&app, "/invitations?state=pending").await;
    b.wait_for("table#invitations").await;
    b.screenshot("pending").await;
    click_in_row(&b, &keep, "Resend").await;
    b.wait_for_text("The invitation was sent again with a new link")
        .await;
    assert!(
        b.path().await.starts_with("/invitations?state=pending"),
        "the list keeps its filter after an action"
    );
    b.screenshot("resent").await;
    let mail = wait_for_mail(&app, &keep, Duration::from_secs(30)).await;
    assert!(mail.contains(&format!("{}/invite?token=", app.web_url())));

    // Again at once: the list says why not, instead of mailing the person twice.
    click_in_row(&b, &keep, "Resend").await;
    b.wait_for_text("This invitation was mailed only a moment ago.")
        .await;
    assert!(row_of(&b, &keep).await.contains("Pending"));
    b.screenshot("too-soon").await;

    click_in_row(&b, &drop, "Revoke").await;
    b.wait_for_text("The invitation was revoked").await;
    assert!(
        row_of(&b, &drop).await.is_empty(),
        "a revoked invitation leaves the pending list"
    );
    b.screenshot("revoked").await;

    b.select("Status", "Revoked").await;
    b.click_button("Show").await;
    b.wait_for_text("1 invitation").await;
    assert!(row_of(&b, &drop).await.contains("Revoked"));
    b.screenshot("revoked-filter").await;
    b.axe().await;
    click_in_row(&b, &drop, "Remove").await;
    b.wait_for_text("The invitation was removed from the list.")
        .await;
    assert!(row_of(&b, &drop).await.is_empty());
    assert!(b.body_text().await.contains("No invitations match."));
    b.close().await;
}

#[tokio::test]
async fn seats_left_are_shown() {
    let app = spawn_web().await;
    let (org, b) = admin_signed_in(&app, 3).await;

    b.goto(&app, "/people/invite").await;
    assert_eq!(b.text("#seats").await, "1 of 3 seats used, 2 left");
    let three = format!(
        "{} {} {}",
        org.address("s1"),
        org.address("s2"),
        org.address("s3")
    );
    b.fill("Email addresses", &three).await;
    b.click_button("Invite").await;
    b.wait_for("#invite-error").await;
    assert_eq!(
        b.text("#invite-error p").await,
        "Not enough free seats for these addresses: only 2 are left."
    );
    let kept = b
        .find("#emails")
        .await
        .prop("value")
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    assert_eq!(kept, three, "the addresses typed stay in the form");
    b.screenshot("not-enough-seats").await;
    b.axe().await;

    b.fill(
        "Email addresses",
        &format!("{} {}", org.address("s1"), org.address("s2")),
    )
    .await;
    b.click_button("Invite").await;
    b.wait_for_text("2 invitations are on their way.").await;

    b.goto(&app, "/people/invite").await;
    assert_eq!(b.text("#seats").await, "3 of 3 seats used, 0 left");
    assert!(b.body_text().await.contains("Every seat is taken."));
    b.select("Language", "Русский").await;
    b.click_button("Switch").await;
    b.wait_for_text("Занято 3 из 3 мест, осталось 0 мест").await;
    b.screenshot("seats-full-ru").await;
    b.close().await;
}

#[tokio::test]
async fn employee_cannot_invite_when_org_forbids() {
    let app = spawn_web().await;
    let (org, admin) = admin_signed_in(&app, 10).await;
    let employee = app.create_user(&org, "emma", "").await;
    until_can_invite(&app, &org, &employee.id, true).await;

    // By default everyone may invite: the employee sees the form.
    let b = Browser::start().await;
    b.sign_in(&app, &employee.login_email, PASSWORD).await;
    b.goto(&app, "/people/invite").await;
    b.wait_for("form[action='/people/invite']").await;
    assert!(
        !b.body_text()
            .await
            .contains("I send them from my own mail client"),
        "an employee cannot send from their own mail client (it needs org.register_users)"
    );
    b.fill("Email addresses", &org.address("friend")).await;

    // The admin turns the setting off.
    admin.goto(&app, "/settings").await;
    admin.uncheck("Allow everyone to invite people").await;
    admin.screenshot("settings").await;
    admin.axe().await;
    admin.click_button("Save").await;
    admin.wait_for_text("The settings were saved.").await;
    assert!(
        !admin
            .find("#allow-everyone")
            .await
            .is_selected()
            .await
            .unwrap_or(true),
        "the setting is saved off"
    );
    until_can_invite(&app, &org, &employee.id, false).await;

    // The form already open is refused by the service: the 403 page.
    b.click_button("Invite").await;
    b.wait_for_text("You may not do this.").await;
    b.screenshot("refused").await;
    b.axe().await;

    // Signed in afresh, the employee is not offered inviting at all.
    b.goto(&app, "/").await;
    b.click_button("Sign out").await;
    b.wait_for("form[action='/sign-in']").await;
    b.sign_in_here(&employee.login_email, PASSWORD).await;
    assert!(
        !b.exists("nav.main a[href='/invitations']").await,
        "no Invitations item in the navigation"
    );
    assert!(!b.exists("a[href='/people/invite']").await);
    b.goto(&app, "/people/invite").await;
    b.wait_for_text("You may not do this.").await;
    b.screenshot("no-invite").await;
    admin.close().await;
    b.close().await;
}

#[tokio::test]
async fn quick_registration_link_created_and_listed() {
    let app = spawn_web().await;
    let (org, b) = admin_signed_in(&app, 10).await;

    b.goto(&app, "/invitations").await;
    b.click_link("Quick-registration links").await;
    b.wait_for("form[action='/invitations/links']").await;
    assert!(b.body_text().await.contains("No links yet."));
    b.fill("Allowed email domains", &org.domain).await;
    b.check("An administrator approves each person").await;
    b.fill("How many people may join", "5").await;
    b.fill("Valid for (days)", "7").await;
    b.screenshot("new-link").await;
    b.axe().await;
    b.click_button("Create the link").await;

    b.wait_for("#created-link").await;
    let url = b.text("#created-link code").await;
    assert!(
        url.starts_with(&format!("{}/join?link=", app.web_url())),
        "the full link is shown to copy: {url}"
    );
    let row = row_of(&b, &org.domain).await;
    assert!(row.contains("Yes"), "approval needed: {row}");
    assert!(row.contains("0 of 5"), "uses of the limit: {row}");
    assert!(row.contains("Active"), "{row}");
    assert!(b
        .body_text()
        .await
        .contains("Nobody is waiting for approval."));
    b.screenshot("link-created").await;
    b.axe().await;

    click_in_row(&b, &org.domain, "Disable").await;
    b.wait_for_text("The link was disabled").await;
    assert!(row_of(&b, &org.domain).await.contains("Disabled"));
    assert!(
        !b.body_text().await.contains(&url),
        "the link itself is shown only once"
    );
    b.screenshot("link-disabled").await;
    b.close().await;
}

#[tokio::test]
async fn admin_registers_a_person_directly() {
    let app = spawn_web().await;
    let (org, b) = admin_signed_in(&app, 10).await;
    let person = org.address("paula");

    b.goto(&app, "/invitations").await;
    b.click_link("Register a person").await;
    b.fill("First name", "Paula").await;
    b.fill("Last name", "Petrova").await;
    b.fill("Email address", &person).await;
    b.fill("Position", "Accountant").await;
    b.screenshot("register-form").await;
    b.axe().await;
    b.click_button("Register").await;
    b.wait_for_text("Registered: the person has been mailed a link")
        .await;
    let mail = wait_for_mail(&app, &person, Duration::from_secs(30)).await;
    assert!(mail.contains(&format!("{}/invite?token=", app.web_url())));

    // The same address again: the form comes back with the service's reason and the input.
    b.fill("First name", "Paula").await;
    b.fill("Email address", &person).await;
    b.click_button("Register").await;
    b.wait_for("#register-error").await;
    b.screenshot("register-again").await;

    b.goto(&app, "/invitations").await;
    let row = row_of(&b, &person).await;
    assert!(
        row.contains("Registered") && row.contains("Pending"),
        "{row}"
    );
    b.close().await;
}

#[tokio::test]
async fn registrations_awaiting_approval_are_approved_and_rejected() {
    let app = spawn_web().await;
    let (org, b) = admin_signed_in(&app, 10).await;
    b.goto(&app, "/invitations/links").await;
    b.check("An administrator approves each person").await;
    b.click_button("Create the link").await;
    let url = b.text("#created-link code").await;
    let token = url
        .split("link=")
        .nth(1)
        .expect("the link carries its token")
        .to_owned();

    let (yes, no) = (org.address("yana"), org.address("nik"));
    for (email, name) in [(&yes, "Yana"), (&no, "Nik")] {
        let answer = app
            .invitations()
            .register_with_link(mailroom_proto::invitations::v1::RegisterWithLinkRequest {
                link_token: token.clone(),
                email: email.clone(),
                first_name: name.into(),
                last_name: "Joiner".into(),
                locale: "en".into(),
            })
            .await
            .expect("registers through the link")
            .into_inner();
        assert!(answer.awaiting_approval);
    }

    b.goto(&app, "/invitations/links").await;
    b.wait_for("table#awaiting").await;
    assert!(row_of(&b, &yes).await.contains("Awaiting approval"));
    b.screenshot("awaiting").await;
    b.axe().await;
    click_in_row(&b, &yes, "Approve").await;
    b.wait_for_text("Approved: the person has been mailed their link.")
        .await;
    assert!(
        b.path().await.starts_with("/invitations/links"),
        "back on the links page"
    );
    let mail = wait_for_mail(&app, &yes, Duration::from_secs(30)).await;
    assert!(mail.contains(&format!("{}/invite?token=", app.web_url())));

    click_in_row(&b, &no, "Reject").await;
    b.wait_for_text("The registration was rejected.").await;
    assert!(b
        .body_text()
        .await
        .contains("Nobody is waiting for approval."));
    b.screenshot("decided").await;

    b.goto(&app, "/invitations?state=rejected").await;
    assert!(row_of(&b, &no).await.contains("Rejected"));
    b.close().await;
}
