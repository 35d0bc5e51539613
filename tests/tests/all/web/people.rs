//! The people pages in a browser: the directory beside the department tree with its heads,
//! "where is this address used" and moving a dismissed person's address (the tombstone
//! shown), dismissal ending the person's console session at once, and rehiring.

use std::time::{Duration, Instant};

use mailroom_proto::identity::v1 as pb;
use mailroom_tests::browser::Browser;
use mailroom_tests::{authed, TestApp, TestOrg, PASSWORD};

use super::{spawn_web, web_org};

/// Dismisses `user` as the org's admin over gRPC (set-up, not the thing under test).
async fn dismiss(app: &TestApp, org: &TestOrg, user: &pb::User) {
    app.identity
        .clone()
        .dismiss_user(authed(
            &org.admin_token,
            pb::DismissUserRequest {
                id: user.id.clone(),
            },
        ))
        .await
        .expect("the admin dismisses");
}

#[tokio::test]
async fn directory_shows_the_tree_and_heads() {
    let app = spawn_web().await;
    let org = web_org(&app, 20).await;
    let boris = app.create_user(&org, "boris", "").await;
    let sales = app.create_department(&org, "Sales", "", &boris.id).await;
    let west = app.create_department(&org, "West", &sales.id, "").await;
    let anna = app.create_user(&org, "anna", &west.id).await;
    app.create_user(&org, "zoe", "").await;

    let b = Browser::start().await;
    b.sign_in(&app, &org.admin_email, PASSWORD).await;
    b.goto(&app, "/people").await;
    let tree = b.text("#department-tree").await;
    assert!(
        tree.contains("Sales") && tree.contains("West"),
        "the tree shows both departments: {tree}"
    );
    assert!(
        tree.contains("head: boris Tester"),
        "Sales' head is shown by name: {tree}"
    );
    let nested = b.texts("#department-tree li.dept li.dept").await;
    assert!(
        nested.iter().any(|t| t.starts_with("West")),
        "West is nested inside Sales: {nested:?}"
    );
    let people = b.text("#people").await;
    for name in ["anna Tester", "boris Tester", "zoe Tester", "Ada Admin"] {
        assert!(
            people.contains(name),
            "{name} is in the directory: {people}"
        );
    }
    b.screenshot("directory").await;
    b.axe().await;

    // A department in the tree filters the directory.
    b.click_link("West").await;
    b.wait_for_text("1 person").await;
    let people = b.text("#people").await;
    assert!(people.contains("anna Tester"), "{people}");
    assert!(
        !people.contains("zoe Tester"),
        "only West's people: {people}"
    );
    b.screenshot("west-only").await;

    // The name filter.
    b.goto(&app, "/people").await;
    b.fill("Name or address", "zoe").await;
    b.click_button("Show").await;
    b.wait_for_text("1 person").await;
    assert!(b.text("#people").await.contains("zoe Tester"));

    // An admin creates a department headed by anna; the tree shows it.
    b.goto(&app, "/departments").await;
    b.fill("Name", "Support").await;
    b.select("Inside", "Sales").await;
    b.fill("Head's email", &anna.login_email).await;
    b.click_button("Create department").await;
    b.wait_for_text("Department created.").await;
    let tree = b.text("#department-tree").await;
    assert!(
        tree.contains("Support") && tree.contains("head: anna Tester"),
        "the new department and its head: {tree}"
    );
    b.screenshot("department-created").await;
    b.axe().await;

    // Rename it; an unknown head's address is refused in words.
    b.click_link("Support").await;
    b.fill("Name", "Customer care").await;
    b.fill("Head's email", &org.address("nobody")).await;
    b.click_button("Save").await;
    let alert = b.text("[role=alert]").await;
    assert!(
        alert.contains("Nobody in your organisation has the address"),
        "{alert}"
    );
    b.fill("Head's email", "").await;
    b.click_button("Save").await;
    b.wait_for_text("Department saved.").await;
    let tree = b.text("#department-tree").await;
    assert!(tree.contains("Customer care"), "{tree}");
    b.screenshot("department-renamed").await;

    // The same directory in Russian.
    b.goto(&app, "/people").await;
    b.select("Language", "Русский").await;
    b.click_button("Switch").await;
    b.wait_for_text("руководитель: boris Tester").await;
    b.wait_for_text("4 человека").await;
    b.screenshot("directory-ru").await;
    b.goto(&app, &format!("/people/{}", anna.id)).await;
    b.wait_for_text("Адрес для входа").await;
    b.screenshot("person-ru").await;
    b.close().await;
}

#[tokio::test]
async fn where_is_this_address_used_and_transfer() {
    let app = spawn_web().await;
    let org = web_org(&app, 20).await;
    let carl = app.create_user(&org, "carl", "").await;
    let dana = app.create_user(&org, "dana", "").await;
    dismiss(&app, &org, &carl).await;

    let b = Browser::start().await;
    b.sign_in(&app, &org.admin_email, PASSWORD).await;
    b.goto(&app, &format!("/people/{}", carl.id)).await;
    assert_eq!(b.text("#dismissed-tag").await, "Dismissed");
    let addresses = b.text("#addresses").await;
    assert!(
        addresses.contains("Login email") && addresses.contains(&carl.login_email),
        "{addresses}"
    );
    b.screenshot("dismissed-person").await;

    // Where is carl's login used?
    b.click_link("Where is this address used?").await;
    let usage = b.text("#usage").await;
    assert!(
        usage.contains("Login email")
            && usage.contains("carl Tester")
            && usage.contains("Dismissed"),
        "{usage}"
    );
    b.screenshot("usage").await;
    b.axe().await;

    // Give it to dana as her contact address.
    b.click_link("Transfer address").await;
    b.wait_for_text("Where does it go?").await;
    b.screenshot("transfer-form").await;
    b.axe().await;
    b.check("To another person").await;
    b.fill("Recipient's email", &dana.login_email).await;
    b.select("As their", "Contact email").await;
    b.click_button("Transfer").await;
    let result = b.text("#transfer-result").await;
    assert!(
        result.contains(&format!("{} is now the contact email of", carl.login_email))
            && result.contains("dana Tester"),
        "{result}"
    );
    let tombstone = b.text("#tombstone").await;
    assert!(
        tombstone.ends_with("@tombstone.invalid"),
        "carl now holds a placeholder: {tombstone}"
    );
    b.screenshot("transferred").await;

    // The address is now dana's contact; carl's page shows the placeholder.
    b.goto(
        &app,
        &format!("/addresses?email={}", carl.login_email.replace('@', "%40")),
    )
    .await;
    let usage = b.text("#usage").await;
    assert!(
        usage.contains("Contact email") && usage.contains("dana Tester") && !usage.contains("carl"),
        "{usage}"
    );
    b.goto(&app, &format!("/people/{}", carl.id)).await;
    assert!(b.text("#addresses").await.contains(&tombstone));
    b.screenshot("carl-after").await;

    // Freeing an address: carl's placeholder cannot be, but dana's contact moves on from a
    // non-dismissed person only as a contact; free it.
    b.goto(
        &app,
        &format!(
            "/addresses/transfer?email={}&from={}",
            carl.login_email.replace('@', "%40"),
            dana.id
        ),
    )
    .await;
    b.check("Free it (for example, for an invitation)").await;
    b.click_button("Transfer").await;
    let result = b.text("#transfer-result").await;
    assert!(result.contains("is free"), "{result}");
    b.goto(
        &app,
        &format!("/addresses?email={}", carl.login_email.replace('@', "%40")),
    )
    .await;
    b.wait_for("#usage-none").await;
    b.close().await;
}

#[tokio::test]
async fn dismiss_ends_the_session_at_once() {
    let app = spawn_web().await;
    let org = web_org(&app, 20).await;
    let erin = app.create_user(&org, "erin", "").await;

    let person = Browser::start().await;
    person.sign_in(&app, &erin.login_email, PASSWORD).await;
    person.goto(&app, "/people").await;
    person.wait_for("#people").await;
    person.screenshot("erin-signed-in").await;

    let admin = Browser::start().await;
    admin.sign_in(&app, &org.admin_email, PASSWORD).await;
    admin.goto(&app, &format!("/people/{}", erin.id)).await;
    admin.screenshot("erin-page").await;
    admin.click_link("Dismiss…").await;
    admin.wait_for_text("Dismiss erin Tester?").await;
    admin.screenshot("confirm").await;
    admin.axe().await;
    admin.click_button("Dismiss").await;
    admin
        .wait_for_text("Dismissed. Their sessions have ended.")
        .await;
    assert_eq!(admin.text("#dismissed-tag").await, "Dismissed");
    admin.screenshot("dismissed").await;

    // Erin's next navigation lands on the sign-in page.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        person.goto(&app, "/people").await;
        if person.url().await.path().starts_with("/sign-in") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dismissed person still sees {}",
            person.url().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    person.screenshot("erin-signed-out").await;
    assert!(
        app.login(&erin.login_email).await.is_err(),
        "a dismissed person cannot sign in again"
    );
    admin.close().await;
    person.close().await;
}

#[tokio::test]
async fn rehire() {
    let app = spawn_web().await;
    let org = web_org(&app, 20).await;
    let finn = app.create_user(&org, "finn", "").await;
    dismiss(&app, &org, &finn).await;
    assert!(app.login(&finn.login_email).await.is_err());

    let b = Browser::start().await;
    b.sign_in(&app, &org.admin_email, PASSWORD).await;
    b.goto(&app, "/people?state=dismissed").await;
    let people = b.text("#people").await;
    assert!(
        people.contains("finn Tester") && people.contains("Dismissed"),
        "{people}"
    );
    b.click_link("finn Tester").await;
    assert_eq!(b.text("#dismissed-tag").await, "Dismissed");
    b.axe().await;
    b.click_button("Rehire").await;
    b.wait_for_text("Rehired. They can sign in again.").await;
    assert!(!b.exists("#dismissed-tag").await, "the tag is gone");
    assert!(b.text("#person-state").await.contains("Active"));
    b.screenshot("rehired").await;
    assert!(
        app.login(&finn.login_email).await.is_ok(),
        "a rehired person signs in again"
    );

    // Admin rights and the reset link from the same page.
    b.click_button("Make administrator").await;
    b.wait_for_text("They are now an administrator.").await;
    assert!(b.exists("#admin-tag").await);
    b.click_button("Remove administrator rights").await;
    b.wait_for_text("They are no longer an administrator.")
        .await;
    b.click_button("Send a password reset link").await;
    b.wait_for_text("A password reset link is on its way").await;
    b.screenshot("actions").await;

    // The admin edits the position and the contact address.
    b.fill("Position", "Sales lead").await;
    b.fill("Contact email", &org.address("finn.contact")).await;
    b.click_button("Save").await;
    b.wait_for_text("Saved.").await;
    let addresses = b.text("#addresses").await;
    assert!(
        addresses.contains(&org.address("finn.contact")) && addresses.contains("Contact email"),
        "{addresses}"
    );
    assert!(b.body_text().await.contains("Sales lead"));
    b.close().await;
}
